"""A scripted, deterministic runtime for tests, the benchmark and demos.

It keeps a tiny simulated gateway: connections from a policy, IKE SAs and
CHILD SAs with counters that move, exchanges as the engine would report them,
instructive failures (NO_PROPOSAL_CHOSEN with both proposal lists,
TS_UNACCEPTABLE, AUTHENTICATION_FAILED), a DPD timeout, log lines and packet
samples. Every command is recorded in ``commands`` for assertions.

Time is virtual: it starts at ``start_time`` and only moves through
``advance()``. With ``live=True`` a task calls ``advance(tick)`` every
``tick`` seconds of real time (a demo); without it nothing moves unless a
test says so, which is what snapshot tests need.
"""

from __future__ import annotations

import asyncio
import math
import random
import struct
from collections.abc import AsyncIterator
from dataclasses import replace

from engine.events import (
    ChildKeys,
    ChildSaDeleted,
    ChildSaInstalled,
    CountersSnapshot,
    DpdTimeout,
    Event,
    LogMessage,
    PacketSample,
    PayloadDetail,
    PolicyApplied,
    SaCounters,
)
from engine.policy.diff import diff_policies
from engine.policy.model import ConnectionConfig, Policy
from engine.secret import Secret
from engine.status import ChildConfigInfo, ChildSaInfo, ConnectionInfo, IkeSaInfo, StatusSnapshot

from console.runtime import fake_data
from console.runtime.base import Capabilities, CommandError, Runtime, RuntimeKind
from console.runtime.fake_exchanges import ScriptedExchanges
from console.runtime.fake_model import DEFAULT_START, DROP_REASONS, LOCAL_ADDR, _Child, _Ike, ipv4_packet, tcp_segment
from console.runtime.fake_model import (  # noqa: F401  (the names callers and tests import from here)
    LEGACY_IKE_PROPOSALS,
    LOCAL_IKE_PROPOSALS,
    udp_datagram,
)


