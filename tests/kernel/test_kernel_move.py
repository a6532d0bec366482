"""MOBIKE in the kernel datapath without a kernel: KernelDatapath.move_child against a
fake NETLINK_XFRM that decodes every request as the kernel would (the real kernel
path runs in the qemu guest: tests/kernel/guest/test_mobike_initiator.py)."""

from __future__ import annotations

import errno
import logging

import pytest

from engine.datapath import kernel as kernel_mod
from engine.datapath.kernel import KernelDatapath, KernelDatapathError
from engine.datapath.kernel_move import OSEQ_GAP, SaMoveError, moved_sa
from engine.datapath.kernel_runtime import KernelRuntimeDatapath
from engine.datapath.kernel_sa import build_sa
from engine.datapath.kernel_socket import NLM_F_DUMP, NetlinkRequestError
from engine.datapath.xfrm_netlink import (
    MSG_NAMES,
    XFRM_MSG_DELSA,
    XFRM_MSG_GETSA,
    XFRM_MSG_NEWPOLICY,
    XFRM_MSG_NEWSA,
    XFRM_MSG_UPDPOLICY,
    XFRM_POLICY_OUT,
    address_text,
    encode_request,
    parse_messages,
)
from engine.events import ChildKeys, ChildSaInstalled, ChildSaMoved
from engine.policy.model import Policy
from engine.policy.ts import parse_ts
from engine.secret import Secret

KEY_IN, KEY_OUT = b"\x01" * 36, b"\x02" * 36


def _decode(msg, msg_type):
    (reply,) = list(parse_messages(encode_request(msg, msg_type, 0, 1)))
    return reply


class FakeXfrm:
    """SAs and policies as the kernel keeps them; GETSA answers with the replay state and
    counters the kernel adds (here: 41 packets sent)."""

    def __init__(self, netns=None, groups=0) -> None:
        self.sas: dict[tuple[str, int], object] = {}
        self.policies: dict[tuple, object] = {}
        self.fail: tuple[int, str] | None = None
        """(message type, daddr) the kernel refuses once."""
        self.log: list[str] = []

    def request(self, msg, msg_type, flags=0):
        req = _decode(msg, msg_type).msg
        self.log.append(MSG_NAMES[msg_type])
        if msg_type == XFRM_MSG_GETSA and flags & NLM_F_DUMP == NLM_F_DUMP:
            return [self._state(sa) for sa in self.sas.values()]
        daddr = req["id"]["daddr"] if msg_type == XFRM_MSG_NEWSA else req.get("daddr")
        where = address_text(daddr, req["family"]) if daddr is not None else ""
        if self.fail == (msg_type, where):
            self.fail = None
            raise NetlinkRequestError(errno.EINVAL, MSG_NAMES[msg_type], "refused by the test")
        if msg_type == XFRM_MSG_NEWSA:
            key = (where, req["id"]["spi"])
            if key in self.sas:
                raise NetlinkRequestError(errno.EEXIST, "NEWSA", "")
            self.sas[key] = req
        elif msg_type in (XFRM_MSG_GETSA, XFRM_MSG_DELSA):
            key = (where, req["spi"])
            if key not in self.sas:
                raise NetlinkRequestError(errno.ESRCH, MSG_NAMES[msg_type], "")
            if msg_type == XFRM_MSG_DELSA:
                del self.sas[key]
                return []
            return [self._state(self.sas[key])]
        elif msg_type in (XFRM_MSG_NEWPOLICY, XFRM_MSG_UPDPOLICY):
            self.policies[(req["dir"], tuple(sorted(req["sel"].items())))] = req
        return []

    @staticmethod
    def _state(stored):
        """A GETSA answer: the SA as added, with the kernel's replay state and counters."""
        attrs = [(n, v) for n, v in stored["attrs"] if n not in ("XFRMA_REPLAY_VAL", "XFRMA_REPLAY_ESN_VAL")]
        attrs.append(("XFRMA_REPLAY_VAL", dict(dict(stored["attrs"]).get("XFRMA_REPLAY_VAL")
                                               or {"oseq": 41, "seq": 7, "bitmap": 0x7F})))
        msg = type(stored)()
        for name in ("sel", "id", "saddr", "lft", "reqid", "family", "mode", "replay_window", "flags"):
            msg[name] = stored[name]
        msg["curlft"] = {"bytes": 4100, "packets": 41, "add_time": 1000, "use_time": 1001}
        msg["attrs"] = attrs
        return _decode(msg, XFRM_MSG_NEWSA)

    def state(self, daddr, spi):
        return self.sas[(daddr, spi)]

    def close(self):
        pass

    def fileno(self):
        return -1


@pytest.fixture
def fake(monkeypatch):
    sockets = []

    def make(netns=None, groups=0):
        sockets.append(FakeXfrm(netns, groups))
        return sockets[-1]

    monkeypatch.setattr(kernel_mod, "XfrmSocket", make)
    return sockets


