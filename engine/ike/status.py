"""Status snapshots of IKE SAs (engine.status) for `sas`, the control socket
and the console. Datapath counters are merged in by the runtime."""

from __future__ import annotations

import functools

from engine.crypto.transforms import TransformType
from engine.events import ChildState
from engine.ike.child import ChildSa
from engine.printable import escape
from engine.status import ChildSaInfo, IkeSaInfo, is_quantum_safe
from engine.wire.summary import strongswan_transform_name


def _in(t: float | None, now: float) -> float | None:
    return None if t is None else max(0.0, t - now)


@functools.lru_cache(maxsize=512)  # a handful of (type, id, bits); a listing asks each SA for five
def _name(ttype: int, tid: int | None, bits: int | None = None) -> str:
    if not tid:
        return ""
    return strongswan_transform_name(ttype, tid, bits)


def child_info(c: ChildSa, now: float, *, encap: bool = False, quantum_safe: bool = False) -> ChildSaInfo:
    ch = c.chosen
    return ChildSaInfo(
        name=c.config.name,
        unique_id=c.unique_id,
        reqid=c.reqid,
        state=c.state.value,
        protocol=c.protocol,
        mode=c.mode,
        encap=encap,
        spi_in=c.spi_in_int,
        spi_out=c.spi_out_int,
        encr=_name(TransformType.ENCR, ch.encr[0], ch.encr[1]) if ch.encr else "",
        integ=_name(TransformType.INTEG, ch.integ),
        ke=_name(TransformType.KE, c.ke_group),
        esn=ch.esn,
        local_ts=tuple(map(str, c.local_ts)),
        remote_ts=tuple(map(str, c.remote_ts)),
        installed_ago=max(0.0, now - c.installed_at),
        rekey_in=_in(c.rekey_at, now) if c.state == ChildState.INSTALLED else None,
        expire_in=_in(c.expire_at, now),
        quantum_safe=quantum_safe,
    )


def additional_ke_names(sa) -> tuple[str, ...]:
    """The RFC 9370 additional key exchanges that went into this IKE SA's keys."""
    st = sa.intermediate
    if st is None:
        return ()
    return tuple(strongswan_transform_name(t, g) for t, g in st.rounds[:st.done])


def ike_quantum_safe(sa) -> bool:
    ch = sa.chosen
    return is_quantum_safe(_name(TransformType.KE, ch.ke) if ch else "", additional_ke_names(sa), sa.ppk_used,
                           sa.quantum_parent)


def ike_sa_info(sa, now: float) -> IkeSaInfo:
    ch = sa.chosen
    encap = sa.encap
    safe = ike_quantum_safe(sa)
    children = [child_info(c, now, encap=encap,
                           quantum_safe=is_quantum_safe(_name(TransformType.KE, c.ke_group), parent_quantum_safe=safe))
                for c in sa.children.values()]
    return IkeSaInfo(
        name=sa.name,
        unique_id=sa.unique_id,
        state=sa.state.value,
        initiator=sa.original_initiator,
        connection_initiator=sa.connection_initiator,
        spi_i=int.from_bytes(sa.spi_i, "big"),
        spi_r=int.from_bytes(sa.spi_r, "big"),
        local_addr=sa.local[0],
        local_port=sa.local[1],
        remote_addr=sa.remote[0],
        remote_port=sa.remote[1],
        # Display strings: the peer's identities as escapes, never its controls (the SA keeps the raw
        # Identity for matching and uniqueness; nothing in the engine compares these).
        local_id=escape(str(sa.local_id)) if sa.local_id else "",
        remote_id=escape(str(sa.remote_id)) if sa.remote_id else "",
        encr=_name(TransformType.ENCR, ch.encr[0], ch.encr[1]) if ch and ch.encr else "",
        integ=_name(TransformType.INTEG, ch.integ) if ch else "",
        prf=_name(TransformType.PRF, ch.prf) if ch else "",
        ke=_name(TransformType.KE, ch.ke) if ch else "",
        nat_local=sa.nat.local_behind,
        nat_remote=sa.nat.remote_behind,
        established_ago=None if sa.established_at is None else max(0.0, now - sa.established_at),
        rekey_in=_in(sa.rekey_at, now),
        expire_in=_in(sa.expire_at, now),
        children=tuple(sorted(children, key=lambda c: c.unique_id)),
        virtual_ips=sa.remote_vips or sa.local_vips,
        pool=sa.vip_pool,
        eap_identity=escape(sa.eap_identity),
        eap_method=sa.eap_method,
        cert_subject=escape(sa.cert_subject),
        mobike_moves=sa.mobike_moves,
        additional_ke=additional_ke_names(sa),
        ppk=sa.ppk_used,
        quantum_safe=safe,
    )
