"""MS-CHAPv2 (RFC 2759) and its MPPE/MSK keys (RFC 3079), as EAP-MSCHAPv2 uses them.

Primitives: MD4 from pycryptodome (``cryptography`` and OpenSSL 3's default
provider have none), DES as TripleDES with the key repeated three times
(EDE with one key is single DES), SHA-1 from ``cryptography``.

The MSK is what strongSwan's eap_mschapv2 plugin computes (GenerateMSK):
MasterReceiveKey | MasterSendKey | 32 zero octets, the two 16-octet keys
derived as RFC 3079 §3.4 does for the server side, so both ends of an IKE SA
derive the same 64 octets.
"""

from __future__ import annotations

import hmac

from Crypto.Hash import MD4
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, modes

try:  # cryptography >= 43 keeps DES in the "decrepit" module
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - cryptography 42
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore[no-redef]

CHALLENGE_SIZE = 16
NT_RESPONSE_SIZE = 24
MSK_SIZE = 64

# RFC 2759 §8.7 magic constants.
_MAGIC1 = b"Magic server to client signing constant"
_MAGIC2 = b"Pad to make it do more than one iteration"
# RFC 3079 §3.4.
_MPPE_MAGIC1 = b"This is the MPPE Master Key"
_MPPE_MAGIC2 = b"On the client side, this is the send key; on the server side, it is the receive key."
_MPPE_MAGIC3 = b"On the client side, this is the receive key; on the server side, it is the send key."
_SHS_PAD1 = bytes(40)
_SHS_PAD2 = b"\xf2" * 40


def md4(data: bytes) -> bytes:
    """MD4 (RFC 1320), only for the NT password hash."""
    return MD4.new(data).digest()


def _sha1(*parts: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA1())
    for p in parts:
        h.update(p)
    return h.finalize()


def _des_key(key7: bytes) -> bytes:
    """7 key octets spread over 8 (parity bits ignored by DES), RFC 2759 §8.6."""
    n = int.from_bytes(key7, "big")
    return bytes(((n >> (49 - 7 * i)) & 0x7F) << 1 for i in range(8))


def des_encrypt(clear8: bytes, key7: bytes) -> bytes:
    """DesEncrypt (RFC 2759 §8.6): one block, a 56-bit key given as 7 octets."""
    key = _des_key(key7)
    enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return enc.update(clear8) + enc.finalize()


def nt_password_hash(password: str) -> bytes:
    """NtPasswordHash: MD4 of the UTF-16LE password (RFC 2759 §8.3)."""
    return md4(password.encode("utf-16-le"))


def challenge_hash(peer_challenge: bytes, authenticator_challenge: bytes, username: bytes) -> bytes:
    """ChallengeHash (§8.2): SHA-1(PeerChallenge | AuthenticatorChallenge | UserName)[:8]."""
    return _sha1(peer_challenge, authenticator_challenge, username)[:8]


def challenge_response(challenge: bytes, password_hash: bytes) -> bytes:
    """ChallengeResponse (§8.5): three DES blocks keyed by the zero-padded password hash."""
    z = password_hash + bytes(21 - len(password_hash))
    return b"".join(des_encrypt(challenge, z[i:i + 7]) for i in (0, 7, 14))


def username_for_hash(identity: bytes) -> bytes:
    """The user name that enters the challenge hash: the part after a ``DOMAIN\\`` (§8.2 and
    what Windows and strongSwan send)."""
    _, sep, user = identity.partition(b"\\")
    return user if sep else identity


def generate_nt_response(authenticator_challenge: bytes, peer_challenge: bytes, username: bytes,
                         password_hash: bytes) -> bytes:
    """GenerateNTResponse (§8.1), from the NT password hash."""
    return challenge_response(challenge_hash(peer_challenge, authenticator_challenge, username), password_hash)


def generate_authenticator_response(password_hash: bytes, nt_response: bytes, peer_challenge: bytes,
                                    authenticator_challenge: bytes, username: bytes) -> bytes:
    """GenerateAuthenticatorResponse (§8.7) as the 20 raw octets (the wire carries ``S=`` + hex)."""
    hash_hash = md4(password_hash)
    digest = _sha1(hash_hash, nt_response, _MAGIC1)
    return _sha1(digest, challenge_hash(peer_challenge, authenticator_challenge, username), _MAGIC2)


def authenticator_response_text(response: bytes) -> bytes:
    """The 42-octet ``S=<40 upper-case hex digits>`` string (§5)."""
    return b"S=" + response.hex().upper().encode()


def check_authenticator_response(expected: bytes, received_text: bytes) -> bool:
    """Compare a received ``S=...`` string with the expected 20 octets, in constant time."""
    return hmac.compare_digest(authenticator_response_text(expected), received_text.upper())


def master_key(password_hash_hash: bytes, nt_response: bytes) -> bytes:
    """GetMasterKey (RFC 3079 §3.4): 16 octets."""
    return _sha1(password_hash_hash, nt_response, _MPPE_MAGIC1)[:16]


def asymmetric_start_key(master: bytes, length: int, is_send: bool, is_server: bool) -> bytes:
    """GetAsymmetricStartKey (RFC 3079 §3.4)."""
    if is_send:
        magic = _MPPE_MAGIC3 if is_server else _MPPE_MAGIC2
    else:
        magic = _MPPE_MAGIC2 if is_server else _MPPE_MAGIC3
    return _sha1(master, _SHS_PAD1, magic, _SHS_PAD2)[:length]


def msk(password_hash: bytes, nt_response: bytes) -> bytes:
    """The 64-octet EAP-MSCHAPv2 MSK as strongSwan derives it: the server's receive and send
    start keys (128-bit), then 32 zero octets."""
    master = master_key(md4(password_hash), nt_response)
    receive = asymmetric_start_key(master, 16, is_send=False, is_server=True)
    send = asymmetric_start_key(master, 16, is_send=True, is_server=True)
    return receive + send + bytes(32)
