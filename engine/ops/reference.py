"""The reference of every policy key (type, default, meaning) and a JSON Schema
for editors, generated from the model (engine.policy.model: fields, defaults
and their docstrings) and the parser's key lists (engine.policy.parse).

``ipsec-console doc --keys`` and ``--schema`` print them; docs/ holds the
generated copies, and a test regenerates and compares them, so a key added to
the parser without a meaning, or a changed default, fails CI until the docs
follow. Editors that read ``#:schema`` comments (Taplo, Even Better TOML)
validate a policy with ``#:schema ./policy.schema.json`` on its first line.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import typing
from dataclasses import dataclass
from typing import Any

from engine.policy import parse as P
from engine.policy._reader import format_duration
from engine.policy.model import (
    AuthConfig,
    ChildConfig,
    ConnectionConfig,
    EngineConfig,
    EapSecret,
    IkeSecret,
    LabConfig,
    PoolConfig,
    PpkSecret,
    PrivateKeySecret,
    RuleConfig,
)

DURATION_PATTERN = r"^\s*(\d+(\.\d*)?|\.\d+)\s*[smhdSMHD]?\s*$"
SIZE_PATTERN = r"^\s*\d+\s*[kmgKMG]?\s*$"


@dataclass(frozen=True)
class Key:
    section: str
    """``[engine]``, ``[connections.NAME]``, ..."""
    name: str
    kind: str
    """string, integer, number, boolean, duration, size, list of ..., enum, table."""
    default: str
    meaning: str
    schema: dict


def _docstrings(cls) -> dict[str, str]:
    """Attribute docstrings (the string literal after each field) of a dataclass."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    out = {}
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and i + 1 < len(body):
            nxt = body[i + 1]
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                out[node.target.id] = " ".join(nxt.value.value.split())
    return out


# Meanings for fields the model leaves without a docstring (kept here rather than growing model.py).
EXTRA_MEANINGS = {
    ("connection", "name"): "",
    ("child", "mode"): "``tunnel`` (the packet travels whole inside ESP/AH, for networks) or ``transport`` "
                       "(only the payload is protected, host to host).",
    ("child", "protocol"): "``esp`` (encryption and integrity) or ``ah`` (integrity only). swanctl has no such key: "
                           "``ah_proposals`` alone means AH.",
    ("child", "rekey_bytes"): "Rekey after this many bytes (``\"500M\"``); 0 never.",
    ("child", "life_bytes"): "Delete the CHILD SA after this many bytes if not rekeyed; default 110% of rekey_bytes.",
    ("child", "rekey_packets"): "Rekey after this many packets; 0 never.",
    ("child", "life_packets"): "Delete after this many packets if not rekeyed; default 110% of rekey_packets.",
    ("child", "start_action"): "``none`` (wait for the peer), ``trap`` (negotiate on the first matching packet), "
                               "``start`` (negotiate when the policy loads).",
    ("child", "dpd_action"): "When the peer stops answering: ``clear`` (forget it), ``trap`` (negotiate again on "
                             "the next packet), ``restart`` (negotiate again now).",
    ("child", "close_action"): "When the peer closes the CHILD SA (or the IKE SA): ``none``, ``trap`` (negotiate "
                               "again on the next packet) or ``start`` (negotiate again now; one the peer closed "
                               "within 5 s of coming up, 5 s after it came up). Not after a rekey, an expiry or "
                               "a failure; a gateway does not dial its road warriors.",
    ("connection", "local_port"): "Our IKE port for this connection: the engine's ike_port (default) or natt_port.",
    ("connection", "remote_port"): "The peer's IKE port.",
    ("connection", "send_certreq"): "Ask the peer for its certificate (CERTREQ) with our trusted CAs.",
    ("rule", "action"): "``bypass`` (pass in clear) or ``discard`` (drop).",
    ("rule", "local_ts"): "Our side's traffic selectors; default: everything, in the IP versions remote_ts uses.",
    ("rule", "remote_ts"): "The other side's traffic selectors; default: everything.",
    ("engine", "ike_port"): "UDP port for IKE (500; unprivileged ports for labs).",
    ("engine", "natt_port"): "UDP port for NAT-T: IKE after a NAT was detected, and ESP-in-UDP (4500).",
    ("engine", "datapath"): "``kernel`` (XFRM: line rate, needs kernel ESP), ``userspace`` (a TUN device, ESP in "
                            "Python) or ``lab`` (simulated peers on loopback).",
    ("secrets-ike", "ids"): "Identities this PSK is for (empty: any); the best match for the peer wins.",
    ("secrets-ike", "secret"): "The PSK: text, ``0x`` hex or ``0s`` base64 (as in swanctl). At least 20 random "
                               "characters.",
    ("secrets-private", "file"): "A private key file (PEM or DER), relative to the secrets file.",
    ("secrets-private", "passphrase"): "The passphrase of an encrypted key file.",
    ("secrets-eap", "id"): "The EAP identity or identities (one name or a list) this password is for.",
    ("secrets-eap", "secret"): "The EAP user's password (EAP-MSCHAPv2).",
    ("secrets-ppk", "secret"): "The Postquantum Preshared Key (RFC 8784): ``0x`` hex or ``0s`` base64, at least "
                               "32 random bytes.",
}

