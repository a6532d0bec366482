"""EAP-MSCHAPv2 (draft-kamath-pppext-eap-mschapv2-02, RFC 2759 inside), both roles.

Framing after the EAP type octet (26), as Windows, macOS, iOS and strongSwan
send it::

    OpCode (1) | MS-CHAPv2-ID (1) | MS-Length (2) | data       Challenge, Response,
                                                               Success/Failure requests
    OpCode (1)                                                 Success/Failure responses

    Challenge data: Value-Size (16) | Challenge (16) | Name
    Response data:  Value-Size (49) | Peer-Challenge (16) | Reserved (8) | NT-Response (24)
                    | Flags (1) | Name
    Success data:   "S=<40 hex digits> M=<message>"
    Failure data:   "E=<error> R=<retry> C=<32 hex digits> V=3 M=<message>"

The conversation: server Challenge -> peer Response -> server Success request
(the authenticator response, which the peer checks: mutual) -> peer Success
response -> EAP-Success. A wrong password gets a Failure request with a new
challenge (R=1) up to ``max_retries`` times, then EAP-Failure.

The MSK (engine.crypto.mschapv2.msk) is strongSwan's. The name hashed is the
user part after ``DOMAIN\\``; the whole name is sent and looked up.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable

from engine.crypto import mschapv2 as ms
from engine.eap.method import MethodStep, Outcome, PeerMethod, Random, ServerMethod, fail, more
from engine.eap.packet import EapPacket, EapType, printable
from engine.secret import Secret
from engine.wire.constants import EapCode

CHALLENGE, RESPONSE, SUCCESS, FAILURE, CHANGE_PASSWORD = 1, 2, 3, 4, 7
_HEADER = struct.Struct("!BBH")  # OpCode, MS-CHAPv2-ID, MS-Length
_RESPONSE_LEN = 49
SERVER_NAME = b"ipsec-console"
ERROR_AUTHENTICATION_FAILURE = 691
_ERRORS = {646: "restricted logon hours", 647: "account disabled", 648: "password expired",
           649: "no dial-in permission", 691: "wrong user name or password", 709: "error changing password"}
MAX_NAME = 255
RETRY_DELAY = 2.0
"""Seconds strongSwan waits before a retry challenge (eap_mschapv2.c RETRY_DELAY)."""

PasswordLookup = Callable[[bytes], "Secret | None"]
"""The cleartext password of an EAP identity (the secrets file's [eap.NAME]), or None."""


def _message(opcode: int, ms_id: int, data: bytes) -> bytes:
    return _HEADER.pack(opcode, ms_id, 4 + len(data)) + data


def _fields(text: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for token in text.split(b" "):
        key, sep, value = token.partition(b"=")
        if sep and len(key) == 1 and chr(key[0]) not in out:
            out[chr(key[0])] = value
    # M= is the rest of the line and may hold spaces.
    if b"M=" in text:
        out["M"] = text.split(b"M=", 1)[1]
    return out


def failure_reason(text: bytes) -> str:
    """Plain words for a Failure request's ``E=... R=... M=...``."""
    f = _fields(text)
    try:
        code = int(f.get("E", b"0"))
    except ValueError:
        code = 0
    words = _ERRORS.get(code, f"error {code}")
    msg = f.get("M")
    return f"the server refused the login: {words} (E={code})" + (f", '{printable(msg)}'" if msg else "")


class MschapV2Server(ServerMethod):
    type = EapType.MSCHAPV2
    name = "EAP-MSCHAPv2"

    def __init__(self, passwords: PasswordLookup, *, max_retries: int = 2, random: Random = os.urandom,
                 server_name: bytes = SERVER_NAME) -> None:
        super().__init__(random)
        self.passwords = passwords
        self.max_retries = max_retries
        self.server_name = server_name
        self.retries = 0
        self.ms_id = 0
        self.challenge = b""
        self.state = "idle"
        self._auth_response = b""
        self._msk = b""

    def start(self, identifier: int) -> EapPacket:
        self.challenge = self.random(ms.CHALLENGE_SIZE)
        self.ms_id = identifier
        self.state = "expect response"
        data = bytes((ms.CHALLENGE_SIZE,)) + self.challenge + self.server_name
        return EapPacket(EapCode.REQUEST, identifier, self.type, _message(CHALLENGE, self.ms_id, data))

    def process(self, response: EapPacket, identifier: int) -> MethodStep:
        data = response.type_data
        if not data:
            return fail("EAP-MSCHAPv2 response without an OpCode")
        opcode = data[0]
        if opcode == FAILURE:
            return fail("the client ended EAP-MSCHAPv2 (it sent a Failure response)")
        if self.state == "expect response" and opcode == RESPONSE:
            return self._response(data, identifier)
        if self.state == "expect success ack" and opcode == SUCCESS:
            self.state = "done"
            self.msk = Secret(self._msk)
            return MethodStep(Outcome.SUCCESS)
        return fail(f"unexpected EAP-MSCHAPv2 OpCode {opcode} while waiting for the "
                    f"{'Response' if self.state == 'expect response' else 'Success acknowledgement'}")

    def _response(self, data: bytes, identifier: int) -> MethodStep:
        if len(data) < 4 + 1 + _RESPONSE_LEN:
            return fail(f"EAP-MSCHAPv2 Response of {len(data)} bytes is too short")
        _, ms_id, ms_len = _HEADER.unpack_from(data)
        if data[4] != _RESPONSE_LEN:
            return fail(f"EAP-MSCHAPv2 Response with Value-Size {data[4]} (must be 49)")
        value = data[5:5 + _RESPONSE_LEN]
        peer_challenge, nt_response = value[:16], value[24:48]
        name = data[5 + _RESPONSE_LEN:][:MAX_NAME]
        password = self.passwords(name)
        if password is not None:
            pw_hash = ms.nt_password_hash(password.reveal().decode("utf-8", "replace"))
            user = ms.username_for_hash(name)
            expected = ms.generate_nt_response(self.challenge, peer_challenge, user, pw_hash)
            if hmac.compare_digest(expected, nt_response):
                auth = ms.generate_authenticator_response(pw_hash, nt_response, peer_challenge, self.challenge, user)
                self._msk = ms.msk(pw_hash, nt_response)
                self.identity = bytes(name)
                self.state = "expect success ack"
                text = ms.authenticator_response_text(auth) + b" M=Welcome"
                return more(EapPacket(EapCode.REQUEST, identifier, self.type,
                                      _message(SUCCESS, self.ms_id, text)))
        who = printable(name)
        if self.retries >= self.max_retries:
            why = "no EAP secret for this user" if password is None else "wrong password"
            return fail(f"EAP-MSCHAPv2 login of '{who}' failed: {why}"
                        + (f" ({self.retries + 1} tries)" if self.retries else ""))
        # A new challenge; the same message whether the user exists or not (no user enumeration).
        self.retries += 1
        self.challenge = self.random(ms.CHALLENGE_SIZE)
        text = (f"E={ERROR_AUTHENTICATION_FAILURE} R=1 C=".encode() + self.challenge.hex().upper().encode()
                + b" V=3 M=Authentication failed")
        # The Failure copies the Response's MS-CHAPv2-ID (RFC 2759 §6); the retried Response and the
        # Success then use the next one (charon: ms_chapv2_id = this->mschapv2id++).
        failure = _message(FAILURE, self.ms_id, text)
        self.ms_id = (self.ms_id + 1) & 0xFF
        return more(EapPacket(EapCode.REQUEST, identifier, self.type, failure), delay=RETRY_DELAY)


class MschapV2Peer(PeerMethod):
    type = EapType.MSCHAPV2
    name = "EAP-MSCHAPv2"

    def __init__(self, identity: bytes, password: Secret | None, *, random: Random = os.urandom) -> None:
        super().__init__(random)
        self.identity = identity
        self.password = password
        self.state = "expect challenge"
        self._auth_response = b""
        self._msk = b""

    @property
    def may_succeed(self) -> bool:
        return self.state == "done"

    def process(self, request: EapPacket) -> MethodStep:
        data = request.type_data
        if len(data) < 4:
            return fail(f"EAP-MSCHAPv2 request of {len(data)} bytes is too short")
        opcode, ms_id, _ = _HEADER.unpack_from(data)
        if opcode == CHALLENGE and self.state == "expect challenge":
            return self._challenge(request, data, ms_id)
        if opcode == SUCCESS and self.state == "expect success":
            fields = _fields(data[4:])
            received = fields.get("S", b"")
            if len(received) != 40 or not ms.check_authenticator_response(self._auth_response, b"S=" + received):
                self.state = "failed"
                return fail("the server's EAP-MSCHAPv2 authenticator response is wrong: it does not know "
                            "our password (a fake gateway?)")
            self.state = "done"
            self.msk = Secret(self._msk)
            return more(EapPacket(EapCode.RESPONSE, request.identifier, self.type, bytes((SUCCESS,))))
        if opcode == FAILURE and self.state == "expect success":
            self.state = "failed"
            return fail(failure_reason(data[4:]),
                        EapPacket(EapCode.RESPONSE, request.identifier, self.type, bytes((FAILURE,))))
        return fail(f"unexpected EAP-MSCHAPv2 OpCode {opcode} in state '{self.state}'")

    def _challenge(self, request: EapPacket, data: bytes, ms_id: int) -> MethodStep:
        if len(data) < 4 + 1 + ms.CHALLENGE_SIZE + 1 or data[4] != ms.CHALLENGE_SIZE:
            return fail("malformed EAP-MSCHAPv2 Challenge (Value-Size must be 16, a name must follow)")
        if self.password is None:
            return fail(f"no EAP secret for '{printable(self.identity)}': add an [eap.NAME] entry with "
                        "this id to the secrets file")
        challenge = data[5:5 + ms.CHALLENGE_SIZE]
        peer_challenge = self.random(ms.CHALLENGE_SIZE)
        pw_hash = ms.nt_password_hash(self.password.reveal().decode("utf-8", "replace"))
        user = ms.username_for_hash(self.identity)
        nt_response = ms.generate_nt_response(challenge, peer_challenge, user, pw_hash)
        self._auth_response = ms.generate_authenticator_response(pw_hash, nt_response, peer_challenge, challenge,
                                                                 user)
        self._msk = ms.msk(pw_hash, nt_response)
        self.state = "expect success"
        value = peer_challenge + bytes(8) + nt_response + b"\0"
        body = bytes((_RESPONSE_LEN,)) + value + self.identity
        return more(EapPacket(EapCode.RESPONSE, request.identifier, self.type, _message(RESPONSE, ms_id, body)))
