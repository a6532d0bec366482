"""The bridge between a runtime and the app.

One labelled worker consumes the runtime's events and posts them, coalesced
per burst, as ``EventsArrived`` of at most `EVENTS_PER_MESSAGE` events (fewer
when the app took long for the last ones: `EVENTS_SECONDS`), one message in
flight at a time: the next goes once the app has handled the
previous, so a flood of engine events never piles up in the app's message
queue (it waits in the runtime, which bounds it); a second worker polls
``status()`` and re-arms only after the UI has taken the previous snapshot,
so polls never overlap nor pile up. Commands from screens run in a third
group. Every worker failure ends in ``on_worker_state_changed`` here: an
alert and a notification, never a crash.

The mixin goes on the App: ``class ConsoleApp(RuntimeBridge, App)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from textual import work
from textual.message import Message
from textual.worker import Worker, WorkerState

from console.messages import EventsArrived, RuntimeTrouble, StatusUpdated
from console.runtime.base import CommandError, Runtime, RuntimeDisconnected
from engine.slicing import Pace

POLL_INTERVAL = 1.0
EVENTS_PER_MESSAGE = 500
"""Events in one EventsArrived at most: the app's work per message stays bounded."""
EVENTS_SECONDS = 0.010
"""...and about this much of the app's time per message: the next one is sized from what the app
took for the last ones (`Pace`), so a frame never waits long for a batch under a flood of events."""
WORKER_GROUPS = {"runtime": "events", "status": "status", "commands": "command",
                 "cert-expiry": "certificate expiry"}
"""App worker groups whose failures end here, and how the alert names them."""


class EventsTaken(Message):
    """Posted behind each EventsArrived: when the app gets here, it has handled that batch."""


class RuntimeBridge:
    """Mixin for the App: runs the runtime's workers. See the module docstring."""

    runtime: Runtime
    poll_interval: float = POLL_INTERVAL

    def _bridge_init(self) -> None:
        self._status_taken = asyncio.Event()
        self._poll_now = asyncio.Event()
        self._event_buffer: list = []
        self._flush_scheduled = False
        self._awaiting_app = False
        self._events_taken = asyncio.Event()
        self._events_taken.set()
        self.event_pace = Pace(EVENTS_PER_MESSAGE // 5, 20, EVENTS_PER_MESSAGE, EVENTS_SECONDS)
        """Events per EventsArrived (the app reports what each took: `events_handled`)."""
        self.runtime_alive = False

    # --------------------------------------------------------------- start/stop
    async def start_bridge(self) -> None:
        self._bridge_init()
        await self.runtime.start()
        self.runtime_alive = True
        self._consume_events()
        self._poll_status()

    async def stop_bridge(self) -> None:
        if getattr(self, "runtime_alive", False):
            self.runtime_alive = False
            try:
                await self.runtime.stop()
            except Exception as exc:  # stopping must never block quitting
                self.log.error(f"runtime stop failed: {exc!r}")

    # --------------------------------------------------------------- workers
    @work(group="runtime", exclusive=True, exit_on_error=False, name="runtime events")
    async def _consume_events(self) -> None:
        loop = asyncio.get_running_loop()
        async for event in self.runtime.events():
            self._event_buffer.append(event)
            if not self._flush_scheduled:
                # Events already queued arrive without suspending; one message per burst.
                self._flush_scheduled = True
                loop.call_soon(self._flush_events)
            while len(self._event_buffer) >= self.event_pace.n:
                # Stop taking until the app has handled what it was given (which posts the next
                # batch): the rest waits upstream, where the runtime bounds it.
                if not self._awaiting_app:
                    self._flush_events()
                await self._events_taken.wait()
        while self._event_buffer:  # the stream ended: hand over the rest
            self._awaiting_app = False
            self._flush_events()

    def _flush_events(self) -> None:
        self._flush_scheduled = False
        if self._event_buffer and not self._awaiting_app:
            n = self.event_pace.n
            batch = tuple(self._event_buffer[:n])
            del self._event_buffer[:n]
            self.post_message(EventsArrived(batch))
            # The app handles its messages in order: this one arrives once the batch above is done.
            self.post_message(EventsTaken())
            self._awaiting_app = True
            self._events_taken.clear()

    def events_handled(self, n: int, seconds: float) -> None:
        """The app took ``seconds`` for an EventsArrived of ``n`` events (sizes the next ones)."""
        pace = getattr(self, "event_pace", None)  # None: messages posted without the bridge (tests)
        if pace is not None:
            pace.took(n, seconds)

    def on_events_taken(self, message: EventsTaken) -> None:
        message.stop()
        self._awaiting_app = False
        self._events_taken.set()
        if self._event_buffer:
            self._flush_events()

    @work(group="status", exclusive=True, exit_on_error=False, name="status poll")
    async def _poll_status(self) -> None:
        while True:
            snap = await self.runtime.status()
            self._status_taken.clear()
            self.post_message(StatusUpdated(snap))
            await self._status_taken.wait()
            try:
                await asyncio.wait_for(self._poll_now.wait(), self.poll_interval)
            except asyncio.TimeoutError:
                pass
            self._poll_now.clear()

    def status_taken(self) -> None:
        """Called by the app once it has applied a StatusUpdated (re-arms the poll)."""
        self._status_taken.set()

    def poll_soon(self) -> None:
        """Poll now instead of at the next tick (after a command)."""
        self._poll_now.set()

    def run_command(self, description: str, call: Callable[[], Awaitable[Any]],
                    on_done: Callable[[Any], None] | None = None,
                    on_error: Callable[[BaseException], bool] | None = None) -> Worker:
        """Run one runtime command in the ``commands`` group.

        ``on_done(result)`` runs on success; ``on_error(exc)`` may claim a
        failure by returning True. A CommandError nobody claimed becomes a
        notification; anything else an alert (``RuntimeTrouble``).
        """
        return self._command_worker(description, call, on_done, on_error)

    @work(group="commands", exit_on_error=False, name="runtime command")
    async def _command_worker(self, description: str, call: Callable[[], Awaitable[Any]],
                              on_done: Callable[[Any], None] | None,
                              on_error: Callable[[BaseException], bool] | None) -> Any:
        try:
            result = await call()
        except Exception as exc:
            if on_error is not None and on_error(exc):
                return None
            if isinstance(exc, CommandError):
                self.notify(str(exc), title=description, severity="error")
                return None
            raise
        self.poll_soon()
        if on_done is not None:
            on_done(result)
        return result

    # --------------------------------------------------------------- failures
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group not in WORKER_GROUPS:
            return
        if event.state == WorkerState.ERROR:
            err = worker.error
            fatal = isinstance(err, RuntimeDisconnected) or worker.group in ("runtime", "status")
            where = WORKER_GROUPS[worker.group]
            self.post_message(RuntimeTrouble(where, f"{type(err).__name__}: {err}", fatal=fatal))
        elif event.state == WorkerState.SUCCESS and worker.group == "runtime" and self.runtime_alive:
            self.post_message(RuntimeTrouble("events", "the runtime closed its event stream", fatal=True))
