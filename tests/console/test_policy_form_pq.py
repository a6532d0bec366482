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


def test_sa_detail_names_what_makes_an_sa_quantum_safe():
    import dataclasses

    from console.screens.sa_detail import child_facts, ike_facts
    from engine.status import ChildSaInfo, IkeSaInfo

    ike = IkeSaInfo("c", 1, "ESTABLISHED", True, 1, 2, "192.0.2.1", 500, "192.0.2.2", 500)
    assert "quantum-safe" not in dict(ike_facts(ike))
    hybrid = dataclasses.replace(ike, additional_ke=("KE1_ML_KEM_768",), ppk=True, quantum_safe=True)
    assert dict(ike_facts(hybrid))["quantum-safe"] == "yes (KE1_ML_KEM_768, PPK)"
    child = ChildSaInfo("lan", 1, 1, "INSTALLED", "esp", "tunnel", False, 1, 2, quantum_safe=True)
    assert dict(child_facts(child, None))["quantum-safe"].startswith("yes")


def test_dashboard_rows_mark_quantum_safe_sas():
    import dataclasses

    from console.widgets.sa_tables import child_row, ike_row
    from engine.status import ChildSaInfo, IkeSaInfo

    ike = IkeSaInfo("c", 1, "ESTABLISHED", True, 1, 2, "192.0.2.1", 500, "192.0.2.2", 500, ke="CURVE_25519")
    child = ChildSaInfo("lan", 1, 1, "INSTALLED", "esp", "tunnel", False, 1, 2)
    assert not any("+PQ" in cell for cell in ike_row(ike) + child_row(ike, child, None))
    safe = dataclasses.replace(ike, quantum_safe=True, additional_ke=("KE1_ML_KEM_768",))
    assert any(cell.endswith("+PQ") for cell in ike_row(safe))
    assert any(cell.endswith("+PQ") for cell in child_row(safe, dataclasses.replace(child, quantum_safe=True), None))