def _installed(**changes) -> ChildSaInstalled:
    base = dict(ike_sa=1, connection="c", child="net", unique_id=3, reqid=2, protocol="esp", mode="tunnel",
                spi_in=0xC1000001, spi_out=0xC2000001, local_addr="192.0.2.1", remote_addr="192.0.2.2",
                local_ts=(parse_ts("198.51.100.1"),), remote_ts=(parse_ts("198.51.100.129"),),
                encr_id=20, encr_key_length=256, integ_id=None, esn=False, replay_window=32,
                keys=ChildKeys(Secret(KEY_IN), Secret(b""), Secret(KEY_OUT), Secret(b"")))
    base.update(changes)
    return ChildSaInstalled(**base)


def _moved(**changes) -> ChildSaMoved:
    base = dict(ike_sa=1, connection="c", child="net", spi_in=0xC1000001, spi_out=0xC2000001,
                local_addr="192.0.2.3", remote_addr="192.0.2.2", local_port=4500, remote_port=4501, encap=True)
    base.update(changes)
    return ChildSaMoved(**base)


def _templates(nl) -> dict[int, tuple[str, str]]:
    out = {}
    for (direction, _), pol in nl.policies.items():
        tmpls = pol.get_attr("XFRMA_TMPL")
        if tmpls:
            t = tmpls[0]
            out[direction] = (address_text(t["saddr"], t["family"]), address_text(t["id"]["daddr"], t["family"]))
    return out


def test_a_move_keeps_spis_keys_and_sequence_numbers_on_the_new_addresses(fake):
    dp = KernelDatapath()
    nl = fake[0]
    dp.install_child(_installed())
    lft = {d: dict(nl.state(a, spi)["lft"]) for d, a, spi in (("in", "192.0.2.1", 0xC1000001),
                                                              ("out", "192.0.2.2", 0xC2000001))}
    dp.move_child(_moved())

    assert set(nl.sas) == {("192.0.2.3", 0xC1000001), ("192.0.2.2", 0xC2000001)}
    sa_in, sa_out = nl.state("192.0.2.3", 0xC1000001), nl.state("192.0.2.2", 0xC2000001)
    assert address_text(sa_in["saddr"], 2) == "192.0.2.2" and address_text(sa_out["saddr"], 2) == "192.0.2.3"
    assert sa_in.get_attr("XFRMA_ALG_AEAD")["alg_key"] == KEY_IN
    assert sa_out.get_attr("XFRMA_ALG_AEAD")["alg_key"] == KEY_OUT
    # inbound: the replay window goes on; outbound: never a sequence number (GCM nonce) again
    assert sa_in.get_attr("XFRMA_REPLAY_VAL") == {"oseq": 41, "seq": 7, "bitmap": 0x7F}
    assert sa_out.get_attr("XFRMA_REPLAY_VAL")["oseq"] == 41 + OSEQ_GAP and OSEQ_GAP >= 1 << 16
    assert sa_out.get_attr("XFRMA_LTIME_VAL")["packets"] == 41  # the counters go on too
    assert (sa_in.get_attr("XFRMA_ENCAP")["encap_sport"], sa_in.get_attr("XFRMA_ENCAP")["encap_dport"]) == \
        (4501, 4500)
    assert (sa_out.get_attr("XFRMA_ENCAP")["encap_sport"], sa_out.get_attr("XFRMA_ENCAP")["encap_dport"]) == \
        (4500, 4501)
    assert sa_out["reqid"] == sa_in["reqid"] and (sa_in["lft"], sa_out["lft"]) == (lft["in"], lft["out"])
    templates = _templates(nl)
    assert templates[XFRM_POLICY_OUT] == ("192.0.2.3", "192.0.2.2")
    assert all(v == ("192.0.2.2", "192.0.2.3") for d, v in templates.items() if d != XFRM_POLICY_OUT)
    assert "NEWSA" in nl.log[-6:] and nl.log.count("UPDPOLICY") == 3  # out, in, fwd templates

    # counters and expiries find the SAs under their new addresses; a second move undoes encap
    assert {(c.spi, c.direction, c.packets) for c in dp.counters()} == {(0xC1000001, "in", 41),
                                                                        (0xC2000001, "out", 41)}
    dp.move_child(_moved(local_addr="192.0.2.1", encap=False, local_port=0, remote_port=0))
    assert set(nl.sas) == {("192.0.2.1", 0xC1000001), ("192.0.2.2", 0xC2000001)}
    assert nl.state("192.0.2.1", 0xC1000001).get_attr("XFRMA_ENCAP") is None
    assert _templates(nl)[XFRM_POLICY_OUT] == ("192.0.2.1", "192.0.2.2")


