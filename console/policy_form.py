"""Form editing of a policy as a TOML document (pure functions).

The form edits the document the admin's file parses to, never the frozen
model: a comment-keeping document (engine.policy.serialize.load_document,
tomlkit), so a form edit changes one line and every comment and blank line of
a hand-written file stays. The result is validated by the policy layer like
any hand-typed text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.policy.serialize import dump_document, load_document


@dataclass(frozen=True)
class Field:
    """One form field: where it lives in the document and how to edit it."""

    key: str
    """Key inside the node's table; dotted for nested tables (``local.id``)."""
    label: str
    kind: str = "text"
    """text, list (comma separated), bool, choice, number, duration."""
    choices: tuple[str, ...] = ()
    help: str = ""


CONNECTION_FIELDS = (
    Field("local_addrs", "Local addresses", "list", help="our IKE addresses"),
    Field("remote_addrs", "Remote addresses", "list", help="the peer's addresses; empty: any (responder)"),
    Field("proposals", "IKE proposals", "list", help="strongSwan keywords, e.g. aes256gcm16-prfsha384-x25519"),
    Field("local.auth", "Local auth", "choice", ("psk", "pubkey")),
    Field("local.id", "Local ID", "text"),
    Field("remote.auth", "Remote auth", "choice", ("psk", "pubkey")),
    Field("remote.id", "Remote ID", "text"),
    Field("encap", "Force UDP encap", "bool"),
    Field("dpd_delay", "DPD delay", "duration", help="e.g. 30s; 0 disables"),
    Field("rekey_time", "IKE rekey time", "duration", help="e.g. 4h"),
)

CHILD_FIELDS = (
    Field("mode", "Mode", "choice", ("tunnel", "transport")),
    Field("protocol", "Protocol", "choice", ("esp", "ah")),
    Field("local_ts", "Local TS", "list", help="e.g. 198.51.100.0/25 or 10.0.0.0/8[tcp/443]"),
    Field("remote_ts", "Remote TS", "list"),
    Field("esp_proposals", "ESP proposals", "list", help="e.g. aes256gcm16-x25519"),
    Field("start_action", "Start action", "choice", ("none", "trap", "start")),
    Field("dpd_action", "DPD action", "choice", ("clear", "trap", "restart")),
    Field("rekey_time", "Rekey time", "duration", help="e.g. 1h"),
)

RULE_FIELDS = (
    Field("action", "Action", "choice", ("bypass", "discard")),
    Field("local_ts", "Local TS", "list"),
    Field("remote_ts", "Remote TS", "list"),
    Field("priority", "Priority", "number", help="lower wins; empty: by specificity"),
)

ENGINE_FIELDS = (
    Field("datapath", "Datapath", "choice", ("kernel", "userspace", "lab")),
    Field("listen", "Listen addresses", "list"),
    Field("ike_port", "IKE port", "number"),
    Field("natt_port", "NAT-T port", "number"),
    Field("secrets", "Secrets file", "text", help="path only: the secrets never show here"),
)


def node_path(node: tuple) -> tuple[str, ...]:
    """Document path of a tree node: ("connection", name) -> ("connections", name), ..."""
    kind = node[0]
    if kind == "engine":
        return ("engine",)
    if kind == "connection":
        return ("connections", node[1])
    if kind == "child":
        return ("connections", node[1], "children", node[2])
    if kind == "rule":
        return ("rules", node[1])
    raise ValueError(node)


def fields_for(node: tuple) -> tuple[Field, ...]:
    return {"engine": ENGINE_FIELDS, "connection": CONNECTION_FIELDS, "child": CHILD_FIELDS,
            "rule": RULE_FIELDS}[node[0]]


def key_path(node: tuple, field: Field) -> str:
    """The dotted key path findings use for this field."""
    return ".".join((*node_path(node), field.key))


def _table(doc: dict, path: tuple[str, ...], create: bool) -> dict | None:
    cur: Any = doc
    for part in path:
        if not isinstance(cur, dict):
            return None
        if part not in cur:
            if not create:
                return None
            cur[part] = {}
        cur = cur[part]
    return cur if isinstance(cur, dict) else None


def get_value(doc: dict, node: tuple, field: Field) -> Any:
    parts = field.key.split(".")
    table = _table(doc, node_path(node) + tuple(parts[:-1]), create=False)
    if table is None:
        return None
    return table.get(parts[-1])


def display(value: Any, field: Field) -> str:
    """Text for an Input (lists comma separated)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_input(text: str, field: Field) -> Any:
    """The TOML value for what was typed; None removes the key. Validation is the policy layer's job."""
    text = text.strip()
    if field.kind == "list":
        items = [t.strip() for t in text.split(",") if t.strip()]
        return items or None
    if not text:
        return None
    if field.kind == "number":
        try:
            return int(text)
        except ValueError:
            return text  # kept as typed: the policy layer names the error
    if field.kind == "duration":
        try:
            return int(text)
        except ValueError:
            return text
    if field.kind == "bool":
        return text.lower() in ("true", "yes", "on", "1")
    return text


def set_value(doc: dict, node: tuple, field: Field, value: Any) -> None:
    parts = field.key.split(".")
    table = _table(doc, node_path(node) + tuple(parts[:-1]), create=value is not None)
    if table is None:
        return
    if value is None:
        table.pop(parts[-1], None)
    else:
        table[parts[-1]] = value


def load_doc(text: str) -> dict | None:
    return load_document(text)


def dump_doc(doc: dict) -> str:
    return dump_document(doc)


def is_hand_written(text: str) -> bool:
    """Whether re-serializing ``text`` would lose something a person wrote (comments, layout)."""
    doc = load_doc(text)
    if doc is None:
        return True
    return dump_doc(doc).strip() != text.strip()
