"""Proposal conversion and selection (RFC 7296 §2.7, §3.3).

Configured proposals (engine.policy.model.Proposal) list several transforms
per type and accept any combination, as in strongSwan. On the wire each
proposal lists them all; the responder answers with exactly one transform
per type. Like charon's default, the responder walks its own configured
proposals first and takes the first offered proposal that fits.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from engine.frozen import fast_init_module
from engine.crypto.transforms import (
    AdditionalKeType,
    EsnId,
    KeId,
    TransformType,
)
from engine.policy.model import Proposal as ConfProposal
from engine.policy.model import Transform as ConfTransform
from engine.policy.proposals import ProposalError, format_proposal
from engine.wire.constants import ProtocolId
from engine.ike.text import OFFERS, capped
from engine.wire.summary import proposal_text, strongswan_transform_name
from engine.wire.payloads import Proposal as WireProposal
from engine.wire.payloads import Transform as WireTransform

_ORDER = (TransformType.ENCR, TransformType.PRF, TransformType.INTEG, TransformType.KE, TransformType.ESN)
_PROTO_IDS = {"ike": ProtocolId.IKE, "esp": ProtocolId.ESP, "ah": ProtocolId.AH}
_ADDITIONAL = tuple(int(t) for t in AdditionalKeType)
_KNOWN_TYPES = frozenset(int(t) for t in TransformType) | frozenset(_ADDITIONAL)


@dataclass(frozen=True)
class Chosen:
    """A negotiated proposal: one transform per type (None when absent)."""

    protocol: int
    """ProtocolId: IKE, ESP or AH."""
    number: int
    """Proposal number as offered by the initiator."""
    spi: bytes
    """The SPI the proposal carried (the sender's SPI)."""
    encr: tuple[int, int | None] | None = None
    """(ENCR id, key length in bits)."""
    prf: int | None = None
    integ: int | None = None
    ke: int | None = None
    """KE group, or None (no PFS for CHILD SAs)."""
    esn: bool = False
    additional: tuple[tuple[int, int], ...] = ()
    """RFC 9370 ADDITIONAL_KEY_EXCHANGE_n chosen: (transform type 6..12, KE id), NONE (0)
    included when it was the choice, in type order."""

    def with_spi(self, spi: bytes) -> "Chosen":
        return Chosen(self.protocol, self.number, spi, self.encr, self.prf, self.integ, self.ke, self.esn,
                      self.additional)

    @property
    def additional_rounds(self) -> tuple[tuple[int, int], ...]:
        """The additional key exchanges to run: (transform type, KE id), NONE left out."""
        return tuple((t, g) for t, g in self.additional if g != KeId.NONE)

    def to_wire(self) -> WireProposal:
        # From the memo, keyed without the SPI: a CHILD SA's SPI is new every time, and keyed with it
        # the memo would miss for every CHILD SA.
        key = (self.protocol, self.number, self.encr, self.prf, self.integ, self.ke, self.esn, self.additional)
        wire = _spiless_wire.get(key)
        if wire is None:
            wire = _chosen_to_wire(self.with_spi(b"")) if self.spi else _chosen_to_wire(self)
            if len(_spiless_wire) >= _MEMO_SIZE:
                _spiless_wire.clear()
            _spiless_wire[key] = wire
        return WireProposal(self.number, self.protocol, self.spi, wire.transforms) if self.spi else wire

    def _to_wire(self) -> WireProposal:
        ts: list[WireTransform] = []
        if self.encr is not None:
            ts.append(WireTransform(TransformType.ENCR, self.encr[0], self.encr[1]))
        if self.prf is not None:
            ts.append(WireTransform(TransformType.PRF, self.prf))
        if self.integ is not None:
            ts.append(WireTransform(TransformType.INTEG, self.integ))
        if self.ke is not None:
            ts.append(WireTransform(TransformType.KE, self.ke))
        if self.protocol != ProtocolId.IKE:
            ts.append(WireTransform(TransformType.ESN, EsnId.ESN if self.esn else EsnId.NO_ESN))
        ts += [WireTransform(ttype, group) for ttype, group in self.additional]
        return WireProposal(self.number, self.protocol, self.spi, tuple(ts))

    def describe(self) -> str:
        """strongSwan's notation: IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519."""
        return proposal_text(self.to_wire())


_MEMO_SIZE = 1024
_spiless_wire: dict[tuple, WireProposal] = {}
"""Chosen.to_wire()'s proposal without SPI by the Chosen's fields as a plain tuple, at most
_MEMO_SIZE: hashed in C, not through the dataclass's generated __hash__ and __eq__ (what the
lru_cache below costs per lookup)."""


@functools.lru_cache(maxsize=1024)
def _chosen_to_wire(chosen: Chosen) -> WireProposal:
    # Cached: a responder answers with the same few proposals all day.
    return chosen._to_wire()


def protocol_id(name: str) -> int:
    return _PROTO_IDS[name]


def _conf_transforms(p: ConfProposal, with_ke: bool, first_ke: int | None = None,
                     with_additional: bool = True) -> list[WireTransform]:
    out: list[WireTransform] = []
    kes = p.ke if with_ke else ()
    if first_ke is not None:
        kes = sorted(kes, key=lambda t: t.id != first_ke)  # stable: the others keep their order
    groups = {
        TransformType.ENCR: p.encr,
        TransformType.PRF: p.prf,
        TransformType.INTEG: p.integ,
        TransformType.KE: kes,
        TransformType.ESN: p.esn,
    }
    for ttype in _ORDER:
        items: Sequence[ConfTransform] = groups[ttype]
        if ttype == TransformType.ESN and p.protocol != "ike" and not items:
            out.append(WireTransform(TransformType.ESN, EsnId.NO_ESN))
            continue
        for t in items:
            out.append(WireTransform(int(ttype), t.id, t.key_length))
    if with_ke and with_additional:
        out += [WireTransform(int(t.type), t.id) for t in sorted(p.additional_ke, key=lambda t: int(t.type))]
    return out


def to_wire(proposals: Sequence[ConfProposal], spi: bytes, *, with_ke: bool = True,
            first_ke: int | None = None, with_additional: bool = True) -> tuple[WireProposal, ...]:
    """Configured proposals as wire proposals numbered from 1.

    ``first_ke`` moves that group to the front of every proposal's KE list, so
    the proposals agree with the KE payload we send (after INVALID_KE_PAYLOAD).
    ``with_additional`` False leaves the RFC 9370 additional key exchanges out
    (an exchange that cannot run them).
    """
    return tuple(WireProposal(i, _PROTO_IDS[p.protocol], spi,
                              tuple(_conf_transforms(p, with_ke, first_ke, with_additional)))
                 for i, p in enumerate(proposals, 1))


def _by_type(p: WireProposal) -> dict[int, list[WireTransform]]:
    d: dict[int, list[WireTransform]] = {}
    for t in p.transforms:
        d.setdefault(int(t.type), []).append(t)
    return d


def _pick(conf: Sequence[ConfTransform], offered: list[WireTransform], with_keylen: bool) -> WireTransform | None:
    """First configured transform that the peer also offered (configured order wins)."""
    for c in conf:
        for o in offered:
            if o.id == c.id and (not with_keylen or (o.key_length or None) == (c.key_length or None)):
                return o
    return None


def _pick_additional(conf: ConfProposal, got: dict[int, list[WireTransform]],
                     with_additional: bool, primary: int | None = None) -> tuple[tuple[int, int], ...] | None:
    """One choice per ADDITIONAL_KEY_EXCHANGE_n type (RFC 9370 §2.2.1), None when
    they cannot agree. A type absent from an offer means NONE; configured types
    without NONE are then required. ``with_additional`` False: only NONE is
    acceptable (the exchange cannot run additional key exchanges), and a type we
    require fails the proposal, as charon (it selects, then refuses with
    NO_PROPOSAL_CHOSEN a peer without INTERMEDIATE_EXCHANGE_SUPPORTED). A method
    already chosen (``primary``, an earlier type) is not chosen again: a second
    exchange of it adds nothing, and charon refuses such an answer (proposal.c
    select_algo skips the methods it selected)."""
    out: list[tuple[int, int]] = []
    used = {primary} if primary else set()
    for ttype in _ADDITIONAL:
        offered = got.get(ttype, [])
        configured = [t for t in conf.additional_ke if int(t.type) == ttype]
        if configured and not with_additional:
            configured = [t for t in configured if t.id == KeId.NONE]
            if not configured:
                return None  # we require a key exchange this exchange cannot run
        if configured:
            if offered:
                o = _pick([t for t in configured if t.id == KeId.NONE or t.id not in used], offered, False)
                if o is None:
                    return None
                used.add(o.id)
                out.append((ttype, o.id))
            elif not any(t.id == KeId.NONE for t in configured):
                return None  # we require this key exchange, the peer does not offer it
        elif offered:
            if not any(o.id == KeId.NONE for o in offered):
                return None  # the peer requires a key exchange we are not configured for
            out.append((ttype, KeId.NONE))
    return tuple(out)


def match(offered: WireProposal, conf: ConfProposal, *, ignore_ke: bool = False,
          with_additional: bool = True) -> Chosen | None:
    """The combination of one offered proposal and one configured proposal, or None."""
    if offered.protocol != _PROTO_IDS[conf.protocol]:
        return None
    got = _by_type(offered)
    if any(t not in _KNOWN_TYPES for t in got):
        return None  # a transform type we cannot honour
    encr = prf = integ = ke = None
    esn = False
    if conf.protocol != "ah":
        o = _pick(conf.encr, got.get(TransformType.ENCR, []), True)
        if o is None:
            return None
        encr = (o.id, o.key_length)
    if conf.protocol == "ike":
        o = _pick(conf.prf, got.get(TransformType.PRF, []), False)
        if o is None:
            return None
        prf = o.id
    offered_integ = got.get(TransformType.INTEG, [])
    if conf.integ:
        o = _pick(conf.integ, offered_integ, False)
        if o is None:
            return None
        integ = o.id
    elif any(t.id != 0 for t in offered_integ):
        return None  # AEAD configured, peer insists on integrity
    if not ignore_ke:
        offered_ke = got.get(TransformType.KE, [])
        if conf.ke:
            o = _pick(conf.ke, offered_ke, False)
            if o is not None:
                ke = o.id if o.id != 0 else None
            elif offered_ke or conf.protocol == "ike" or all(t.id != KeId.NONE for t in conf.ke):
                return None
            # else: ESP/AH with NONE among our groups makes PFS optional, and an offer without
            # any KE transform is taken without it (charon's select_algo).
        elif offered_ke and all(t.id != 0 for t in offered_ke):
            return None  # the peer wants PFS, we are configured without it
    additional: tuple[tuple[int, int], ...] = ()
    if not ignore_ke:
        found = _pick_additional(conf, got, with_additional, ke)
        if found is None:
            return None
        additional = found
    if conf.protocol != "ike":
        offered_esn = {t.id for t in got.get(TransformType.ESN, [])} or {EsnId.NO_ESN}
        wanted = [t.id for t in conf.esn] or [EsnId.NO_ESN]
        common = [e for e in wanted if e in offered_esn]
        if not common:
            return None
        esn = common[0] == EsnId.ESN
    return Chosen(offered.protocol, offered.number, offered.spi, encr, prf, integ, ke, esn, additional)


def select(offered: Sequence[WireProposal], configured: Sequence[ConfProposal], *,
           ignore_ke: bool = False, with_additional: bool = True) -> Chosen | None:
    """Responder selection: configured order first, then the peer's order. Proposals sharing
    a number (an AH+ESP bundle, which RFC 4301 dropped) are skipped, as charon does."""
    if any(a.number >= b.number for a, b in zip(offered, offered[1:])):
        offered = _single_protocol(offered)
    # Peers offer the same proposals again and again, with a new SPI each time:
    # the choice is cached on the offer without its SPIs, then given the SPI back.
    if type(configured) is tuple:
        # By identity first: the offer's transform lists are shared from one decode to the next
        # (engine.wire.shared, the CHILD SA offer memo) and the configured proposals are the policy's
        # own tuple, so hashing every transform and configured proposal (_select's key) is avoidable.
        key = (id(configured), ignore_ke, with_additional, *[(o.number, o.protocol, id(o.transforms)) for o in offered])
        hit = _by_identity.get(key)
        if hit is not None and hit[0] is configured:
            found = hit[2]
        else:
            found = _select(tuple((o.number, o.protocol, o.transforms) for o in offered), configured, ignore_ke,
                            with_additional)
            if len(_by_identity) >= _MEMO_SIZE:
                _by_identity.clear()
            # The entry holds what its ids name, so none of them can be reused while it is here.
            _by_identity[key] = (configured, tuple(o.transforms for o in offered), found)
    else:
        found = _select(tuple((o.number, o.protocol, o.transforms) for o in offered), tuple(configured), ignore_ke,
                        with_additional)
    if found is None:
        return None
    index, chosen = found
    return chosen.with_spi(offered[index].spi)


def _single_protocol(offered: Sequence[WireProposal]) -> list[WireProposal]:
    counts: dict[int, int] = {}
    for o in offered:
        counts[o.number] = counts.get(o.number, 0) + 1
    return [o for o in offered if counts[o.number] == 1]


_by_identity: dict[tuple, tuple] = {}
"""select()'s answers by the identity of the configured tuple and of each offered transform list
(with each proposal's number and protocol), at most _MEMO_SIZE entries."""


@functools.lru_cache(maxsize=4096)
def _select(shape, configured: tuple[ConfProposal, ...], ignore_ke: bool, with_additional: bool):
    for conf in configured:
        for i, (number, protocol, transforms) in enumerate(shape):
            c = match(WireProposal(number, protocol, b"", transforms), conf, ignore_ke=ignore_ke,
                      with_additional=with_additional)
            if c is not None:
                return i, c
    return None


def pfs_declined(response: WireProposal, offered: Sequence[WireProposal]) -> bool:
    """The responder's CHILD proposal has no KE group (no KE transform, or NONE) and the
    proposal of ours it names offered NONE: PFS was optional and the peer went without it."""
    ours = next((p for p in offered if p.number == response.number and p.protocol == response.protocol), None)
    if ours is None or ours.protocol == ProtocolId.IKE:
        return False
    if not any(t.type == TransformType.KE and t.id == KeId.NONE for t in ours.transforms):
        return False
    chosen = accept_response(response, offered)
    return chosen is not None and not chosen.ke


def accept_response(response: WireProposal, offered: Sequence[WireProposal], *,
                    ignore_ke: bool = False) -> Chosen | None:
    """Initiator side: the responder's single proposal must be one of ours, with
    exactly one transform of each type drawn from what we offered."""
    ours = next((p for p in offered if p.number == response.number and p.protocol == response.protocol), None)
    if ours is None:
        return None
    got = _by_type(response)
    mine = _by_type(ours)
    for ttype, items in got.items():
        if len(items) != 1:
            return None
        t = items[0]
        if ignore_ke and (ttype == TransformType.KE or ttype in _ADDITIONAL):
            continue
        if not any(m.id == t.id and (m.key_length or None) == (t.key_length or None) for m in mine.get(ttype, [])):
            return None
    need = {TransformType.ENCR} if response.protocol != ProtocolId.AH else {TransformType.INTEG}
    if response.protocol == ProtocolId.IKE:
        need = {TransformType.ENCR, TransformType.PRF, TransformType.KE}
    if any(n not in got for n in need):
        return None
    additional: tuple[tuple[int, int], ...] = ()
    if not ignore_ke:
        used = {got[TransformType.KE][0].id} if TransformType.KE in got else set()
        for t in _ADDITIONAL:
            if t in got:
                method = got[t][0].id
                if method != KeId.NONE and method in used:
                    return None  # a method chosen twice: charon's select_algo refuses it as initiator too
                used.add(method)
                additional += ((t, method),)
            elif t in mine:
                # Left out: NONE if we offered it (charon's select_algos omits a type it chose NONE
                # for); else an additional key exchange we require went unanswered (RFC 9370 §2.2.1).
                if not any(m.id == KeId.NONE for m in mine[t]):
                    return None
                additional += ((t, KeId.NONE),)
    e = got.get(TransformType.ENCR, [None])[0]
    ke = got.get(TransformType.KE, [None])[0]
    integ = got.get(TransformType.INTEG, [None])[0]
    esn = got.get(TransformType.ESN, [None])[0]
    return Chosen(
        response.protocol,
        response.number,
        response.spi,
        (e.id, e.key_length) if e else None,
        got[TransformType.PRF][0].id if TransformType.PRF in got else None,
        integ.id if integ and integ.id != 0 else None,
        None if ignore_ke or ke is None or ke.id == 0 else ke.id,
        bool(esn and esn.id == EsnId.ESN),
        additional,
    )


def describe_offer(proposals: Sequence[WireProposal]) -> tuple[str, ...]:
    """Each wire proposal in strongSwan's notation, all transforms listed."""
    return tuple(proposal_text(p) for p in proposals)


def describe_offer_short(proposals: Sequence[WireProposal]) -> tuple[str, ...]:
    """An offer for logs and events: the first few proposals, each cut short,
    then how many were left out. Only those shown are formatted (a hostile offer
    of 255 proposals costs no more than one of eight)."""
    shown = capped(describe_offer(proposals[:OFFERS]))
    if len(proposals) > OFFERS:
        shown += (f"and {len(proposals) - OFFERS} more",)
    return shown


def describe_configured(proposals: Sequence[ConfProposal], spi: bytes = b"") -> tuple[str, ...]:
    return describe_offer(to_wire(proposals, spi or b"\0" * 4))


def first_ke_group(proposals: Sequence[ConfProposal]) -> int | None:
    for p in proposals:
        if p.ke:
            return p.ke[0].id
    return None


def offers_ke_group(proposals: Sequence[ConfProposal], group: int) -> bool:
    return any(t.id == group for p in proposals for t in p.ke)


def additional_ke_mismatch(offered: Sequence[WireProposal], configured: Sequence[ConfProposal]) -> str | None:
    """When proposals fail only on their RFC 9370 additional key exchanges, which
    ADDITIONAL_KEY_EXCHANGE_n slots differ, both sides named (None otherwise).
    Looks at no more than OFFERS offered proposals (the offer is the peer's)."""
    for conf in configured:
        bare = dataclasses.replace(conf, additional_ke=())
        for o in offered[:OFFERS]:
            if match(WireProposal(o.number, o.protocol, b"", tuple(t for t in o.transforms
                                                                  if int(t.type) not in _ADDITIONAL)), bare) is None:
                continue
            got = _by_type(o)
            slots = []
            for ttype in _ADDITIONAL:
                theirs = sorted({t.id for t in got.get(ttype, [])}) or [KeId.NONE]
                ours = sorted({t.id for t in conf.additional_ke if int(t.type) == ttype}) or [KeId.NONE]
                if not set(theirs) & set(ours):
                    slots.append(f"peer {_names(ttype, theirs)} <> ours {_names(ttype, ours)}")
            if slots:
                return "mismatch in the additional key exchanges (RFC 9370): " + "; ".join(slots)
    return None


def pfs_mismatch(offered: Sequence[WireProposal], configured: Sequence[ConfProposal]) -> str | None:
    """When a CHILD offer fails only on its key exchange (the PFS group; e.g. IKE_AUTH's CHILD SA,
    which has none, came up and the rekey then fails), which groups each side has and what to
    change (None otherwise). Looks at no more than OFFERS offered proposals."""
    for conf in configured:
        if conf.protocol == "ike":
            continue
        bare = dataclasses.replace(conf, additional_ke=())
        for o in offered[:OFFERS]:
            plain = WireProposal(o.number, o.protocol, b"", tuple(t for t in o.transforms
                                                                 if int(t.type) not in _ADDITIONAL))
            if match(plain, bare, ignore_ke=True) is None or match(plain, bare) is not None:
                continue
            theirs = sorted({t.id for t in _by_type(o).get(TransformType.KE, []) if t.id != KeId.NONE})
            ours = [t.id for t in conf.ke if t.id != KeId.NONE]
            peer_has = _names(TransformType.KE, theirs) if theirs else "no PFS (no KE group)"
            we_have = _names(TransformType.KE, ours) if ours else "no PFS (no KE group)"
            if theirs:
                example = _with_group(conf, theirs[0])
                fix = (f"add one of the peer's groups to our esp_proposals (e.g. '{example}'), or turn PFS "
                       "off on the peer (pfs=no, or no KE group in its esp_proposals)")
            elif ours:
                fix = ("turn PFS on at the peer (add a group such as "
                       f"'{_with_group(conf, ours[0])}' to its esp_proposals), or remove the group from ours")
            else:
                continue  # neither side has a group: not a PFS mismatch
            return (f"only the key exchange (PFS group) differs: the peer offers {peer_has}, we accept "
                    f"{we_have}. Fix: {fix}.")
    return None


def _with_group(conf: ConfProposal, group: int) -> str:
    """``conf`` in strongSwan's proposal syntax with ``group`` as its only KE group."""
    changed = dataclasses.replace(conf, ke=(ConfTransform(TransformType.KE, group),), additional_ke=())
    try:
        return format_proposal(changed)
    except ProposalError:  # a group without a keyword (the peer's own numbering)
        return f"{conf.text or format_proposal(dataclasses.replace(conf, ke=()))}-<{_names(TransformType.KE, [group])}>"


def _names(ttype: int, ids) -> str:
    return "|".join(strongswan_transform_name(ttype, i) for i in ids)


fast_init_module(globals())  # built per message: see engine.frozen
