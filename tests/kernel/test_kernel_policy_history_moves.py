"""Review of the kernel policy history (cli15), MOBIKE moves: a move changes the record of the SA that
moved, and no other holder's. A trap and the CHILD SA its ACQUIRE brought up share the template; the
SA moved, then went (deleted, or its peer gone): the trap's policy kept the moved SA's addresses,
while the datapath's record of the trap (and charon's used_by entry of the trap, which child_sa.c
update() leaves alone) says the configured ones. As charon, the trap's own template goes back in."""

from __future__ import annotations

from engine.datapath.kernel import KernelDatapath
from engine.datapath.xfrm_netlink import XFRM_POLICY_OUT
from engine.policy.model import ChildConfig
from engine.policy.parse import parse_ts

from .test_kernel_move import _installed, _moved, _templates, fake  # noqa: F401  (fake: the fixture)
from .test_kernel_policy_history import NEW, OLD, _deleted

TRAP = ChildConfig("net", local_ts=(parse_ts("198.51.100.1"),), remote_ts=(parse_ts("198.51.100.129"),))


def test_a_trap_keeps_its_template_when_its_sa_moves_and_goes(fake):
    dp = KernelDatapath()
    nl = fake[0]
    dp.install_trap(2, TRAP, "192.0.2.1", "192.0.2.2")
    dp.install_child(_installed(**OLD))  # what the ACQUIRE brought up: the same template
    dp.move_child(_moved(spi_in=OLD["spi_in"], spi_out=OLD["spi_out"], local_addr="192.0.2.3",
                         remote_addr="192.0.2.2"))
    assert _templates(nl)[XFRM_POLICY_OUT] == ("192.0.2.3", "192.0.2.2")  # the SA's traffic follows it
    dp.remove_child(_deleted(**OLD))
    templates = _templates(nl)
    assert templates[XFRM_POLICY_OUT] == ("192.0.2.1", "192.0.2.2")  # the trap's own, as configured
    assert all(v == ("192.0.2.2", "192.0.2.1") for d, v in templates.items() if d != XFRM_POLICY_OUT)
    dp.remove_trap(2)
    assert dp._policies == {}  # (this fake kernel keeps policies: it answers no GETPOLICY)


def test_an_older_sa_sharing_the_template_keeps_its_record_when_the_newer_moves(fake):
    dp = KernelDatapath()
    nl = fake[0]
    older = dict(OLD, remote_addr=NEW["remote_addr"])  # two SAs of the reqid towards one peer address
    dp.install_child(_installed(**older))
    dp.install_child(_installed(**NEW))
    dp.move_child(_moved(spi_in=NEW["spi_in"], spi_out=NEW["spi_out"], ike_sa=2, local_addr="192.0.2.3",
                         remote_addr=NEW["remote_addr"]))
    assert _templates(nl)[XFRM_POLICY_OUT] == ("192.0.2.3", "192.0.2.5")
    dp.remove_child(_deleted(**NEW))
    assert _templates(nl)[XFRM_POLICY_OUT] == ("192.0.2.1", "192.0.2.5")  # the older SA did not move


def test_an_older_sa_moving_with_the_newer_template_changes_only_its_record(fake):
    dp = KernelDatapath()
    nl = fake[0]
    older = dict(OLD, remote_addr=NEW["remote_addr"])
    dp.install_child(_installed(**older))
    dp.install_child(_installed(**NEW))
    dp.move_child(_moved(spi_in=OLD["spi_in"], spi_out=OLD["spi_out"], local_addr="192.0.2.3",
                         remote_addr=NEW["remote_addr"]))
    assert _templates(nl)[XFRM_POLICY_OUT] == ("192.0.2.1", "192.0.2.5")  # the newer's, which did not move
    dp.remove_child(_deleted(**NEW))
    assert _templates(nl)[XFRM_POLICY_OUT] == ("192.0.2.3", "192.0.2.5")  # the older's, where it moved


def test_a_trap_put_in_again_while_its_sa_is_up_leaves_the_sa_template(fake):
    """charon sorts a policy's users by priority, and a trap's (POLICY_PRIORITY_ROUTED) comes after an
    installed SA's whatever the order they came in: a trap installed anew (its peer's name resolved to a
    new address) while its SA is up must not send the SA's traffic towards an address it has no SA for."""
    dp = KernelDatapath()
    nl = fake[0]
    dp.install_trap(2, TRAP, "192.0.2.1", "192.0.2.2")
    dp.install_child(_installed(**OLD))
    dp.remove_trap(2)
    dp.install_trap(2, TRAP, "192.0.2.1", "192.0.2.9")  # the peer's name now resolves elsewhere
    assert _templates(nl)[XFRM_POLICY_OUT] == ("192.0.2.1", "192.0.2.2")  # the SA's, while it is up
    dp.remove_child(_deleted(**OLD))
    assert _templates(nl)[XFRM_POLICY_OUT] == ("192.0.2.1", "192.0.2.9")  # then the trap's
