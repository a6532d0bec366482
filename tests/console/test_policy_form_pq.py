"""The policy form's defaults for new connections follow what the engine negotiates (issue 11)."""

from __future__ import annotations

import tomlkit

from engine.crypto import kem
from engine.crypto.transforms import KeId
from engine.policy import pq
from console.policy_form import add_node


def new_connection_proposals() -> list[str]:
    doc = tomlkit.document()
    add_node(doc, ("connection", "branch"))
    return list(doc["connections"]["branch"]["proposals"])


def test_new_connections_default_to_the_hybrid_proposal():
    assert "additional_ke" in pq.NEGOTIATED
    if kem.mlkem_available(KeId.ML_KEM_768):
        assert new_connection_proposals() == [pq.HYBRID_EXAMPLE]


def test_classic_default_without_ml_kem_or_negotiation(monkeypatch):
    monkeypatch.setattr(kem, "_mlkem", None)
    assert new_connection_proposals() == ["aes256gcm16-prfsha384-x25519"]
    monkeypatch.undo()
    monkeypatch.setattr(pq, "NEGOTIATED", frozenset())
    assert new_connection_proposals() == ["aes256gcm16-prfsha384-x25519"]


def test_the_ladder_draws_intermediate_and_followup_rounds_whole():
    from engine.events import ExchangeReceived, ExchangeSent, MessageSummary
    from console.screens.negotiations import ladder_label

    def msg(exchange, mid, response, fragments=1):
        return MessageSummary(exchange, mid, response, True, 1, 2, 1700, ("KE",), fragments=fragments)

    sent = ladder_label(ExchangeSent(1, "c", msg("IKE_INTERMEDIATE", 1, False, 2), 10.0), 10.0, {}).plain
    got = ladder_label(ExchangeReceived(1, "c", msg("IKE_FOLLOWUP_KE", 12, True), 10.5), 10.0, {}).plain
    assert "INTERMEDIATE req 1 " in sent and "⧉2" in sent and sent.split()[1].startswith("●")
    assert "FOLLOWUP_KE resp 12 " in got and "…" not in got
