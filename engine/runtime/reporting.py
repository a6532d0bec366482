"""What the runtime reports of its SAs: status listings (whole, or in steps that leave the
loop free for packets and timers) and the datapath's counters, read once a second, which
the listings carry and subscribers get as a `CountersSnapshot`.

A part of `engine.runtime.engine.EngineRuntime` (its base class), apart because it is
the one thing that grows with the number of SAs.
"""

from __future__ import annotations

import asyncio
import logging
import time

from engine import logsafe
from engine.events import CountersSnapshot, IkeState, SaCounters
from engine.ike.status import ike_sa_info
from engine.policy.proposals import proposal_texts
from engine.runtime.evolve import evolve
from engine.slicing import Steps, release, release_dict
from engine.status import ChildConfigInfo, ConnectionInfo, IkeSaInfo, PoolInfo, StatusSnapshot

log = logging.getLogger("engine.runtime")

COUNTERS_INTERVAL = 1.0
STATUS_CHUNK = 100
"""IKE SAs per slice of `EngineRuntime.status_async` (a few milliseconds of work)."""
STATUS_SLICE_SECONDS = 0.001
"""...and at most about this long per slice (the engine's timers and packets wait that long at most)."""
STATUS_ROUNDS = 3
SCAN_CHUNK = 2000
"""Passes of `EngineRuntime.status_async` over the IKE SAs that came while it was building, and
how many SAs one step of a pass looks at (no listing built: a set lookup each)."""
_UNLISTED = (IkeState.DESTROYED, IkeState.CREATED)
"""What `status` leaves out: gone, or not yet negotiating."""
COUNTERS_CHUNK = 2000
"""Counters per slice when the runtime indexes a datapath's counters."""
WALL_CLOCK_CHUNK = 2000
"""Counters per slice when the runtime moves their times to the wall clock."""


