"""A peer's ID read from the wire is one shared Identity per (type, data), equal to a fresh read,
and the memo holding them stays bounded whatever IDs peers send."""

from __future__ import annotations

import engine.ike.identity as identity
from engine.ike.identity import identity_from_wire
from engine.policy.model import Identity
from engine.wire.constants import IdType


def test_the_same_id_is_read_once(monkeypatch):
    made = []
    original_init = Identity.__init__

    def counting(self, *args, **kw):
        made.append(args)
        original_init(self, *args, **kw)
    monkeypatch.setattr(Identity, "__init__", counting)
    first = identity_from_wire(IdType.FQDN, b"memo-once.example")
    made.clear()
    again = identity_from_wire(IdType.FQDN, b"memo-once.example")
    assert made == [] and again is first
    assert again == Identity("fqdn", "memo-once.example")


def test_answers_equal_a_fresh_read():
    cases = [(IdType.FQDN, b"gw.example"), (IdType.RFC822_ADDR, b"a@b.example"), (IdType.IPV4_ADDR, b"\xc0\x00\x02\x01"),
             (IdType.IPV6_ADDR, bytes(15) + b"\x01"), (IdType.IPV4_ADDR, b"\x01\x02"), (IdType.FQDN, b"\xff\xfe"),
             (IdType.KEY_ID, b"\x01\x02\x03")]
    for id_type, data in cases:
        for _ in range(2):
            assert identity_from_wire(id_type, data) == identity._read_identity(id_type, data)  # noqa: SLF001
    assert identity_from_wire(IdType.IPV4_ADDR, b"\xc0\x00\x02\x01") == Identity("ipv4", "192.0.2.1")
    assert identity_from_wire(IdType.FQDN, b"\xff\xfe") == Identity("key_id", "#fffe")
    # Not bytes (a bytearray, unhashable): read, not memoised.
    assert identity_from_wire(IdType.FQDN, bytearray(b"ba.example")) == Identity("fqdn", "ba.example")


def test_the_memo_stays_bounded(monkeypatch):
    monkeypatch.setattr(identity, "_from_wire", {})
    for i in range(5 * identity._FROM_WIRE_MAX):
        assert identity_from_wire(IdType.FQDN, f"peer{i}.example".encode()).value == f"peer{i}.example"
        assert len(identity._from_wire) <= identity._FROM_WIRE_MAX
    big = b"x" * (identity._FROM_WIRE_BYTES + 1)
    identity._from_wire.clear()
    assert identity_from_wire(IdType.FQDN, big).value == big.decode()
    assert identity._from_wire == {}
