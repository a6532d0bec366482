"""The policy as a tree: engine, connections with their CHILD SA configs,
rules and pools, built from the TOML document (so a section shows as soon as
it is written, before the whole policy validates). Its keys act on the
selected node; the screen does the work (``PolicyTree.Act``)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Tree

from console.policy_form import TreeEntry
from console.widgets.fields import KeysInOrder

NARROW = 34
"""Below this width the tree shows names only (the form shows the rest)."""


class PolicyTree(KeysInOrder, Tree):
    """See the module docstring. Keys in order (fields.py): a, Tab, a name, Enter in one burst add
    that name."""

    BINDINGS = [
        Binding("a", "act('add')", "Add", id="policy.add"),
        Binding("c", "act('duplicate')", "Copy", id="policy.duplicate"),
        Binding("x", "act('delete')", "Delete", id="policy.delete"),
        Binding("delete", "act('delete')", "Delete", show=False, id="policy.delete_key"),
        Binding("k", "act('psk')", "PSK", id="policy.psk"),
        Binding("enter", "act('edit')", "Edit", show=False, id="policy.edit"),
    ]

    @dataclass
    class Act(Message):
        """The admin asked for ``what`` (add, duplicate, delete, psk, edit) on ``node``."""

        what: str
        node: tuple | None

    def render_label(self, node, base_style, style) -> Text:
        # Tree crops a line at its edge without a sign: a label too long for what is left of the
        # line after its guides ends in "…" instead (and the tree never scrolls sideways).
        label = super().render_label(node, base_style, style)
        depth, parent = 0, node.parent
        while parent is not None:
            depth, parent = depth + 1, parent.parent
        room = self.scrollable_content_region.width - depth * self.guide_depth
        if 0 < room < label.cell_len:
            label.truncate(room, overflow="ellipsis")
        return label

    def action_act(self, what: str) -> None:
        node = self.cursor_node.data if self.cursor_node is not None else None
        act = getattr(self.screen, "tree_act", None)
        if act is not None:
            # At once, not as a message: keys typed right after (Enter, Tab, text) must find the
            # focus where this action put it.
            act(self.Act(what, node))
        else:
            self.post_message(self.Act(what, node))

    def show(self, file_label: str, sections: dict[str, list[TreeEntry]], datapath: str, *,
             pools: bool, problem: str = "") -> None:
        """Rebuild from a parsed document; the cursor stays on the same node when it still exists."""
        cursor = self.cursor_node.data if self.cursor_node is not None else None
        self.set_data(file_label, sections, datapath, pools=pools, problem=problem, cursor=cursor)

    def set_data(self, file_label: str, sections: dict[str, list[TreeEntry]], datapath: str, *,
                 pools: bool, problem: str = "", cursor: tuple | None = None) -> None:
        narrow = self.size.width and self.size.width < NARROW
        self.clear()
        root = self.root
        label = Text(file_label, style="bold")
        if problem:
            label.append(f"  {problem}", style="bold red")
        root.set_label(label)
        root.data = ("file",)
        root.add_leaf(_label("engine", datapath, narrow), data=("engine",))
        conns = root.add(Text("connections", style="dim"), data=("section", "connection"), expand=True)
        for entry in sections["connections"]:
            node = conns.add(_label(entry.label, entry.summary, narrow), data=entry.node, expand=True)
            for child in entry.children:
                node.add_leaf(_label(child.label, child.summary, narrow), data=child.node)
        rules = root.add(Text("rules", style="dim"), data=("section", "rule"), expand=True)
        for entry in sections["rules"]:
            rules.add_leaf(_label(entry.label, entry.summary, narrow), data=entry.node)
        if pools or sections["pools"]:
            pool_node = root.add(Text("pools", style="dim"), data=("section", "pool"), expand=True)
            for entry in sections["pools"]:
                pool_node.add_leaf(_label(entry.label, entry.summary, narrow), data=entry.node)
        root.expand()
        if cursor is not None:
            self.select(cursor)

    def select(self, data: tuple) -> bool:
        """Move the cursor to the node holding ``data`` (everything is expanded, so a node's line
        is its depth-first position). Returns whether it exists."""
        for line, node in enumerate(_walk(self.root)):
            if node.data == data:
                self.cursor_line = line
                # Tree scrolls to its cursor only when keys move it: a node selected here (one just
                # added, below the 13 lines shown at 80x24) stayed out of sight. After the refresh:
                # a tree just rebuilt has no line regions yet.
                self.call_after_refresh(self.scroll_to_line, line, animate=False)
                return True
        return False

    def nodes(self) -> list[tuple]:
        return [n.data for n in _walk(self.root) if n.data is not None]


def _label(name: str, summary: str, narrow: bool) -> Text:
    t = Text(name, style="bold")
    if summary and not narrow:
        t.append("  " + summary, style="dim")
    t.no_wrap = True
    t.overflow = "ellipsis"
    return t


def _walk(node):
    yield node
    for child in node.children:
        yield from _walk(child)
