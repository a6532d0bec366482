"""Form editing of a policy as a TOML document (pure functions).

The form edits the document the admin's file parses to, never the frozen
model, through ``tomlkit``: a form edit changes the value it names and keeps
every comment, blank line and the order of the file. The result is validated
by the policy layer like any hand-typed text.

Tree nodes are tuples: ``("engine",)``, ``("connection", name)``,
``("child", connection, name)``, ``("rule", name)``, ``("pool", name)``.
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import InlineTable, Item

from engine.policy import pq
from engine.policy.parse import AUTH_METHODS


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
    default: str = ""
    """A choice the engine takes when the key is absent (the empty field says so; engine.policy.model)."""


CONNECTION_FIELDS = (
    Field("local_addrs", "Local addresses", "list", help="our IKE addresses"),
    Field("remote_addrs", "Remote addresses", "list", help="the peer's; empty: any (responder)"),
    Field("proposals", "IKE proposals", "list", help=f"e.g. {pq.HYBRID_EXAMPLE}"),
    Field("local.auth", "Local auth", "choice", AUTH_METHODS),
    Field("local.id", "Local ID", "text"),
    Field("remote.auth", "Remote auth", "choice", AUTH_METHODS),
    Field("remote.id", "Remote ID", "text"),
    Field("encap", "Force UDP encap", "bool"),
    Field("dpd_delay", "DPD delay", "duration", help="e.g. 30s; 0 disables"),
    Field("rekey_time", "IKE rekey time", "duration", help="e.g. 4h"),
)

POOLS_FIELD = Field("pools", "Address pools", "list", help="names of [pools.*] for road warriors")

CHILD_FIELDS = (
    Field("mode", "Mode", "choice", ("tunnel", "transport"), default="tunnel"),
    Field("protocol", "Protocol", "choice", ("esp", "ah"), default="esp"),
    Field("local_ts", "Local TS", "list", help="e.g. 198.51.100.0/25 or 10.0.0.0/8[tcp/443]"),
    Field("remote_ts", "Remote TS", "list"),
    Field("esp_proposals", "ESP proposals", "list", help="e.g. aes256gcm16-x25519"),
    Field("start_action", "Start action", "choice", ("none", "trap", "start"), default="none"),
    Field("dpd_action", "DPD action", "choice", ("clear", "trap", "restart"), default="clear"),
    Field("close_action", "Close action", "choice", ("none", "trap", "start"), default="none",
          help="when the peer closes the CHILD SA"),
    Field("rekey_time", "Rekey time", "duration", help="e.g. 1h"),
)

RULE_FIELDS = (
    Field("action", "Action", "choice", ("bypass", "discard")),
    Field("local_ts", "Local TS", "list"),
    Field("remote_ts", "Remote TS", "list"),
    Field("priority", "Priority", "number", help="lower wins; empty: by specificity"),
)

POOL_FIELDS = (
    Field("addrs", "Addresses", "text", help="a range or CIDR, e.g. 198.51.100.128/25"),
    Field("dns", "DNS servers", "list"),
    Field("split_include", "Split include", "list", help="networks the clients route into the tunnel"),
    Field("split_exclude", "Split exclude", "list"),
)

ENGINE_FIELDS = (
    Field("datapath", "Datapath", "choice", ("kernel", "userspace", "lab"), default="kernel"),
    Field("listen", "Listen addresses", "list"),
    Field("ike_port", "IKE port", "number"),
    Field("natt_port", "NAT-T port", "number"),
    Field("secrets", "Secrets file", "text", help="path only: secrets never show here (k sets a PSK)"),
)

SECTIONS = {"connection": "connections", "rule": "rules", "pool": "pools"}
"""Top-level tables holding one kind of named node."""
KIND_WORDS = {"connection": "connection", "child": "CHILD SA config", "rule": "rule", "pool": "pool"}

NEW_CONNECTION = {
    "proposals": ["aes256gcm16-prfsha384-x25519"],
    "local": {"auth": "psk"},
    "remote": {"auth": "psk"},
    "dpd_delay": "30s",
}


def new_connection() -> dict:
    """A new connection's defaults: hybrid post-quantum IKE proposals when the engine
    negotiates them (engine.policy.pq), classic otherwise."""
    return {**NEW_CONNECTION, "proposals": pq.default_ike_proposals()}


NEW_CHILD = {"local_ts": ["0.0.0.0/0"], "remote_ts": ["0.0.0.0/0"], "esp_proposals": ["aes256gcm16-x25519"],
             "start_action": "none"}
NEW_RULE = {"action": "bypass", "remote_ts": ["0.0.0.0/0[udp/53]"]}
NEW_POOL = {"addrs": "198.51.100.128/25"}
EMPTY_POLICY = """\
# ipsec-console policy: one file per host (see `ipsec-console check FILE` and sample-configs/).

[engine]
datapath = "kernel"            # kernel | userspace | lab
"""

NAME_MAX = 64
"""The policy layer's longest name (engine.policy.parse): a longer one makes the whole policy invalid."""
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,%d}$" % (NAME_MAX - 1))


