"""Key exchange methods (RFC 7296 §3.4): MODP (RFC 2409, RFC 3526), ECP (RFC 5903)
and Curve25519/Curve448 (RFC 8031).

Wire formats in the KE payload:
- MODP: g^x big-endian, left-padded to the prime's length; shared secret likewise.
- ECP: x | y, each padded to the field size, no 0x04 prefix (RFC 5903 §7);
  the shared secret is the x coordinate only.
- Curve25519/448: the raw RFC 7748 public value and shared secret.

Peer values are validated before use (RFC 6989 for MODP/ECP, RFC 8031 §2 for
the all-zero X25519/X448 result).

ML-KEM (engine.crypto.kem) is a KEM, not a Diffie-Hellman group: initiator and
responder send different data. `new_key_exchange` / `respond` below hide the
difference from the IKE layer, for the primary KE of IKE_SA_INIT and
CREATE_CHILD_SA as for the additional ones of RFC 9370.
"""

from __future__ import annotations

import warnings

from typing import Callable

from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import InvalidKeyExchange, UnsupportedTransform
from .kem import MLKEM_PARAMS, MlKemExchange, is_kem, mlkem_encapsulate
from .transforms import KeId

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_CURVE25519 = KeId.CURVE25519
_KE_IDS: dict[int, KeId] = {int(k): k for k in KeId}
"""A dict lookup instead of the enum's call (EnumType.__call__, __new__: a few thousand instructions):
a key is made for every IKE_SA_INIT."""

# RFC 2409 §6.2 (group 2) and RFC 3526 (groups 5, 14-18), generator 2.
# p = 2^n - 2^(n-64) - 1 + 2^64 * (floor(2^(n-130) * pi) + offset); the test
# suite recomputes each one from that formula.
_MODP_HEX: dict[int, tuple[str, ...]] = {
    2: (
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF"
    ),
    5: (
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
        "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
        "9ED529077096966D670C354E4ABC9804F1746C08CA237327FFFFFFFFFFFFFFFF"
    ),
    14: (
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
        "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
        "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
        "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
        "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF"
    ),
    15: (
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
        "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
        "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
        "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
        "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
        "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
        "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
        "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
        "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF"
    ),
    16: (
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
        "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
        "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
        "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
        "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
        "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
        "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
        "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
        "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7"
        "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8"
        "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2"
        "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9"
        "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF"
    ),
    17: (
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
        "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
        "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
        "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
        "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
        "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
        "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
        "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
        "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7"
        "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8"
        "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2"
        "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9"
        "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C93402849236C3FAB4D27C7026"
        "C1D4DCB2602646DEC9751E763DBA37BDF8FF9406AD9E530EE5DB382F413001AE"
        "B06A53ED9027D831179727B0865A8918DA3EDBEBCF9B14ED44CE6CBACED4BB1B"
        "DB7F1447E6CC254B332051512BD7AF426FB8F401378CD2BF5983CA01C64B92EC"
        "F032EA15D1721D03F482D7CE6E74FEF6D55E702F46980C82B5A84031900B1C9E"
        "59E7C97FBEC7E8F323A97A7E36CC88BE0F1D45B7FF585AC54BD407B22B4154AA"
        "CC8F6D7EBF48E1D814CC5ED20F8037E0A79715EEF29BE32806A1D58BB7C5DA76"
        "F550AA3D8A1FBFF0EB19CCB1A313D55CDA56C9EC2EF29632387FE8D76E3C0468"
        "043E8F663F4860EE12BF2D5B0B7474D6E694F91E6DCC4024FFFFFFFFFFFFFFFF"
    ),
    18: (
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
        "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
        "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
        "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
        "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
        "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
        "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
        "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
        "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7"
        "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8"
        "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2"
        "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9"
        "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C93402849236C3FAB4D27C7026"
        "C1D4DCB2602646DEC9751E763DBA37BDF8FF9406AD9E530EE5DB382F413001AE"
        "B06A53ED9027D831179727B0865A8918DA3EDBEBCF9B14ED44CE6CBACED4BB1B"
        "DB7F1447E6CC254B332051512BD7AF426FB8F401378CD2BF5983CA01C64B92EC"
        "F032EA15D1721D03F482D7CE6E74FEF6D55E702F46980C82B5A84031900B1C9E"
        "59E7C97FBEC7E8F323A97A7E36CC88BE0F1D45B7FF585AC54BD407B22B4154AA"
        "CC8F6D7EBF48E1D814CC5ED20F8037E0A79715EEF29BE32806A1D58BB7C5DA76"
        "F550AA3D8A1FBFF0EB19CCB1A313D55CDA56C9EC2EF29632387FE8D76E3C0468"
        "043E8F663F4860EE12BF2D5B0B7474D6E694F91E6DBE115974A3926F12FEE5E4"
        "38777CB6A932DF8CD8BEC4D073B931BA3BC832B68D9DD300741FA7BF8AFC47ED"
        "2576F6936BA424663AAB639C5AE4F5683423B4742BF1C978238F16CBE39D652D"
        "E3FDB8BEFC848AD922222E04A4037C0713EB57A81A23F0C73473FC646CEA306B"
        "4BCBC8862F8385DDFA9D4B7FA2C087E879683303ED5BDD3A062B3CF5B3A278A6"
        "6D2A13F83F44F82DDF310EE074AB6A364597E899A0255DC164F31CC50846851D"
        "F9AB48195DED7EA1B1D510BD7EE74D73FAF36BC31ECFA268359046F4EB879F92"
        "4009438B481C6CD7889A002ED5EE382BC9190DA6FC026E479558E4475677E9AA"
        "9E3050E2765694DFC81F56E880B96E7160C980DD98EDD3DFFFFFFFFFFFFFFFFF"
    ),
}

