"""Cuts of the responder's CPU per handshake keep behaviour (benchmarks/README.md, fifteenth round).

Refactor tests: each compares the faster form with what it replaced, and passes before and after."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives import hashes

from engine.crypto.auth import nat_detection_hash


def _old_nat_detection_hash(spi_i: bytes, spi_r: bytes, addr: str, port: int) -> bytes:
    import ipaddress
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    h = hashes.Hash(hashes.SHA1())
    h.update(spi_i + spi_r + ipaddress.ip_address(addr).packed + port.to_bytes(2, "big"))
    return h.finalize()


def test_nat_detection_hash_as_before():
    rng = random.Random(7)
    addrs = ["192.0.2.1", "198.51.100.7", "127.0.0.1", "::1", "2001:db8::1", "0.0.0.0"]
    for _ in range(500):
        spi_i, spi_r = rng.randbytes(8), rng.choice([bytes(8), rng.randbytes(8)])
        addr, port = rng.choice(addrs), rng.choice([0, 500, 4500, 65535, rng.randrange(65536)])
        assert nat_detection_hash(spi_i, spi_r, addr, port) == _old_nat_detection_hash(spi_i, spi_r, addr, port)


@pytest.mark.parametrize("addr,port", [("192.0.2.1", 65536), ("192.0.2.1", -1), ("not-an-ip", 500),
                                       ("192.0.2.300", 500)])
def test_nat_detection_hash_refuses_as_before(addr, port):
    nat_detection_hash(bytes(8), bytes(8), "192.0.2.1", 500)  # the good endpoint cached first
    for _ in range(2):  # a refusal is not cached either
        with pytest.raises(ValueError):
            nat_detection_hash(bytes(8), bytes(8), addr, port)


def _payload_soup(rng):
    from engine.wire.constants import NotifyType
    from engine.wire.payloads import NoncePayload, NotifyPayload, VendorIdPayload
    from engine.ike.init import VENDOR_ID
    types = [NotifyType.NAT_DETECTION_SOURCE_IP, NotifyType.NAT_DETECTION_DESTINATION_IP,
             NotifyType.IKEV2_FRAGMENTATION_SUPPORTED, NotifyType.REDIRECT_SUPPORTED, NotifyType.REDIRECTED_FROM,
             NotifyType.USE_PPK, NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED, NotifyType.INITIAL_CONTACT,
             NotifyType.SIGNATURE_HASH_ALGORITHMS]
    out = []
    for _ in range(rng.randrange(8)):
        k = rng.randrange(4)
        if k == 0:
            out.append(NoncePayload(rng.randbytes(16)))
        elif k == 1:
            out.append(VendorIdPayload(rng.choice([VENDOR_ID, b"other"])))
        else:
            t = rng.choice(types)
            t = int(t) if rng.random() < 0.5 else t  # decoded notifies carry plain ints or members
            data = rng.randbytes(20) if rng.random() < 0.5 else bytes(range(20))
            if t == NotifyType.SIGNATURE_HASH_ALGORITHMS:
                data = b"\x00\x02\x00\x05"
            out.append(NotifyPayload(t, data=data))
    return out


def _old_check_nat(payloads, spi_i, spi_r, local, remote):
    from engine.wire.constants import NotifyType
    from engine.wire.payloads import NotifyPayload
    sources = [p.data for p in payloads if isinstance(p, NotifyPayload)
               and p.type == NotifyType.NAT_DETECTION_SOURCE_IP]
    dest = [p.data for p in payloads if isinstance(p, NotifyPayload)
            and p.type == NotifyType.NAT_DETECTION_DESTINATION_IP]
    if not sources or not dest:  # both kinds or no decision (test_nat_detection_both_kinds.py)
        return None
    expect_src = nat_detection_hash(spi_i, spi_r, remote[0], remote[1])
    expect_dst = nat_detection_hash(spi_i, spi_r, local[0], local[1])
    return bool(dest) and expect_dst not in dest, bool(sources) and expect_src not in sources


def _old_read_capabilities(sa, payloads) -> None:
    from engine.crypto.signature import parse_hash_algorithms
    from engine.ike.init import VENDOR_ID
    from engine.wire.constants import NotifyType
    from engine.wire.payloads import NotifyPayload, VendorIdPayload
    for p in payloads:
        if isinstance(p, VendorIdPayload) and p.data == VENDOR_ID:
            sa.peer_is_ours = True
        if not isinstance(p, NotifyPayload):
            continue
        if p.type == NotifyType.IKEV2_FRAGMENTATION_SUPPORTED:
            sa.peer_fragmentation = True
        elif p.type in (NotifyType.REDIRECT_SUPPORTED, NotifyType.REDIRECTED_FROM):
            sa.peer_redirect_supported = True
        elif p.type == NotifyType.USE_PPK:
            sa.use_ppk = True
        elif p.type == NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED:
            sa.peer_intermediate = True
        elif p.type == NotifyType.SIGNATURE_HASH_ALGORITHMS:
            sa.peer_hash_algorithms = frozenset(parse_hash_algorithms(p.data))


def test_check_nat_and_capabilities_as_before():
    import types

    from engine.ike.init import check_nat, nat_notifies, read_capabilities
    rng = random.Random(11)
    local, remote = ("192.0.2.1", 500), ("198.51.100.7", 4500)
    spi_i, spi_r = bytes(range(8)), bytes(8)
    fields = ("peer_is_ours", "peer_fragmentation", "peer_redirect_supported", "use_ppk", "peer_intermediate",
              "peer_hash_algorithms")
    for _ in range(2000):
        payloads = _payload_soup(rng)
        if rng.random() < 0.3:  # a real pair of NAT-D, from either side's view
            payloads += nat_notifies(spi_i, spi_r, *rng.choice([(remote, local), (local, remote)]))
        rng.shuffle(payloads)
        assert check_nat(payloads, spi_i, spi_r, local, remote) == _old_check_nat(payloads, spi_i, spi_r, local, remote)
        a, b = (types.SimpleNamespace(**dict.fromkeys(fields, None)) for _ in range(2))
        read_capabilities(a, payloads)
        _old_read_capabilities(b, payloads)
        assert vars(a) == vars(b)


def test_hoisted_enum_members_are_the_members():
    """The module-level aliases (``_X = Enum.X``, read once: Python 3.11's EnumType.__getattr__ hook
    makes each ``Enum.X`` read ~1k instructions) are the very members they replace, so every
    comparison and every value put in a payload or event is what it was."""
    import ast
    import enum
    import importlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    seen = 0
    for path in sorted((root / "engine").rglob("*.py")):
        tree = ast.parse(path.read_text())
        aliases = [(n.targets[0].id, n.value.value.id, n.value.attr) for n in tree.body
                   if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
                   and n.targets[0].id.startswith("_") and isinstance(n.value, ast.Attribute)
                   and isinstance(n.value.value, ast.Name)]
        if not aliases:
            continue
        mod = importlib.import_module(".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__"))
        for alias, cls_name, member in aliases:
            cls = getattr(mod, cls_name, None)
            if isinstance(cls, type) and issubclass(cls, enum.Enum):
                assert getattr(mod, alias) is cls[member], (path, alias)
                seen += 1
    assert seen >= 40


def test_key_exchange_group_is_the_member():
    from engine.crypto.ke import KeyExchange
    from engine.crypto.transforms import KeId
    for g in (KeId.CURVE25519, 31, 19, 14):
        k = KeyExchange(g)
        assert k.group is KeId(int(g)) and type(k.group) is KeId
    with pytest.raises(Exception) as a:
        KeyExchange(12345)
    assert type(a.value).__name__ in ("UnsupportedTransform", "ValueError")


def test_secret_of_is_a_secret_like_any_other():
    from engine.secret import Secret, secret_of
    for v in (b"", b"k" * 32, bytes(range(36))):
        s = secret_of(v)
        assert type(s) is Secret and s == Secret(v) and s.reveal() == v and s.reveal() is v
        assert repr(s) == repr(Secret(v)) and hash(s) == hash(Secret(v)) and len(s) == len(v)
        with pytest.raises(AttributeError):
            s._value = b"x"
    # anything but bytes goes through Secret() itself (str encoded, bytearray copied)
    assert secret_of("psk").reveal() == b"psk"
    ba = bytearray(b"abc")
    s = secret_of(ba)
    ba[0] = 0
    assert s.reveal() == b"abc" and type(s.reveal()) is bytes


def test_ike_and_child_keys_as_before():
    from engine.crypto.keys import IkeKeys, derive_ike_keys
    from engine.crypto.prf import prf_for, prf_plus
    from engine.ike.child import derive_child_keys
    from engine.secret import Secret
    ni, nr, g, spi_i, spi_r = b"n" * 32, b"r" * 32, b"g" * 32, bytes(range(8)), bytes(range(8, 16))
    skeyseed, keys = derive_ike_keys(5, 20, 256, None, ni, nr, g, spi_i, spi_r)
    prf = prf_for(5)
    assert skeyseed == prf(ni + nr, g)
    stream = prf_plus(prf, skeyseed, ni + nr + spi_i + spi_r, 32 * 3 + 36 * 2)
    sizes = (32, 0, 0, 36, 36, 32, 32)
    want, at = [], 0
    for n in sizes:
        want.append(Secret(stream[at:at + n]))
        at += n
    assert keys == IkeKeys(*want) and all(type(getattr(keys, f)) is Secret for f in
                                          ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr"))
    assert [getattr(keys, f).reveal() for f in ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr")] \
        == [w.reveal() for w in want]
    import types
    chosen = types.SimpleNamespace(encr=(20, 256), integ=None)  # what derive_child_keys reads of a Chosen
    km = prf_plus(prf, keys.sk_d.reveal(), ni + nr, 72)
    for initiator in (True, False):
        ck = derive_child_keys(5, keys.sk_d.reveal(), chosen, ni, nr, initiator)
        ei, er = Secret(km[:36]), Secret(km[36:])
        assert (ck.encr_out, ck.encr_in) == ((ei, er) if initiator else (er, ei))
        assert ck.integ_in.reveal() == ck.integ_out.reveal() == b""
        assert (ck.encr_out.reveal(), ck.encr_in.reveal()) == \
            ((km[:36], km[36:]) if initiator else (km[36:], km[:36]))
