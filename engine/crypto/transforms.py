"""IANA IKEv2 transform registries (RFC 7296 §3.3.2 and the IANA "IKEv2 Parameters").

Only numbers and names live here: no cryptography. The rest of the engine
speaks in these enums; `engine.crypto` turns them into working primitives.
"""

from __future__ import annotations

import enum


class TransformType(enum.IntEnum):
    ENCR = 1
    PRF = 2
    INTEG = 3
    KE = 4  # "D-H" in RFC 7296, renamed "Key Exchange Method" by RFC 9370
    ESN = 5


class EncrId(enum.IntEnum):
    DES_IV64 = 1
    DES = 2
    TRIPLE_DES = 3
    RC5 = 4
    IDEA = 5
    CAST = 6
    BLOWFISH = 7
    THREE_IDEA = 8
    DES_IV32 = 9
    NULL = 11
    AES_CBC = 12
    AES_CTR = 13
    AES_CCM_8 = 14
    AES_CCM_12 = 15
    AES_CCM_16 = 16
    AES_GCM_8 = 18
    AES_GCM_12 = 19
    AES_GCM_16 = 20
    NULL_AUTH_AES_GMAC = 21
    CAMELLIA_CBC = 23
    CHACHA20_POLY1305 = 28


class PrfId(enum.IntEnum):
    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    HMAC_TIGER = 3
    AES128_XCBC = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7
    AES128_CMAC = 8


class IntegId(enum.IntEnum):
    NONE = 0
    HMAC_MD5_96 = 1
    HMAC_SHA1_96 = 2
    DES_MAC = 3
    KPDK_MD5 = 4
    AES_XCBC_96 = 5
    HMAC_MD5_128 = 6
    HMAC_SHA1_160 = 7
    AES_CMAC_96 = 8
    AES_128_GMAC = 9
    AES_192_GMAC = 10
    AES_256_GMAC = 11
    HMAC_SHA2_256_128 = 12
    HMAC_SHA2_384_192 = 13
    HMAC_SHA2_512_256 = 14


class KeId(enum.IntEnum):
    """Key exchange methods (Diffie-Hellman groups)."""

    NONE = 0
    MODP_768 = 1
    MODP_1024 = 2
    MODP_1536 = 5
    MODP_2048 = 14
    MODP_3072 = 15
    MODP_4096 = 16
    MODP_6144 = 17
    MODP_8192 = 18
    ECP_256 = 19
    ECP_384 = 20
    ECP_521 = 21
    MODP_1024_160 = 22
    MODP_2048_224 = 23
    MODP_2048_256 = 24
    ECP_192 = 25
    ECP_224 = 26
    BRAINPOOL_224 = 27
    BRAINPOOL_256 = 28
    BRAINPOOL_384 = 29
    BRAINPOOL_512 = 30
    CURVE25519 = 31
    CURVE448 = 32
    GOST3410_256 = 33  # RFC 9385
    GOST3410_512 = 34
    ML_KEM_512 = 35  # RFC 9370 registry, draft-ietf-ipsecme-ikev2-mlkem
    ML_KEM_768 = 36
    ML_KEM_1024 = 37


class AdditionalKeType(enum.IntEnum):
    """RFC 9370 §3.2: Transform Types 6-12, ADDITIONAL_KEY_EXCHANGE_1..7 (IDs from KeId).

    Kept apart from TransformType on purpose: engine.ike's proposal matching
    treats every TransformType member as understood, and an offer whose
    additional key exchanges were silently dropped would lose its quantum safety.
    """

    ADDITIONAL_KEY_EXCHANGE_1 = 6
    ADDITIONAL_KEY_EXCHANGE_2 = 7
    ADDITIONAL_KEY_EXCHANGE_3 = 8
    ADDITIONAL_KEY_EXCHANGE_4 = 9
    ADDITIONAL_KEY_EXCHANGE_5 = 10
    ADDITIONAL_KEY_EXCHANGE_6 = 11
    ADDITIONAL_KEY_EXCHANGE_7 = 12


MAX_ADDITIONAL_KE = 7


def additional_ke_type(n: int) -> AdditionalKeType:
    """ADDITIONAL_KEY_EXCHANGE_n (n = 1..7) as a transform type."""
    if not 1 <= n <= MAX_ADDITIONAL_KE:
        raise ValueError(f"additional key exchanges are numbered 1 to {MAX_ADDITIONAL_KE}, not {n}")
    return AdditionalKeType(TransformType.ESN + n)


def additional_ke_number(ttype: int) -> int | None:
    """n for ADDITIONAL_KEY_EXCHANGE_n, None for any other transform type."""
    try:
        return AdditionalKeType(ttype) - TransformType.ESN
    except ValueError:
        return None


# Key exchange methods believed to resist a quantum computer (the ML-KEM family).
QUANTUM_SAFE_KE = frozenset({KeId.ML_KEM_512, KeId.ML_KEM_768, KeId.ML_KEM_1024})


class EsnId(enum.IntEnum):
    NO_ESN = 0
    ESN = 1


# Transform attribute type for the key length (RFC 7296 §3.3.5), TV format.
ATTR_KEY_LENGTH = 14

_ID_ENUMS: dict[TransformType, type[enum.IntEnum]] = {
    TransformType.ENCR: EncrId,
    TransformType.PRF: PrfId,
    TransformType.INTEG: IntegId,
    TransformType.KE: KeId,
    TransformType.ESN: EsnId,
}

# AEAD ciphers provide integrity themselves; proposals carrying them have no INTEG.
AEAD_ENCR = frozenset(
    {
        EncrId.AES_GCM_8,
        EncrId.AES_GCM_12,
        EncrId.AES_GCM_16,
        EncrId.AES_CCM_8,
        EncrId.AES_CCM_12,
        EncrId.AES_CCM_16,
        EncrId.CHACHA20_POLY1305,
    }
)

# Ciphers whose key size is negotiated with the KEY_LENGTH attribute.
VARIABLE_KEY_ENCR = frozenset(
    {
        EncrId.AES_CBC,
        EncrId.AES_CTR,
        EncrId.AES_CCM_8,
        EncrId.AES_CCM_12,
        EncrId.AES_CCM_16,
        EncrId.AES_GCM_8,
        EncrId.AES_GCM_12,
        EncrId.AES_GCM_16,
        EncrId.NULL_AUTH_AES_GMAC,
        EncrId.CAMELLIA_CBC,
    }
)


def transform_name(ttype: int, tid: int, key_length: int | None = None) -> str:
    """Readable name like the one strongSwan logs: AES_GCM_16_256, HMAC_SHA2_256_128,
    and KE1_ML_KEM_768 for ADDITIONAL_KEY_EXCHANGE_1 (strongSwan's proposal notation)."""
    number = additional_ke_number(ttype)
    if number is not None:
        try:
            return f"KE{number}_{KeId(tid).name}"
        except ValueError:
            return f"KE{number}_{tid}"
    try:
        enum_cls = _ID_ENUMS[TransformType(ttype)]
        name = enum_cls(tid).name
    except ValueError:
        return f"{ttype}:{tid}" if key_length is None else f"{ttype}:{tid}_{key_length}"
    if name == "TRIPLE_DES":
        name = "3DES"
    if key_length:
        name = f"{name}_{key_length}"
    return name