_ALIASES = {("engine", "pki"): "pki_dir", ("child", "esp_proposals"): "proposals",
            ("child", "ah_proposals"): "proposals", ("secrets-eap", "id"): "ids"}
_SECTIONS = {
    "engine": ("[engine]", EngineConfig, P.ENGINE_KEYS),
    "lab": ("[lab]", LabConfig, P.LAB_KEYS),
    "connection": ("[connections.NAME]", ConnectionConfig, P.CONNECTION_KEYS),
    "auth": ("local = { ... } / remote = { ... }", AuthConfig, P.AUTH_KEYS),
    "child": ("[connections.NAME.children.CHILD]", ChildConfig, P.CHILD_KEYS),
    "rule": ("[rules.NAME]", RuleConfig, P.RULE_KEYS),
    "pool": ("[pools.NAME]", PoolConfig, P.POOL_KEYS),
    "secrets-ike": ("[ike.NAME] (secrets file)", IkeSecret, ("ids", "secret")),
    "secrets-private": ("[private.NAME] (secrets file)", PrivateKeySecret, ("file", "passphrase")),
    "secrets-ppk": ("[ppk.NAME] (secrets file)", PpkSecret, ("id", "secret")),
    "secrets-eap": ("[eap.NAME] (secrets file)", EapSecret, ("id", "secret")),
}
# What the parser reads each key as (engine.policy._reader getters), where the model's type does not say it.
_DURATIONS = {"retransmit_timeout", "keepalive", "dpd_delay", "rekey_time", "over_time", "rand_time", "life_time",
              "metrics_interval"}
_SIZES = {"rekey_bytes", "life_bytes", "rekey_packets", "life_packets"}
_RANGES = {"ike_port": (1, 65535), "natt_port": (1, 65535), "local_port": (1, 65535), "remote_port": (1, 65535),
           "remote_natt_port": (1, 65535), "replay_window": (0, P.REPLAY_WINDOW_MAX),
           "priority": (1, P.PRIORITY_MAX), "tun_mtu": (576, 65535), "retransmit_tries": (0, None),
           "half_open_threshold": (0, None), "keyingtries": (0, None)}
_LISTS = {"listen": "IP addresses", "crls": "file paths", "peers": "policy files", "local_addrs": "addresses",
          "remote_addrs": "addresses, networks, ranges, DNS names or %any", "proposals": "proposals",
          "esp_proposals": "ESP proposals", "ah_proposals": "AH proposals", "local_ts": "traffic selectors",
          "remote_ts": "traffic selectors", "certs": "certificate files", "cacerts": "CA certificate files",
          "cert_policy": "certificate policy OIDs",
          "ids": "identities", "flows": "icmp, udp, tcp", "pools": "[pools.NAME] names",
          "vips": "virtual IPs (0.0.0.0 or :: for any)", "dns": "DNS server addresses",
          "split_include": "networks", "split_exclude": "networks"}
