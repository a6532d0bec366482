"""Review of cli14: `terminate --ike-id N` (now in the CLI) of an established IKE SA whose gateway
redirected it (RFC 5685) to a host name still being resolved. The whole connection's terminate
cancels that wait; one IKE SA's did not, and the answer then started a new IKE SA to the gateway
the admin had just been taken away from."""

from __future__ import annotations

from engine.ike.exchanges.informational import _Informational
from engine.wire.mobility import redirect as redirect_notify

from tests.engine.test_ike_redirect import OTHER, gateways


class _RedirectToName(_Informational):
    name = "INFORMATIONAL (redirect)"

    def build(self, now):
        return [redirect_notify("vpn2.test")]


def test_terminating_a_redirected_ike_sa_by_id_cancels_its_wait_for_the_gateway_name():
    p = gateways(first_to=None)
    asked: list[str] = []
    p.a.names.resolve = asked.append
    p.a.initiate("tun", p.now)
    p.advance(1)
    (sa,) = p.a.sas
    p.b.sas[0].start(_RedirectToName(p.b.sas[0]), p.now)
    p.advance(1)
    assert asked == ["vpn2.test"] and p.a.resolving("tun") == "vpn2.test"
    assert p.a.terminate("tun", p.now, unique_id=sa.unique_id) == 1
    p.advance(2)
    assert not p.a.sas
    assert p.a.resolving("tun") is None
    p.a.resolved("vpn2.test", (OTHER,), p.now)
    p.advance(3)
    assert not p.a.sas and not p.b.sas  # no new IKE SA to the gateway it was redirected to