def node_path(node: tuple) -> tuple[str, ...]:
    """Document path of a tree node: ("connection", name) -> ("connections", name), ..."""
    kind = node[0]
    if kind == "engine":
        return ("engine",)
    if kind == "child":
        return ("connections", node[1], "children", node[2])
    if kind in SECTIONS:
        return (SECTIONS[kind], node[1])
    raise ValueError(node)


def fields_for(node: tuple, *, pools: bool = False) -> tuple[Field, ...]:
    """The node's form fields; ``pools``: the policy layer knows [pools] (road warriors)."""
    if node[0] == "connection" and pools:
        return CONNECTION_FIELDS + (POOLS_FIELD,)
    return {"engine": ENGINE_FIELDS, "connection": CONNECTION_FIELDS, "child": CHILD_FIELDS,
            "rule": RULE_FIELDS, "pool": POOL_FIELDS}[node[0]]


def key_path(node: tuple, field: Field) -> str:
    """The dotted key path findings use for this field."""
    return ".".join((*node_path(node), field.key))


def field_id(field: Field) -> str:
    return "f-" + field.key.replace(".", "-")


# ------------------------------------------------------------------ the document

def load_doc(text: str):
    """The tomlkit document of ``text``, or None when it is not TOML."""
    try:
        return tomlkit.parse(text)
    except (TOMLKitError, ValueError):
        return None


def load_data(text: str) -> dict | None:
    """``text`` as plain data (tomllib: faster than a tomlkit document), or None when it is not TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None


def dump_doc(doc) -> str:
    return tomlkit.dumps(doc)


def _plain(value: Any) -> Any:
    return value.unwrap() if isinstance(value, Item) or hasattr(value, "unwrap") else value


def _table(doc, path: tuple[str, ...], create: bool):
    cur = doc
    for i, part in enumerate(path):
        if not hasattr(cur, "get") or not hasattr(cur, "__setitem__"):
            return None
        if part not in cur:
            if not create:
                return None
            # A table that only holds named tables is a super table: [connections.x], not [connections].
            holder = part in ("connections", "children", "rules", "pools") and (i == 0 or part == "children")
            cur[part] = _inline({}) if _inline_parent(path, i) else tomlkit.table(is_super_table=holder)
        cur = cur[part]
    return cur if hasattr(cur, "get") else None


def _inline_parent(path: tuple[str, ...], i: int) -> bool:
    # local/remote of a connection are written as inline tables, like the samples do.
    return path[i] in ("local", "remote") and i >= 2 and path[i - 2] == "connections"


def get_value(doc, node: tuple, field: Field) -> Any:
    parts = field.key.split(".")
    table = _table(doc, node_path(node) + tuple(parts[:-1]), create=False)
    if table is None:
        return None
    return _plain(table.get(parts[-1]))


def set_value(doc, node: tuple, field: Field, value: Any) -> None:
    """Set (or with None remove) one value, keeping the comment that trailed the old one."""
    parts = field.key.split(".")
    path = node_path(node) + tuple(parts[:-1])
    table = _table(doc, path, create=value is not None)
    if table is None:
        return
    key = parts[-1]
    if isinstance(table, InlineTable):
        _set_inline(doc, path, key, value)
        return
    if value is None:
        if key in table:
            del table[key]
        return
    old = table.get(key)
    new = tomlkit.item(value)
    if isinstance(old, Item):
        # The old value's surroundings (a trailing comment, its indent) stay.
        new._trivia = copy.copy(old.trivia)
    table[key] = new


def _set_inline(doc, path: tuple[str, ...], key: str, value: Any) -> None:
    """Change one key of an inline table (``local = { auth = "psk", id = "..." }``), written back
    in the samples' spacing whatever keys come and go."""
    parent = _table(doc, path[:-1], create=False)
    old = parent[path[-1]]
    values = dict(old.unwrap())
    if value is None:
        values.pop(key, None)
    else:
        values[key] = value
    new = _inline(values)
    new._trivia = copy.copy(old.trivia)
    parent[path[-1]] = new


def _inline(values: dict):
    """An inline table written like the samples: ``{ auth = "psk", id = "hq.example.org" }``."""
    body = ", ".join(f"{k} = {tomlkit.item(v).as_string()}" for k, v in values.items())
    return tomlkit.parse(f"x = {{ {body} }}" if body else "x = {}")["x"]


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
    if field.kind in ("number", "duration"):
        try:
            return int(text)
        except ValueError:
            return text  # kept as typed: the policy layer names the error
    if field.kind == "bool":
        return text.lower() in ("true", "yes", "on", "1")
    return text


# ------------------------------------------------------------------ what the tree shows

@dataclass(frozen=True)
class TreeEntry:
    node: tuple
    label: str
    summary: str = ""
    children: tuple["TreeEntry", ...] = ()


def _ts(value: Any) -> str:
    return " ".join(str(v) for v in value) if isinstance(value, list) else str(value or "")


