"""subjectAltNames of issued certificates: parsed from the command line (``DNS:x``, ``email:x``,
``IP:x`` or a bare value typed by its look), checked as peers will read them."""

from __future__ import annotations

import ipaddress
import re

from cryptography import x509

from .errors import PkiError


def parse_san(text: str) -> x509.GeneralName:
    """``DNS:gw.example``, ``email:a@b``, ``IP:192.0.2.1`` or a bare value (typed by its look)."""
    kind, sep, value = text.partition(":")
    if sep and kind.lower() in ("dns", "email", "ip", "rfc822"):
        k = kind.lower()
    else:
        k, value = _guess_san_kind(text), text
    value = value.strip()
    if not value:
        raise PkiError(f"subjectAltName {text!r} has no value")
    if k == "ip":
        try:
            if "%" in value:  # ip_address() takes fe80::1%eth0 but a certificate cannot carry the zone
                raise ValueError(value)
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            raise PkiError(f"subjectAltName {text!r}: not an IP address") from None
    if k in ("email", "rfc822"):
        local, _, domain = value.rpartition("@")
        if not local or "@" in local or not value.isascii() or not _is_dns_name(domain, wildcard=False):
            raise PkiError(f"subjectAltName {text!r}: not an e-mail address (ASCII local@domain)")
        return x509.RFC822Name(value)
    if value.endswith(".") and _is_dns_name(value[:-1], wildcard=True):
        # charon compares IDs as written: a peer's ID gw.example would not match gw.example.
        raise PkiError(f"subjectAltName {text!r}: write the DNS name without the trailing dot")
    if not _is_dns_name(value, wildcard=True):
        raise PkiError(f"subjectAltName {text!r}: not a DNS name")
    return x509.DNSName(value)


_DNS_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _is_dns_name(value: str, *, wildcard: bool) -> bool:
    """ASCII labels of 1..63 characters, at most 253 in all, not all-numeric at the end (that is a mistyped address)."""
    name = value
    if wildcard and name.startswith("*."):
        name = name[2:]
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_DNS_LABEL.fullmatch(lbl) for lbl in labels):
        return False
    return not (len(labels) > 1 and labels[-1].isdigit())


def _guess_san_kind(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return "ip"
    except ValueError:
        return "email" if "@" in value else "dns"


def cn_as_san(cn: str) -> x509.GeneralName | None:
    """The CN as a SAN when it names a host, address or mailbox (peers match IDs against SANs only)."""
    kind = _guess_san_kind(cn)
    if kind == "dns" and "." not in cn:
        return None
    try:
        return parse_san(cn)
    except PkiError:
        return None
