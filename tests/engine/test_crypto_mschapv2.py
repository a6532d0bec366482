"""MS-CHAPv2 primitives against RFC 1320 (MD4), RFC 2759 §9.2 and RFC 3079 §3.5.3."""

from __future__ import annotations

import pytest

from engine.crypto import mschapv2 as m

H = bytes.fromhex


@pytest.mark.parametrize("text, digest", [
    (b"", "31d6cfe0d16ae931b73c59d7e0c089c0"),
    (b"a", "bde52cb31de33e46245e05fbdbd6fb24"),
    (b"abc", "a448017aaf21d8525fc10ae87aa6729d"),
    (b"message digest", "d9130a8164549fe818874806e1c7014b"),
    (b"abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"),
    (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "043f8582f241db351ce627e153e7f0e4"),
    (b"1234567890" * 8, "e33b4ddc9c38f2199c3e7b164fcc0536"),
])
def test_md4_rfc1320_suite(text, digest):
    assert m.md4(text).hex() == digest


AUTH_CHALLENGE = H("5B5D7C7D7B3F2F3E3C2C602132262628")
PEER_CHALLENGE = H("21402324255E262A28295F2B3A337C7E")
NT_RESPONSE = H("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")
PASSWORD_HASH = H("44EBBA8D5312B8D611474411F56989AE")


def test_rfc2759_vectors():
    assert m.nt_password_hash("clientPass") == PASSWORD_HASH
    assert m.md4(PASSWORD_HASH) == H("41C00C584BD2D91C4017A2A12FA59F3F")
    assert m.challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, b"User") == H("D02E4386BCE91226")
    assert m.generate_nt_response(AUTH_CHALLENGE, PEER_CHALLENGE, b"User", PASSWORD_HASH) == NT_RESPONSE
    resp = m.generate_authenticator_response(PASSWORD_HASH, NT_RESPONSE, PEER_CHALLENGE, AUTH_CHALLENGE, b"User")
    assert m.authenticator_response_text(resp) == b"S=407A5589115FD0D6209F510FE9C04566932CDA56"
    assert m.check_authenticator_response(resp, b"S=407a5589115fd0d6209f510fe9c04566932cda56")
    assert not m.check_authenticator_response(resp, b"S=407A5589115FD0D6209F510FE9C04566932CDA57")


def test_domain_is_left_out_of_the_challenge_hash():
    assert m.username_for_hash(b"EXAMPLE\\User") == b"User"
    assert m.username_for_hash(b"user@example.org") == b"user@example.org"


def test_rfc3079_128_bit_keys():
    master = m.master_key(m.md4(PASSWORD_HASH), NT_RESPONSE)
    assert master == H("FDECE3717A8C838CB388E527AE3CDD31")
    # §3.5.3's SendStartKey128 is the one made with Magic3: the server's send key, the client's receive key.
    server_send = m.asymmetric_start_key(master, 16, is_send=True, is_server=True)
    assert server_send == H("8B7CDC149B993A1BA118CB153F56DCCB")
    assert m.asymmetric_start_key(master, 16, is_send=False, is_server=False) == server_send


def test_msk_is_strongswans_layout():
    master = m.master_key(m.md4(PASSWORD_HASH), NT_RESPONSE)
    msk = m.msk(PASSWORD_HASH, NT_RESPONSE)
    assert len(msk) == 64
    # strongSwan's GenerateMSK: the Magic2 key (server receive) first, then the Magic3 key (server send).
    assert msk[:16] == m.asymmetric_start_key(master, 16, is_send=False, is_server=True)
    assert msk[16:32] == H("8B7CDC149B993A1BA118CB153F56DCCB")
    assert msk[:16] != msk[16:32]
    assert msk[32:] == bytes(32)


def test_des_known_answer():
    # FIPS 81 / classic DES vector: key 0x133457799BBCDFF1 (parity form), plaintext 0123456789ABCDEF.
    key56 = int.from_bytes(H("133457799BBCDFF1"), "big")
    key7 = 0
    for i in range(8):
        key7 = (key7 << 7) | ((key56 >> (57 - 8 * i)) & 0x7F)
    assert m.des_encrypt(H("0123456789ABCDEF"), key7.to_bytes(7, "big")) == H("85E813540F0AB405")