MODP_GENERATOR = 2
MODP_PRIMES: dict[int, int] = {g: int("".join(h), 16) for g, h in _MODP_HEX.items()}
del _MODP_HEX

# Private exponent length in bytes when the exponent comes from a caller's rng
# (twice the group's symmetric strength, rounded up, as strongSwan does).
_MODP_EXP_BYTES = {2: 32, 5: 32, 14: 48, 15: 48, 16: 64, 17: 64, 18: 64}

_ECP_CURVES: dict[int, tuple[type[ec.EllipticCurve], int]] = {
    KeId.ECP_256: (ec.SECP256R1, 32),
    KeId.ECP_384: (ec.SECP384R1, 48),
    KeId.ECP_521: (ec.SECP521R1, 66),
}
_MONTGOMERY: dict[int, int] = {KeId.CURVE25519: 32, KeId.CURVE448: 56}

# cryptography (50+) deprecates finite-field DH as a whole. IKEv2 still negotiates the MODP
# groups (RFC 8247: MODP_2048 SHOULD, peers such as Windows offer MODP_1024), so the engine keeps
# them; the warning is silenced for the calls made in this module only, not for anyone else.
warnings.filterwarnings("ignore", message=r"Diffie-Hellman over finite fields", category=UserWarning,
                        module=r"engine\.crypto\.ke$")


def _finite_field_dh():
    """cryptography's finite-field DH module, or None once a release has removed it (or refuses
    to use it): then the MODP groups are simply not offered, and a policy naming one is told why,
    instead of the engine failing to import or failing mid-handshake."""
    try:
        from cryptography.hazmat.primitives.asymmetric import dh as module
        module.DHParameterNumbers(MODP_PRIMES[2], MODP_GENERATOR).parameters()
    except Exception:  # ImportError, AttributeError, UnsupportedAlgorithm: whatever "gone" looks like
        return None
    return module


dh = _finite_field_dh()
FFDH_AVAILABLE = dh is not None
"""Whether the MODP groups can be used with the installed cryptography."""


def ffdh_missing_reason() -> str:
    from cryptography import __version__
    return (f"finite-field Diffie-Hellman (the MODP groups) is not available in the installed "
            f"cryptography {__version__}, which deprecated it in 50")


SUPPORTED_GROUPS = (frozenset(MODP_PRIMES) if FFDH_AVAILABLE else frozenset()) \
    | frozenset(_ECP_CURVES) | frozenset(_MONTGOMERY)
