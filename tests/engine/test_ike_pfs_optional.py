"""Optional PFS for CHILD SAs (a KE list holding NONE, strongSwan's '-modpnone'), as charon's
select_algo reads it, and PFS answers we refuse. Sans-IO pairs (tests/engine/ike_pair.py)."""

from __future__ import annotations

import dataclasses

from engine.events import ChildState, NegotiationFailed
from engine.ike import proposals as props
from engine.policy.proposals import parse_proposal

from tests.engine.ike_pair import child, connection, live, mirror
from tests.engine.ike_pair import started as make


# ====================================================================== optional PFS ("-none")
def test_pfs_mismatch_hint_with_only_none_configured_does_not_raise():
    """esp_proposals = 'aes256gcm16-none' (KE NONE only) against an offer with no KE at all:
    the hint must not index an empty list of our groups (IndexError out of the engine)."""
    offered = props.to_wire([parse_proposal("aes256gcm16", "esp")], b"\1\2\3\4", with_ke=False)
    props.pfs_mismatch(offered, [parse_proposal("aes256gcm16-none", "esp")])


def test_a_rekey_without_pfs_to_a_responder_with_optional_pfs_is_accepted():
    """charon's select_algo: for ESP/AH a KE list holding NONE accepts an offer without a KE
    transform (PFS optional, 'aes256gcm16-x25519-modpnone' or '-none')."""
    for ours in ("aes256gcm16-none", "aes256gcm16-x25519-modpnone"):
        a = connection(children=[child(esp=("aes256gcm16",))])
        b = mirror(a, children=tuple(dataclasses.replace(c, proposals=(parse_proposal(ours, "esp"),))
                                     for c in mirror(a).children))
        p = make(a, b)
        p.a.rekey("tun", p.now)
        p.advance(5)
        assert not [e for e in p.of("b", NegotiationFailed)], ours
        assert not [e for e in p.of("a", NegotiationFailed)], ours
        (sa_a,) = live(p, "a")
        assert [c.state for c in sa_a.children.values()] == [ChildState.INSTALLED], ours


def test_our_optional_pfs_rekey_answered_without_pfs_is_accepted():
    """We offer x25519 or NONE ('-modpnone'); a peer without PFS picks NONE and answers
    without a KE payload (charon does): that is the answer we asked for, not a refusal."""
    a = connection(children=[child(esp=("aes256gcm16-x25519-modpnone",))])
    b = mirror(a, children=tuple(dataclasses.replace(c, proposals=(parse_proposal("aes256gcm16", "esp"),))
                                 for c in mirror(a).children))
    p = make(a, b)
    p.a.rekey("tun", p.now)
    p.advance(5)
    assert not p.of("a", NegotiationFailed) and not p.of("b", NegotiationFailed)
    (sa_a,) = live(p, "a")
    (c,) = sa_a.children.values()
    assert c.state == ChildState.INSTALLED and c.ke_group is None


def test_a_pfs_rekey_answered_with_an_sa_but_no_ke_is_followed_by_a_delete_of_the_peer_sa():
    """We require PFS; the peer answers with its SA and no KE payload: refused, and like the
    other refused answers that carry the peer's SA, followed by a Delete of it (charon's
    ke_failed -> delete_failed_sa)."""
    from engine.wire.constants import ExchangeType
    from engine.wire.payloads import KePayload, SaPayload
    from tests.engine.test_ike_edges import rewrite_answers

    p = make(connection(children=[child(esp=("aes256gcm16-x25519",))]))
    made: list[bytes] = []

    def no_ke(payloads):
        made.extend(x.proposals[0].spi for x in payloads if isinstance(x, SaPayload))
        return [x for x in payloads if not isinstance(x, KePayload)]

    p.filter = rewrite_answers(p, "b", ExchangeType.CREATE_CHILD_SA, no_ke)
    p.a.rekey("tun", p.now)
    p.advance(1)
    assert [e.notify for e in p.of("a", NegotiationFailed)] == ["INVALID_KE_PAYLOAD"]
    assert made and all(c.spi_in not in made for c in live(p, "b")[0].children.values()), \
        "the peer's new SA stays installed"
