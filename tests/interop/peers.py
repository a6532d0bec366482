"""Real-world peer scenarios for the interop lab (tests/interop/lab.py): charon
and our daemon configured from plain dicts the way deployments write them (IP
identities, EAP clients, virtual-IP clients, cloud proposals), a stopper that
ends every process it started (by PID) and shows their logs when a test fails,
and small readers for both sides' SA lists and event streams."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w

from engine.runtime.client import ControlClient
from tests.interop.lab import PSK, SIDES, Charon, Lab, Ours, lab, wait_for

ADDR = {side: s["addr"] for side, s in SIDES.items()}
INNER = {side: s["inner"] for side, s in SIDES.items()}
FQDN = {"left": "left.example", "right": "right.example"}


def known_defect(reason: str) -> pytest.MarkDecorator:
    """The marker of a test that fails today on a defect outside the test, named in ``reason`` with
    what the logs showed: strict, so the test fails (XPASS) the day the fix lands and the marker
    must go; only an AssertionError counts as the expected failure."""
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)


def other(side: str) -> str:
    return "right" if side == "left" else "left"


def sides(direction: str) -> tuple[str, str]:
    """(charon side, our side): the initiator is always on the left."""
    return ("right", "left") if direction == "we_initiate" else ("left", "right")


# ------------------------------------------------------------------ configuration
def swanctl(tree: dict, indent: int = 0) -> str:
    """A swanctl.conf section from nested dicts (lists become comma-separated values)."""
    pad = "  " * indent
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out.append(f"{pad}{key} {{\n{swanctl(value, indent + 1)}{pad}}}\n")
        else:
            if isinstance(value, (list, tuple)):
                value = ", ".join(map(str, value))
            elif isinstance(value, bool):
                value = "yes" if value else "no"
            out.append(f"{pad}{key} = {value}\n")
    return "".join(out)


def psk_secret(*ids: str, secret: str = PSK) -> dict:
    entry = {f"id-{n}": i for n, i in enumerate(ids)}
    entry["secret"] = f'"{secret}"'
    return entry


# charon's retransmissions shortened so failures show in seconds, not minutes (1, 1.4, 2 s).
FAST_CHARON = "retransmit_timeout = 1\n              retransmit_base = 1.4\n              retransmit_tries = 3"
# Ours likewise ([engine] keys).
FAST_OURS = {"retransmit_timeout": 1.0, "retransmit_base": 1.4, "retransmit_tries": 3}


def our_policy_text(side: str, connections: dict, *, engine: dict | None = None, rules: dict | None = None) -> str:
    doc = {"engine": {"datapath": "userspace", "listen": [ADDR[side]], "secrets": "secrets.toml",
                      **(engine or {})},
           "connections": connections}
    if rules:
        doc["rules"] = rules
    return tomli_w.dumps(doc)


def our_secrets_text(ike: dict[str, tuple[list[str], str]] | None = None, private: dict[str, str] | None = None) -> str:
    doc: dict = {}
    if ike:
        doc["ike"] = {name: {"ids": ids, "secret": secret} for name, (ids, secret) in ike.items()}
    if private:
        doc["private"] = {name: {"file": path} for name, path in private.items()}
    return tomli_w.dumps(doc)


FQDN_SECRETS = our_secrets_text({"lab": (list(FQDN.values()), PSK)})


def charon_conn(side: str, *, ids: bool = True, proposals="aes256gcm16-prfsha256-x25519", esp="aes256gcm16",
                local: dict | None = None, children: dict | None = None, **conn) -> dict:
    """A swanctl.conf tree for charon on ``side``, talking to our daemon on the other side."""
    peer = other(side)
    child = {"local_ts": f"{INNER[side]}/32", "remote_ts": f"{INNER[peer]}/32", "esp_proposals": esp}
    tree = {
        "version": 2, "local_addrs": ADDR[side], "remote_addrs": ADDR[peer], "proposals": proposals,
        "local": local or ({"auth": "psk", "id": FQDN[side]} if ids else {"auth": "psk"}),
        "remote": {"auth": "psk", "id": FQDN[peer]} if ids else {"auth": "psk"},
        "children": {"t": {**child, **(children or {})}},
        **conn,
    }
    ids_ = (FQDN[side], FQDN[peer]) if ids else (ADDR[side], ADDR[peer])
    return {"connections": {"t": tree}, "secrets": {"ike-lab": psk_secret(*ids_)}}


def our_conn(side: str, *, ids: bool = True, proposals="aes256gcm16-prfsha256-x25519", esp="aes256gcm16",
             children: dict | None = None, **conn) -> dict:
    """Our policy's [connections.t] for ``side`` (its child is called "net")."""
    peer = other(side)
    child = {"local_ts": [f"{INNER[side]}/32"], "remote_ts": [f"{INNER[peer]}/32"], "esp_proposals": [esp]}
    return {"t": {
        "local_addrs": [ADDR[side]], "remote_addrs": [ADDR[peer]], "proposals": [proposals],
        "local": {"auth": "psk", "id": FQDN[side]} if ids else {"auth": "psk"},
        "remote": {"auth": "psk", "id": FQDN[peer]} if ids else {"auth": "psk"},
        "children": {"net": {**child, **(children or {})}},
        **conn,
    }}


