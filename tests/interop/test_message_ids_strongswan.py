"""Message IDs after a request we cannot decode, against charon (issue 15,
item 4). charon's DPD request reaches our daemon with a critical payload of
an unknown type added (tests/interop/tamper_daemon.py re-encrypts it with
charon's own keys, so charon's Message IDs stay its own). We must answer
UNSUPPORTED_CRITICAL_PAYLOAD as that exchange's response and expect the next
Message ID (RFC 7296 §2.21.2, §3.2): charon's later requests are answered and
the IKE SA lives on. Were the Message ID not advanced, every later request of
charon's would be dropped and charon would give up on the IKE SA."""

from __future__ import annotations

import contextlib
import re

import pytest

from tests.interop.lab import Charon, Ours, lab, our_policy, wait_for

pytestmark = pytest.mark.interop

CBC = "aes256-sha256-x25519"  # the tamper hook re-encrypts as charon; GCM's counter IVs would collide
FAST_RETRANSMIT = "retransmit_timeout = 1\nretransmit_base = 1.4\nretransmit_tries = 2"


def informational(o: Ours, sent: bool) -> list[dict]:
    kind = "ExchangeSent" if sent else "ExchangeReceived"
    return [e["message"] for e in o.events(kind) if e["message"]["exchange"] == "INFORMATIONAL"]

@contextlib.contextmanager
def tampered_pair(tmp_path, monkeypatch, kind: str):
    """charon (DPD every second) and our tamper daemon (tests/interop/tamper_daemon.py, ``kind``)
    in the lab, our IKE SA initiated; yields (charon, ours, the file the tampered Message ID is
    written to). Both stopped, and their logs printed, on the way out."""
    record = tmp_path / "tampered-mid"
    monkeypatch.setenv("IPSEC_CONSOLE_TAMPER_RECORD", str(record))
    monkeypatch.setenv("IPSEC_CONSOLE_TAMPER_KIND", kind)
    with lab() as L:
        c = Charon(L, "right", tmp_path, proposals=CBC, dpd_delay="1s", retransmit=FAST_RETRANSMIT)
        o = Ours(L, "left", tmp_path, our_policy("left", proposals=(CBC,)))
        started = []
        try:
            started.append(c.start())
            started.append(o.start("--datapath", "none", entry=("tests.interop.tamper_daemon",)))
            o.watch_events()
            o.cli("initiate", "psk-tunnel")
            yield c, o, record
        finally:
            for x in reversed(started):
                x.stop()
            for x in started:
                print(f"===== {x.dir.name} log (tail)\n{x.log()[-6000:]}")


def test_a_request_with_an_unknown_critical_payload_leaves_the_ike_sa_working(tmp_path, monkeypatch):
    with tampered_pair(tmp_path, monkeypatch, "critical") as (c, o, record):
        wait_for(lambda: any(sa["state"] == "ESTABLISHED" for sa in o.sas()), what="our IKE SA")
        ike_spi = o.sas()[0]["spi_i"]
        wait_for(record.exists, what="charon's first DPD, tampered on its way in")
        mid = int(record.read_text())

        # our answer to the tampered request: the error, with charon's Message ID
        answer = wait_for(lambda: [m for m in informational(o, sent=True) if m["response"] and m["mid"] == mid],
                          what=f"our answer to Message ID {mid}")[0]
        assert answer["notifies"] == ["UNSUPPORTED_CRITICAL_PAYLOAD"]
        # charon's next two DPDs are accepted and answered
        for later in (mid + 1, mid + 2):
            wait_for(lambda: [m for m in informational(o, sent=True) if m["response"] and m["mid"] == later],
                     timeout=15, what=f"our answer to charon's DPD with Message ID {later}")
        # and nobody gave up on the IKE SA: the same one is up on both ends
        assert [sa["spi_i"] for sa in o.sas() if sa["state"] == "ESTABLISHED"] == [ike_spi]
        listing = c.list_sas()
        assert "ESTABLISHED" in listing and f"{ike_spi:016x}" in listing
        assert not re.search(r"retransmit \d+ of request with message ID", c.log())


def test_a_request_we_cannot_decode_ends_the_ike_sa_on_both_ends(tmp_path, monkeypatch):
    """The same with a request that cannot be decoded (a Notify of one byte inside SK): we answer
    INVALID_SYNTAX, which is fatal in both peers (RFC 7296 §2.21.3). charon destroys its IKE SA
    when it reads our answer; ours must go too, or our half stays installed with nobody behind it
    (a black hole until our DPD gives up)."""
    with tampered_pair(tmp_path, monkeypatch, "malformed") as (c, o, record):
        # From the events, not `sas`: the IKE SA lives only until charon's first DPD (a second),
        # which a slow poll can miss.
        wait_for(lambda: any(e["new"] == "ESTABLISHED" for e in o.events("IkeSaStateChanged")),
                 what="our IKE SA")
        wait_for(record.exists, what="charon's first DPD, tampered on its way in")
        mid = int(record.read_text())
        answer = wait_for(lambda: [m for m in informational(o, sent=True) if m["response"] and m["mid"] == mid],
                          what=f"our answer to Message ID {mid}")[0]
        assert answer["notifies"] == ["INVALID_SYNTAX"]
        wait_for(lambda: "destroying IKE_SA" in c.log(), what="charon destroying its IKE SA on our answer")
        wait_for(lambda: not [sa for sa in o.sas() if sa["state"] != "DESTROYED"], timeout=5,
                 what="our IKE SA gone too (without waiting for DPD)")
        assert "ESTABLISHED" not in c.list_sas()
