"""strongSwan proposal keywords -> :class:`~engine.policy.model.Proposal`.

A proposal is written as in swanctl.conf: keywords joined by ``-``, e.g.
``aes256gcm16-prfsha384-x25519`` or ``aes256-sha256-modp3072``. Every
combination of the listed transforms is acceptable. The rules are
strongSwan's (``proposal_create_from_string`` / ``check_proposal``):

* IKE without an explicit ``prf*`` keyword takes the PRF from each integrity
  keyword (``sha256`` -> PRF_HMAC_SHA2_256); with AEAD ciphers the integrity
  algorithms are dropped afterwards, so ``aes256gcm16-sha384-x25519`` means
  AES-GCM with PRF_HMAC_SHA2_384. An IKE proposal needs a PRF and a key
  exchange method; ``none`` is removed from IKE proposals.
* ESP and AH ignore PRFs. ESP needs an encryption algorithm; AEAD and classic
  ciphers cannot be mixed; AEAD proposals carry no integrity algorithm. AH
  needs an integrity algorithm (``aes*gmac`` becomes AES-GMAC integrity).
* ESP/AH without ``esn``/``noesn`` get NO_ESN. ESP/AH without a key exchange
  method use no PFS.
* ``default`` expands to strongSwan's default proposals (see
  :func:`default_proposals`), only in lists (:func:`parse_proposals`).
* ``ke1_<method>`` .. ``ke7_<method>`` are RFC 9370 additional key
  exchanges (strongSwan 6's syntax): ``aes256gcm16-prfsha384-x25519-ke1_mlkem768``
  is hybrid x25519 + ML-KEM-768; ``ke1_none`` makes that exchange optional.
  They need a primary key exchange method in the same proposal.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Literal

from engine.crypto.transforms import (
    AEAD_ENCR,
    MAX_ADDITIONAL_KE,
    EncrId,
    EsnId,
    IntegId,
    KeId,
    PrfId,
    TransformType,
    additional_ke_number,
    additional_ke_type,
)
from engine.crypto.ke import FFDH_AVAILABLE, MODP_PRIMES, ffdh_missing_reason
from engine.policy.model import Proposal, Transform

ProtocolName = Literal["ike", "esp", "ah"]

ENCR, PRF, INTEG, KE, ESN = (TransformType.ENCR, TransformType.PRF, TransformType.INTEG,
                             TransformType.KE, TransformType.ESN)


class ProposalError(ValueError):
    """A proposal string that cannot be used; the message says which keyword and why."""

    def __init__(self, message: str, keyword: str | None = None, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.keyword = keyword
        self.suggestion = suggestion


def _build_keywords() -> dict[str, Transform]:
    kw: dict[str, Transform] = {
        "null": Transform(ENCR, EncrId.NULL),
        "des": Transform(ENCR, EncrId.DES),
        "3des": Transform(ENCR, EncrId.TRIPLE_DES),
        "aes": Transform(ENCR, EncrId.AES_CBC, 128),
        "camellia": Transform(ENCR, EncrId.CAMELLIA_CBC, 128),
        "chacha20poly1305": Transform(ENCR, EncrId.CHACHA20_POLY1305),
    }
    icv = {EncrId.AES_CCM_8: ("8", "64"), EncrId.AES_CCM_12: ("12", "96"), EncrId.AES_CCM_16: ("16", "128", ""),
           EncrId.AES_GCM_8: ("8", "64"), EncrId.AES_GCM_12: ("12", "96"), EncrId.AES_GCM_16: ("16", "128", "")}
    for bits in (128, 192, 256):
        kw[f"aes{bits}"] = Transform(ENCR, EncrId.AES_CBC, bits)
        kw[f"aes{bits}ctr"] = Transform(ENCR, EncrId.AES_CTR, bits)
        kw[f"aes{bits}gmac"] = Transform(ENCR, EncrId.NULL_AUTH_AES_GMAC, bits)
        kw[f"camellia{bits}"] = Transform(ENCR, EncrId.CAMELLIA_CBC, bits)
        for encr, suffixes in icv.items():
            mode = "ccm" if "CCM" in encr.name else "gcm"
            for suffix in suffixes:
                kw[f"aes{bits}{mode}{suffix}"] = Transform(ENCR, encr, bits)
    kw.update({
        "sha": Transform(INTEG, IntegId.HMAC_SHA1_96),
        "sha1": Transform(INTEG, IntegId.HMAC_SHA1_96),
        "sha1_160": Transform(INTEG, IntegId.HMAC_SHA1_160),
        "sha256": Transform(INTEG, IntegId.HMAC_SHA2_256_128),
        "sha2_256": Transform(INTEG, IntegId.HMAC_SHA2_256_128),
        "sha384": Transform(INTEG, IntegId.HMAC_SHA2_384_192),
        "sha2_384": Transform(INTEG, IntegId.HMAC_SHA2_384_192),
        "sha512": Transform(INTEG, IntegId.HMAC_SHA2_512_256),
        "sha2_512": Transform(INTEG, IntegId.HMAC_SHA2_512_256),
        "md5": Transform(INTEG, IntegId.HMAC_MD5_96),
        "md5_128": Transform(INTEG, IntegId.HMAC_MD5_128),
        "aesxcbc": Transform(INTEG, IntegId.AES_XCBC_96),
        "aescmac": Transform(INTEG, IntegId.AES_CMAC_96),
        "prfsha1": Transform(PRF, PrfId.HMAC_SHA1),
        "prfsha256": Transform(PRF, PrfId.HMAC_SHA2_256),
        "prfsha384": Transform(PRF, PrfId.HMAC_SHA2_384),
        "prfsha512": Transform(PRF, PrfId.HMAC_SHA2_512),
        "prfmd5": Transform(PRF, PrfId.HMAC_MD5),
        "prfaesxcbc": Transform(PRF, PrfId.AES128_XCBC),
        "prfaescmac": Transform(PRF, PrfId.AES128_CMAC),
        "none": Transform(KE, KeId.NONE),
        "modpnone": Transform(KE, KeId.NONE),
        "modp768": Transform(KE, KeId.MODP_768),
        "modp1024": Transform(KE, KeId.MODP_1024),
        "modp1536": Transform(KE, KeId.MODP_1536),
        "modp2048": Transform(KE, KeId.MODP_2048),
        "modp3072": Transform(KE, KeId.MODP_3072),
        "modp4096": Transform(KE, KeId.MODP_4096),
        "modp6144": Transform(KE, KeId.MODP_6144),
        "modp8192": Transform(KE, KeId.MODP_8192),
        "modp1024s160": Transform(KE, KeId.MODP_1024_160),
        "modp2048s224": Transform(KE, KeId.MODP_2048_224),
        "modp2048s256": Transform(KE, KeId.MODP_2048_256),
        "ecp192": Transform(KE, KeId.ECP_192),
        "ecp224": Transform(KE, KeId.ECP_224),
        "ecp256": Transform(KE, KeId.ECP_256),
        "ecp384": Transform(KE, KeId.ECP_384),
        "ecp521": Transform(KE, KeId.ECP_521),
        "ecp224bp": Transform(KE, KeId.BRAINPOOL_224),
        "ecp256bp": Transform(KE, KeId.BRAINPOOL_256),
        "ecp384bp": Transform(KE, KeId.BRAINPOOL_384),
        "ecp512bp": Transform(KE, KeId.BRAINPOOL_512),
        "curve25519": Transform(KE, KeId.CURVE25519),
        "x25519": Transform(KE, KeId.CURVE25519),
        "curve448": Transform(KE, KeId.CURVE448),
        "x448": Transform(KE, KeId.CURVE448),
        "mlkem768": Transform(KE, KeId.ML_KEM_768),
        "mlkem1024": Transform(KE, KeId.ML_KEM_1024),
        "noesn": Transform(ESN, EsnId.NO_ESN),
        "esn": Transform(ESN, EsnId.ESN),
    })
    return kw


KEYWORDS: dict[str, Transform] = _build_keywords()
"""Every keyword this engine understands, lower case."""

# strongSwan keywords this engine knows of but does not implement: a clearer
# message than "unknown keyword" for an admin copying a working swanctl.conf.
UNSUPPORTED_KEYWORDS = frozenset({
    "blowfish", "blowfish128", "blowfish192", "blowfish256", "cast128", "serpent", "serpent128",
    "serpent192", "serpent256", "twofish", "twofish128", "twofish192", "twofish256",
    "chacha20poly1305compat", "camelliaxcbc", "prfcamelliaxcbc", "sha256_96", "sha2_256_96",
    "modpnull", "ntru112", "ntru128", "ntru192", "ntru256", "kyber1", "kyber3", "kyber5",
    "mlkem512",
    *(f"camellia{b}{m}" for b in (128, 192, 256) for m in ("ctr", "ccm8", "ccm64", "ccm12", "ccm96", "ccm16", "ccm128")),
})

# Aliases format_proposal never writes: it prefers aes128, aes128gcm16, sha256, x25519, none.
_ALIASES = {"aes", "camellia", "sha", "sha2_256", "sha2_384", "sha2_512", "curve25519", "curve448", "modpnone"}


def _is_alias(name: str) -> bool:
    if name in _ALIASES:
        return True
    for mode in ("gcm", "ccm"):
        head, sep, tail = name.partition(mode)
        if sep and head.startswith("aes") and tail in ("", "64", "96", "128"):
            return True
    return False


_CANONICAL: dict[tuple[int, int, int | None], str] = {
    (t.type, t.id, t.key_length): name for name, t in reversed(KEYWORDS.items()) if not _is_alias(name)
}

# strongSwan's integ_prf_map: the PRF an IKE proposal gets from each integrity algorithm.
INTEG_TO_PRF = {
    IntegId.HMAC_SHA1_96: PrfId.HMAC_SHA1,
    IntegId.HMAC_SHA1_160: PrfId.HMAC_SHA1,
    IntegId.HMAC_SHA2_256_128: PrfId.HMAC_SHA2_256,
    IntegId.HMAC_SHA2_384_192: PrfId.HMAC_SHA2_384,
    IntegId.HMAC_SHA2_512_256: PrfId.HMAC_SHA2_512,
    IntegId.HMAC_MD5_96: PrfId.HMAC_MD5,
    IntegId.HMAC_MD5_128: PrfId.HMAC_MD5,
    IntegId.AES_XCBC_96: PrfId.AES128_XCBC,
    IntegId.AES_CMAC_96: PrfId.AES128_CMAC,
}

# strongSwan counts AES-GMAC (ESP's NULL_AUTH_AES_GMAC) as a combined-mode cipher too.
_AEAD = AEAD_ENCR | {EncrId.NULL_AUTH_AES_GMAC}
_GMAC_INTEG = {128: IntegId.AES_128_GMAC, 192: IntegId.AES_192_GMAC, 256: IntegId.AES_256_GMAC}
for _bits, _integ in _GMAC_INTEG.items():  # AH's GMAC integrity is written like the ESP cipher
    _CANONICAL[(INTEG, _integ, None)] = f"aes{_bits}gmac"


def _suggest(word: str) -> str | None:
    close = difflib.get_close_matches(word, list(KEYWORDS), n=1, cutoff=0.6)
    return close[0] if close else None


def _additional_ke(word: str) -> Transform | None:
    """``ke<n>_<method>`` (strongSwan 6: key_exchange.c additional_key_exchange_parser)."""
    if len(word) < 5 or not word.startswith("ke") or not word[2].isdigit() or word[3] != "_":
        return None
    base = KEYWORDS.get(word[4:])
    if base is None or base.type != KE:
        return None
    return Transform(additional_ke_type(int(word[2])) if 1 <= int(word[2]) <= MAX_ADDITIONAL_KE else KE, base.id)


def _dedup(ts: Iterable[Transform]) -> tuple[Transform, ...]:
    out: list[Transform] = []
    for t in ts:
        if t not in out:
            out.append(t)
    return tuple(out)


def _check_available(t: Transform, text: str, word: str) -> None:
    if not FFDH_AVAILABLE and t.id in MODP_PRIMES and (t.type == KE or additional_ke_number(t.type)):
        raise ProposalError(f"{text!r}: '{word}': {ffdh_missing_reason()}; use ecp256, ecp384 or x25519 "
                            f"(or install an older cryptography for a peer that only does MODP)", keyword=word)


def parse_proposal(text: str, protocol: ProtocolName) -> Proposal:
    """Parse one proposal string; raises :class:`ProposalError`."""
    if protocol not in ("ike", "esp", "ah"):
        raise ValueError(f"protocol must be ike, esp or ah, not {protocol!r}")
    if not isinstance(text, str) or not text.strip():
        raise ProposalError("empty proposal")
    words = [w.strip().lower() for w in text.split("-")]
    if any(not w for w in words):
        raise ProposalError(f"{text!r}: empty keyword (two '-' in a row, or a '-' at an end)")
    if "default" in words:
        raise ProposalError(f"{text!r}: 'default' stands alone: write it as its own list item", keyword="default")
    encr: list[Transform] = []
    integ: list[Transform] = []
    prf: list[Transform] = []
    ke: list[Transform] = []
    esn: list[Transform] = []
    additional: list[Transform] = []
    lists = {ENCR: encr, INTEG: integ, PRF: prf, KE: ke, ESN: esn}
    for w in words:
        t = KEYWORDS.get(w)
        if t is None and w.startswith("ke") and "_" in w:
            t = _additional_ke(w)
            if t is None or t.type == KE:
                n, _, base = w[2:].partition("_")
                if n.isdigit() and not 1 <= int(n) <= MAX_ADDITIONAL_KE:
                    raise ProposalError(f"{text!r}: '{w}': additional key exchanges are ke1_ to "
                                        f"ke{MAX_ADDITIONAL_KE}_ (RFC 9370)", keyword=w)
                hint = _suggest(base)
                more = f" (did you mean 'ke{n}_{hint}'?)" if hint and KEYWORDS[hint].type == KE else ""
                raise ProposalError(f"{text!r}: '{w}': after ke{n}_ comes a key exchange method such as "
                                    f"mlkem768 or x25519{more}", keyword=w)
            _check_available(t, text, w)
            additional.append(t)
            continue
        if t is not None:
            _check_available(t, text, w)
        if t is None:
            if w in UNSUPPORTED_KEYWORDS:
                why = " (the cryptography package offers ML-KEM-768 and ML-KEM-1024 only)" if w == "mlkem512" else ""
                raise ProposalError(f"{text!r}: '{w}' is a strongSwan keyword this engine does not implement{why}",
                                    keyword=w)
            hint = _suggest(w)
            more = f" (did you mean '{hint}'?)" if hint else ""
            raise ProposalError(f"{text!r}: unknown algorithm keyword '{w}'{more}", keyword=w, suggestion=hint)
        lists[t.type].append(t)

    proto = protocol.upper()
    if protocol == "ike":
        if not prf:
            # strongSwan: "No explicit PRF found. We assume the same algorithm as used for integrity."
            prf = [Transform(PRF, INTEG_TO_PRF[IntegId(t.id)]) for t in integ if t.id in INTEG_TO_PRF]
        if not prf:
            if encr and not integ and not any(t.id in _AEAD for t in encr):
                raise ProposalError(f"{text!r}: an IKE proposal with a classic cipher needs an integrity "
                                    "algorithm, e.g. 'sha256' (the PRF is derived from it)")
            raise ProposalError(f"{text!r}: an IKE proposal needs a PRF: add e.g. 'prfsha256' "
                                "(or an integrity keyword such as 'sha256', from which it is derived)")
        ke = [t for t in ke if t.id != KeId.NONE]
        if not ke:
            raise ProposalError(f"{text!r}: an IKE proposal needs a key exchange method, e.g. 'x25519' or 'ecp256'")
        if esn:
            raise ProposalError(f"{text!r}: 'esn'/'noesn' apply to ESP and AH, not to IKE")
    else:
        prf = []  # strongSwan silently drops PRFs from ESP/AH proposals

    if protocol in ("ike", "esp"):
        if not encr:
            raise ProposalError(f"{text!r}: an {proto} proposal needs an encryption algorithm, e.g. 'aes256gcm16'")
        aead = [t.id in _AEAD for t in encr]
        if any(aead) and not all(aead):
            raise ProposalError(f"{text!r}: classic and combined-mode (AEAD) ciphers cannot be in the same "
                                f"{proto} proposal: write two proposals")
        if protocol == "ike":
            for t in encr:
                if t.id == EncrId.NULL_AUTH_AES_GMAC:
                    raise ProposalError(f"{text!r}: AES-GMAC gives no confidentiality and is for ESP only; "
                                        "use 'aes256gcm16' for IKE")
                if t.id == EncrId.NULL:
                    raise ProposalError(f"{text!r}: IKE must be encrypted (RFC 7296): 'null' is for ESP only")
        if all(aead):
            integ = []  # an AEAD proposal MUST NOT carry integrity algorithms
        elif protocol == "ike" and not integ:
            raise ProposalError(f"{text!r}: an IKE proposal with a classic cipher needs an integrity "
                                "algorithm, e.g. 'sha256'")
    else:  # AH: only integrity; AES-GMAC written as a cipher becomes the GMAC integrity algorithm
        for t in encr:
            if t.id == EncrId.NULL_AUTH_AES_GMAC and t.key_length in _GMAC_INTEG:
                integ.append(Transform(INTEG, _GMAC_INTEG[t.key_length]))
        encr = []
        if not integ:
            raise ProposalError(f"{text!r}: an AH proposal needs an integrity algorithm, e.g. 'sha256'")

    if protocol in ("esp", "ah") and not esn:
        esn = [Transform(ESN, EsnId.NO_ESN)]
    if additional and not [t for t in ke if t.id != KeId.NONE]:
        first = next(w for w in words if w.startswith("ke") and "_" in w)
        raise ProposalError(f"{text!r}: '{first}' adds to a primary key exchange: name one too, e.g. "
                            f"'x25519-{first}' (RFC 9370)", keyword=first)

    return Proposal(protocol=protocol, encr=_dedup(encr), integ=_dedup(integ), prf=_dedup(prf),
                    ke=_dedup(ke), esn=_dedup(esn), text=text.strip(),
                    additional_ke=tuple(sorted(_dedup(additional), key=lambda t: t.type)))


def _t(ttype: TransformType, tid: int, key_length: int | None = None) -> Transform:
    return Transform(ttype, tid, key_length)


def default_proposals(protocol: ProtocolName) -> tuple[Proposal, ...]:
    """strongSwan's ``default`` (proposal_create_default[_aead]) limited to what this engine implements.

    IKE: the classic proposal, then the AEAD one; ESP: AEAD first, then classic
    (as swanctl's ``add_default_proposals``); AH: one proposal. Their ``text`` is
    ``default``.
    """
    prfs = tuple(_t(PRF, p) for p in (PrfId.HMAC_SHA2_256, PrfId.HMAC_SHA2_384, PrfId.HMAC_SHA2_512, PrfId.HMAC_SHA1))
    kes = tuple(_t(KE, k) for k in (KeId.ECP_256, KeId.ECP_384, KeId.ECP_521, KeId.CURVE25519, KeId.CURVE448,
                                    KeId.MODP_3072, KeId.MODP_4096, KeId.MODP_6144, KeId.MODP_8192, KeId.MODP_2048)
                if FFDH_AVAILABLE or k not in MODP_PRIMES)
    integs = tuple(_t(INTEG, i) for i in (IntegId.HMAC_SHA2_256_128, IntegId.HMAC_SHA2_384_192,
                                         IntegId.HMAC_SHA2_512_256, IntegId.HMAC_SHA1_96))
    cbc = tuple(_t(ENCR, EncrId.AES_CBC, b) for b in (128, 192, 256))
    gcm16 = tuple(_t(ENCR, EncrId.AES_GCM_16, b) for b in (128, 192, 256))
    no_esn = (_t(ESN, EsnId.NO_ESN),)
    if protocol == "ike":
        aead = gcm16 + (_t(ENCR, EncrId.CHACHA20_POLY1305),) + tuple(
            _t(ENCR, e, b) for e in (EncrId.AES_GCM_12, EncrId.AES_GCM_8) for b in (128, 192, 256))
        return (Proposal("ike", encr=cbc, integ=integs, prf=prfs, ke=kes, text="default"),
                Proposal("ike", encr=aead, prf=prfs, ke=kes, text="default"))
    if protocol == "esp":
        return (Proposal("esp", encr=gcm16, esn=no_esn, text="default"),
                Proposal("esp", encr=cbc, integ=integs, esn=no_esn, text="default"))
    if protocol == "ah":
        return (Proposal("ah", integ=integs, esn=no_esn, text="default"),)
    raise ValueError(f"protocol must be ike, esp or ah, not {protocol!r}")


def parse_proposals(texts: Iterable[str], protocol: ProtocolName) -> tuple[Proposal, ...]:
    """Parse a proposal list; ``default`` expands to :func:`default_proposals`.

    Raises :class:`ProposalError` for the first bad item; ``index`` on the
    error says which one.
    """
    out: list[Proposal] = []
    for i, text in enumerate(texts):
        try:
            if isinstance(text, str) and text.strip().lower() == "default":
                out.extend(default_proposals(protocol))
            else:
                out.append(parse_proposal(text, protocol))
        except ProposalError as exc:
            exc.index = i  # type: ignore[attr-defined]
            raise
    return tuple(out)


def proposal_texts(proposals: Iterable[Proposal]) -> list[str]:
    """The list of strings that parses back to ``proposals`` (``default`` written once)."""
    out: list[str] = []
    items = list(proposals)
    i = 0
    while i < len(items):
        p = items[i]
        if p.text.lower() == "default":
            expanded = default_proposals(p.protocol)
            if tuple(items[i:i + len(expanded)]) == expanded:
                out.append("default")
                i += len(expanded)
                continue
        out.append(p.text or format_proposal(p))
        i += 1
    return out


def keyword_for(t: Transform) -> str:
    """The keyword format_proposal writes for a transform (``ke1_mlkem768`` for an additional KE)."""
    number = additional_ke_number(t.type)
    if number is not None:
        return f"ke{number}_{keyword_for(Transform(KE, t.id))}"
    name = _CANONICAL.get((t.type, t.id, t.key_length))
    if name is None:
        raise ProposalError(f"transform {t.type.name}:{t.id} (key length {t.key_length}) has no strongSwan keyword")
    return name


def format_proposal(p: Proposal) -> str:
    """Keywords for ``p``: ciphers, integrity, PRFs, key exchange, ESN (NO_ESN alone is left out),
    additional key exchanges."""
    ts = list(p.encr) + list(p.integ) + list(p.prf) + list(p.ke)
    if p.protocol != "ike" and tuple(p.esn) != (Transform(ESN, EsnId.NO_ESN),):
        ts += list(p.esn)
    ts += list(p.additional_ke)
    return "-".join(keyword_for(t) for t in ts)