class FakeRuntime(ScriptedExchanges, Runtime):
    """Scripted runtime. See the module docstring."""

    def __init__(
        self,
        *,
        kind: RuntimeKind = "fake",
        label: str | None = None,
        policy: Policy | None = None,
        policy_text: str | None = None,
        scenario: str = "demo",
        scale_children: int = 0,
        children_per_ike: int = 100,
        active_fraction: float = 1.0,
        live: bool = False,
        tick: float = 1.0,
        start_time: float = DEFAULT_START,
        seed: int = 7,
        counters_events: bool = True,
        packet_samples: bool = True,
        road_warriors: bool = False,
    ) -> None:
        self.kind = kind
        self.label = label or {
            "lab": "LAB — simulated peers on loopback",
            "fake": "FAKE runtime — scripted data",
        }.get(kind, f"{kind} runtime")
        self.capabilities = Capabilities(apply_policy=True, save_policy=True, packet_samples=packet_samples)
        self.now = start_time
        self.start_time = start_time
        self.live = live
        self.tick = tick
        self.step = 0
        self.active_fraction = active_fraction
        self.counters_events = counters_events
        self.packet_samples = packet_samples
        self.commands: list[tuple[str, dict]] = []
        """Every command received, as (name, arguments), in order."""
        self.fail_next: dict[str, BaseException] = {}
        """Command name -> exception to raise once (e.g. a PolicyError for apply_policy)."""
        self.started = False
        self.stopped = False
        self._rng = random.Random(seed)
        self._ike_ids = 0
        self._child_ids = 0
        self._reqids: dict[tuple[str, str], int] = {}
        self._ikes: dict[int, _Ike] = {}
        self._failing: set[str] = set()
        self._drops: dict[str, int] = {r: 0 for r in DROP_REASONS}
        self._pending: list[Event] = []
        self._queue: asyncio.Queue[Event | None] | None = None
        self._live_task: asyncio.Task | None = None
        if scale_children:
            n_conn = max(1, math.ceil(scale_children / children_per_ike))
            self._policy = policy or fake_data.scale_policy(n_conn, children_per_ike)
            self._text = policy_text or ""
            self._build_scale(scale_children, children_per_ike)
        else:
            self._policy = policy or fake_data.demo_policy()
            self._text = policy_text if policy_text is not None else (fake_data.DEMO_POLICY_TEXT if policy is None else "")
            if scenario == "demo":
                self._build_demo()
        self._rw: dict[int, dict] = {}
        """Road-warrior status fields by IKE SA unique id (fake_data.ROAD_WARRIORS)."""
        if road_warriors and not scale_children:
            self._build_road_warriors()

    @classmethod
    def in_folder(cls, folder, **kwargs) -> "FakeRuntime":
        """The demo scenario with its policy and secrets written to ``folder`` (so the
        Policies screen validates and saves real files)."""
        path = fake_data.write_demo_files(folder)
        return cls(policy=fake_data.demo_policy(path), policy_text=fake_data.DEMO_POLICY_TEXT, **kwargs)

    # ------------------------------------------------------------------ helpers
    def _record(self, command: str, **args) -> None:
        self.commands.append((command, args))
        exc = self.fail_next.pop(command, None)
        if exc is not None:
            raise exc

    def _emit(self, event: Event) -> None:
        if self._queue is not None:
            self._queue.put_nowait(event)
        else:
            self._pending.append(event)

    def _log(self, level: str, source: str, text: str, connection: str = "") -> None:
        # Upper-case like the engine's LogMessage (logging's levelname).
        self._emit(LogMessage(time=self.now, level=level.upper(), source=source, text=text,
                              connection=connection))

    def _spi32(self) -> int:
        return self._rng.randrange(0xC0000000, 0xCFFFFFFF)

    def _spi64(self) -> int:
        return self._rng.getrandbits(64) | 1

    def _reqid(self, conn: str, child: str) -> int:
        return self._reqids.setdefault((conn, child), len(self._reqids) + 1)

    def _conn(self, name: str) -> ConnectionConfig:
        try:
            return self._policy.connection(name)
        except KeyError:
            raise CommandError(f"no connection named {name!r}") from None

    def _new_ike(self, conn: ConnectionConfig, *, initiator: bool = True, remote: str | None = None,
                 nat: bool = False, state: str = "ESTABLISHED") -> _Ike:
        self._ike_ids += 1
        remote_addr = remote or (conn.remote_addrs[0] if conn.remote_addrs else "192.0.2.77")
        ike = _Ike(
            connection=conn.name,
            unique_id=self._ike_ids,
            state=state,
            initiator=initiator,
            spi_i=self._spi64(),
            spi_r=self._spi64() if state != "CONNECTING" else 0,
            remote_addr=remote_addr,
            remote_port=4500 if (nat or conn.encap) else 500,
            local_port=4500 if (nat or conn.encap) else 500,
            local_id=str(conn.local.id) if conn.local.id else LOCAL_ADDR,
            remote_id=str(conn.remote.id) if conn.remote.id else remote_addr,
            established=self.now if state == "ESTABLISHED" else None,
            nat_remote=nat,
        )
        self._ikes[ike.unique_id] = ike
        return ike

    def _new_child(self, ike: _Ike, child_name: str, *, quiet: bool = False, rekeyed_from: int | None = None) -> _Child:
        conn = self._policy.connection(ike.connection)
        cfg = conn.child(child_name)
        self._child_ids += 1
        local_ts = tuple(str(t) if not t.dynamic else LOCAL_ADDR + "/32" for t in cfg.local_ts)
        remote_ts = tuple(str(t) if not t.dynamic else ike.remote_addr + "/32" for t in cfg.remote_ts)
        ch = _Child(
            connection=ike.connection,
            config=child_name,
            unique_id=self._child_ids,
            reqid=self._reqid(ike.connection, child_name),
            spi_in=self._spi32(),
            spi_out=self._spi32(),
            installed=self.now,
            local_ts=local_ts,
            remote_ts=remote_ts,
            mode=cfg.mode,
            encap=ike.nat_remote or conn.encap,
            rekey_after=cfg.rekey_time - (self._child_ids * 37) % max(1, int(cfg.rand_time or 1)),
            life=cfg.life_time,
        )
        ike.children.append(ch)
        if not quiet:
            empty = Secret(b"")
            self._emit(ChildSaInstalled(
                ike_sa=ike.unique_id, connection=ike.connection, child=child_name, unique_id=ch.unique_id,
                reqid=ch.reqid, protocol=cfg.protocol, mode=cfg.mode, spi_in=ch.spi_in, spi_out=ch.spi_out,
                local_addr=LOCAL_ADDR, remote_addr=ike.remote_addr, local_ts=cfg.local_ts, remote_ts=cfg.remote_ts,
                encr_id=20, encr_key_length=256, integ_id=None, esn=False,
                keys=ChildKeys(empty, empty, empty, empty), encap=ch.encap, rekeyed_from=rekeyed_from,
                initiator=ike.initiator,
            ))
            self._log("info", "engine.ike",
                      f"CHILD_SA {child_name}{{{ch.unique_id}}} established with SPIs "
                      f"{ch.spi_in:08x}_i {ch.spi_out:08x}_o and TS {' '.join(local_ts)} === {' '.join(remote_ts)}",
                      ike.connection)
        return ch

    # ---------------------------------------------------------------- scenario
    def _build_demo(self) -> None:
        p = self._policy
        self._log("info", "engine.runtime", "engine started: datapath userspace, listening on 192.0.2.1:500,4500")
        self._log("info", "engine.policy", f"policy {p.path} loaded: {len(p.connections)} connections, "
                  f"{len(p.rules)} rules")
        names = {c.name for c in p.connections}
        if "branch" in names:
            self._establish(p.connection("branch"))
        if "roadwarrior" in names:
            rw = p.connection("roadwarrior")
            # An earlier laptop went silent: DPD cleared it.
            old = self._new_ike(rw, initiator=False, remote="192.0.2.66", nat=True)
            self._emit(DpdTimeout(ike_sa=old.unique_id, connection="roadwarrior", action="clear"))
            self._log("warning", "engine.ike", "DPD: no response from 192.0.2.66 after 5 retransmits, "
                      "closing IKE_SA", "roadwarrior")
            self._state(old, "ESTABLISHED", "DESTROYED", "dpd timeout")
            del self._ikes[old.unique_id]
            self._establish(rw, initiator=False, remote="192.0.2.77", nat=True)
        if "legacy" in names:
            self._fail(p.connection("legacy"), "NO_PROPOSAL_CHOSEN")
        if "partner" in names:
            self._fail(p.connection("partner"), "TS_UNACCEPTABLE")
        if "vendor" in names:
            self._fail(p.connection("vendor"), "AUTHENTICATION_FAILED")
        # Traffic that already flowed before the console opened.
        for ike in self._ikes.values():
            for ch in ike.children:
                ch.bytes_in, ch.bytes_out = 52_000 * ch.unique_id, 31_000 * ch.unique_id
                ch.packets_in, ch.packets_out = 80 * ch.unique_id, 55 * ch.unique_id
                ch.last_in = ch.last_out = self.now
        self._drops.update(no_sa=3, discard_rule=12, replay=1)

    def _build_scale(self, total: int, per_ike: int) -> None:
        made = 0
        for conn in self._policy.connections:
            ike = self._new_ike(conn)
            for cfg in conn.children:
                if made >= total:
                    break
                self._new_child(ike, cfg.name, quiet=True)
                made += 1
            if made >= total:
                break

    # ---------------------------------------------------------------- time
    def _rate(self, ch: _Child) -> float:
        """Bytes per second for a child at the current virtual time (smooth, deterministic)."""
        base = 2_000 + (ch.unique_id * 7919 % 50) * 1_000
        return base * (1.0 + 0.6 * math.sin((self.now - self.start_time) / 7.0 + ch.unique_id))

    def advance(self, seconds: float | None = None) -> None:
        """Move virtual time: counters grow, rekeys happen when due, samples and counters are emitted."""
        dt = self.tick if seconds is None else seconds
        self.now += dt
        self.step += 1
        threshold = int(self.active_fraction * 1000)
        for ike in list(self._ikes.values()):
            for ch in list(ike.children):
                if threshold < 1000 and (ch.unique_id * 2654435761 + self.step) % 1000 >= threshold:
                    continue
                r = self._rate(ch) * dt
                bi, bo = int(r), int(r * 0.6)
                ch.bytes_in += bi
                ch.bytes_out += bo
                ch.packets_in += max(1, bi // 700)
                ch.packets_out += max(1, bo // 700)
                ch.last_in = ch.last_out = self.now
                if self.now - ch.installed >= ch.rekey_after and ch.state == "INSTALLED":
                    self._rekey_child(ike, ch, reason="expired")
        if self.step % 3 == 0:
            self._drops["no_sa"] += 1
        if self.step % 5 == 0:
            self._drops["discard_rule"] += 2
            first = next((c for i in self._ikes.values() for c in i.children), None)
            if first is not None:
                first.drops["replay"] = first.drops.get("replay", 0) + 1
        if self.step % 7 == 0:
            self._drops["malformed"] += 1
        if self.counters_events:
            self._emit(self._counters())
        if self.packet_samples:
            self._sample()

    def _counters(self) -> CountersSnapshot:
        sas = []
        for ike in self._ikes.values():
            for ch in ike.children:
                sas.append(SaCounters(spi=ch.spi_in, direction="in", bytes=ch.bytes_in, packets=ch.packets_in,
                                      drops=tuple(sorted(ch.drops.items())), last_used=ch.last_in))
                sas.append(SaCounters(spi=ch.spi_out, direction="out", bytes=ch.bytes_out, packets=ch.packets_out,
                                      last_used=ch.last_out))
        return CountersSnapshot(time=self.now, sas=tuple(sas), drops=tuple(sorted(self._drops.items())))

    def _sample(self) -> None:
        children = [(i, c) for i in self._ikes.values() for c in i.children]
        if not children:
            return
        ike, ch = children[self.step % len(children)]
        seq = ch.packets_out + 1
        inner_payload = tcp_segment(40000 + self.step % 1000, 443, 1000 + self.step, b"GET / HTTP/1.1\r\n\r\n")
        inner = ipv4_packet("198.51.100.10", "198.51.100.130", 6, inner_payload, ident=self.step)
        body = bytes(self._rng.getrandbits(8) for _ in range(len(inner) + 24))
        # Like the engine's datapaths: tunnel-mode ESP is sampled from the SPI on (what the socket sends).
        esp = struct.pack("!II", ch.spi_out, seq) + body
        self._emit(PacketSample(time=self.now, direction="out", spi=ch.spi_out, seq=seq, outer=esp, inner=inner))
        if self.step % 4 == 0:
            bad = struct.pack("!II", ch.spi_in, max(1, ch.packets_in - 40)) + bytes(48)
            outer_in = ipv4_packet(ike.remote_addr, LOCAL_ADDR, 50, bad)
            self._emit(PacketSample(time=self.now, direction="drop", spi=ch.spi_in, seq=max(1, ch.packets_in - 40),
                                    outer=outer_in, verdict="replay"))

    async def _live(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            self.advance()

    # ---------------------------------------------------------------- Runtime
    async def start(self) -> None:
        self.started = True
        self._queue = asyncio.Queue()
        for ev in self._pending:
            self._queue.put_nowait(ev)
        self._pending.clear()
        if self.live:
            self._live_task = asyncio.get_running_loop().create_task(self._live())

    async def stop(self) -> None:
        self.stopped = True
        if self._live_task is not None:
            self._live_task.cancel()
            self._live_task = None
        if self._queue is not None:
            self._queue.put_nowait(None)

    async def events(self) -> AsyncIterator[Event]:
        while self._queue is None:
            await asyncio.sleep(0.01)
        while True:
            ev = await self._queue.get()
            if ev is None:
                return
            yield ev

    def status_now(self) -> StatusSnapshot:
        """The snapshot ``status()`` returns, built synchronously (for benchmarks)."""
        now = self.now
        ikes = []
        for ike in self._ikes.values():
            conn = self._policy.connection(ike.connection)
            children = tuple(
                ChildSaInfo(
                    name=ch.config, unique_id=ch.unique_id, reqid=ch.reqid, state=ch.state, protocol="esp",
                    mode=ch.mode, encap=ch.encap, spi_in=ch.spi_in, spi_out=ch.spi_out, encr="AES_GCM_16_256",
                    ke="CURVE_25519", local_ts=ch.local_ts, remote_ts=ch.remote_ts,
                    bytes_in=ch.bytes_in, packets_in=ch.packets_in, bytes_out=ch.bytes_out,
                    packets_out=ch.packets_out,
                    last_in_ago=None if ch.last_in is None else now - ch.last_in,
                    last_out_ago=None if ch.last_out is None else now - ch.last_out,
                    installed_ago=now - ch.installed,
                    rekey_in=ch.installed + ch.rekey_after - now, expire_in=ch.installed + ch.life - now,
                    drops=tuple(sorted(ch.drops.items())),
                )
                for ch in ike.children
            )
            est = ike.established
            ikes.append(IkeSaInfo(
                name=ike.connection, unique_id=ike.unique_id, state=ike.state, initiator=ike.initiator,
                spi_i=ike.spi_i, spi_r=ike.spi_r, local_addr=LOCAL_ADDR, local_port=ike.local_port,
                remote_addr=ike.remote_addr, remote_port=ike.remote_port, local_id=ike.local_id,
                remote_id=ike.remote_id, encr="AES_GCM_16_256", prf="PRF_HMAC_SHA2_384", ke="CURVE_25519",
                nat_remote=ike.nat_remote,
                established_ago=None if est is None else now - est,
                rekey_in=None if est is None else est + conn.rekey_time - now,
                expire_in=None if est is None else est + conn.rekey_time + conn.over_time - now,
                children=children,
                **self._rw.get(ike.unique_id, {}),
            ))
        pools = fake_data.DEMO_POOLS if self._rw else ()
        return StatusSnapshot(time=now, ike_sas=tuple(ikes), connections=self._connection_infos(), pools=pools)

    def _build_road_warriors(self) -> None:
        rw = self._policy.connection("roadwarrior")
        for remote, port, remote_id, fields in fake_data.ROAD_WARRIORS:
            ike = self._establish(rw, initiator=False, remote=remote, nat=port != 500)
            ike.remote_port, ike.remote_id = port, remote_id
            self._rw[ike.unique_id] = fields
            for ch in ike.children:
                ch.bytes_in, ch.bytes_out = 9_000 * ch.unique_id, 4_000 * ch.unique_id

    def _connection_infos(self) -> tuple[ConnectionInfo, ...]:
        up = {i.connection for i in self._ikes.values() if i.state == "ESTABLISHED"}
        connecting = {i.connection for i in self._ikes.values() if i.state == "CONNECTING"}
        out = []
        for c in self._policy.connections:
            if c.name in self._failing:
                state = "failing"
            elif c.name in up:
                state = "up"
            elif c.name in connecting:
                state = "connecting"
            else:
                state = "down"
            out.append(ConnectionInfo(
                name=c.name, local_addrs=c.local_addrs, remote_addrs=c.remote_addrs or ("%any",),
                local_auth=c.local.auth, remote_auth=c.remote.auth,
                local_id=str(c.local.id) if c.local.id else "", remote_id=str(c.remote.id) if c.remote.id else "",
                proposals=tuple(p.text for p in c.proposals),
                children=tuple(ChildConfigInfo(
                    name=ch.name, mode=ch.mode, protocol=ch.protocol, local_ts=tuple(str(t) for t in ch.local_ts),
                    remote_ts=tuple(str(t) for t in ch.remote_ts), proposals=tuple(p.text for p in ch.proposals),
                    start_action=ch.start_action, dpd_action=ch.dpd_action,
                    close_action=ch.close_action) for ch in c.children),
                state=state,
            ))
        return tuple(out)

    async def status(self) -> StatusSnapshot:
        return self.status_now()

    async def policy(self) -> tuple[Policy, str]:
        return self._policy, self._text

    async def initiate(self, name: str, child: str | None = None) -> None:
        self._record("initiate", name=name, child=child)
        conn = self._conn(name)
        if child is not None:
            try:
                conn.child(child)
            except KeyError:
                raise CommandError(f"connection {name!r} has no child {child!r}") from None
        if name in ("legacy",):
            self._fail(conn, "NO_PROPOSAL_CHOSEN")
            return
        if name in ("partner", "vendor"):
            self._fail(conn, "TS_UNACCEPTABLE" if name == "partner" else "AUTHENTICATION_FAILED")
            return
        existing = [i for i in self._ikes.values() if i.connection == name and i.state == "ESTABLISHED"]
        if existing:
            ike = existing[0]
            have = {c.config for c in ike.children}
            for cfg in conn.children:
                if (child is None or cfg.name == child) and cfg.name not in have:
                    self._new_child(ike, cfg.name)
            return
        self._failing.discard(name)
        self._establish(conn, children=(child,) if child else None)

    async def terminate(self, name: str, *, unique_id: int | None = None) -> None:
        self._record("terminate", name=name, unique_id=unique_id)
        self._conn(name)
        victims = [i for i in self._ikes.values() if i.connection == name
                   and (unique_id is None or i.unique_id == unique_id)]
        if not victims and unique_id is None and name in self._failing:
            self._failing.discard(name)  # as the engine: its next attempt is cancelled
            return
        if not victims:
            raise CommandError(f"{name} has no IKE SA to terminate" if unique_id is None
                               else f"{name} has no IKE SA #{unique_id}")
        for ike in victims:
            self._state(ike, ike.state, "DELETING", "terminated")
            self._exchange(ike, True, self._msg(ike, "INFORMATIONAL", 9, False, ("D",)))
            self._exchange(ike, False, self._msg(ike, "INFORMATIONAL", 9, True, ()))
            for ch in ike.children:
                self._emit(ChildSaDeleted(ike_sa=ike.unique_id, connection=name, child=ch.config,
                                          unique_id=ch.unique_id, reqid=ch.reqid, protocol="esp",
                                          spi_in=ch.spi_in, spi_out=ch.spi_out, reason="terminated"))
            self._state(ike, "DELETING", "DESTROYED", "terminated")
            self._log("info", "engine.ike", f"IKE_SA {name}[{ike.unique_id}] deleted", name)
            del self._ikes[ike.unique_id]
        self._failing.discard(name)

    def _rekey_child(self, ike: _Ike, ch: _Child, reason: str = "rekeyed") -> _Child:
        det = (PayloadDetail("N(REKEY_SA)", (("spi", f"{ch.spi_in:08x}"),)),
               PayloadDetail("SA", (("proposal 1", "ESP:AES_GCM_16_256/CURVE_25519/NO_EXT_SEQ"),)))
        pl = ("N(REKEY_SA)", "SA", "No", "KE", "TSi", "TSr")
        self._exchange(ike, True, self._msg(ike, "CREATE_CHILD_SA", 10 + ch.unique_id, False, pl, det))
        self._exchange(ike, False, self._msg(ike, "CREATE_CHILD_SA", 10 + ch.unique_id, True, pl[1:], det[1:]))
        new = self._new_child(ike, ch.config, rekeyed_from=ch.spi_in)
        ike.children.remove(ch)
        self._emit(ChildSaDeleted(ike_sa=ike.unique_id, connection=ike.connection, child=ch.config,
                                  unique_id=ch.unique_id, reqid=ch.reqid, protocol="esp", spi_in=ch.spi_in,
                                  spi_out=ch.spi_out, reason=reason))
        return new

    async def rekey(self, name: str, *, ike: bool = False, unique_id: int | None = None) -> None:
        self._record("rekey", name=name, ike=ike, unique_id=unique_id)
        self._conn(name)
        sas = [i for i in self._ikes.values() if i.connection == name and i.state == "ESTABLISHED"]
        if not sas:
            raise CommandError(f"{name} is not established: nothing to rekey")
        if ike:
            targets = [i for i in sas if unique_id is None or i.unique_id == unique_id]
            if not targets:
                raise CommandError(f"{name} has no IKE SA #{unique_id}")
            for old in targets:
                conn = self._conn(name)
                new = self._new_ike(conn, initiator=True, remote=old.remote_addr, nat=old.nat_remote)
                new.children = old.children
                self._exchange(old, True, self._msg(old, "CREATE_CHILD_SA", 20, False, ("SA", "No", "KE")))
                self._exchange(old, False, self._msg(old, "CREATE_CHILD_SA", 20, True, ("SA", "No", "KE")))
                self._state(new, "CREATED", "ESTABLISHED", f"rekeyed from #{old.unique_id}")
                self._state(old, "ESTABLISHED", "REKEYED")
                self._state(old, "REKEYED", "DESTROYED", "rekeyed")
                self._log("info", "engine.ike", f"IKE_SA {name}[{old.unique_id}] rekeyed to [{new.unique_id}]", name)
                del self._ikes[old.unique_id]
            return
        done = 0
        for sa in sas:
            for ch in list(sa.children):
                if unique_id is None or ch.unique_id == unique_id:
                    self._rekey_child(sa, ch)
                    done += 1
        if not done:
            raise CommandError(f"{name} has no CHILD SA {{{unique_id}}}")

    async def apply_policy(self, policy: Policy, text: str | None = None) -> PolicyApplied:
        self._record("apply_policy", policy=policy, text=text)
        d = diff_policies(self._policy, policy)
        for name in d.removed + d.changed:
            for ike in [i for i in self._ikes.values() if i.connection == name]:
                for ch in ike.children:
                    self._emit(ChildSaDeleted(ike_sa=ike.unique_id, connection=name, child=ch.config,
                                              unique_id=ch.unique_id, reqid=ch.reqid, protocol="esp",
                                              spi_in=ch.spi_in, spi_out=ch.spi_out, reason="policy changed"))
                self._state(ike, ike.state, "DESTROYED", "policy changed")
                del self._ikes[ike.unique_id]
            self._failing.discard(name)
        self._policy = replace(policy, secrets=policy.secrets if policy.secrets.ike or policy.secrets.private
                               else self._policy.secrets)
        if text is not None:
            self._text = text
        for name in d.changed + d.added:
            conn = self._policy.connection(name)
            if any(c.start_action == "start" for c in conn.children):
                self._establish(conn, children=tuple(c.name for c in conn.children if c.start_action == "start"))
        result = PolicyApplied(added=d.added, removed=d.removed, changed=d.changed)
        self._emit(result)
        self._log("info", "engine.policy", f"policy applied: +{len(d.added)} -{len(d.removed)} ~{len(d.changed)}")
        return result