def tree_of(data: dict) -> dict[str, list[TreeEntry]]:
    """The named sections of a parsed document (plain dict), for the tree. Sections the
    document has show even when they do not validate yet."""
    out: dict[str, list[TreeEntry]] = {"connections": [], "rules": [], "pools": []}
    conns = data.get("connections") if isinstance(data.get("connections"), dict) else {}
    for name, c in conns.items():
        if not isinstance(c, dict):
            continue
        kids = []
        children = c.get("children") if isinstance(c.get("children"), dict) else {}
        for cname, k in children.items():
            if isinstance(k, dict):
                kids.append(TreeEntry(("child", name, cname), cname,
                                      f"{_ts(k.get('local_ts'))} ⇄ {_ts(k.get('remote_ts'))}".strip(" ⇄")))
        remote = c.get("remote_addrs")
        out["connections"].append(TreeEntry(("connection", name), name,
                                            ", ".join(remote) if isinstance(remote, list) and remote else "%any",
                                            tuple(kids)))
    for section, kind in (("rules", "rule"), ("pools", "pool")):
        table = data.get(section) if isinstance(data.get(section), dict) else {}
        for name, r in table.items():
            if isinstance(r, dict):
                summary = (f"{r.get('action', '?')} {_ts(r.get('remote_ts'))}" if kind == "rule"
                           else str(r.get("addrs", "")))
                out[section].append(TreeEntry((kind, name), name, summary.strip()))
    return out


# ------------------------------------------------------------------ structure: add, duplicate, delete

def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def exists(doc, node: tuple) -> bool:
    return _table(doc, node_path(node), create=False) is not None


def unique_name(doc, node: tuple) -> str:
    """A free name for a copy of ``node``: name-2, name-3, ..."""
    base = re.sub(r"-\d+$", "", node[-1]) or "new"
    n = 2
    while exists(doc, node[:-1] + (f"{base[:NAME_MAX - len(str(n)) - 1]}-{n}",)):
        n += 1
    return f"{base[:NAME_MAX - len(str(n)) - 1]}-{n}"  # still a name the policy takes


def _new_table(values: dict):
    t = tomlkit.table()
    for k, v in values.items():
        if isinstance(v, dict):
            t[k] = _inline(v)
        else:
            t[k] = v
    return t


def add_node(doc, node: tuple) -> None:
    """Add an empty-but-sensible section for ``node`` (ValueError if it exists or the name is bad)."""
    name = node[-1]
    if not valid_name(name):
        raise ValueError(f"{name!r} is not a usable name (1 to {NAME_MAX} letters, digits, - _ . ; no spaces)")
    if exists(doc, node):
        raise ValueError(f"there is already a {KIND_WORDS[node[0]]} named {name!r}")
    if node[0] == "child" and not exists(doc, ("connection", node[1])):
        raise ValueError(f"no connection named {node[1]!r}")
    defaults = {"connection": new_connection(), "child": NEW_CHILD, "rule": NEW_RULE, "pool": NEW_POOL}[node[0]]
    path = node_path(node)
    parent = _table(doc, path[:-1], create=True)
    table = _new_table(defaults)
    parent[name] = table
    if parent[name].as_string() + "[" in tomlkit.dumps(doc):
        # Put before a section that was there (tomlkit adds a table in its parent's place): a blank
        # line before that section's header, as in the samples (at the end tomlkit spaces it itself).
        parent[name].add(tomlkit.nl())


def duplicate_node(doc, node: tuple, new_name: str) -> tuple:
    """Copy ``node`` (with a connection's children) under ``new_name``; returns the new node."""
    if node[0] not in KIND_WORDS:
        raise ValueError("only connections, CHILD SA configs, rules and pools can be duplicated")
    target = node[:-1] + (new_name,)
    if not valid_name(new_name):
        raise ValueError(f"{new_name!r} is not a usable name (1 to {NAME_MAX} letters, digits, - _ . ; no spaces)")
    if exists(doc, target):
        raise ValueError(f"there is already a {KIND_WORDS[node[0]]} named {new_name!r}")
    source = _table(doc, node_path(node), create=False)
    if source is None:
        raise ValueError(f"no {KIND_WORDS[node[0]]} named {node[-1]!r}")
    parent = _table(doc, node_path(node)[:-1], create=False)
    parent[new_name] = copy.deepcopy(source)
    return target


def delete_node(doc, node: tuple) -> None:
    """Remove ``node``'s section (a connection goes with its children); an emptied holder goes too."""
    if node[0] not in KIND_WORDS:
        raise ValueError("only connections, CHILD SA configs, rules and pools can be deleted")
    path = node_path(node)
    parent = _table(doc, path[:-1], create=False)
    if parent is None or path[-1] not in parent:
        raise ValueError(f"no {KIND_WORDS[node[0]]} named {node[-1]!r}")
    del parent[path[-1]]
    if not parent:
        holder = _table(doc, path[:-2], create=False) if len(path) > 2 else doc
        if holder is not None and path[-2] in holder:
            del holder[path[-2]]