# Still accepted (interop, lint tests) but below today's security floor.
WEAK_GROUPS = frozenset({KeId.MODP_1024, KeId.MODP_1536})

_PARAMS_CACHE: dict[int, object] = {}


def _modp_parameters(group: int):
    params = _PARAMS_CACHE.get(group)
    if params is None:
        params = dh.DHParameterNumbers(MODP_PRIMES[group], MODP_GENERATOR).parameters()
        _PARAMS_CACHE[group] = params
    return params


def _group_name(group: int) -> str:
    try:
        return KeId(group).name
    except ValueError:
        return str(group)


def ke_public_size(group: int) -> int:
    """Length in bytes of the KE payload data for `group`."""
    if group in MODP_PRIMES:
        return (MODP_PRIMES[group].bit_length() + 7) // 8
    if group in _ECP_CURVES:
        return 2 * _ECP_CURVES[group][1]
    if group in _MONTGOMERY:
        return _MONTGOMERY[group]
    raise UnsupportedTransform(f"key exchange method {_group_name(group)} is not supported")


def _check_usable(group: int) -> None:
    ke_public_size(group)  # rejects unknown groups
    if not FFDH_AVAILABLE and group in MODP_PRIMES:
        raise UnsupportedTransform(f"key exchange method {_group_name(group)}: {ffdh_missing_reason()}")