_DERIVED = {"over_time": "10% of rekey_time", "rand_time": "over_time (IKE) / life_time - rekey_time (child)",
            "life_time": "110% of rekey_time", "life_bytes": "110% of rekey_bytes",
            "life_packets": "110% of rekey_packets", "local_port": "[engine] ike_port",
            "proposals": "strongSwan's default", "esp_proposals": "strongSwan's default",
            "ah_proposals": "strongSwan's default", "local_ts": "dynamic (our IKE address)",
            "remote_ts": "dynamic (the peer's IKE address)", "pki": "pki/ next to the policy"}
_REQUIRED = {"rule": ("action",), "secrets-ike": ("secret",), "secrets-private": ("file",),
             "secrets-ppk": ("id", "secret"), "secrets-eap": ("id", "secret"), "pool": ("addrs",)}


def _literal(annotation: Any) -> list[str] | None:
    args = getattr(annotation, "__args__", None)
    if getattr(annotation, "__origin__", None) is not None and str(annotation).startswith("typing.Literal"):
        return list(args)
    return None


def _field(cls, name: str):
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    return None


def _default(f, key: str) -> str:
    if key in _DERIVED:
        return _DERIVED[key]
    if f is None:
        return "-"
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return "(required)"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if key in _DURATIONS and isinstance(value, (int, float)):
        return str(format_duration(value))
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]" if value else "[]"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _kind_and_schema(section: str, key: str, f) -> tuple[str, dict]:
    hints = typing.get_type_hints(_SECTIONS[section][1]) if f is not None else {}
    annotation = hints.get(f.name) if f is not None else None
    if key in ("local", "remote"):
        return "table (local = { auth, id, certs, cacerts })", {"$ref": "#/$defs/auth"}
    if key == "children":
        return "table of children", {"type": "object", "additionalProperties": {"$ref": "#/$defs/child"}}
    if key in _DURATIONS:
        return "duration (\"30s\", \"5m\", \"4h\", \"1d\" or seconds)", {"$ref": "#/$defs/duration"}
    if key in _SIZES:
        return "count (1000, \"64k\", \"500M\", \"1G\")", {"$ref": "#/$defs/size"}
    if key in _LISTS:
        return f"list of {_LISTS[key]} (or one comma-separated string)", {"$ref": "#/$defs/strings"}
    choices = _literal(annotation) if annotation is not None else None
    if key == "mode" and section == "child":
        choices = ["tunnel", "transport"]
    if key == "tun_offload":
        choices = ["on", "off", "auto", "jumbo"]
    if key == "auth":
        choices = list(getattr(P, "AUTH_METHODS", ("psk", "pubkey")))
    if choices:
        return "one of " + ", ".join(f'"{c}"' for c in choices), {"type": "string", "enum": choices}
    if annotation is bool:
        return "boolean", {"type": "boolean"}
    if annotation is int or key in _RANGES or str(annotation) == "int | None":
        schema: dict = {"type": "integer"}
        lo, hi = _RANGES.get(key, (None, None))
        if lo is not None:
            schema["minimum"] = lo
        if hi is not None:
            schema["maximum"] = hi
        return "integer" + (f" {lo}..{hi}" if lo is not None and hi is not None else
                            f" ≥ {lo}" if lo is not None else ""), schema
    if annotation is float:
        schema = {"type": "number", "minimum": 1.0 if key == "retransmit_base" else 0.0}
        return "number", schema
    if key == "id" and section == "secrets-eap":
        return "EAP identity or list of them", {"$ref": "#/$defs/strings"}
    if key == "id" and section == "secrets-ppk":
        return "string (the PPK_ID)", {"type": "string", "minLength": 1}
    if key == "id":
        return "identity (FQDN, user@FQDN, IP address, DN, %any, @#hex)", {"type": "string"}
    return "string", {"type": "string"}


