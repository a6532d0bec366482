"""IKE SA and CHILD SA key derivation (RFC 7296 §2.14, §2.17, §2.18).

    SKEYSEED        = prf(Ni | Nr, g^ir)                          (new IKE SA)
    SKEYSEED        = prf_old(SK_d_old, g^ir(new) | Ni | Nr)      (IKE SA rekey)
    {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
                    = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)
    KEYMAT          = prf+(SK_d, [g^ir(new) |] Ni | Nr)           (CHILD SA)

For PRFs with a fixed key size (AES128-XCBC, AES128-CMAC) SKEYSEED is keyed
with the first half of the key size from each nonce, Ni[:8] | Nr[:8]
(RFC 7296 §2.14; strongSwan does the same). HMAC PRFs take Ni | Nr whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..frozen import fast_init_module
from ..secret import Secret, secret_of
from .encr import encr_keymat_size
from .integ import integ_key_size
from .prf import Prf, prf_for, prf_plus
from .transforms import AEAD_ENCR, IntegId

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_NONE = IntegId.NONE


@dataclass(frozen=True)
class IkeKeys:
    """The seven IKE SA keys, in the order prf+ produces them."""

    sk_d: Secret
    """Derives CHILD SA keying material and the SKEYSEED of a rekeyed IKE SA."""
    sk_ai: Secret
    """Integrity key for messages from the original initiator (empty with AEAD)."""
    sk_ar: Secret
    """Integrity key for messages from the original responder (empty with AEAD)."""
    sk_ei: Secret
    """Encryption key (plus salt for AEAD) for messages from the original initiator."""
    sk_er: Secret
    """Encryption key (plus salt for AEAD) for messages from the original responder."""
    sk_pi: Secret
    """Key for the initiator's AUTH payload (RFC 7296 §2.15)."""
    sk_pr: Secret
    """Key for the responder's AUTH payload."""


def _integ_len(encr_id: int, integ_id: int | None) -> int:
    aead = encr_id in AEAD_ENCR
    if aead:
        if integ_id not in (None, _NONE):
            raise ValueError(f"AEAD cipher {encr_id} must not be combined with integrity {integ_id}")
        return 0
    if integ_id in (None, IntegId.NONE):
        raise ValueError(f"cipher {encr_id} is not AEAD and needs an integrity transform")
    return integ_key_size(integ_id)


def child_key_sizes(encr_id: int, encr_key_bits: int | None, integ_id: int | None) -> tuple[int, int]:
    """(encryption keymat bytes incl. salt, integrity key bytes) for one direction."""
    return encr_keymat_size(encr_id, encr_key_bits), _integ_len(encr_id, integ_id)


def _skeyseed_key(prf: Prf, nonce_i: bytes, nonce_r: bytes) -> bytes:
    if prf.fixed_key:
        half = prf.key_size // 2
        if len(nonce_i) < half or len(nonce_r) < half:
            raise ValueError(f"{prf.id.name} needs nonces of at least {half} bytes")
        return nonce_i[:half] + nonce_r[:half]
    return nonce_i + nonce_r


def derive_ike_keys(
    prf_id: int,
    encr_id: int,
    encr_key_bits: int | None,
    integ_id: int | None,
    nonce_i: bytes,
    nonce_r: bytes,
    shared_secret: bytes,
    spi_i: bytes,
    spi_r: bytes,
    old_sk_d: bytes | None = None,
    old_prf_id: int | None = None,
    additional_secrets: bytes = b"",
) -> tuple[bytes, IkeKeys]:
    """SKEYSEED and the seven keys of a new IKE SA.

    `integ_id` is None (or 0) for AEAD ciphers. With `old_sk_d` this is the
    rekey form of §2.18: SKEYSEED = prf_old(SK_d_old, g^ir(new) | Ni | Nr),
    where prf_old is `old_prf_id` (default: `prf_id`). SPIs are the new SA's.
    `additional_secrets` (rekey form only) is SK(1) | ... | SK(n) of RFC 9370
    §2.2.4, appended after the nonces; engine.crypto.multi_ke builds it.
    """
    if len(spi_i) != 8 or len(spi_r) != 8:
        raise ValueError(f"IKE SPIs must be 8 bytes, got {len(spi_i)} and {len(spi_r)}")
    prf = prf_for(prf_id)
    if old_sk_d is None:
        if additional_secrets:
            raise ValueError("IKE_SA_INIT has a single key exchange: additional secrets need the rekey form")
        skeyseed = prf(_skeyseed_key(prf, nonce_i, nonce_r), shared_secret)
    else:
        old_prf = prf if old_prf_id is None else prf_for(old_prf_id)
        skeyseed = old_prf(old_sk_d, shared_secret + nonce_i + nonce_r + additional_secrets)
    e_len, a_len = child_key_sizes(encr_id, encr_key_bits, integ_id)
    p_len = prf.key_size
    sizes = (p_len, a_len, a_len, e_len, e_len, p_len, p_len)
    stream = prf_plus(prf, skeyseed, nonce_i + nonce_r + spi_i + spi_r, sum(sizes))
    parts = []
    offset = 0
    for size in sizes:
        parts.append(secret_of(stream[offset : offset + size]))
        offset += size
    return skeyseed, IkeKeys(*parts)


def child_keymat(
    prf_id: int,
    sk_d: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    length: int,
    shared_secret: bytes | None = None,
    additional_secrets: bytes = b"",
) -> bytes:
    """KEYMAT = prf+(SK_d, [g^ir(new) |] Ni | Nr) (§2.17); Ni/Nr are this exchange's nonces.

    `additional_secrets` is SK(1) | ... | SK(n) of RFC 9370 §2.2.4 (after the nonces)."""
    if additional_secrets and shared_secret is None:
        raise ValueError("additional key exchange secrets need the primary one (RFC 9370 §2.2.4)")
    seed = nonce_i + nonce_r if shared_secret is None else shared_secret + nonce_i + nonce_r
    return prf_plus(prf_for(prf_id), sk_d, seed + additional_secrets, length)


def split_child_keymat(
    keymat: bytes, encr_len: int, integ_len: int
) -> tuple[bytes, bytes, bytes, bytes]:
    """(encr_i, integ_i, encr_r, integ_r): the initiator-to-responder SA's keys
    come first, encryption before integrity in each direction (§2.17)."""
    need = 2 * (encr_len + integ_len)
    if len(keymat) != need:
        raise ValueError(f"CHILD SA keymat must be {need} bytes, got {len(keymat)}")
    e, a = encr_len, integ_len
    return (
        keymat[:e],
        keymat[e : e + a],
        keymat[e + a : 2 * e + a],
        keymat[2 * e + a :],
    )


fast_init_module(globals())  # built per message: see engine.frozen