class KeyExchange:
    """One side of a key exchange: a fresh private key for `group`.

    With `rng` left out the private key comes from OpenSSL's generator; with
    an `rng` (n -> n random bytes) it is derived from that, for deterministic
    tests. The private key never appears in repr.
    """

    __slots__ = ("group", "_private", "_public")

    def __init__(self, group: int, rng: Callable[[int], bytes] | None = None) -> None:
        _check_usable(group)
        self.group = _KE_IDS.get(group) or KeId(group)
        if rng is None:
            self._private = self._generate()
        else:
            self._private = self._derive(rng)
        self._public = self._encode_public()

    @classmethod
    def from_private(cls, group: int, private: bytes) -> "KeyExchange":
        """Rebuild a key from its private value (known-answer tests): the MODP
        exponent or ECP scalar big-endian, or the raw X25519/X448 key."""
        self = cls.__new__(cls)
        _check_usable(group)
        self.group = KeId(group)
        self._private = self._load(bytes(private))
        self._public = self._encode_public()
        return self

    # -- construction helpers

    def _generate(self):
        g = self.group
        if g in MODP_PRIMES:
            return _modp_parameters(g).generate_private_key()
        if g in _ECP_CURVES:
            return ec.generate_private_key(_ECP_CURVES[g][0]())
        if g == _CURVE25519:
            return x25519.X25519PrivateKey.generate()
        return x448.X448PrivateKey.generate()

    def _derive(self, rng: Callable[[int], bytes]):
        g = self.group
        if g in MODP_PRIMES:
            n = _MODP_EXP_BYTES[g]
            x = int.from_bytes(_take(rng, n), "big") | (1 << (8 * n - 1))  # full length, > 1
            return self._load(x.to_bytes(n, "big"))
        if g in _ECP_CURVES:
            curve, size = _ECP_CURVES[g]
            bits = curve.key_size - 1  # below the group order for every supported curve
            d = int.from_bytes(_take(rng, size), "big") & ((1 << bits) - 1)
            return self._load(max(d, 1).to_bytes(size, "big"))
        return self._load(_take(rng, _MONTGOMERY[g]))

    def _load(self, private: bytes):
        g = self.group
        try:
            if g in MODP_PRIMES:
                p = MODP_PRIMES[g]
                x = int.from_bytes(private, "big")
                if not 1 < x < p - 1:
                    raise ValueError("private exponent out of range")
                numbers = dh.DHParameterNumbers(p, MODP_GENERATOR)
                public = dh.DHPublicNumbers(pow(MODP_GENERATOR, x, p), numbers)
                return dh.DHPrivateNumbers(x, public).private_key()
            if g in _ECP_CURVES:
                return ec.derive_private_key(int.from_bytes(private, "big"), _ECP_CURVES[g][0]())
            if g == KeId.CURVE25519:
                return x25519.X25519PrivateKey.from_private_bytes(private)
            return x448.X448PrivateKey.from_private_bytes(private)
        except ValueError as exc:
            raise ValueError(f"{g.name}: invalid private key ({exc})") from None

    def _encode_public(self) -> bytes:
        g = self.group
        pub = self._private.public_key()
        if g in MODP_PRIMES:
            return pub.public_numbers().y.to_bytes(ke_public_size(g), "big")
        if g in _ECP_CURVES:
            return pub.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]
        return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)

    # -- public API

    def public_bytes(self) -> bytes:
        """Our key exchange data in IKE wire format."""
        return self._public

    def compute_shared(self, peer_public: bytes) -> bytes:
        """The shared secret g^ir with the peer's KE data.

        Raises InvalidKeyExchange for a wrong length, a MODP value outside
        2..p-2, an ECP point not on the curve, or an all-zero X25519/X448 result.
        """
        g = self.group
        peer_public = bytes(peer_public)
        want = ke_public_size(g)
        if len(peer_public) != want:
            raise InvalidKeyExchange(
                f"{g.name}: peer key exchange data is {len(peer_public)} bytes, expected {want}"
            )
        try:
            if g in MODP_PRIMES:
                p = MODP_PRIMES[g]
                y = int.from_bytes(peer_public, "big")
                if not 1 < y < p - 1:
                    raise InvalidKeyExchange(f"{g.name}: peer public value is outside 2..p-2")
                peer = dh.DHPublicNumbers(y, dh.DHParameterNumbers(p, MODP_GENERATOR)).public_key()
                return self._private.exchange(peer).rjust(want, b"\x00")
            if g in _ECP_CURVES:
                curve = _ECP_CURVES[g][0]()
                peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + peer_public)
                return self._private.exchange(ec.ECDH(), peer)
            if g == _CURVE25519:
                return self._private.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
            return self._private.exchange(x448.X448PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:
            # cryptography raises ValueError for off-curve points, weak MODP values
            # and all-zero X25519/X448 results.
            raise InvalidKeyExchange(f"{g.name}: peer public value rejected ({exc})") from None

    def __repr__(self) -> str:
        return f"KeyExchange({self.group.name})"


def _take(rng: Callable[[int], bytes], n: int) -> bytes:
    out = rng(n)
    if len(out) != n:
        raise ValueError(f"rng returned {len(out)} bytes, asked for {n}")
    return out


def ke_data_size(group: int, *, initiator: bool) -> int:
    """Length of the KE payload data the initiator (or the responder) sends for ``group``."""
    params = MLKEM_PARAMS.get(group)
    if params is not None:
        return params.ek_size if initiator else params.ciphertext_size
    return ke_public_size(group)


def new_key_exchange(group: int) -> KeyExchange | MlKemExchange:
    """The initiator's side of a key exchange (DH or KEM): send ``public_bytes()``,
    then ``compute_shared(responder's KE data)``. Raises UnsupportedTransform
    (MlKemUnavailable for an ML-KEM the installed cryptography lacks)."""
    if is_kem(group):
        return MlKemExchange(group)
    return KeyExchange(group)


def respond(group: int, peer_data: bytes, ready: KeyExchange | None = None) -> tuple[bytes, bytes]:
    """The responder's side: (our KE data, shared secret) for the initiator's KE data.

    DH: a fresh key (or ``ready``, one made ahead for ``group`` and used only here: a
    KeyPool's), its public value and g^ir. KEM: the encapsulation to the initiator's key,
    i.e. (ciphertext, shared secret). Raises InvalidKeyExchange for unusable peer data
    (answered NO_PROPOSAL_CHOSEN, for a KEM as for DH, as charon answers it).
    """
    if is_kem(group):
        enc = mlkem_encapsulate(group, peer_data)
        return enc.ciphertext, enc.shared_secret.reveal()
    if ready is not None and ready.group != group:
        raise ValueError(f"a ready key of {ready.group.name} offered for group {group}")
    mine = ready if ready is not None else KeyExchange(group)
    return mine.public_bytes(), mine.compute_shared(peer_data)
