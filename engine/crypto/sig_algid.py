"""RFC 7427 AUTH data on the wire: the SIGNATURE_HASH_ALGORITHMS notify (§4) and the DER
AlgorithmIdentifier that prefixes a DIGITAL_SIGNATURE (§3), read with a minimal DER reader that
names what is wrong and where. Sans-IO: bytes in, values out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from engine.crypto.sig_schemes import (ALGORITHM_IDENTIFIERS, SUPPORTED_HASH_ALGORITHMS, HashAlgorithmId, SignatureError,
                                       SignatureScheme, UnsupportedSignatureAlgorithm, _S)

# --- SIGNATURE_HASH_ALGORITHMS -------------------------------------------------


def hash_algorithms_notify_data(schemes: Iterable[SignatureScheme | HashAlgorithmId | int] = SUPPORTED_HASH_ALGORITHMS) -> bytes:
    """Notification data for SIGNATURE_HASH_ALGORITHMS: one 2-byte hash ID per
    distinct hash the given schemes (or hash IDs) need, in first-seen order."""
    seen: list[int] = []
    for item in schemes:
        hid = int(item.hash_algorithm) if isinstance(item, SignatureScheme) else int(item)
        if not 0 <= hid <= 0xFFFF:
            raise ValueError(f"hash algorithm ID {hid} does not fit in 16 bits")
        if hid not in seen:
            seen.append(hid)
    return b"".join(h.to_bytes(2, "big") for h in seen)


def parse_hash_algorithms(data: bytes) -> frozenset[int]:
    """The hash IDs of a received SIGNATURE_HASH_ALGORITHMS notify (unknown IDs kept)."""
    if len(data) % 2:
        raise SignatureError(f"SIGNATURE_HASH_ALGORITHMS data has an odd length ({len(data)} bytes)")
    return frozenset(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))


# --- a minimal DER reader (enough for AlgorithmIdentifier) ---------------------


def _tlv(data: bytes, pos: int, where: str) -> tuple[int, int, int]:
    """(der_type, value start, value end) of the DER element at pos."""
    if pos + 2 > len(data):
        raise SignatureError(f"{where}: truncated DER element")
    der_type = data[pos]
    if der_type & 0x1F == 0x1F:
        raise SignatureError(f"{where}: multi-byte DER tags are not expected here")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise SignatureError(f"{where}: bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise SignatureError(f"{where}: DER element runs past the end ({length} bytes announced)")
    return der_type, pos, pos + length


def _oid_text(body: bytes) -> str:
    if not body or body[-1] & 0x80:
        raise SignatureError("malformed OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for b in body:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


_SEQUENCE, _OID, _NULL, _INTEGER = 0x30, 0x06, 0x05, 0x02


def _algorithm(der: bytes, where: str) -> tuple[str, bytes | None, int]:
    """Parse AlgorithmIdentifier at the start of der: (OID text, params DER or None, end)."""
    der_type, start, end = _tlv(der, 0, where)
    if der_type != _SEQUENCE:
        raise SignatureError(f"{where}: AlgorithmIdentifier is not a SEQUENCE")
    der_type, ostart, oend = _tlv(der, start, where)
    if der_type != _OID:
        raise SignatureError(f"{where}: AlgorithmIdentifier does not start with an OID")
    oid = _oid_text(der[ostart:oend])
    params = None
    if oend < end:
        _, _, pend = _tlv(der, oend, where)
        if pend != end:
            raise SignatureError(f"{where}: trailing data inside AlgorithmIdentifier")
        params = der[oend:end]
    return oid, params, end


_OID_SCHEME = {
    "1.2.840.113549.1.1.11": _S.RSA_PKCS1_SHA256,
    "1.2.840.113549.1.1.12": _S.RSA_PKCS1_SHA384,
    "1.2.840.113549.1.1.13": _S.RSA_PKCS1_SHA512,
    "1.2.840.10045.4.3.2": _S.ECDSA_SHA256,
    "1.2.840.10045.4.3.3": _S.ECDSA_SHA384,
    "1.2.840.10045.4.3.4": _S.ECDSA_SHA512,
    "1.3.101.112": _S.ED25519,
    "1.3.101.113": _S.ED448,
}
_OID_RSA_PSS = "1.2.840.113549.1.1.10"
_OID_MGF1 = "1.2.840.113549.1.1.8"
_OID_HASH = {
    "1.3.14.3.2.26": HashAlgorithmId.SHA1,
    "2.16.840.1.101.3.4.2.1": HashAlgorithmId.SHA2_256,
    "2.16.840.1.101.3.4.2.2": HashAlgorithmId.SHA2_384,
    "2.16.840.1.101.3.4.2.3": HashAlgorithmId.SHA2_512,
}
_PSS_SCHEME = {
    HashAlgorithmId.SHA2_256: _S.RSA_PSS_SHA256,
    HashAlgorithmId.SHA2_384: _S.RSA_PSS_SHA384,
    HashAlgorithmId.SHA2_512: _S.RSA_PSS_SHA512,
}
_SHA1_NAMES = {
    "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
    "1.2.840.10045.4.1": "ecdsa-with-SHA1",
    "1.2.840.10040.4.3": "dsa-with-SHA1",
}
_OTHER_NAMES = {
    "1.2.840.113549.1.1.4": "md5WithRSAEncryption",
    "1.2.840.113549.1.1.14": "sha224WithRSAEncryption",
    "1.2.840.10045.4.3.1": "ecdsa-with-SHA224",
    "2.16.840.1.101.3.4.3.2": "dsa-with-SHA256",
}


@dataclass(frozen=True)
class SignatureAlgorithm:
    """A parsed RFC 7427 AlgorithmIdentifier."""

    scheme: SignatureScheme
    salt_length: int | None = None
    """RSASSA-PSS only: the salt length the signer declared (we verify with it)."""


def _hash_from_algorithm(der: bytes, where: str) -> HashAlgorithmId:
    oid, params, end = _algorithm(der, where)
    if end != len(der):
        raise SignatureError(f"{where}: trailing data after the hash AlgorithmIdentifier")
    if params not in (None, b"\x05\x00"):
        raise SignatureError(f"{where}: unexpected hash parameters")
    if oid not in _OID_HASH:
        raise UnsupportedSignatureAlgorithm(f"{where}: hash algorithm {oid} is not supported")
    return _OID_HASH[oid]


def _explicit(der: bytes, where: str) -> bytes:
    """The single element inside an EXPLICIT [n] wrapper."""
    _, start, end = _tlv(der, 0, where)
    return der[start:end]


def _parse_pss_params(params: bytes | None) -> tuple[HashAlgorithmId, HashAlgorithmId, int]:
    hash_id, mgf_hash, salt = HashAlgorithmId.SHA1, HashAlgorithmId.SHA1, 20  # RFC 4055 defaults
    if params is None or params == b"\x05\x00":
        return hash_id, mgf_hash, salt
    der_type, start, end = _tlv(params, 0, "RSASSA-PSS parameters")
    if der_type != _SEQUENCE or end != len(params):
        raise SignatureError("RSASSA-PSS parameters are not one SEQUENCE")
    pos, last_type = start, -1
    while pos < end:
        der_type, vstart, vend = _tlv(params, pos, "RSASSA-PSS parameters")
        if der_type not in (0xA0, 0xA1, 0xA2, 0xA3) or der_type <= last_type:
            raise SignatureError(f"RSASSA-PSS parameters: unexpected field der_type 0x{der_type:02x}")
        last_type = der_type
        inner = params[vstart:vend]
        if der_type == 0xA0:
            hash_id = _hash_from_algorithm(inner, "RSASSA-PSS hashAlgorithm")
        elif der_type == 0xA1:
            oid, mgf_params, mend = _algorithm(inner, "RSASSA-PSS maskGenAlgorithm")
            if oid != _OID_MGF1 or mgf_params is None or mend != len(inner):
                raise UnsupportedSignatureAlgorithm(f"RSASSA-PSS mask generation {oid} is not MGF1")
            mgf_hash = _hash_from_algorithm(mgf_params, "RSASSA-PSS MGF1 hash")
        else:
            itag, istart, iend = _tlv(inner, 0, "RSASSA-PSS integer")
            if itag != _INTEGER or iend != len(inner) or iend - istart > 4 or inner[istart] & 0x80:
                raise SignatureError("RSASSA-PSS parameters: bad INTEGER")
            value = int.from_bytes(inner[istart:iend], "big")
            if der_type == 0xA2:
                salt = value
            elif value != 1:
                raise UnsupportedSignatureAlgorithm(f"RSASSA-PSS trailerField {value} (only 1 exists)")
        pos = vend
    return hash_id, mgf_hash, salt


def parse_algorithm_identifier(der: bytes) -> SignatureAlgorithm:
    """The scheme named by a DER AlgorithmIdentifier from RFC 7427 AUTH data.

    Raises UnsupportedSignatureAlgorithm (naming the algorithm) for anything we
    do not verify, SHA-1 based schemes included, and SignatureError for bad DER.
    """
    oid, params, end = _algorithm(der, "AUTH AlgorithmIdentifier")
    if end != len(der):
        raise SignatureError("AUTH AlgorithmIdentifier: trailing data after it")
    if oid in _OID_SCHEME:
        scheme = _OID_SCHEME[oid]
        # PKCS#1 carries NULL parameters; ECDSA and EdDSA carry none. Accept
        # either spelling (peers differ) but nothing else.
        if params not in (None, b"\x05\x00"):
            raise SignatureError(f"AUTH AlgorithmIdentifier: unexpected parameters for {scheme.value}")
        return SignatureAlgorithm(scheme)
    if oid == _OID_RSA_PSS:
        hash_id, mgf_hash, salt = _parse_pss_params(params)
        if hash_id not in _PSS_SCHEME:
            raise UnsupportedSignatureAlgorithm("RSASSA-PSS with SHA-1 is not accepted (RFC 8247)")
        if mgf_hash != hash_id:
            raise UnsupportedSignatureAlgorithm(
                f"RSASSA-PSS with MGF1-{mgf_hash.name} over a {hash_id.name} signature is not supported"
            )
        return SignatureAlgorithm(_PSS_SCHEME[hash_id], salt)
    if oid in _SHA1_NAMES:
        raise UnsupportedSignatureAlgorithm(f"{_SHA1_NAMES[oid]} ({oid}): SHA-1 signatures are not accepted (RFC 8247)")
    name = _OTHER_NAMES.get(oid, "unknown algorithm")
    raise UnsupportedSignatureAlgorithm(f"signature algorithm {oid} ({name}) is not supported")


def build_auth_data(scheme: SignatureScheme, signature: bytes) -> bytes:
    """RFC 7427 §3 AUTH data: length of the AlgorithmIdentifier, the identifier, the signature."""
    alg = ALGORITHM_IDENTIFIERS[scheme]
    return bytes((len(alg),)) + alg + signature


def parse_auth_data(auth_data: bytes) -> tuple[SignatureAlgorithm, bytes]:
    """Split RFC 7427 AUTH data into (algorithm, signature)."""
    if not auth_data:
        raise SignatureError("AUTH data is empty")
    n = auth_data[0]
    if n == 0 or 1 + n >= len(auth_data):
        raise SignatureError(f"AUTH data: AlgorithmIdentifier length {n} does not fit {len(auth_data)} bytes of data")
    return parse_algorithm_identifier(auth_data[1 : 1 + n]), auth_data[1 + n :]
