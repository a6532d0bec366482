"""Text fields that take a burst of keys in the order it was typed.

Textual inserts a printable key as the focused field handles it, but runs the
field's own bindings (Backspace, Delete, ctrl+k, arrows ...) only once the key
has bubbled up to the app, and the app's queue already holds the keys typed
after it: clearing "730" with three Backspaces and typing 5000 quickly (a
paste-like burst over ssh) gave "5". Here a field runs its own binding for a key
while it handles the key, in turn with the characters around it. Bindings of
the screens and of the app still run where Textual runs them.

Tab and shift+Tab (focus moves) run in turn too, and a key that reaches a field
after focus has left it (the app handed it over before the move ran) goes on to
the focused widget: "gw.example.org", Tab, "vpn.example.org" in one burst had
put both names in the first field.

Every text field of the console is a ``Field`` and the policy editor an
``Editor``: a plain ``Input`` or ``TextArea`` would bring the bug back.
"""

from __future__ import annotations

from textual import events
from textual.widgets import Input, OptionList, Select, TextArea


class KeysInOrder:
    """Mixin for a focusable widget (text fields, a dialog's list): its own bindings and focus moves
    run in key order, keys that come after focus left go on (module docstring)."""

    async def _on_key(self, event: events.Key) -> None:
        focused = self.screen.focused
        if focused is not None and self in focused.ancestors:
            return  # bubbling up from a part of this widget (a Select's open list): its own turn
        if focused is not self:
            # Focus moved on (Tab, a dialog's Enter) while this key waited here: it is the focused
            # widget's now, in the order it was typed (a fresh event: this one stops here).
            event.stop()
            event.prevent_default()
            (focused or self.screen)._forward_event(events.Key(event.key, event.character))
            return
        # The screen's active bindings, resolved as Textual resolves them (keymap, check_action):
        # only a binding of this very widget, or a focus move, is taken here, and then not bubbled
        # to run again.
        active = self.screen.active_bindings.get(event.key)
        if active is None or not active.enabled or active.binding.priority:
            return
        if active.node is not self and active.binding.action not in FOCUS_MOVES:
            return
        event.stop()
        event.prevent_default()  # neither the widget's default key handling nor Textual's later binding
        restart_blink = getattr(self, "_restart_blink", None)
        if restart_blink is not None:  # as that default handling does: the cursor shows while it moves
            restart_blink()
        await self.app.run_action(active.binding.action, active.node)


FOCUS_MOVES = frozenset({"app.focus_next", "app.focus_previous", "focus_next", "focus_previous"})
"""Actions of the screen's Tab and shift+Tab (textual.screen.Screen.BINDINGS)."""


class Field(KeysInOrder, Input):
    """A one-line text field (see the module docstring)."""


class Editor(KeysInOrder, TextArea):
    """The multi-line editor (see the module docstring)."""


class Choices(KeysInOrder, OptionList):
    """A list a dialog opens on (the Add dialog's kinds): Tab and the name typed after it in one
    burst reach the name field, not the list."""


class Choice(KeysInOrder, Select):
    """A form's drop-down choice (the PKI forms' Kind, Key type): Tabs typed past it in one burst
    bring the keys after them to the next field."""
