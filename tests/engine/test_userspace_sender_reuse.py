"""The CHILD SAs of one peer share one sender in the userspace datapath; a CHILD SA installed while
the peer's sender exists takes it without building its ancillary data (IP_PKTINFO naming the SA's
source) and send closure again: that was per-handshake work in a daemon under a handshake load.
The sender is the same object either way, and a new one is built once the last SA of the peer is
gone. No sockets: stand-ins record what the datapath asks of them."""

from __future__ import annotations

import os
import socket

from engine.datapath import userspace
from engine.events import ChildKeys, ChildSaDeleted, ChildSaInstalled
from engine.policy.parse import parse_policy
from engine.policy.ts import parse_ts
from engine.secret import Secret

POLICY = """
[engine]
datapath = "userspace"
listen = ["192.0.2.2"]
"""


def _installed(n: int, *, encap: bool) -> ChildSaInstalled:
    keys = ChildKeys(Secret(os.urandom(36)), Secret(b""), Secret(os.urandom(36)), Secret(b""))
    return ChildSaInstalled(
        ike_sa=n, connection="c", child="lan", unique_id=n, reqid=n, protocol="esp", mode="tunnel",
        spi_in=0x1000 + n, spi_out=0x9000 + n, local_addr="192.0.2.2", remote_addr="192.0.2.1",
        local_ts=(parse_ts("198.51.100.129/32"),), remote_ts=(parse_ts("198.51.100.0/25"),), encr_id=20,
        encr_key_length=256, integ_id=None, esn=False, keys=keys, encap=encap,
        local_port=4500 if encap else 0, remote_port=4500 if encap else 0, initiator=False)


def _deleted(ev: ChildSaInstalled) -> ChildSaDeleted:
    return ChildSaDeleted(ike_sa=ev.ike_sa, connection=ev.connection, child=ev.child, unique_id=ev.unique_id,
                          reqid=ev.reqid, protocol="esp", spi_in=ev.spi_in, spi_out=ev.spi_out,
                          reason="deleted by peer")


class _Sock:
    family = socket.AF_INET

    def fileno(self) -> int:
        return 99

    def sendto(self, data, dest) -> int:
        return len(data)

    def sendmsg(self, bufs, anc, flags, dest) -> int:
        return len(bufs[0])


class _Sockets:
    """UdpSockets as the datapath asks it: a wildcard NAT-T socket (control messages name the source)."""

    def __init__(self) -> None:
        self.sock = _Sock()
        self.controls = 0

    def socket_for(self, local):
        return self.sock

    def source_control(self, local):
        self.controls += 1
        return [(socket.IPPROTO_IP, 8, bytes(4) + socket.inet_aton(local[0]) + bytes(4))]


class _Runtime:
    def __init__(self) -> None:
        self.sockets = _Sockets()


def _datapath(monkeypatch):
    dp = userspace.UserspaceDatapath(parse_policy(POLICY, load_secrets=False))
    dp.runtime = _Runtime()
    dp._raw[(socket.AF_INET, socket.IPPROTO_ESP)] = _Sock()
    monkeypatch.setattr(dp, "route_mtu", lambda sender: 0)  # no kernel route lookup
    built = []
    real = userspace.mmsg.source_pktinfo
    monkeypatch.setattr(userspace.mmsg, "source_pktinfo", lambda *a: built.append(a) or real(*a))
    return dp, built


def test_raw_esp_sas_of_one_peer_share_a_sender_built_once(monkeypatch):
    dp, built = _datapath(monkeypatch)
    first, second = _installed(1, encap=False), _installed(2, encap=False)
    dp.install(first)
    dp.install(second)
    a, b = dp.path.pairs[first.spi_in], dp.path.pairs[second.spi_in]
    assert a.sender is b.sender and a.sender.pairs == {a, b}
    assert len(built) == 1  # the second SA built no ancillary data of its own
    dp.remove(_deleted(first))
    dp.remove(_deleted(second))
    assert not dp._senders
    third = _installed(3, encap=False)
    dp.install(third)
    assert dp.path.pairs[third.spi_in].sender is not a.sender  # the peer's last SA went: a new sender
    assert len(built) == 2


def test_udp_encapsulated_sas_of_one_peer_share_a_sender_built_once(monkeypatch):
    dp, _ = _datapath(monkeypatch)
    first, second = _installed(1, encap=True), _installed(2, encap=True)
    dp.install(first)
    dp.install(second)
    a, b = dp.path.pairs[first.spi_in], dp.path.pairs[second.spi_in]
    assert a.sender is b.sender and a.sender.dest == ("192.0.2.1", 4500)
    assert dp.runtime.sockets.controls == 1
    dp.remove(_deleted(first))
    assert dp._senders  # the second SA still sends through it
    dp.remove(_deleted(second))
    assert not dp._senders
