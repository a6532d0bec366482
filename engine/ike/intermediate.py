"""What an IKE SA keeps between IKE_SA_INIT and IKE_AUTH when RFC 9370 additional
key exchanges were negotiated: the rounds left, the IntAuth chain (RFC 9242
§3.3.2) and the key update after each round (RFC 9370 §2.2.2).

The exchange itself (both roles) is engine.ike.exchanges.ike_intermediate;
IKE_AUTH appends `int_auth` to the octets both sides sign or MAC.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.crypto.intauth import IntAuthChain
from engine.crypto.multi_ke import derive_intermediate_keys
from engine.ike.init import set_ike_keys
from engine.wire.constants import FLAG_INITIATOR, FLAG_RESPONSE, ExchangeType
from engine.wire.intauth import int_auth_octets
from engine.wire.message import encode_payloads


@dataclass
class Intermediate:
    """The additional key exchanges of one IKE SA being set up."""

    rounds: tuple[tuple[int, int], ...]
    """(ADDITIONAL_KEY_EXCHANGE_n transform type, KE id) in order, NONE left out."""
    chain: IntAuthChain
    done: int = 0
    """Rounds completed (keys updated)."""
    auth_mid: int | None = None
    """Message ID of the first IKE_AUTH request (IKE_AUTH_MID), set when AUTH is first computed."""

    @property
    def complete(self) -> bool:
        return self.done == len(self.rounds)

    @property
    def next_group(self) -> int:
        return self.rounds[self.done][1]


def begin(sa) -> None:
    """After IKE_SA_INIT: the rounds the chosen proposal asks for (none: nothing kept)."""
    rounds = sa.chosen.additional_rounds
    sa.intermediate = Intermediate(rounds, IntAuthChain(sa.chosen.prf)) if rounds else None


def pending(sa) -> bool:
    """Additional key exchanges were negotiated and have not all run: IKE_AUTH must wait."""
    return sa.intermediate is not None and not sa.intermediate.complete


def _flags(sa, *, sent: bool, response: bool) -> int:
    initiator = sa.original_initiator if sent else not sa.original_initiator
    return (FLAG_INITIATOR if initiator else 0) | (FLAG_RESPONSE if response else 0)


def sent_octets(sa, mid: int, payloads: list, *, response: bool) -> bytes:
    """IntAuth A|P of a message we send (encoding is deterministic: the same
    inner plaintext the SK payload encrypts)."""
    first, inner = encode_payloads(payloads)
    return int_auth_octets(ExchangeType.IKE_INTERMEDIATE, mid, sa.spi_i, sa.spi_r,
                           _flags(sa, sent=True, response=response), first, inner)


def received_octets(sa, mid: int, *, response: bool) -> bytes:
    """IntAuth A|P of the message just received, from its decrypted (and
    reassembled) inner plaintext as the IKE SA kept it."""
    first, inner = sa.intermediate_plain
    sa.intermediate_plain = None
    return int_auth_octets(ExchangeType.IKE_INTERMEDIATE, mid, sa.spi_i, sa.spi_r,
                           _flags(sa, sent=False, response=response), first, inner)


def chain_request(sa, octets: bytes) -> None:
    st = sa.intermediate
    st.chain = st.chain.add(from_initiator=True, sk_p=sa.keys.sk_pi, octets=octets)


def chain_response(sa, octets: bytes) -> None:
    st = sa.intermediate
    st.chain = st.chain.add(from_initiator=False, sk_p=sa.keys.sk_pr, octets=octets)


def update_keys(sa, shared: bytes) -> None:
    """RFC 9370 §2.2.2: every IKE SA key replaced after this round's key exchange."""
    c, st = sa.chosen, sa.intermediate
    encr_id, key_bits = c.encr
    _, keys = derive_intermediate_keys(c.prf, encr_id, key_bits, c.integ, sa.nonce_i, sa.nonce_r, shared,
                                       sa.spi_i, sa.spi_r, sa.keys.sk_d.reveal())
    set_ike_keys(sa, keys)
    st.done += 1


def note_auth_mid(sa, mid: int) -> None:
    """The first IKE_AUTH request's Message ID (IKE_AUTH_MID), kept for every later AUTH:
    with EAP the AUTH payloads come in later IKE_AUTH rounds."""
    st = sa.intermediate
    if st is not None and st.auth_mid is None:
        st.auth_mid = mid


def int_auth(sa, mid: int) -> bytes:
    """What RFC 9242 §3.3.2 appends to the AUTH octets (b"" without IKE_INTERMEDIATE).
    ``mid`` is the Message ID of the IKE_AUTH request being sent or answered;
    the first one counts (later IKE_AUTH rounds, EAP, use the same)."""
    st = sa.intermediate
    if st is None:
        return b""
    note_auth_mid(sa, mid)
    return st.chain.int_auth(st.auth_mid)


def record_followup(sa) -> None:
    """A rekeyed IKE SA whose keys took RFC 9370 IKE_FOLLOWUP_KE secrets: what its
    status names as additional key exchanges (no IKE_INTERMEDIATE ran on it)."""
    rounds = sa.chosen.additional_rounds
    sa.intermediate = Intermediate(rounds, IntAuthChain(sa.chosen.prf), done=len(rounds))
