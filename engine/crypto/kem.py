"""ML-KEM (FIPS 203) as an IKEv2 key exchange method (RFC 9370 registry IDs 35-37,
draft-ietf-ipsecme-ikev2-mlkem).

A KEM is not symmetric like Diffie-Hellman: the initiator sends its encapsulation
key (ek), the responder encapsulates to it and sends the ciphertext back, the
initiator decapsulates. The shared secret is 32 octets either way.

    initiator: kem = MlKemExchange(group); KE data = kem.public_bytes()        (ek)
    responder: enc = mlkem_encapsulate(group, ek); KE data = enc.ciphertext   (secret: enc.shared_secret)
    initiator: secret = kem.compute_shared(ciphertext)                        (decapsulation)

Sizes (FIPS 203 §8): ML-KEM-768 ek 1184, ciphertext 1088; ML-KEM-1024 ek 1568,
ciphertext 1568. A wrong length or an ek that fails FIPS 203's modulus check is
an InvalidKeyExchange (answer INVALID_SYNTAX); a well-formed but wrong
ciphertext decapsulates to an unrelated secret (implicit rejection) and shows
as an AUTH failure later, as the design intends.

ML-KEM comes from ``cryptography`` (MLKEM768 since 47.0, MLKEM1024 since 48.0)
and only when its OpenSSL backend provides it; `mlkem_unavailable_reason` says
why not, and everything here raises MlKemUnavailable in that case.
"""

from __future__ import annotations

from dataclasses import dataclass

import cryptography
from cryptography.exceptions import UnsupportedAlgorithm

from ..secret import Secret
from .errors import InvalidKeyExchange, MlKemUnavailable, UnsupportedTransform
from .transforms import KeId

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_ML_KEM_1024 = KeId.ML_KEM_1024
_ML_KEM_512 = KeId.ML_KEM_512
_ML_KEM_768 = KeId.ML_KEM_768

try:  # cryptography < 47 has no ML-KEM at all
    from cryptography.hazmat.primitives.asymmetric import mlkem as _mlkem
except ImportError:  # pragma: no cover - depends on the installed cryptography
    _mlkem = None

SHARED_SECRET_SIZE = 32
SEED_SIZE = 64
"""FIPS 203 key generation seed d | z."""


@dataclass(frozen=True)
class MlKemParams:
    group: KeId
    ek_size: int
    """Encapsulation key: the initiator's KE data."""
    ciphertext_size: int
    """Ciphertext: the responder's KE data."""
    private_class: str
    public_class: str


MLKEM_PARAMS: dict[int, MlKemParams] = {
    KeId.ML_KEM_768: MlKemParams(KeId.ML_KEM_768, 1184, 1088, "MLKEM768PrivateKey", "MLKEM768PublicKey"),
    KeId.ML_KEM_1024: MlKemParams(KeId.ML_KEM_1024, 1568, 1568, "MLKEM1024PrivateKey", "MLKEM1024PublicKey"),
}
MLKEM_GROUPS = frozenset(MLKEM_PARAMS)
"""The ML-KEM parameter sets this engine implements (ML-KEM-512 is not offered by cryptography)."""


def is_kem(group: int) -> bool:
    """True for key exchange methods that are KEMs (initiator and responder send different data)."""
    return group in (_ML_KEM_512, _ML_KEM_768, _ML_KEM_1024)


def _backend_supported() -> bool:
    # Imported lazily by cryptography itself too; the backend is a process-wide singleton.
    from cryptography.hazmat.backends.openssl.backend import backend

    check = getattr(backend, "mlkem_supported", None)
    return bool(check and check())


def mlkem_unavailable_reason(group: int) -> str | None:
    """Why ``group`` cannot be used with the installed ``cryptography``, or None if it can."""
    if group not in MLKEM_PARAMS:
        if group == KeId.ML_KEM_512:
            return "ML-KEM-512 is not offered by the cryptography package; use ML-KEM-768 or ML-KEM-1024"
        return f"key exchange method {group} is not ML-KEM"
    params = MLKEM_PARAMS[group]
    where = f"cryptography {cryptography.__version__}"
    if _mlkem is None or not hasattr(_mlkem, params.private_class):
        need = "47" if group == KeId.ML_KEM_768 else "48"
        return f"{params.group.name} needs cryptography >= {need}.0 (installed: {where})"
    try:
        supported = _backend_supported()
    except Exception:  # an odd backend: treat as unsupported rather than crash a policy check
        supported = False
    if not supported:
        from cryptography.hazmat.backends.openssl.backend import backend

        return (f"{params.group.name}: the OpenSSL behind {where} ({backend.openssl_version_text()}) "
                "has no ML-KEM; install a cryptography wheel (it bundles OpenSSL 3.5 or later)")
    return None