class Peers(contextlib.ExitStack):
    """Starts charons and daemons in a lab and stops each (by PID) when the block ends,
    even on failure; prints their log tails so a failing test shows both sides."""

    def __init__(self, lab: Lab, workdir: Path) -> None:
        super().__init__()
        self.lab = lab
        self.workdir = workdir
        self.started: list = []
        self._n = 0

    def _subdir(self, what: str) -> Path:
        self._n += 1
        d = self.workdir / f"{self._n:02d}-{what}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def charon(self, side: str, conf: dict, *, plugins: tuple[str, ...] = (), retransmit: str = FAST_CHARON,
               extra: str = "", certs: dict[str, Path] | None = None, start: bool = True,
               root: Path | None = None) -> Charon:
        """A private charon whose swanctl.conf is ``conf`` (a dict with connections/secrets);
        ``root``: that root's charon (strongSwan 6.1, lab.require_strongswan6) instead of 5.9.8."""
        c = Charon(self.lab, side, self._subdir("charon"), retransmit=retransmit, extra=extra, certs=certs,
                   root=root)
        c.conf = swanctl(conf)
        if plugins:
            c.strongswan_conf = re.sub(r"(\n\s*load = [^\n]*vici)", r"\1 " + " ".join(plugins), c.strongswan_conf,
                                       count=1)
        self.callback(self._show, c)
        self.callback(c.stop)
        self.started.append(c)
        return c.start() if start else c

    def ours(self, side: str, policy: str, secrets: str | None, *args: str, events: bool = True,
             prepare: Callable[[Path], None] | None = None) -> Ours:
        """Our daemon with ``policy``; ``secrets`` becomes its secrets.toml (mode 0600), and
        ``prepare(folder)`` may lay out more files (certificates...) beside the policy first."""
        o = Ours(self.lab, side, self._subdir("ours"), policy)
        if secrets is not None:
            secrets_file = o.dir / "secrets.toml"
            secrets_file.write_text(secrets)
            secrets_file.chmod(0o600)
        if prepare is not None:
            prepare(o.dir)
        self.callback(self._show, o)
        self.callback(o.stop)
        self.started.append(o)
        o.start(*args)
        if events:
            subscribe(o)
        return o

    def route_ike_around_libipsec(self, side: str) -> str:
        """Let charon on ``side`` hold a remote selector with the peer's IKE address (a host or
        road-warrior selector): kernel-libipsec refuses it unless allow_peer_ts is set, and then
        routes everything to the peer into its TUN, its own IKE and ESP-in-UDP packets too. Rules
        (removed again when the block ends) send UDP from ports 500/4500 by the main table;
        returns the strongswan.conf snippet for ``extra``."""
        for port in ("500", "4500"):
            rule = ("priority", "100", "ipproto", "udp", "sport", port, "lookup", "main")
            self.lab.exec(side, "ip", "rule", "add", *rule)
            self.callback(self.lab.exec, side, "ip", "rule", "del", *rule, check=False)
        return "charon {\n  plugins {\n    kernel-libipsec {\n      allow_peer_ts = yes\n    }\n  }\n}\n"

    def popen(self, *args: str) -> subprocess.Popen:
        """A helper process (text stdout, stderr merged), killed by its PID when the block ends."""
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
        self.callback(_kill, p)
        return p

    @staticmethod
    def _show(x) -> None:
        print(f"===== {x.dir} ({type(x).__name__} {x.side}) log, tail\n{x.log()[-5000:]}")


def subscribe(o: Ours) -> None:
    """`ipsec-console events` into o's events file, returning once it is subscribed: the first
    counters snapshot (one a second) is in the file. Events before that would be missed."""
    o.watch_events()
    wait_for(lambda: (o.dir / "events.jsonl").stat().st_size > 0, 15, 0.1, "our event stream")


