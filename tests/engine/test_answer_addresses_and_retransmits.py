"""Review of the fix16 merge (revfix16): adversarial cases around answers held for a CRL fetch,
MOBIKE NAT detection in DPDs and the CHILD SAs that follow a NATed peer. Sans-IO pairs."""

from __future__ import annotations

from engine.events import ChildSaInstalled
from engine.runtime.crlfetch import CrlFetcher

from tests.engine.test_crl_fetch import _fetch_all, _serve_crl, server  # noqa: F401 (fixture)
from tests.engine.test_eap_tls_crl_fetch import _eap_tls_pair, _held, pki  # noqa: F401 (fixture)

SPOOFED = ("198.51.100.66", 4500)


def test_a_forged_copy_of_a_held_request_does_not_say_where_its_answer_goes(server, pki):  # noqa: F811
    """The gateway holds the client's IKE_AUTH request while a CRL is fetched. Someone who saw
    its header (SPIs, Message ID) sends a copy that does not authenticate from another address:
    the answer, given when the fetch ends, must still go where the authenticated request came
    from (RFC 7296 §2.11), not be reflected to the forger's address."""
    p = _eap_tls_pair(pki, "strict")
    _serve_crl(server, pki)
    held: list = []

    def watch(side, d):
        if side == "a":
            held.append(d)
        return True

    p.filter = watch
    p.a.initiate("tun", p.now)
    p.advance(0.5)
    assert _held(p) == 1
    genuine = held[-1]
    forged = bytearray(genuine.data[4:] if genuine.data.startswith(bytes(4)) else genuine.data)
    forged[-1] ^= 0xFF  # same header, fails its integrity check
    p.b.receive_datagram(bytes(forged), genuine.remote, SPOOFED, p.now)
    p.collect()
    _fetch_all(CrlFetcher(), creds=p.b.credentials)
    p.b.retry_held(p.now)
    p.collect()
    sent = [d for side, d in p.wire if side == "b"]
    assert sent, "the held request was not answered when the fetch ended"
    assert all(d.remote != SPOOFED for d in sent), "the answer went to the forger's address"
    p.advance(2)
    assert p.of("a", ChildSaInstalled) and p.of("b", ChildSaInstalled)


def test_only_an_identical_copy_of_the_last_request_gets_the_answer_again():
    """A retransmitted request gets the cached answer again, to wherever it came from (RFC 7296
    §2.1, §2.11). Nothing of it is authenticated but its bytes: charon's is_retransmit answers only
    a copy whose hash is the request's. A message with the same SPIs and Message ID and other
    bytes (forged by someone who saw the header on the path, or a few bytes with a spoofed source)
    must not reflect our answer, possibly many fragments, to another address."""
    from tests.engine.ike_pair import started

    p = started()
    seen: list = []
    p.filter = lambda side, d: seen.append((side, d)) or True
    sa_a = p.a.sas[0]
    sa_a.start(p.a.exchanges.dpd(sa_a), p.now)
    p.advance(1)
    request = next(d for side, d in seen if side == "a")
    data = request.data[4:] if request.data.startswith(bytes(4)) else request.data
    p.collect()
    p.wire.clear()
    forged = bytearray(data)
    forged[-1] ^= 0xFF
    p.b.receive_datagram(bytes(forged), request.remote, SPOOFED, p.now)
    p.b.receive_datagram(bytes(forged[:40]), request.remote, SPOOFED, p.now)
    p.collect()
    assert not [d for side, d in p.wire if side == "b"], "the cached answer went to another address"
    p.b.receive_datagram(data, request.remote, SPOOFED, p.now)  # an exact copy: answered where it came from
    p.collect()
    assert [d.remote for side, d in p.wire if side == "b"] == [SPOOFED]


def test_a_client_behind_a_nat_does_not_follow_the_gateways_packet_from_elsewhere():
    """RFC 7296 §2.23: "A host behind a NAT SHOULD NOT do this type of dynamic address update ...
    it opens a possible DoS attack (such as allowing an attacker to break the connection with a
    single packet)"; charon's update_hosts follows the other end only when we are not both behind
    a NAT and the original initiator. Now that the CHILD SAs follow the IKE SA (ChildSaMoved), one
    authenticated copy from elsewhere (an on-path attacker winning the race) would send our ESP
    there too."""
    from engine.events import ChildSaMoved

    from tests.engine.test_mobike_addresses_only_by_update import _dpd_from

    p = __import__("tests.engine.test_ike_mobike", fromlist=["pair"]).pair(client_mobike=False)
    client = p.a.sas[0]
    client.nat.local_behind = client.nat.remote_behind = True  # both look NATed (a gateway behind a static NAT)
    before = client.remote
    _dpd_from(p, "b", ("198.51.100.9", 40001))
    assert client.remote == before, "the NATed client followed the gateway to another address"
    assert not p.of("a", ChildSaMoved)
    assert client.established