class Reporting:
    """Status and counters of an `EngineRuntime` (the attributes it uses are the runtime's)."""

    async def _counters_loop(self) -> None:
        wall: list[SaCounters] = []
        while True:
            await asyncio.sleep(COUNTERS_INTERVAL)
            # The last round's copies go now, a slice at a time (their snapshot has been sent since:
            # this list is the last one to hold them).
            await release(wall)
            try:
                # A datapath with thousands of SAs reads them a slice at a time (packets go on between).
                read = getattr(self.datapath, "counters_async", None)
                sas, drops = await read() if read is not None else self.datapath.counters()
            except Exception:
                log.exception("reading datapath counters failed")
                continue
            # Indexed, and compared with the last read (inbound SAs whose packet count grew: their
            # peers are alive, DPD waits), a few at a time.
            counters = {}
            before = self._counters
            active = []
            steps = Steps(COUNTERS_CHUNK)
            for c in sas:
                key = (c.spi, c.direction)
                counters[key] = c
                if c.packets and c.direction == "in":
                    prev = before.get(key)
                    if prev is None or c.packets > prev.packets:
                        active.append(c.spi)
                if steps.done():
                    await steps.next()
            if active:
                self.endpoint.child_activity(active, self.now())
            self._counters = counters
            await release_dict(before)  # its 20,000 keys, a slice at a time
            del before
            logsafe.flush()  # summaries of rate-limited warnings, even when the flood has stopped
            self._drain_datapath()
            if not self._subscribers:
                continue  # nobody to tell (CountersSnapshot is not kept in the history)
            # Their times on the wall clock a few at a time (a copy per SA that carried traffic:
            # 20,000 of them in one go held the loop for 10-30 ms).
            offset = time.time() - self.now()
            wall = []
            steps = Steps(WALL_CLOCK_CHUNK)
            for c in sas:
                wall.append(c if c.last_used is None else evolve(c, last_used=c.last_used + offset))
                if steps.done():
                    await steps.next()
            del sas
            self.publish(CountersSnapshot(time.time(), tuple(wall), tuple(sorted(drops.items()))),
                         wall_clock=True)

    # ------------------------------------------------------------ status
    def status(self) -> StatusSnapshot:
        now = self.now()
        sas = [self._with_counters(i, now) for i in self.endpoint.status(now)]
        return StatusSnapshot(time.time(), tuple(sas), tuple(self.connections()), self.pools())

    async def status_async(self, chunk: int = STATUS_CHUNK) -> StatusSnapshot:
        """`status`, built ``chunk`` IKE SAs at a time with the loop free in between, for a viewer on
        another thread (the embedded console): a snapshot of 10,000 SAs then never holds packets and
        timers up for its whole length.

        What changes between steps is listed once, as it was when reached: an IKE SA that went away
        before it was reached is left out; one that came since is added at the end (a rekey moves
        CHILD SAs to a new IKE SA: they are not lost), and no CHILD SA is listed twice."""
        now = self.now()
        steps = Steps(chunk, STATUS_SLICE_SECONDS)
        infos: list[IkeSaInfo] = []
        up: dict[str, str] = {}  # connection -> state of its last listed IKE SA (connection_states)
        listed: set = set()
        children: set[int] = set()
        todo = self.endpoint.sas  # a copy: as they were when asked
        for _ in range(STATUS_ROUNDS):
            for sa in todo:
                if sa not in listed and sa.state not in _UNLISTED:
                    info = self._with_counters(ike_sa_info(sa, now), now)
                    if info.children:
                        if not children.isdisjoint(c.unique_id for c in info.children):
                            info = evolve(info, children=tuple(
                                c for c in info.children if c.unique_id not in children))
                        children.update(c.unique_id for c in info.children)
                    listed.add(sa)
                    infos.append(info)
                    up[info.name] = info.state
                if steps.done():
                    await steps.next()
            # What came (or became usable) meanwhile: the registry is looked at again (a cheap test
            # per SA, so more of them per step).
            todo = []
            look = Steps(SCAN_CHUNK, STATUS_SLICE_SECONDS)
            for sa in self.endpoint.sas:
                if sa not in listed and sa.state not in _UNLISTED:
                    todo.append(sa)
                if look.done():
                    await look.next()
            if not todo:
                break
        # The connections too (a hub with a thousand of them took 8 ms in one go).
        connections = []
        for c in self.policy.connections:
            connections.append(self.connection_info(c, up))
            if steps.done():
                await steps.next()
        return StatusSnapshot(time.time(), tuple(infos), tuple(connections), self.pools())

    def pools(self) -> tuple[PoolInfo, ...]:
        """Usage of the virtual IP pools (road-warrior gateways)."""
        return tuple(PoolInfo(u.name, u.addrs, u.size, u.used, u.remembered)
                     for u in self.endpoint.vips.leases.usage())

    def _with_counters(self, info: IkeSaInfo, now: float) -> IkeSaInfo:
        if not self._counters:
            return info
        kids = []
        for c in info.children:
            cin = self._counters.get((c.spi_in, "in"))
            cout = self._counters.get((c.spi_out, "out"))
            # evolve: a dict copy; dataclasses.replace's keyword call was a third of a listing.
            kids.append(evolve(
                c,
                bytes_in=cin.bytes if cin else 0, packets_in=cin.packets if cin else 0,
                bytes_out=cout.bytes if cout else 0, packets_out=cout.packets if cout else 0,
                last_in_ago=None if cin is None or cin.last_used is None else max(0.0, now - cin.last_used),
                last_out_ago=None if cout is None or cout.last_used is None else max(0.0, now - cout.last_used),
                drops=cin.drops if cin else (),
            ))
        return evolve(info, children=tuple(kids))

    def connections(self, states: dict[str, str] | None = None) -> list[ConnectionInfo]:
        """``states``: `connection_states`, when the caller has it already."""
        if states is None:
            states = self.connection_states()
        return [self.connection_info(c, states) for c in self.policy.connections]

    def connection_states(self) -> dict[str, str]:
        """Connection name -> state of its (last listed) IKE SA; cheap, no status built."""
        return {sa.name: sa.state.value for sa in self.endpoint.sas if sa.state != IkeState.DESTROYED}

    def connection_info(self, c, states: dict[str, str]) -> ConnectionInfo:
        state = {"ESTABLISHED": "up", "REKEYING": "up", "CONNECTING": "connecting"}.get(states.get(c.name, ""), "down")
        if state == "down" and self.endpoint.retrying(c.name) is not None:
            state = "failing"  # failed; its next keyingtries attempt is scheduled
        elif state == "down" and self.endpoint.resolving(c.name) is not None:
            state = "connecting"  # initiated; its peer's host name is being resolved
        return ConnectionInfo(
            name=c.name, local_addrs=c.local_addrs, remote_addrs=c.remote_addrs,
            local_auth=c.local.auth, remote_auth=c.remote.auth,
            local_id=str(c.local.id) if c.local.id else "", remote_id=str(c.remote.id) if c.remote.id else "",
            # "default" once, as written: it stands for two proposals ("default, default" read as a glitch)
            proposals=tuple(proposal_texts(c.proposals)),
            children=tuple(ChildConfigInfo(k.name, k.mode, k.protocol, tuple(map(str, k.local_ts)),
                                           tuple(map(str, k.remote_ts)), tuple(proposal_texts(k.proposals)),
                                           k.start_action, k.dpd_action, k.close_action) for k in c.children),
            state=state)

    def sa_status(self, sa, now: float) -> IkeSaInfo | None:
        """One IKE SA's status with its counters (None once destroyed): what status() lists,
        SA by SA, so the control socket can build a long listing in slices."""
        if sa.state == IkeState.DESTROYED:
            return None
        return self._with_counters(ike_sa_info(sa, now), now)
