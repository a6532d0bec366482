"""Two CHILD SAs of one reqid and selectors with different tunnel endpoints (make-before-break
reauthentication from a new address, a peer behind two addresses): the kernel has one policy per
selector and direction, whose template names the newer SA's endpoints. When the newer went first, the
policy kept its template and the older SA's traffic went towards an address without an SA. As
charon's policy_entry used_by list (kernel_netlink_ipsec.c), the policy now goes back to the newest
remaining SA's template; a move of the SA not in the kernel changes only its own record."""

from __future__ import annotations

from engine.datapath.kernel import KernelDatapath
from engine.datapath.xfrm_netlink import XFRM_POLICY_OUT
from engine.events import ChildSaDeleted

from .test_kernel_move import _installed, _moved, _templates, fake  # noqa: F401  (fake: the fixture)

OLD = dict(spi_in=0xC1000001, spi_out=0xC2000001, remote_addr="192.0.2.2", unique_id=3)
NEW = dict(spi_in=0xC1000002, spi_out=0xC2000002, remote_addr="192.0.2.5", unique_id=4, ike_sa=2)


def _deleted(spi_in, spi_out, remote_addr, unique_id, ike_sa=1):
    return ChildSaDeleted(ike_sa=ike_sa, connection="c", child="net", unique_id=unique_id, reqid=2,
                          protocol="esp", spi_in=spi_in, spi_out=spi_out, local_addr="192.0.2.1",
                          remote_addr=remote_addr, reason="deleted by peer")


def test_the_newer_going_first_puts_the_older_template_back(fake):
    dp = KernelDatapath()
    nl = fake[0]
    dp.install_child(_installed(**OLD))
    assert _templates(nl)[XFRM_POLICY_OUT] == ("192.0.2.1", "192.0.2.2")
    dp.install_child(_installed(**NEW))
    assert _templates(nl)[XFRM_POLICY_OUT] == ("192.0.2.1", "192.0.2.5")
    dp.remove_child(_deleted(**NEW))
    templates = _templates(nl)
    assert templates[XFRM_POLICY_OUT] == ("192.0.2.1", "192.0.2.2")
    assert all(v == ("192.0.2.2", "192.0.2.1") for d, v in templates.items() if d != XFRM_POLICY_OUT)
    dp.remove_child(_deleted(**OLD))
    assert nl.sas == {}


def test_the_older_going_first_leaves_the_newer_template(fake):
    dp = KernelDatapath()
    nl = fake[0]
    dp.install_child(_installed(**OLD))
    dp.install_child(_installed(**NEW))
    updates = nl.log.count("UPDPOLICY")
    dp.remove_child(_deleted(**OLD))
    assert _templates(nl)[XFRM_POLICY_OUT] == ("192.0.2.1", "192.0.2.5")
    assert nl.log.count("UPDPOLICY") == updates  # nothing to change


def test_a_move_of_the_older_sa_changes_only_its_record(fake):
    dp = KernelDatapath()
    nl = fake[0]
    dp.install_child(_installed(**OLD))
    dp.install_child(_installed(**NEW))
    dp.move_child(_moved(spi_in=OLD["spi_in"], spi_out=OLD["spi_out"], local_addr="192.0.2.3",
                         remote_addr="192.0.2.2"))
    assert _templates(nl)[XFRM_POLICY_OUT] == ("192.0.2.1", "192.0.2.5")  # the newer's, still
    dp.remove_child(_deleted(**NEW))
    assert _templates(nl)[XFRM_POLICY_OUT] == ("192.0.2.3", "192.0.2.2")  # the older's, where it moved
