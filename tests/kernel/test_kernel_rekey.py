"""A CHILD SA rekey in the kernel datapath without packet loss (against the fake
NETLINK_XFRM of test_kernel_move), as charon's child_sa.c and the userspace datapath:

* the rekey's responder installs its new outbound SA only when the old pair goes (the
  initiator installs its inbound SA only on our CREATE_CHILD_SA response: sending on the
  new SA before that loses packets; the kernel takes the newest outbound SA of the reqid);
* a rekeyed pair's inbound SA accepts packets still in flight for a while after its
  delete (charon's delete_rekeyed_delay), its outbound SA goes at once.
"""

from __future__ import annotations

import asyncio

from engine.datapath.kernel import KernelDatapath
from engine.datapath.kernel_runtime import KernelRuntimeDatapath
from engine.events import ChildSaDeleted
from engine.policy.model import Policy

from .test_kernel_move import _installed, _moved, fake  # noqa: F401  (fake: the fixture)

OLD_IN, OLD_OUT, NEW_IN, NEW_OUT = 0xC1000001, 0xC2000001, 0xC1000002, 0xC2000002


def _new(**changes):
    return _installed(spi_in=NEW_IN, spi_out=NEW_OUT, unique_id=4, rekeyed_from=OLD_IN, **changes)


def _deleted(spi_in=OLD_IN, spi_out=OLD_OUT, reason="rekeyed"):
    return ChildSaDeleted(ike_sa=1, connection="c", child="net", unique_id=3, reqid=2, protocol="esp",
                          spi_in=spi_in, spi_out=spi_out, local_addr="192.0.2.1", remote_addr="192.0.2.2",
                          reason=reason)


def test_the_rekey_responder_sends_on_the_new_sa_only_once_the_old_pair_is_gone(fake):
    dp = KernelDatapath()
    nl = fake[0]
    dp.install_child(_installed())
    dp.install_child(_new(initiator=False))
    # the initiator may not have the new inbound SA yet: we keep sending on the old one
    assert set(nl.sas) == {("192.0.2.1", OLD_IN), ("192.0.2.2", OLD_OUT), ("192.0.2.1", NEW_IN)}
    dp.remove_child(_deleted(reason="deleted by peer"))
    assert set(nl.sas) == {("192.0.2.1", NEW_IN), ("192.0.2.2", NEW_OUT)}
    assert nl.state("192.0.2.2", NEW_OUT).get_attr("XFRMA_ALG_AEAD")["alg_key"] == b"\x02" * 36
    # the new outbound SA went in before the old one went out: no moment without one
    log = [m for m in nl.log if m in ("NEWSA", "DELSA")]
    assert log[-3:] == ["NEWSA", "DELSA", "DELSA"]
    assert {(c.spi, c.direction) for c in dp.counters()} == {(NEW_IN, "in"), (NEW_OUT, "out")}


def test_the_rekey_initiator_sends_on_the_new_sa_at_once(fake):
    dp = KernelDatapath()
    nl = fake[0]
    dp.install_child(_installed())
    dp.install_child(_new(initiator=True))
    assert ("192.0.2.2", NEW_OUT) in nl.sas


def test_a_waiting_outbound_sa_follows_a_move_and_goes_with_its_pair(fake):
    dp = KernelDatapath()
    nl = fake[0]
    dp.install_child(_installed())
    dp.install_child(_new(initiator=False))
    dp.move_child(_moved(spi_in=NEW_IN, spi_out=NEW_OUT, remote_addr="192.0.2.9", encap=False,
                         local_port=0, remote_port=0, local_addr="192.0.2.1"))
    dp.remove_child(_deleted(reason="deleted by peer"))
    assert set(nl.sas) == {("192.0.2.1", NEW_IN), ("192.0.2.9", NEW_OUT)}
    # a new pair deleted while it waits leaves nothing behind
    dp.install_child(_installed(spi_in=0xC1000003, spi_out=0xC2000003, unique_id=5, rekeyed_from=NEW_IN,
                                initiator=False))
    dp.remove_child(_deleted(spi_in=0xC1000003, spi_out=0xC2000003, reason="deleted by peer"))
    dp.remove_child(_deleted(spi_in=NEW_IN, spi_out=NEW_OUT, reason="deleted by peer"))
    assert nl.sas == {}


def test_a_rekeyed_inbound_sa_lingers_for_packets_in_flight(fake):
    dp = KernelDatapath()
    nl = fake[0]
    dp.install_child(_installed())
    dp.install_child(_new(initiator=True))
    dp.remove_child(_deleted(), linger=True)
    assert set(nl.sas) == {("192.0.2.1", OLD_IN), ("192.0.2.1", NEW_IN), ("192.0.2.2", NEW_OUT)}
    dp.forget(OLD_IN)
    assert set(nl.sas) == {("192.0.2.1", NEW_IN), ("192.0.2.2", NEW_OUT)}
    dp.forget(OLD_IN)  # twice is harmless


def test_the_runtime_lets_rekeyed_inbound_sas_linger(fake, monkeypatch):
    from engine.datapath import kernel_runtime

    monkeypatch.setattr(kernel_runtime, "REKEYED_INBOUND_LINGER", 0.01)

    async def main():
        dp = KernelRuntimeDatapath(Policy())
        dp.kernel = KernelDatapath()
        dp._loop = asyncio.get_running_loop()
        nl = fake[0]
        dp.install(_installed())
        dp.install(_new(initiator=True))
        dp.remove(_deleted())
        assert ("192.0.2.1", OLD_IN) in nl.sas and ("192.0.2.2", OLD_OUT) not in nl.sas
        await asyncio.sleep(0.05)
        assert ("192.0.2.1", OLD_IN) not in nl.sas
        dp.remove(_deleted(spi_in=NEW_IN, spi_out=NEW_OUT, reason="deleted by peer"))
        assert nl.sas == {}

    asyncio.run(main())


def test_a_child_sa_the_kernel_refuses_is_deleted_with_the_peer(fake, monkeypatch):
    """The runtime deletes a CHILD SA its datapath could not install (else the peer sends into
    nothing while both ends show it up); the kernel datapath must tell it, not only log."""
    from engine.datapath.xfrm_netlink import XFRM_MSG_NEWSA
    from engine.runtime.engine import EngineRuntime

    dp = KernelRuntimeDatapath(Policy())
    runtime = EngineRuntime(Policy(), datapath=dp)
    dp.runtime, dp.kernel = runtime, KernelDatapath()
    failed = []
    monkeypatch.setattr(runtime.endpoint, "child_install_failed",
                        lambda spi_in, now, reason: failed.append((spi_in, reason)))
    fake[0].fail = (XFRM_MSG_NEWSA, "192.0.2.2")  # the outbound SA
    runtime._dispatch(_installed())
    assert [spi for spi, _ in failed] == [OLD_IN] and "refused by the test" in failed[0][1]
    assert fake[0].sas == {} and fake[0].policies == {}