def _kill(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
        p.wait(5)


@pytest.fixture(scope="module")
def module_lab():
    """One pair of namespaces per test module (each test starts its own peers in it)."""
    with lab() as L:
        yield L


@pytest.fixture
def peers(module_lab, tmp_path):
    with Peers(module_lab, tmp_path) as p:
        yield p
    # What a test may have changed in the shared namespaces, put back.
    module_lab.loss(0)


# ------------------------------------------------------------------ reading both sides
def established(o: Ours) -> list[dict]:
    return [sa for sa in o.sas() if sa["state"] == "ESTABLISHED"]


def with_children(o: Ours) -> list[dict]:
    return [sa for sa in established(o) if any(c["state"] == "INSTALLED" for c in sa["children"])]


_IKE_LINE = re.compile(r"^(\S+): #(\d+), (\w+), IKEv2, ([0-9a-f]{16})_i\*? ([0-9a-f]{16})_r", re.MULTILINE)
_CHILD_SPI = re.compile(r"^\s+(?:in|out)\s+([0-9a-f]{8})", re.MULTILINE)


def charon_ike_sas(listing: str) -> list[tuple[str, str, str, str]]:
    """(name, state, spi_i, spi_r) per IKE SA in ``swanctl --list-sas``."""
    return [(m[0], m[2], m[3], m[4]) for m in _IKE_LINE.findall(listing)]


def charon_child_spis(listing: str) -> set[int]:
    return {int(s, 16) for s in _CHILD_SPI.findall(listing)}


def our_ike_spis(o: Ours) -> set[tuple[str, str]]:
    return {(f"{sa['spi_i']:016x}", f"{sa['spi_r']:016x}") for sa in o.sas()}


def our_child_spis(o: Ours) -> set[int]:
    return {c[k] for sa in o.sas() for c in sa["children"] for k in ("spi_in", "spi_out")}


def sent(o: Ours, exchange: str, *, response: bool | None = None, first_only: bool = True) -> list[dict]:
    """Our ExchangeSent events of one exchange (first transmissions only, unless asked)."""
    out = []
    for e in o.events("ExchangeSent"):
        m = e["message"]
        if m["exchange"] != exchange or (response is not None and m["response"] != response):
            continue
        if first_only and m.get("retransmit"):
            continue
        out.append(e)
    return out


def received(o: Ours, exchange: str, *, response: bool = False) -> list[dict]:
    """Our ExchangeReceived events of one exchange (requests unless asked)."""
    return [e for e in o.events("ExchangeReceived")
            if e["message"]["exchange"] == exchange and e["message"]["response"] == response]


def dpd_probes(o: Ours) -> list[dict]:
    """Our DPD requests: INFORMATIONAL requests with nothing inside SK (RFC 7296 §1.4)."""
    return [e for e in sent(o, "INFORMATIONAL", response=False) if not e["message"]["payloads"]]




def control(o: Ours, cmd: str, **args):
    """One control-socket command (those without a CLI verb, e.g. ``counters``)."""
    async def call():
        client = ControlClient(str(o.control))
        try:
            return await client.call(cmd, **args)
        finally:
            await client.close()
    return asyncio.run(call())


def problems(o: Ours) -> str:
    """Our daemon's warnings, errors and tracebacks: what an assertion message shows."""
    keep = [line for line in o.log().splitlines()
            if " WARNING " in line or " ERROR " in line or line.startswith(("Traceback", "engine.", "  File"))]
    return "\n".join(keep[-25:])


def wait_or_explain(predicate, what: str, *daemons: Ours, timeout: float = 10.0, interval: float = 0.2):
    """wait_for, and when it times out say what our daemons logged (the engine's reason)."""
    try:
        return wait_for(predicate, timeout, interval, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n" + "\n".join(f"--- our daemon ({d.side}):\n{problems(d)}" for d in daemons)) \
            from None


def bring_up(direction: str, c: Charon, o: Ours, *, timeout: float = 10.0) -> None:
    """Connection "t" up on both ends, started by us (we_initiate) or by charon."""
    if direction == "we_initiate":
        o.cli("initiate", "t", "--no-wait")  # our own wait says why when it fails
    else:
        c.swanctl("--initiate", "--child", "t", "--timeout", "10", check=False)
    wait_or_explain(lambda: with_children(o), "our IKE and CHILD SA", o, timeout=timeout)
    wait_or_explain(lambda: "INSTALLED" in c.list_sas(), "charon's CHILD SA", o, timeout=timeout)
