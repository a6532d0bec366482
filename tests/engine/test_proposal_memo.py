"""The responder's proposal choice and its wire form come from identity-keyed memos: an offer
whose transform lists are shared from the previous decode is answered without hashing any
transform or configured proposal again, and every answer is the one the plain matching gives."""

from __future__ import annotations

import dataclasses

import pytest

import engine.ike.proposals as props
from engine.ike.proposals import Chosen, match, to_wire
from engine.policy.proposals import parse_proposals
from engine.wire.payloads import Proposal as WireProposal
from engine.wire.payloads import Transform as WireTransform

IKE = parse_proposals(["aes256gcm16-prfsha256-x25519", "aes128-sha256-modp2048"], "ike")
ESP = parse_proposals(["aes256gcm16", "aes128-sha256"], "esp")


def _offer(configured, spi: bytes) -> tuple[WireProposal, ...]:
    return tuple(reversed(to_wire(configured, spi)))  # the peer's order differs from ours


def _plain(offered, configured, **kw) -> Chosen | None:
    for conf in configured:
        for o in offered:
            c = match(o, conf, **kw)
            if c is not None:
                return c
    return None


@pytest.fixture
def hashes(monkeypatch) -> list[str]:
    """Counts the dataclass hashes of wire transforms, configured proposals and Chosen values."""
    seen: list[str] = []
    for cls in (WireTransform, type(IKE[0]), Chosen):
        original = cls.__hash__

        def counting(self, _original=original, _name=cls.__name__):
            seen.append(_name)
            return _original(self)
        monkeypatch.setattr(cls, "__hash__", counting)
    return seen


def test_a_repeated_offer_is_answered_without_hashing_transforms_or_proposals(hashes):
    first = _offer(ESP, b"\x01\x02\x03\x04")
    chosen = props.select(first, ESP, ignore_ke=True, with_additional=False)
    chosen.to_wire()
    # The next handshake's offer: new proposal objects and SPI, the same transform lists (as
    # engine.wire.shared and the CHILD SA offer memo give them).
    again = tuple(dataclasses.replace(o, spi=b"\x05\x06\x07\x08") for o in first)
    hashes.clear()
    chosen2 = props.select(again, ESP, ignore_ke=True, with_additional=False)
    wire = chosen2.with_spi(b"\x0a\x0b\x0c\x0d").to_wire()
    assert hashes == []
    assert chosen2 == _plain(again, ESP, ignore_ke=True, with_additional=False)
    assert wire.spi == b"\x0a\x0b\x0c\x0d" and wire.transforms == chosen.to_wire().transforms


@pytest.mark.parametrize("configured, spi, kw", [
    (IKE, b"", {"with_additional": False}),
    (IKE, b"", {"with_additional": True}),
    (ESP, b"\x11\x22\x33\x44", {"ignore_ke": True, "with_additional": False}),
])
def test_memoised_answers_equal_the_plain_matching(configured, spi, kw):
    offered = _offer(configured, spi)
    for _ in range(3):  # the first call fills the memo, the others read it
        got = props.select(offered, configured, **kw)
        want = _plain(offered, configured, **kw)
        assert got == want and got.spi == spi
        assert got.to_wire() == want._to_wire()
    # An equal configured tuple that is another object, and a list, give the same answer.
    assert props.select(offered, tuple(configured), **kw) == want
    assert props.select(offered, list(configured), **kw) == want


def test_an_offer_with_another_transform_list_is_matched_afresh():
    offered = _offer(ESP, b"\x01\x02\x03\x04")
    assert props.select(offered, ESP, ignore_ke=True) is not None
    # Same numbers and protocol, transforms nothing configured takes: no stale answer.
    odd = tuple(dataclasses.replace(o, transforms=(WireTransform(1, 3),)) for o in offered)
    assert props.select(odd, ESP, ignore_ke=True) is None


def test_the_memos_stay_bounded(monkeypatch):
    monkeypatch.setattr(props, "_MEMO_SIZE", 4)
    monkeypatch.setattr(props, "_by_identity", {})
    monkeypatch.setattr(props, "_spiless_wire", {})
    for i in range(20):
        # Numbered apart: proposals sharing a number are a bundle, which the selection skips.
        offered = tuple(dataclasses.replace(o, number=i % 50 * 5 + k + 1)
                        for k, o in enumerate(_offer(ESP, b"\x01\x02\x03\x04")))
        chosen = props.select(offered, ESP, ignore_ke=True)
        assert chosen is not None and chosen.number in {o.number for o in offered}
        chosen.to_wire()
        assert len(props._by_identity) <= 4 and len(props._spiless_wire) <= 4
