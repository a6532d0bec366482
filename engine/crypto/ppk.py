"""Postquantum Preshared Keys (RFC 8784 §3): mixing a PPK into an IKE SA's keys.

After IKE_SA_INIT (and any IKE_INTERMEDIATE key updates), when both peers
use a PPK:

    SK_d'  = prf+(PPK, SK_d)
    SK_pi' = prf+(PPK, SK_pi)
    SK_pr' = prf+(PPK, SK_pr)

each as long as the key it replaces (the PRF's preferred key length). The
AUTH payloads are computed with SK_pi'/SK_pr'; SK_d' then derives every CHILD
SA and the next IKE SA. SK_e/SK_a stay as they were (IKE_AUTH is already
protected by them). A NO_PPK_AUTH notify carries the AUTH data computed with
the unmodified SK_pi, for a responder without the PPK (when the PPK is not
required). strongSwan 6 does the same (keymat_v2.c derive_ppk_key).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..secret import Secret
from .prf import Prf, prf_plus


def _reveal(value: bytes | Secret) -> bytes:
    return value.reveal() if isinstance(value, Secret) else value


def ppk_key(prf_id: int, ppk: bytes | Secret, key: bytes | Secret) -> Secret:
    """prf+(PPK, key), as long as ``key``."""
    raw = _reveal(key)
    secret = _reveal(ppk)
    if not secret:
        raise ValueError("empty PPK")
    return Secret(prf_plus(Prf(prf_id), secret, raw, len(raw)))


@dataclass(frozen=True)
class PpkKeys:
    """The three keys RFC 8784 replaces."""

    sk_d: Secret
    sk_pi: Secret
    sk_pr: Secret


def apply_ppk(prf_id: int, ppk: bytes | Secret, sk_d: bytes | Secret, sk_pi: bytes | Secret,
              sk_pr: bytes | Secret) -> PpkKeys:
    """SK_d', SK_pi', SK_pr' from the current SK_d, SK_pi, SK_pr and the PPK."""
    return PpkKeys(ppk_key(prf_id, ppk, sk_d), ppk_key(prf_id, ppk, sk_pi), ppk_key(prf_id, ppk, sk_pr))
