"""Focusable widgets that take a burst of keys in the order it was typed.

Textual inserts a printable key as the focused field handles it, but runs
bindings (the field's Backspace, Delete, ctrl+k, arrows; the screen's ctrl+s,
ctrl+o, Escape; the app's) only once the key has bubbled up to the app, and the
app's queue already holds the keys typed after it: clearing "730" with three
Backspaces and typing 5000 quickly (a paste-like burst over ssh) gave "5"; text,
ctrl+s, more text saved the text typed after ctrl+s. Here a widget runs the
binding of a key while it handles the key, in turn with the characters around
it (priority bindings still run where Textual runs them, as the app sees the key).

Tab and shift+Tab (focus moves) run in turn too, and a key that reaches a widget
after focus has left it (the app handed it over before the move ran) goes on to
the focused widget: "gw.example.org", Tab, "vpn.example.org" in one burst had
put both names in the first field. A key that reaches a widget whose screen is
no longer shown goes on to the screen shown: the keys after the Enter that
closes a dialog to the screen underneath, the keys after ctrl+o (or a tree's
"a") to the dialog it opened.

Every text field of the console is a ``Field`` and the policy editor an
``Editor``: a plain ``Input`` or ``TextArea`` would bring the bug back. The
tables, the policy tree and the confirmation's buttons keep keys in order too.
"""

from __future__ import annotations

import asyncio

from textual import events
from textual.widgets import Button, Input, OptionList, RichLog, Select, TextArea

from console.widgets.mounting import QuietWhenRemoved


class KeysInOrder:
    """Mixin for a focusable widget (text fields, lists, tables, buttons): bindings and focus moves
    run in key order, keys that come after focus or the screen changed go on (module docstring)."""

    async def _on_key(self, event: events.Key) -> None:
        focused = self.screen.focused
        if focused is not None and self in focused.ancestors:
            return  # bubbling up from a part of this widget (a Select's open list): its own turn
        app = self.app
        if app._exit or not app.screen_stack:
            return  # quitting: nothing to hand keys to
        if self.screen is not app.screen:
            # The key waited here while a binding typed before it closed this widget's dialog (Enter,
            # y) or opened one over it (ctrl+o): it belongs to the screen now shown.
            event.stop()
            event.prevent_default()
            await _hand_over(app, event)
            return
        if focused is not self:
            # Focus moved on (Tab, a dialog's Enter) while this key waited here: it is the focused
            # widget's now, in the order it was typed (a fresh event: this one stops here).
            event.stop()
            event.prevent_default()
            (focused or self.screen)._forward_event(events.Key(event.key, event.character))
            return
        if self._inserts(event):
            return  # a character the widget takes as text, never a binding (Textual's order too)
        # The screen's active bindings, resolved as Textual resolves them (keymap, check_action).
        # Textual ran a binding of the screen or the app (ctrl+s, ctrl+o, Escape ...) only once the
        # key had bubbled up to the app, behind the text typed after it: it runs here, in turn.
        active = self.screen.active_bindings.get(event.key)
        if active is None or not active.enabled or active.binding.priority:
            return
        event.stop()
        event.prevent_default()  # neither the widget's default key handling nor Textual's later binding
        restart_blink = getattr(self, "_restart_blink", None)
        if restart_blink is not None and active.node is self:
            restart_blink()  # as that default handling does: the cursor shows while it moves
        await app.run_action(active.binding.action, active.node)

    def _inserts(self, event: events.Key) -> bool:
        """Whether this widget takes ``event`` as text (then no binding runs for it)."""
        return False


def focus_now(widget, *, scroll_visible: bool = True) -> None:
    """Focus ``widget`` at once, from an action a key ran. Widget.focus() waits its turn in the app's
    queue, behind the keys the app already handed to the widget focus leaves: Escape then d typed the
    "d" into the search field Escape was leaving."""
    if widget.focusable:
        widget.screen.set_focus(widget, scroll_visible=scroll_visible)
    else:
        widget.focus(scroll_visible)


async def _hand_over(app, event: events.Key) -> None:
    """Give a key to the focused widget of the app's current screen, once that screen has focused
    one: a dialog just pushed mounts (and focuses its field) a moment later."""
    screen = app.screen
    # A screen just pushed chooses its focused widget in on_mount (focus_now): wait for that, at most
    # 0.5 s (Textual's auto focus, before it, may pick another widget).
    for _ in range(100):
        if app.screen is not screen or screen.is_mounted or getattr(screen, "_keys_waited", False):
            break
        await asyncio.sleep(0.005)
        if app._exit or not app.screen_stack:
            return
    else:
        screen._keys_waited = True
    screen = app.screen
    active = screen.active_bindings.get(event.key)
    if active is not None and active.enabled and active.binding.priority:
        # Textual ran priority bindings when the app first saw the key, on the screen shown then:
        # this one's (a dialog's Enter) runs now, as it would have for the key typed after it opened.
        await app.run_action(active.binding.action, active.node)
        return
    (screen.focused or screen)._forward_event(events.Key(event.key, event.character))


class Field(KeysInOrder, Input):
    """A one-line text field (see the module docstring)."""

    def _inserts(self, event: events.Key) -> bool:
        return event.is_printable


class Editor(KeysInOrder, TextArea):
    """The multi-line editor (see the module docstring)."""

    def _inserts(self, event: events.Key) -> bool:
        # As TextArea._on_key: characters and Enter (and Tab when it indents) go into the text.
        if self.read_only:
            return False
        return event.is_printable or event.key == "enter" or (event.key == "tab" and self.tab_behavior == "indent")


class Choices(KeysInOrder, OptionList):
    """A list a dialog opens on (the Add dialog's kinds): Tab and the name typed after it in one
    burst reach the name field, not the list."""


class Press(KeysInOrder, Button):
    """A dialog's button: Tab to it and Enter in one burst press it in turn, and the keys typed after
    the Enter that closes the dialog go to the screen underneath."""


class LogView(KeysInOrder, RichLog):
    """The engine log: "/" and the search typed after it in one burst reach the search field."""


class Choice(QuietWhenRemoved, KeysInOrder, Select):
    """A form's drop-down choice (the PKI forms' Kind, Key type): Tabs typed past it in one burst
    bring the keys after them to the next field."""
