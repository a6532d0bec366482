"""Event handlers that query their children, when the node is removed while it mounts.

A screen's ``on_mount`` and ``on_screen_resume`` (and a Select's own mount) look up the widgets it
composed. When the app quits (q, a test's end) or the screen is popped while the screen mounts,
Textual prunes those children before the event is handled: ``query_one`` raises NoMatches and
Textual shows a traceback as the console exits. Nothing is wrong then: the node is going away, so
the handler is skipped.
"""

from __future__ import annotations

from textual import events
from textual.css.query import NoMatches


def being_removed(node) -> bool:
    """Whether ``node`` is leaving the DOM: the app exits, it or an ancestor is pruned or closing."""
    if not node.is_attached:  # also False once the app exits
        return True
    return any(n._closing or n._closed or n._pruning for n in (node, *node.ancestors))


class QuietWhenRemoved:
    """Mixin for every console screen (and a widget whose own mount queries): NoMatches out of its
    event handlers is dropped when the node is being removed (module docstring), raised otherwise."""

    async def on_event(self, event: events.Event) -> None:
        try:
            await super().on_event(event)  # type: ignore[misc]
        except NoMatches:
            if being_removed(self):
                return
            raise