def test_a_refused_move_puts_the_pair_back_as_it_was(fake):
    dp = KernelDatapath()
    nl = fake[0]
    dp.install_child(_installed())
    before = {k: (nl.state(*k).get_attr("XFRMA_ALG_AEAD")["alg_key"], nl.state(*k)["saddr"]) for k in nl.sas}
    templates = _templates(nl)
    nl.fail = (XFRM_MSG_NEWSA, "192.0.2.2")  # the outbound SA, after the inbound one moved
    with pytest.raises(KernelDatapathError, match="refused by the test"):
        dp.move_child(_moved())
    after = {k: (nl.state(*k).get_attr("XFRMA_ALG_AEAD")["alg_key"], nl.state(*k)["saddr"]) for k in nl.sas}
    assert after == before and _templates(nl) == templates
    # the outbound SA came back past the sequence numbers it may have sent meanwhile
    assert nl.state("192.0.2.2", 0xC2000001).get_attr("XFRMA_REPLAY_VAL")["oseq"] == 41 + OSEQ_GAP
    dp.remove_child(_installed())  # still known under its old addresses
    assert nl.sas == {}


def test_transport_mode_and_unknown_pairs_are_refused_untouched(fake):
    dp = KernelDatapath()
    nl = fake[0]
    dp.install_child(_installed(mode="transport", local_ts=(parse_ts("192.0.2.1"),),
                                remote_ts=(parse_ts("192.0.2.2"),)))
    sas = dict(nl.sas)
    with pytest.raises(KernelDatapathError, match="transport mode"):
        dp.move_child(_moved())
    with pytest.raises(KernelDatapathError, match="not installed"):
        dp.move_child(_moved(spi_in=0xC1000009))
    assert nl.sas == sas


def test_an_sa_without_replay_state_is_not_moved():
    msg = _decode(build_sa(_installed(), False, 0x15E00002), XFRM_MSG_NEWSA).msg
    with pytest.raises(SaMoveError, match="replay state"):
        moved_sa(msg, False, _moved())


class _Endpoint:
    def __init__(self) -> None:
        self.rekeyed: list[int] = []

    def rekey_child_spi(self, spi_in, now):
        self.rekeyed.append(spi_in)


class _Runtime:
    def __init__(self) -> None:
        self.endpoint = _Endpoint()

    def now(self) -> float:
        return 5.0


def test_the_runtime_moves_in_the_kernel_and_rekeys_only_when_that_fails(fake, caplog):
    dp = KernelRuntimeDatapath(Policy())
    dp.kernel = KernelDatapath()
    dp.runtime = _Runtime()
    dp.install(_installed())
    dp.move(_moved())
    assert dp.runtime.endpoint.rekeyed == []
    assert ("192.0.2.3", 0xC1000001) in fake[0].sas
    with caplog.at_level(logging.WARNING, logger="engine.datapath.kernel_runtime"):
        dp.move(_moved(spi_in=0xC1000009))
    assert dp.runtime.endpoint.rekeyed == [0xC1000009]
    assert "rekeying it instead" in caplog.text and "not installed" in caplog.text


def _outbound_state(esn: bool, oseq: int, oseq_hi: int = 0):
    """A GETSA answer of an outbound SA that has sent up to ``oseq_hi:oseq``."""
    msg = build_sa(_installed(esn=esn, replay_window=64), False, 0x15E00002)
    attrs = [(n, v) for n, v in msg["attrs"] if n != "XFRMA_REPLAY_ESN_VAL"]
    if esn:
        attrs.append(("XFRMA_REPLAY_ESN_VAL", {"bmp_len": 1, "oseq": oseq, "seq": 0, "oseq_hi": oseq_hi,
                                               "seq_hi": 0, "replay_window": 1}))
    else:
        attrs.append(("XFRMA_REPLAY_VAL", {"oseq": oseq, "seq": 0, "bitmap": 0}))
    msg["attrs"] = attrs
    msg["curlft"] = {"bytes": 1, "packets": 1, "add_time": 0, "use_time": 0}
    return _decode(msg, XFRM_MSG_NEWSA).msg


def test_esn_sequence_numbers_carry_into_the_high_half_and_32_bit_ones_do_not_wrap():
    moved = _decode(moved_sa(_outbound_state(True, 0xFFFFFFF0, 2), False, _moved()), XFRM_MSG_NEWSA).msg
    replay = moved.get_attr("XFRMA_REPLAY_ESN_VAL")
    assert (replay["oseq_hi"], replay["oseq"]) == (3, (0xFFFFFFF0 + OSEQ_GAP) & 0xFFFFFFFF)
    assert moved.get_attr("XFRMA_ALG_AEAD")["alg_key"] == KEY_OUT
    with pytest.raises(SaMoveError, match="rekey is due"):
        moved_sa(_outbound_state(False, 0xFFFFFFF0), False, _moved())
