"""The console on a running daemon (``ipsec-console attach``), through its
control socket (engine.runtime.control). Closing the console only
disconnects: the daemon and its tunnels stay up."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from console.runtime.base import Capabilities, CommandError, Runtime, RuntimeDisconnected, RuntimeUnavailable
from engine.events import Event, PolicyApplied, from_dict as event_from_dict
from engine.jsonable import dataclass_from_dict
from engine.policy.model import Policy
from engine.runtime.client import DEFAULT_CONTROL, ControlClient, ControlError
from engine.status import StatusSnapshot


class AttachedRuntime(Runtime):
    kind = "attached"

    def __init__(self, path: str | None = None) -> None:
        self.path = path or DEFAULT_CONTROL
        self.label = f"attached — {self.path}"
        self._client: ControlClient | None = None
        self._events: ControlClient | None = None

    async def start(self) -> None:
        self._client = ControlClient(self.path)
        try:
            await self._client.connect()
            info = await self._client.call("version")
            pol = await self._client.call("get-policy")
        except ControlError as exc:
            raise RuntimeUnavailable(str(exc)) from None
        if info.get("protocol") != 1:
            raise RuntimeUnavailable(f"the daemon at {self.path} speaks control protocol "
                                     f"{info.get('protocol')}, this console speaks 1")
        path = pol.get("path")
        writable = bool(path) and os.access(path, os.W_OK)
        self.capabilities = Capabilities(apply_policy=True, save_policy=writable, packet_samples=True,
                                         notes=() if writable else ("policy file read-only here",))

    async def stop(self) -> None:
        for c in (self._events, self._client):
            if c is not None:
                await c.close()
        self._client = self._events = None
        if self.files_dir is not None:
            shutil.rmtree(self.files_dir, ignore_errors=True)
            self.files_dir = None

    async def _call(self, cmd: str, **args):
        if self._client is None:
            raise RuntimeDisconnected("not connected to the daemon")
        try:
            return await self._client.call(cmd, **args)
        except ControlError as exc:
            if "closed the connection" in str(exc):
                raise RuntimeDisconnected(f"the daemon at {self.path} went away") from None
            message = str(exc)
            if exc.findings:
                message += ": " + "; ".join(exc.findings[:5])
            raise CommandError(message) from None
        except (ConnectionError, OSError) as exc:
            raise RuntimeDisconnected(f"lost the daemon at {self.path}: {exc}") from None

    async def status(self) -> StatusSnapshot:
        return dataclass_from_dict(StatusSnapshot, await self._call("status"))

    async def events(self) -> AsyncIterator[Event]:
        # Events get their own connection, so a burst of them never delays a command's answer.
        self._events = ControlClient(self.path)
        try:
            await self._events.connect()
            async for raw in self._events.events_raw(replay=True, plaintext=True):  # the admin's own view
                try:
                    yield event_from_dict(raw)
                except (KeyError, TypeError, ValueError):
                    continue  # an event type from a newer daemon
        except ControlError as exc:
            raise RuntimeDisconnected(str(exc)) from None
        if self._client is not None:  # the stream ended without stop(): the daemon is gone
            raise RuntimeDisconnected(f"the daemon at {self.path} went away")

    async def policy(self) -> tuple[Policy, str]:
        from engine.policy.findings import PolicyError
        from engine.policy.parse import parse_policy

        res = await self._call("get-policy")
        text = res.get("text") or ""
        path = res.get("path")
        # The secrets file belongs to the daemon (root, 0600): the console edits the policy only.
        try:
            return parse_policy(text, path, load_secrets=False), text
        except PolicyError:
            if not res.get("files"):
                raise
        # The daemon's folder is not readable here: read the files it served instead.
        mirror = self.mirror(path, res["files"])
        policy = parse_policy(text, str(mirror / os.path.basename(path)), load_secrets=False)
        return dataclasses.replace(policy, path=path), text

    files_dir: Path | None = None
    """Where the files the daemon served are kept for this session (None: read its folder directly)."""

    def mirror(self, path: str, files: dict[str, str]) -> Path:
        """Lay the served files out as in the daemon's folder (relative names only), privately."""
        if self.files_dir is None:
            self.files_dir = Path(tempfile.mkdtemp(prefix="ipsec-console-attach-"))
        for name, content in files.items():
            rel = Path(name)
            if rel.is_absolute() or ".." in rel.parts:
                continue  # absolute names are read where they are
            target = self.files_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        return self.files_dir

    async def policy_for_files(self) -> Policy:
        """The policy with its path inside the served files when there are any (certificate checks)."""
        policy, _ = await self.policy()
        if self.files_dir is None or not policy.path:
            return policy
        return dataclasses.replace(policy, path=str(self.files_dir / os.path.basename(policy.path)))

    async def initiate(self, name: str, child: str | None = None) -> None:
        await self._call("initiate", name=name, child=child)

    async def terminate(self, name: str, *, unique_id: int | None = None) -> None:
        res = await self._call("terminate", name=name, unique_id=unique_id)
        if res.get("deleted") == 0 and not res.get("retry_stopped") and not res.get("resolving") \
                and not res.get("untrapped"):
            raise CommandError(f"'{name}' has no IKE SA to terminate")

    async def rekey(self, name: str, *, ike: bool = False, unique_id: int | None = None) -> None:
        res = await self._call("rekey", name=name, ike=ike, unique_id=unique_id)
        if res.get("rekeyed") == 0:
            raise CommandError(f"'{name}' has no established {'IKE' if ike else 'CHILD'} SA to rekey")

    async def apply_policy(self, policy: Policy, text: str | None = None) -> PolicyApplied:
        if text is None:
            from engine.policy.serialize import policy_to_toml

            text = policy_to_toml(policy)
        res = await self._call("apply-policy", text=text)
        return event_from_dict(res)