def mlkem_available(group: int) -> bool:
    return mlkem_unavailable_reason(group) is None


def _classes(group: int):
    reason = mlkem_unavailable_reason(group)
    if reason is not None:
        if group not in MLKEM_PARAMS:
            raise UnsupportedTransform(reason)
        raise MlKemUnavailable(reason)
    params = MLKEM_PARAMS[group]
    return params, getattr(_mlkem, params.private_class), getattr(_mlkem, params.public_class)


@dataclass(frozen=True)
class KemEncapsulation:
    """The responder's result: the ciphertext to send and the shared secret to keep."""

    ciphertext: bytes
    """The responder's KE payload data."""
    shared_secret: Secret
    """32 octets; wrapped so that it never shows in a repr or a log."""


def mlkem_encapsulate(group: int, peer_ek: bytes) -> KemEncapsulation:
    """Responder side: encapsulate to the initiator's KE data.

    Raises InvalidKeyExchange for a wrong length or an encapsulation key that
    fails the FIPS 203 §7.2 input check.
    """
    params, _, public_cls = _classes(group)
    peer_ek = bytes(peer_ek)
    if len(peer_ek) != params.ek_size:
        raise InvalidKeyExchange(f"{params.group.name}: peer encapsulation key is {len(peer_ek)} bytes, "
                                 f"expected {params.ek_size}")
    try:
        public = public_cls.from_public_bytes(peer_ek)
        shared, ciphertext = public.encapsulate()
    except (ValueError, UnsupportedAlgorithm):
        # The length is right, so OpenSSL refused a coefficient >= q.
        raise InvalidKeyExchange(f"{params.group.name}: peer encapsulation key fails the FIPS 203 §7.2 "
                                 "modulus check") from None
    return KemEncapsulation(ciphertext, Secret(shared))


class MlKemExchange:
    """Initiator side of an ML-KEM key exchange: a fresh key pair for ``group``.

    Shaped like engine.crypto.ke.KeyExchange (``group``, ``public_bytes()``,
    ``compute_shared(peer_data)``) so that an initiator handles DH and KEM
    alike. The responder does not use this class: see `mlkem_encapsulate` and
    engine.crypto.ke.respond. The private key never appears in repr.
    """

    __slots__ = ("group", "_private", "_public")

    def __init__(self, group: int, seed: bytes | None = None) -> None:
        params, private_cls, _ = _classes(group)
        self.group = params.group
        if seed is None:
            self._private = private_cls.generate()
        else:
            if len(seed) != SEED_SIZE:
                raise ValueError(f"an ML-KEM seed (d | z) is {SEED_SIZE} bytes, got {len(seed)}")
            self._private = private_cls.from_seed_bytes(bytes(seed))
        self._public = self._private.public_key().public_bytes_raw()

    @classmethod
    def from_seed(cls, group: int, seed: bytes) -> "MlKemExchange":
        """Deterministic key pair from the FIPS 203 seed d | z (known-answer tests)."""
        return cls(group, seed)

    def public_bytes(self) -> bytes:
        """Our KE payload data: the encapsulation key."""
        return self._public

    def compute_shared(self, ciphertext: bytes) -> bytes:
        """Decapsulate the responder's ciphertext (the KE data of its reply).

        Raises InvalidKeyExchange for a wrong length; any ciphertext of the
        right length gives a secret (FIPS 203 implicit rejection).
        """
        params = MLKEM_PARAMS[self.group]
        ciphertext = bytes(ciphertext)
        if len(ciphertext) != params.ciphertext_size:
            raise InvalidKeyExchange(f"{self.group.name}: peer ciphertext is {len(ciphertext)} bytes, "
                                     f"expected {params.ciphertext_size}")
        try:
            return self._private.decapsulate(ciphertext)
        except ValueError as exc:
            raise InvalidKeyExchange(f"{self.group.name}: ciphertext rejected ({exc})") from None

    def __repr__(self) -> str:
        return f"MlKemExchange({self.group.name})"