def keys() -> list[Key]:
    """Every key of the policy and secrets files, section by section, in the parser's order."""
    out = []
    for section, (title, cls, names) in _SECTIONS.items():
        docs = _docstrings(cls)
        for key in names:
            fname = _ALIASES.get((section, key), key)
            f = _field(cls, fname)
            meaning = EXTRA_MEANINGS.get((section, key)) or docs.get(fname, "")
            if key == "esp_proposals":
                meaning = "ESP proposals in strongSwan keywords, e.g. aes256gcm16-x25519 (x25519: PFS on rekeys)."
            elif key == "ah_proposals":
                meaning = "AH proposals (integrity only), e.g. sha256; sets protocol = \"ah\"."
            elif key == "local" and section == "connection":
                meaning = "Our side's authentication."
            elif key == "remote" and section == "connection":
                meaning = "How the peer must authenticate."
            elif key == "children":
                meaning = "The CHILD SA templates of this connection (see below)."
            kind, schema = _kind_and_schema(section, key, f)
            schema = dict(schema)
            if meaning:
                schema["description"] = meaning.replace("``", "`")
            out.append(Key(title, key, kind, _default(f, key) if key not in ("local", "remote", "children") else "-",
                           meaning, schema))
    return out


def reference_markdown() -> str:
    lines = ["# Policy keys", "",
             "Generated by `ipsec-console doc --keys` from the policy model; do not edit (a test regenerates it).",
             "Durations are `\"30s\"`, `\"5m\"`, `\"4h\"`, `\"1d\"` or seconds; counts take `k`, `M`, `G` (powers "
             "of 1024). A JSON Schema for editors is in [policy.schema.json](policy.schema.json) and "
             "[secrets.schema.json](secrets.schema.json).", ""]
    section = None
    for k in keys():
        if k.section != section:
            section = k.section
            lines += ["", f"## `{section}`", "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        meaning = k.meaning.replace("``", "`").replace("|", "\\|") or "-"
        lines.append(f"| `{k.name}` | {k.kind.replace('|', '/')} | {k.default.replace('|', '/')} | {meaning} |")
    return "\n".join(lines) + "\n"


def _object(section: str, by_section: dict[str, list[Key]]) -> dict:
    title = _SECTIONS[section][0]
    obj: dict = {"type": "object", "additionalProperties": False,
                 "properties": {k.name: k.schema for k in by_section[title]}}
    if section in _REQUIRED:
        obj["required"] = list(_REQUIRED[section])
    return obj


def json_schema() -> dict:
    by_section: dict[str, list[Key]] = {}
    for k in keys():
        by_section.setdefault(k.section, []).append(k)
    defs = {
        "duration": {"anyOf": [{"type": "string", "pattern": DURATION_PATTERN}, {"type": "number", "minimum": 0}]},
        "size": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": SIZE_PATTERN}]},
        "strings": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]},
        "auth": _object("auth", by_section),
        "child": _object("child", by_section),
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://ipsec-console.invalid/policy.schema.json",
        "title": "ipsec-console policy",
        "description": "One host's IPsec policy (TOML), in the vocabulary of swanctl.conf. Generated from the model.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "engine": _object("engine", by_section),
            "lab": _object("lab", by_section),
            "connections": {"type": "object", "additionalProperties": _object("connection", by_section)},
            "rules": {"type": "object", "additionalProperties": _object("rule", by_section)},
            "pools": {"type": "object", "additionalProperties": _object("pool", by_section)},
        },
        "$defs": defs,
    }


def secrets_schema() -> dict:
    by_section: dict[str, list[Key]] = {}
    for k in keys():
        by_section.setdefault(k.section, []).append(k)
    strings = {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]}
    ike = _object("secrets-ike", by_section)
    ike["properties"]["ids"] = {**strings, "description": ike["properties"]["ids"].get("description", "")}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://ipsec-console.invalid/secrets.schema.json",
        "title": "ipsec-console secrets file",
        "description": "PSKs and private keys, kept apart from the policy (mode 0600). Generated from the model.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "ike": {"type": "object", "additionalProperties": ike},
            "private": {"type": "object", "additionalProperties": _object("secrets-private", by_section)},
            "ppk": {"type": "object", "additionalProperties": _object("secrets-ppk", by_section)},
            "eap": {"type": "object", "additionalProperties": _object("secrets-eap", by_section)},
        },
        "$defs": {"strings": strings},  # [eap.NAME] id: one name or a list
    }


def json_schema_text(which: str = "policy") -> str:
    return json.dumps(json_schema() if which == "policy" else secrets_schema(), indent=2, ensure_ascii=False) + "\n"

