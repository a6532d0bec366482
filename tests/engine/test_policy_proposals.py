"""strongSwan proposal keywords and identities, as swanctl reads them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.crypto.transforms import (
    AEAD_ENCR,
    EncrId,
    EsnId,
    IntegId,
    KeId,
    PrfId,
    TransformType,
)
from engine.policy.identity import (
    IdentityError,
    format_identity,
    identity_matches,
    is_wildcard,
    parse_identity,
)
from engine.policy.model import Identity, Transform
from engine.policy.proposals import (
    KEYWORDS,
    ProposalError,
    default_proposals,
    format_proposal,
    parse_proposal,
    parse_proposals,
    proposal_texts,
)

ENCR, PRF, INTEG, KE, ESN = (TransformType.ENCR, TransformType.PRF, TransformType.INTEG, TransformType.KE,
                             TransformType.ESN)


def ids(ts):
    return [(t.id, t.key_length) for t in ts]


def test_ike_aead_with_explicit_prf():
    p = parse_proposal("aes256gcm16-prfsha384-x25519", "ike")
    assert ids(p.encr) == [(EncrId.AES_GCM_16, 256)]
    assert ids(p.prf) == [(PrfId.HMAC_SHA2_384, None)]
    assert p.integ == () and p.esn == ()
    assert ids(p.ke) == [(KeId.CURVE25519, None)]
    assert p.text == "aes256gcm16-prfsha384-x25519"


def test_ike_prf_is_derived_from_integrity_like_strongswan():
    p = parse_proposal("aes256-sha256-modp3072", "ike")
    assert ids(p.integ) == [(IntegId.HMAC_SHA2_256_128, None)]
    assert ids(p.prf) == [(PrfId.HMAC_SHA2_256, None)]
    # Several integrity algorithms give several PRFs, in order, without duplicates.
    p = parse_proposal("aes128-sha1-sha1_160-sha512-ecp256", "ike")
    assert ids(p.prf) == [(PrfId.HMAC_SHA1, None), (PrfId.HMAC_SHA2_512, None)]
    # An explicit PRF wins over the derivation.
    p = parse_proposal("aes128-sha256-prfsha512-ecp256", "ike")
    assert ids(p.prf) == [(PrfId.HMAC_SHA2_512, None)]


def test_ike_aead_with_integrity_keyword_keeps_the_prf_and_drops_integrity():
    p = parse_proposal("aes256gcm16-sha384-x25519", "ike")
    assert p.integ == ()
    assert ids(p.prf) == [(PrfId.HMAC_SHA2_384, None)]


def test_ike_none_is_removed_and_a_ke_is_required():
    p = parse_proposal("aes256-sha256-x25519-none", "ike")
    assert ids(p.ke) == [(KeId.CURVE25519, None)]
    with pytest.raises(ProposalError, match="key exchange method"):
        parse_proposal("aes256-sha256-none", "ike")


@pytest.mark.parametrize("text,keys", [
    ("aes128gcm16", [(EncrId.AES_GCM_16, 128)]),
    ("aes128gcm", [(EncrId.AES_GCM_16, 128)]),
    ("aes192gcm128", [(EncrId.AES_GCM_16, 192)]),
    ("aes256gcm12", [(EncrId.AES_GCM_12, 256)]),
    ("aes256gcm96", [(EncrId.AES_GCM_12, 256)]),
    ("aes128gcm8", [(EncrId.AES_GCM_8, 128)]),
    ("aes128gcm64", [(EncrId.AES_GCM_8, 128)]),
    ("aes256ccm16", [(EncrId.AES_CCM_16, 256)]),
    ("chacha20poly1305", [(EncrId.CHACHA20_POLY1305, None)]),
    ("aes192gmac", [(EncrId.NULL_AUTH_AES_GMAC, 192)]),
])
def test_esp_aead_keywords(text, keys):
    p = parse_proposal(text, "esp")
    assert ids(p.encr) == keys
    assert p.integ == () and p.ke == ()  # no ke: no PFS
    assert ids(p.esn) == [(EsnId.NO_ESN, None)]


def test_esp_classic_with_pfs_and_esn():
    p = parse_proposal("aes128-aes256-sha256-sha1-modp2048-ecp384-esn-noesn", "esp")
    assert ids(p.encr) == [(EncrId.AES_CBC, 128), (EncrId.AES_CBC, 256)]
    assert ids(p.integ) == [(IntegId.HMAC_SHA2_256_128, None), (IntegId.HMAC_SHA1_96, None)]
    assert ids(p.ke) == [(KeId.MODP_2048, None), (KeId.ECP_384, None)]
    assert ids(p.esn) == [(EsnId.ESN, None), (EsnId.NO_ESN, None)]
    assert p.prf == ()


def test_esp_drops_prfs_and_keeps_ke_none_as_optional_pfs():
    p = parse_proposal("3des-md5-prfsha256-x25519-none", "esp")
    assert p.prf == ()
    assert ids(p.encr) == [(EncrId.TRIPLE_DES, None)]
    assert ids(p.ke) == [(KeId.CURVE25519, None), (KeId.NONE, None)]


def test_ah_maps_gmac_to_integrity_and_needs_integrity():
    p = parse_proposal("aes256gmac-sha256", "ah")
    assert p.encr == ()
    assert ids(p.integ) == [(IntegId.AES_256_GMAC, None), (IntegId.HMAC_SHA2_256_128, None)] or \
        ids(p.integ) == [(IntegId.HMAC_SHA2_256_128, None), (IntegId.AES_256_GMAC, None)]
    with pytest.raises(ProposalError, match="AH proposal needs an integrity"):
        parse_proposal("aes256", "ah")


@pytest.mark.parametrize("text,protocol,fragment", [
    ("aes256gcm16-aes256-sha256-x25519", "ike", "classic and combined-mode"),
    ("aes256gcm16-aes128-sha256", "esp", "classic and combined-mode"),
    ("sha256-x25519", "esp", "needs an encryption algorithm"),
    ("aes256-x25519", "ike", "needs an integrity algorithm"),
    ("aes256gcm16-x25519", "ike", "needs a PRF"),
    ("aes256gmac-prfsha256-x25519", "ike", "AES-GMAC"),
    ("null-sha256-x25519", "ike", "IKE must be encrypted"),
    ("aes256-sha256-x25519-esn", "ike", "apply to ESP and AH"),
    ("", "esp", "empty proposal"),
    ("aes256-", "esp", "empty keyword"),
    ("default", "ike", "stands alone"),
    ("twofish-sha256", "esp", "does not implement"),
])
def test_invalid_proposals(text, protocol, fragment):
    with pytest.raises(ProposalError, match=fragment.replace("(", r"\(")):
        parse_proposal(text, protocol)


@pytest.mark.parametrize("typo,suggestion", [("aes265", "aes256"), ("sha265", "sha256"), ("x2519", "x25519"),
                                             ("ecp348", "ecp384"), ("prfsha385", "prfsha384"), ("aes256gcn16", "aes256gcm16")])
def test_unknown_keyword_names_it_and_suggests(typo, suggestion):
    with pytest.raises(ProposalError) as exc:
        parse_proposal(f"{typo}-sha256-x25519" if "sha" not in typo else f"aes256-{typo}-x25519", "ike")
    assert exc.value.keyword == typo
    assert exc.value.suggestion == suggestion
    assert f"'{typo}'" in str(exc.value) and f"did you mean '{suggestion}'?" in str(exc.value)


def test_keywords_are_case_insensitive_and_spaces_are_trimmed():
    assert parse_proposal("AES256GCM16 - X25519", "esp").transforms() == parse_proposal("aes256gcm16-x25519", "esp").transforms()


def test_defaults_follow_swanctl_order():
    ike = default_proposals("ike")
    assert len(ike) == 2 and ike[0].integ and not ike[1].integ  # classic first, then AEAD
    esp = default_proposals("esp")
    assert ids(esp[0].encr) == [(EncrId.AES_GCM_16, b) for b in (128, 192, 256)] and esp[1].integ
    assert parse_proposals(["default"], "ike") == ike
    assert parse_proposals(["aes256gcm16", "default"], "esp")[1:] == esp
    assert all(p.text == "default" for p in ike + esp + default_proposals("ah"))
    # Every default transform has a keyword, so defaults can be formatted too.
    for p in ike + esp:
        assert parse_proposal(format_proposal(p), p.protocol).transforms() == p.transforms()


def test_proposal_texts_writes_default_once():
    props = parse_proposals(["aes256-sha256-x25519", "default"], "ike")
    assert proposal_texts(props) == ["aes256-sha256-x25519", "default"]


# A keyword list that parses, per protocol.
def _words(protocol: str):
    encr = [k for k, t in KEYWORDS.items() if t.type == ENCR and t.id not in (EncrId.NULL_AUTH_AES_GMAC, EncrId.NULL)]
    aead = [k for k in encr if KEYWORDS[k].id in AEAD_ENCR]
    classic = [k for k in encr if k not in aead]
    integ = [k for k, t in KEYWORDS.items() if t.type == INTEG]
    prf = [k for k, t in KEYWORDS.items() if t.type == PRF]
    ke = [k for k, t in KEYWORDS.items() if t.type == KE and t.id != KeId.NONE]
    some = lambda xs: st.lists(st.sampled_from(xs), min_size=1, max_size=3)
    if protocol == "ike":
        return st.one_of(
            st.tuples(some(classic), some(integ), st.lists(st.sampled_from(prf), max_size=2), some(ke)),
            st.tuples(some(aead), st.just([]), some(prf), some(ke)),
        ).map(lambda t: [w for part in t for w in part])
    if protocol == "esp":
        return st.one_of(
            st.tuples(some(classic), some(integ), st.lists(st.sampled_from(ke), max_size=2)),
            st.tuples(some(aead), st.lists(st.sampled_from(ke), max_size=2), st.lists(st.sampled_from(["esn", "noesn"]), max_size=2)),
        ).map(lambda t: [w for part in t for w in part])
    return st.tuples(some(integ), st.lists(st.sampled_from(ke), max_size=1)).map(lambda t: [w for part in t for w in part])


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["ike", "esp", "ah"]).flatmap(lambda proto: st.tuples(st.just(proto), _words(proto))))
def test_format_then_parse_gives_the_same_transforms(case):
    protocol, words = case
    p = parse_proposal("-".join(words), protocol)
    q = parse_proposal(format_proposal(p), protocol)
    assert q.transforms() == p.transforms()


# -- identities ------------------------------------------------------------------------
@pytest.mark.parametrize("text,kind,value", [
    ("192.0.2.1", "ipv4", "192.0.2.1"),
    ("2001:DB8::1", "ipv6", "2001:db8::1"),
    ("gw.example.org", "fqdn", "gw.example.org"),
    ("@gw.example.org", "fqdn", "gw.example.org"),
    ("@192.0.2.1", "fqdn", "192.0.2.1"),
    ("alice@example.org", "rfc822", "alice@example.org"),
    ("*@example.org", "rfc822", "*@example.org"),
    ("*.example.org", "fqdn", "*.example.org"),
    ("C=CH, O=Example, CN=gw", "dn", "C=CH, O=Example, CN=gw"),
    ("E=alice@example.org, CN=alice", "dn", "E=alice@example.org, CN=alice"),
    ("%any", "any", "%any"),
    ("@#0a1B", "key_id", "0a1b"),
    ("keyid:00ff", "key_id", "00ff"),
    ("fqdn:host", "fqdn", "host"),
    ("email:bob@example.org", "rfc822", "bob@example.org"),
    ("ipv4:192.0.2.7", "ipv4", "192.0.2.7"),
])
def test_parse_identity(text, kind, value):
    i = parse_identity(text)
    assert (i.kind, i.value) == (kind, value)
    assert parse_identity(format_identity(i)) == i


@pytest.mark.parametrize("text", ["", "   ", "CN=", "=x", "192.0.2.0/24", "alice@", "@", "bad name", "ipv6:192.0.2.1",
                                  "keyid:xyz"])
def test_bad_identities(text):
    with pytest.raises(IdentityError):
        parse_identity(text)


@pytest.mark.parametrize("pattern,other,ok", [
    ("%any", "anything.example.org", True),
    ("*@example.org", "alice@example.org", True),
    ("*@example.org", "alice@example.com", False),
    ("*@example.org", "example.org", False),
    ("*.example.org", "gw.example.org", True),
    ("*.example.org", "a.b.example.org", True),
    ("*.example.org", "example.org", False),
    ("gw.example.org", "GW.Example.Org", True),
    ("gw.example.org", "@gw.example.org", True),
    ("gw.example.org", "gw2.example.org", False),
    ("192.0.2.1", "192.0.2.1", True),
    ("192.0.2.1", "192.0.2.2", False),
    ("192.0.2.1", "@192.0.2.1", False),  # an FQDN is not an address identity
    ("C=CH, O=Example, CN=*", "C=CH, O=Example, CN=alice", True),
    ("C=CH, O=Example, CN=*", "C=CH, O=Other, CN=alice", False),
    ("C=CH, O=Example, CN=*", "C=CH, CN=alice", False),
    ("C=CH,O=Example,CN=gw", "C=CH, O=Example, CN=gw", True),
])
def test_identity_matches(pattern, other, ok):
    assert identity_matches(parse_identity(pattern), parse_identity(other)) is ok


def test_wildcards_are_recognised():
    assert is_wildcard(parse_identity("*@example.org")) and is_wildcard(parse_identity("%any"))
    assert not is_wildcard(parse_identity("alice@example.org"))
    assert format_identity(Identity("fqdn", "192.0.2.1")) == "fqdn:192.0.2.1"


def test_transform_equality_is_by_value():
    assert parse_proposal("aes256", "esp").encr == (Transform(ENCR, EncrId.AES_CBC, 256),)
    assert parse_proposal("aes256-sha256", "esp").integ[0] == Transform(INTEG, IntegId.HMAC_SHA2_256_128)
    assert parse_proposal("aes256-x448", "esp").ke == (Transform(KE, KeId.CURVE448),)
    assert parse_proposal("aes256-esn", "esp").esn == (Transform(ESN, EsnId.ESN),)
