"""Multiple key exchanges (RFC 9370): which additional exchanges run, and the keys after each.

IKE SA setup (§2.2.2): IKE_SA_INIT does the primary key exchange; then one
IKE_INTERMEDIATE exchange per negotiated ADDITIONAL_KEY_EXCHANGE_n (in the
order n = 1..7, NONE skipped), each protected with the keys of the previous
step. After the n-th of them every IKE SA key is replaced:

    SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr)
    {SK_d(n) | SK_ai(n) | SK_ar(n) | SK_ei(n) | SK_er(n) | SK_pi(n) | SK_pr(n)}
                = prf+(SKEYSEED(n), Ni | Nr | SPIi | SPIr)

with Ni, Nr from IKE_SA_INIT and the IKE SA's SPIs (`derive_intermediate_keys`).

CREATE_CHILD_SA (§2.2.4): the primary KE travels in CREATE_CHILD_SA, the
additional ones in IKE_FOLLOWUP_KE exchanges; the keys are computed once,
after the last, with the shared secrets in exchange order after the nonces:

    IKE SA rekey:  SKEYSEED = prf(SK_d, SK(0) | Ni | Nr | SK(1) | ... | SK(n))
    CHILD SA:      KEYMAT   = prf+(SK_d, SK(0) | Ni | Nr | SK(1) | ... | SK(n))

(`derive_rekeyed_ike_keys`, `child_keymat_multi`; Ni, Nr are the
CREATE_CHILD_SA nonces.) strongSwan 6 computes the same
(keymat_v2.c: key_exchange_concat_secrets, "sccs" seed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .keys import IkeKeys, child_keymat, derive_ike_keys
from .transforms import AdditionalKeType, KeId, additional_ke_number


@dataclass(frozen=True)
class AdditionalKeRound:
    """One additional key exchange to perform."""

    number: int
    """n of ADDITIONAL_KEY_EXCHANGE_n (1..7)."""
    group: KeId
    """The negotiated key exchange method."""

    @property
    def transform_type(self) -> AdditionalKeType:
        return AdditionalKeType(5 + self.number)


def additional_ke_rounds(chosen: Mapping[int, int]) -> tuple[AdditionalKeRound, ...]:
    """The additional key exchanges to run, in order, from the negotiated proposal's
    {transform type (6..12): KE id}; types chosen as NONE (0) are skipped (§2.2.1)."""
    rounds = []
    for ttype, group in chosen.items():
        number = additional_ke_number(ttype)
        if number is None:
            raise ValueError(f"transform type {ttype} is not an ADDITIONAL_KEY_EXCHANGE type")
        if group:
            rounds.append(AdditionalKeRound(number, KeId(group)))
    return tuple(sorted(rounds, key=lambda r: r.number))


def derive_intermediate_keys(
    prf_id: int,
    encr_id: int,
    encr_key_bits: int | None,
    integ_id: int | None,
    nonce_i: bytes,
    nonce_r: bytes,
    shared_secret: bytes,
    spi_i: bytes,
    spi_r: bytes,
    sk_d_previous: bytes,
) -> tuple[bytes, IkeKeys]:
    """(SKEYSEED(n), keys(n)) after the n-th IKE_INTERMEDIATE key exchange (§2.2.2).

    ``shared_secret`` is SK(n), ``sk_d_previous`` SK_d(n-1); nonces are those
    of IKE_SA_INIT, SPIs the IKE SA's. The IKE SA's own PRF keys SKEYSEED(n).
    """
    return derive_ike_keys(prf_id, encr_id, encr_key_bits, integ_id, nonce_i, nonce_r, shared_secret,
                           spi_i, spi_r, old_sk_d=sk_d_previous, old_prf_id=prf_id)


def _split(secrets: Sequence[bytes]) -> tuple[bytes, bytes]:
    if not secrets:
        raise ValueError("at least the primary key exchange's shared secret is needed")
    return secrets[0], b"".join(secrets[1:])


def derive_rekeyed_ike_keys(
    prf_id: int,
    encr_id: int,
    encr_key_bits: int | None,
    integ_id: int | None,
    nonce_i: bytes,
    nonce_r: bytes,
    shared_secrets: Sequence[bytes],
    spi_i: bytes,
    spi_r: bytes,
    old_sk_d: bytes,
    old_prf_id: int,
) -> tuple[bytes, IkeKeys]:
    """The new IKE SA's keys after CREATE_CHILD_SA and its IKE_FOLLOWUP_KE exchanges.

    ``shared_secrets`` = (SK(0) from CREATE_CHILD_SA, SK(1), ..., SK(n)) in
    exchange order; SPIs are the new IKE SA's; prf is the old SA's (§2.18).
    """
    first, rest = _split(shared_secrets)
    return derive_ike_keys(prf_id, encr_id, encr_key_bits, integ_id, nonce_i, nonce_r, first, spi_i, spi_r,
                           old_sk_d=old_sk_d, old_prf_id=old_prf_id, additional_secrets=rest)


def child_keymat_multi(prf_id: int, sk_d: bytes, nonce_i: bytes, nonce_r: bytes, length: int,
                       shared_secrets: Sequence[bytes]) -> bytes:
    """CHILD SA KEYMAT with PFS from several key exchanges (§2.2.4), secrets in exchange order."""
    first, rest = _split(shared_secrets)
    return child_keymat(prf_id, sk_d, nonce_i, nonce_r, length, first, additional_secrets=rest)
