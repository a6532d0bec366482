"""How strong each algorithm is, for ``doc`` and ``audit``: bits of security
against a classical attacker (NIST SP 800-57 Part 1 rev. 5, table 2 and 3) and
what a quantum computer does to it.

Quantum: ``yes`` (256-bit symmetric keys, hashes, ML-KEM: still beyond reach),
``weakened`` (128/192-bit symmetric keys: Grover's search halves their
strength), ``no`` (Diffie-Hellman and elliptic curves: Shor's algorithm breaks
them, so traffic recorded today can be decrypted later) or ``broken``
(already unsafe without one).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.crypto.transforms import EncrId, IntegId, KeId, PrfId, TransformType, transform_name


@dataclass(frozen=True)
class Strength:
    name: str
    """Readable algorithm name."""
    bits: int
    """Classical security in bits (0: none)."""
    quantum: str
    """yes, weakened, no, broken."""
    note: str = ""

    @property
    def weak(self) -> bool:
        return self.quantum == "broken" or self.bits < 112


_MODP = {KeId.MODP_768: (768, 56), KeId.MODP_1024: (1024, 80), KeId.MODP_1536: (1536, 90),
         KeId.MODP_2048: (2048, 112), KeId.MODP_3072: (3072, 128), KeId.MODP_4096: (4096, 152),
         KeId.MODP_6144: (6144, 176), KeId.MODP_8192: (8192, 200), KeId.MODP_1024_160: (1024, 80),
         KeId.MODP_2048_224: (2048, 112), KeId.MODP_2048_256: (2048, 112)}
_ECP = {KeId.ECP_192: ("NIST P-192", 96), KeId.ECP_224: ("NIST P-224", 112), KeId.ECP_256: ("NIST P-256", 128),
        KeId.ECP_384: ("NIST P-384", 192), KeId.ECP_521: ("NIST P-521", 256),
        KeId.BRAINPOOL_224: ("brainpoolP224r1", 112), KeId.BRAINPOOL_256: ("brainpoolP256r1", 128),
        KeId.BRAINPOOL_384: ("brainpoolP384r1", 192), KeId.BRAINPOOL_512: ("brainpoolP512r1", 256),
        KeId.CURVE25519: ("X25519", 128), KeId.CURVE448: ("X448", 224)}
_ML_KEM = {35: ("ML-KEM-512", 128), 36: ("ML-KEM-768", 192), 37: ("ML-KEM-1024", 256)}
"""RFC 9370 / draft-ietf-ipsecme-ikev2-mlkem transform IDs."""


def _symmetric(name: str, bits: int, note: str = "") -> Strength:
    quantum = "yes" if bits >= 256 else "weakened" if bits >= 128 else "broken"
    return Strength(name, bits, quantum, note or ("" if bits >= 256 else f"Grover's search: {bits // 2}-bit"
                                                  if bits >= 128 else "too short"))


def strength(ttype: int, tid: int, key_length: int | None = None) -> Strength:
    """The strength of one transform (see the module docstring)."""
    t = TransformType(ttype)
    if t == TransformType.ENCR:
        bits = key_length or 128
        if tid in (EncrId.AES_GCM_8, EncrId.AES_GCM_12, EncrId.AES_GCM_16):
            icv = {EncrId.AES_GCM_8: 8, EncrId.AES_GCM_12: 12, EncrId.AES_GCM_16: 16}[tid]
            s = _symmetric(f"AES-{bits}-GCM ({icv * 8}-bit ICV)", bits)
            return s if icv == 16 else Strength(s.name, s.bits, s.quantum, "short ICV: forgeries likelier")
        if tid in (EncrId.AES_CCM_8, EncrId.AES_CCM_12, EncrId.AES_CCM_16):
            return _symmetric(f"AES-{bits}-CCM", bits)
        if tid == EncrId.AES_CBC:
            return _symmetric(f"AES-{bits}-CBC", bits)
        if tid == EncrId.AES_CTR:
            return _symmetric(f"AES-{bits}-CTR", bits)
        if tid == EncrId.CAMELLIA_CBC:
            return _symmetric(f"Camellia-{bits}-CBC", bits)
        if tid == EncrId.CHACHA20_POLY1305:
            return _symmetric("ChaCha20-Poly1305", 256)
        if tid == EncrId.NULL_AUTH_AES_GMAC:
            return Strength(f"AES-{bits}-GMAC (integrity only)", 0, "broken", "no encryption")
        if tid == EncrId.NULL:
            return Strength("NULL (no encryption)", 0, "broken", "traffic is sent in clear")
        if tid == EncrId.TRIPLE_DES:
            return Strength("3DES", 112, "broken", "64-bit blocks (Sweet32), deprecated by RFC 8221")
        if tid in (EncrId.DES, EncrId.DES_IV32, EncrId.DES_IV64):
            return Strength("DES", 56, "broken", "56-bit key")
        return Strength(transform_name(ttype, tid, key_length), 0, "broken", "obsolete")
    if t == TransformType.INTEG:
        table = {IntegId.HMAC_SHA2_256_128: ("HMAC-SHA2-256 (128-bit tag)", 128, "yes"),
                 IntegId.HMAC_SHA2_384_192: ("HMAC-SHA2-384 (192-bit tag)", 192, "yes"),
                 IntegId.HMAC_SHA2_512_256: ("HMAC-SHA2-512 (256-bit tag)", 256, "yes"),
                 IntegId.AES_XCBC_96: ("AES-XCBC-96", 96, "weakened"), IntegId.AES_CMAC_96: ("AES-CMAC-96", 96,
                                                                                            "weakened"),
                 IntegId.AES_128_GMAC: ("AES-128-GMAC", 128, "weakened"),
                 IntegId.AES_192_GMAC: ("AES-192-GMAC", 128, "weakened"),
                 IntegId.AES_256_GMAC: ("AES-256-GMAC", 128, "yes"),
                 IntegId.HMAC_SHA1_96: ("HMAC-SHA1-96", 80, "broken"), IntegId.HMAC_SHA1_160: ("HMAC-SHA1", 80,
                                                                                               "broken"),
                 IntegId.HMAC_MD5_96: ("HMAC-MD5-96", 64, "broken"), IntegId.HMAC_MD5_128: ("HMAC-MD5", 64, "broken")}
        name, bits, q = table.get(tid, (transform_name(ttype, tid), 0, "broken"))
        return Strength(name, bits, q, "deprecated" if q == "broken" else "")
    if t == TransformType.PRF:
        table = {PrfId.HMAC_SHA2_256: ("PRF-HMAC-SHA2-256", 256, "yes"),
                 PrfId.HMAC_SHA2_384: ("PRF-HMAC-SHA2-384", 256, "yes"),
                 PrfId.HMAC_SHA2_512: ("PRF-HMAC-SHA2-512", 256, "yes"),
                 PrfId.AES128_XCBC: ("PRF-AES128-XCBC", 128, "weakened"),
                 PrfId.AES128_CMAC: ("PRF-AES128-CMAC", 128, "weakened"),
                 PrfId.HMAC_SHA1: ("PRF-HMAC-SHA1", 80, "broken"), PrfId.HMAC_MD5: ("PRF-HMAC-MD5", 64, "broken")}
        name, bits, q = table.get(tid, (transform_name(ttype, tid), 0, "broken"))
        return Strength(name, bits, q, "deprecated" if q == "broken" else "")
    if t == TransformType.KE:
        if tid in _MODP:
            size, bits = _MODP[tid]
            return Strength(f"MODP-{size} (group {int(tid)})", bits, "no" if bits >= 112 else "broken",
                            "Shor's algorithm" if bits >= 112 else "too small")
        if tid in _ECP:
            name, bits = _ECP[tid]
            return Strength(f"{name} (group {int(tid)})", bits, "no" if bits >= 112 else "broken", "Shor's algorithm")
        if tid in _ML_KEM:
            name, bits = _ML_KEM[tid]
            return Strength(name, bits, "yes", "post-quantum (FIPS 203)")
        return Strength(transform_name(ttype, tid), 0, "broken", "unknown")
    return Strength(transform_name(ttype, tid, key_length), 0, "yes")


def suite_strength(strengths: list[Strength]) -> tuple[int, str]:
    """A proposal's weakest link and its quantum verdict: post-quantum only if some KE is, and every
    symmetric part resists Grover."""
    if not strengths:
        return 0, "no"
    bits = min(s.bits for s in strengths if s.bits) if any(s.bits for s in strengths) else 0
    if any(s.quantum == "broken" for s in strengths):
        return bits, "broken"
    return bits, "no" if any(s.quantum == "no" for s in strengths) else (
        "weakened" if any(s.quantum == "weakened" for s in strengths) else "yes")
