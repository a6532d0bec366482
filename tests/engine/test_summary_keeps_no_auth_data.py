"""A message summary keeps no authentication data: it lives on in the runtime's replay
history (~90 handshakes) and crosses to the embedded console's process (LazySummary.parts),
so an AUTH value, an EAP message (MSCHAPv2's NT-Response, a GTC password) or NO_PPK_AUTH's
AUTH value are described at once and dropped; what the negotiation view shows is unchanged."""

from __future__ import annotations

import gc
import pickle

from engine.events import ExchangeReceived, ExchangeSent
from engine.wire.constants import NotifyType
from engine.wire.payloads import AuthPayload, EapPayload, IdPayload, NotifyPayload, SaPayload
from engine.wire.summary import payload_detail, payload_name, summarize_lazy
from tests.engine.ike_pair import LEFT, RIGHT, Pair, connection, mirror, policy

HEADER = (b"\1" * 8, b"\2" * 8, 35, 8, 1)
SECRET = b"correct horse battery staple!!!!"


def _reachable(root) -> list:
    seen: dict[int, object] = {}
    todo = [root]
    while todo:
        o = todo.pop()
        if id(o) in seen or isinstance(o, type):
            continue
        seen[id(o)] = o
        todo.extend(gc.get_referents(o))
    return list(seen.values())


def test_auth_and_eap_data_are_not_kept_and_still_described():
    payloads = [IdPayload(True, 2, b"left.example"), AuthPayload(2, SECRET),
                EapPayload(2, 7, b"\x1a" + SECRET), EapPayload(2, 8, b"\x06" + SECRET),
                NotifyPayload(NotifyType.NO_PPK_AUTH, data=b"\x00\x02" + SECRET), NotifyPayload(16384)]
    s = summarize_lazy(HEADER, payloads)
    crossing = pickle.dumps(s.parts())  # what the engine process sends to the embedded console
    assert SECRET not in crossing
    assert not any(isinstance(o, bytes) and SECRET in o for o in _reachable(s))
    assert s.details == tuple(payload_detail(p) for p in payloads)
    assert s.payloads == tuple(payload_name(p) for p in payloads)
    assert s.payloads[:4] == ("IDi", "AUTH", "EAP/RES/MSCHAPV2", "EAP/RES/GTC")
    assert s.notifies == ("NO_PPK_AUTH", "INITIAL_CONTACT")
    assert dict(s.details[2].fields)["length"] == f"{1 + len(SECRET)} bytes"
    assert s.retained >= 1000


def test_a_handshakes_summaries_keep_no_auth_payload():
    conn = connection()
    p = Pair(policy(conn, address=LEFT), policy(mirror(conn), address=RIGHT))
    p.a.initiate("tun", p.now)
    p.deliver()
    for side in ("a", "b"):
        summaries = [e.message for e in p.of(side, (ExchangeSent, ExchangeReceived))]
        auth = [m for m in summaries if m.exchange == "IKE_AUTH"]
        assert len(auth) == 2 and all("AUTH" in m.payloads for m in auth)
        for m in summaries:
            kept = _reachable(m)
            assert not any(isinstance(o, (AuthPayload, EapPayload)) for o in kept)
            assert any(isinstance(o, SaPayload) for o in kept) or m.exchange != "IKE_SA_INIT"  # still lazy
        for m in auth:
            assert dict(m.details[m.payloads.index("AUTH")].fields) == {"method": "PSK"}
