"""CLI commands that talk to a daemon's control socket: sas, conns,
initiate, terminate, rekey, roam, events."""

from __future__ import annotations

import asyncio
import json
import sys

from engine.printable import escape
from engine.runtime.client import ControlClient, ControlError


def _ago(s: float | None) -> str:
    return "never" if s is None else f"{int(s)}s ago"


def _in(s: float | None) -> str | None:
    return None if s is None else f"{int(s)}s"


def format_sas(ike_sas: list[dict]) -> str:
    """Text like ``swanctl --list-sas``."""
    lines: list[str] = []
    for sa in ike_sas:
        star_i = "*" if sa["initiator"] else ""
        star_r = "" if sa["initiator"] else "*"
        lines.append(f"{sa['name']}: #{sa['unique_id']}, {sa['state']}, IKEv2, "
                     f"{sa['spi_i']:016x}_i{star_i} {sa['spi_r']:016x}_r{star_r}")
        nat_l = " (behind NAT)" if sa.get("nat_local") else ""
        nat_r = " (behind NAT)" if sa.get("nat_remote") else ""
        # As swanctl --list-sas: the EAP identity and virtual IPs after the side they belong to. A
        # virtual IP we leased from a pool is the peer's; without a pool it is the one we were given.
        vips = f" [{' '.join(sa['virtual_ips'])}]" if sa.get("virtual_ips") else ""
        eap = f" EAP: '{sa['eap_identity']}'" if sa.get("eap_identity") else ""
        vip_l, vip_r = ("", vips) if sa.get("pool") else (vips, "")
        lines.append(f"  local  '{sa['local_id']}' @ {sa['local_addr']}[{sa['local_port']}]{vip_l}{nat_l}")
        lines.append(f"  remote '{sa['remote_id']}' @ {sa['remote_addr']}[{sa['remote_port']}]{eap}{vip_r}{nat_r}")
        algs = "/".join(a for a in (sa["encr"], sa["integ"], sa["prf"], sa["ke"], *(sa.get("additional_ke") or ()),
                                    "PPK" if sa.get("ppk") else "") if a)
        if algs:
            lines.append(f"  {algs}")
        times = []
        if sa.get("established_ago") is not None:
            times.append(f"established {_ago(sa['established_ago'])}")
        if sa.get("rekey_in") is not None:
            times.append(f"rekeying in {_in(sa['rekey_in'])}")
        if sa.get("expire_in") is not None:
            times.append(f"expires in {_in(sa['expire_in'])}")
        if times:
            lines.append("  " + ", ".join(times))
        for c in sa["children"]:
            mode = c["mode"].upper() + ("-in-UDP" if c["encap"] else "")
            algs = "/".join(a for a in (c["encr"], c["integ"], c["ke"], *(c.get("additional_ke") or ())) if a)
            lines.append(f"  {c['name']}: #{c['unique_id']}, reqid {c['reqid']}, {c['state']}, {mode}, "
                         f"{c['protocol'].upper()}:{algs}{'/ESN' if c['esn'] else ''}")
            t = [f"installed {_ago(c['installed_ago'])}"]
            if c.get("rekey_in") is not None:
                t.append(f"rekeying in {_in(c['rekey_in'])}")
            if c.get("expire_in") is not None:
                t.append(f"expires in {_in(c['expire_in'])}")
            lines.append("    " + ", ".join(t))
            lines.append(f"    in  {c['spi_in']:08x}, {c['bytes_in']:>9} bytes, {c['packets_in']:>7} packets")
            lines.append(f"    out {c['spi_out']:08x}, {c['bytes_out']:>9} bytes, {c['packets_out']:>7} packets")
            drops = ", ".join(f"{r} {n}" for r, n in c.get("drops") or [] if n)
            if drops:
                lines.append(f"    dropped: {drops}")
            lines.append(f"    local  {' '.join(c['local_ts'])}")
            lines.append(f"    remote {' '.join(c['remote_ts'])}")
    # Identities are the peer's text: a daemon's (or an older one's) controls never reach the terminal.
    return "\n".join(map(escape, lines))


def format_conns(conns: list[dict]) -> str:
    lines = []
    for c in conns:
        lines.append(f"{c['name']}: IKEv2, {c['state']}, "
                     f"{','.join(c['local_addrs']) or '%any'}...{','.join(c['remote_addrs']) or '%any'}")
        lines.append(f"  local:  {c['local_auth']} '{c['local_id'] or '%any'}'")
        lines.append(f"  remote: {c['remote_auth']} '{c['remote_id'] or '%any'}'")
        lines.append(f"  proposals: {', '.join(c['proposals'])}")
        for k in c["children"]:
            lines.append(f"  {k['name']}: {k['mode'].upper()}, {k['protocol']}, start_action {k['start_action']}, "
                         f"dpd_action {k['dpd_action']}, close_action {k.get('close_action', 'none')}")
            lines.append(f"    local:  {' '.join(k['local_ts'])}")
            lines.append(f"    remote: {' '.join(k['remote_ts'])}")
            lines.append(f"    proposals: {', '.join(k['proposals'])}")
    return "\n".join(map(escape, lines))


def call_timeout(seconds: float | None) -> float | None:
    """The --timeout for the daemon's answers (None: not given, the default); 0 and inf mean no limit."""
    if seconds is None:
        from console.cli import CALL_TIMEOUT

        return CALL_TIMEOUT
    return seconds if 0 < seconds < float("inf") else None


async def _run(args) -> int:
    client = ControlClient(args.control, timeout=call_timeout(getattr(args, "timeout", None)))
    try:
        cmd = args.command
        if cmd == "sas":
            res = await client.call("list-sas")
            if args.json:
                print(json.dumps(res, indent=2))
            elif res["ike_sas"]:
                print(format_sas(res["ike_sas"]))
            else:
                print("no IKE SAs")
        elif cmd == "conns":
            res = await client.call("list-conns")
            print(json.dumps(res, indent=2) if args.json else format_conns(res["connections"]))
        elif cmd == "initiate":
            if not getattr(args, "wait", False):
                await client.call("initiate", name=args.name, child=args.child)
                print(f"initiating '{args.name}'")
                return 0
            return await initiate_and_wait(client, args.control, args.name, args.child, args.timeout)
        elif cmd == "terminate":
            ike_id = getattr(args, "ike_id", None)
            if ike_id is not None:
                return await terminate_ike_sa(client, args.name, ike_id)
            if not args.name:
                raise ControlError("terminate needs a connection NAME or --ike-id")
            res = await client.call("terminate", name=args.name)
            print(f"deleting {res['deleted']} IKE SA(s) of '{args.name}'")
            # (an older daemon's answer lacks retry_stopped and resolving: read as nothing stopped)
            if res.get("retry_stopped"):
                print(f"'{args.name}' had failed and was going to try again: it will not")
            if res.get("resolving"):
                print(f"'{args.name}' was waiting for {res['resolving']} to resolve before initiating: "
                      "its initiation is cancelled")
            if res.get("untrapped"):
                print(f"'{args.name}': removed the trap close_action/dpd_action had installed for "
                      f"{', '.join(res['untrapped'])}")
            if res["deleted"] == 0 and not res.get("retry_stopped") and not res.get("resolving") \
                    and not res.get("untrapped"):
                # nothing was up: as rekey and roam, and as swanctl --terminate finding no SA
                return _nothing(f"'{args.name}' has no IKE SA to terminate")
        elif cmd == "rekey":
            res = await client.call("rekey", name=args.name, ike=args.ike)
            what = "IKE SA(s)" if args.ike else "CHILD SA(s)"
            print(f"rekeying {res['rekeyed']} {what} of '{args.name}'")
            if res["rekeyed"] == 0:
                return _nothing(f"'{args.name}' has no established {'IKE SA' if args.ike else 'CHILD SA'} to rekey")
        elif cmd == "roam":
            res = await client.call("roam", name=args.name)
            print(f"{res['moved']} IKE SA(s) moved to a new address")
            if res["moved"] == 0:
                of = f" of '{args.name}'" if args.name else ""
                return _nothing(f"no IKE SA{of} needed to move (only those we initiated with MOBIKE move, "
                                "when our address changed)")
        elif cmd == "events":
            types = event_types(args.types)
            async for e in client.events_raw(plaintext=args.plaintext):
                if types is None or e.get("type") in types:
                    print(json.dumps(e), flush=True)
        return 0
    except ControlError as exc:
        print(f"ipsec-console: {exc}", file=sys.stderr)
        for f in exc.findings:
            print(f, file=sys.stderr)
        return 1
    finally:
        await client.close()


async def terminate_ike_sa(client: ControlClient, name: str | None, ike_id: int) -> int:
    """swanctl --terminate --ike-id: one IKE SA, found by its unique id (the daemon's terminate
    takes the connection's name with it)."""
    sa = next((sa for sa in (await client.call("list-sas"))["ike_sas"] if sa["unique_id"] == ike_id), None)
    if sa is None or (name and sa["name"] != name):
        of = f" of '{name}'" if name else ""
        raise ControlError(f"no IKE SA #{ike_id}{of} (ipsec-console sas lists them)")
    res = await client.call("terminate", name=sa["name"], unique_id=ike_id)
    if res["deleted"] == 0:
        raise ControlError(f"IKE SA #{ike_id} of '{sa['name']}' is already being deleted or rekeyed")
    print(f"deleting IKE SA #{ike_id} of '{sa['name']}'")
    return 0


def _nothing(why: str) -> int:
    """Exit 1 for a command that found nothing to do, the reason on stderr (stdout keeps its count)."""
    print(f"ipsec-console: {why}", file=sys.stderr)
    return 1


def event_types(values: list[str] | None) -> set[str] | None:
    """The --type filter (None: every event); an unknown name is an error naming the known ones."""
    from engine.events import EVENT_TYPES

    if not values:
        return None
    wanted = {t.strip() for v in values for t in v.split(",") if t.strip()}
    if not wanted:
        raise ControlError(f"--type needs an event type (known: {', '.join(sorted(EVENT_TYPES))})")
    unknown = sorted(wanted - set(EVENT_TYPES))
    if unknown:
        raise ControlError(f"unknown event type {', '.join(unknown)} (known: {', '.join(sorted(EVENT_TYPES))})")
    return wanted


def _up(sas: list[dict], name: str, children: set[str]) -> bool:
    # Mid-rekey counts as up (a busy gateway rekeys some SA every moment): initiating again would
    # start nothing (the engine sees the SA and its CHILD SAs) and the wait would time out.
    for sa in sas:
        if sa["name"] == name and sa["state"] in ("ESTABLISHED", "REKEYING"):
            have = {c["name"] for c in sa["children"] if c["state"] in ("INSTALLED", "REKEYING")}
            if children <= have:
                return True
    return False


async def _failing(client: ControlClient, name: str) -> bool:
    """Whether connection ``name`` failed and waits for its next keyingtries attempt."""
    try:
        conns = (await client.call("list-conns"))["connections"]
    except ControlError:
        return False
    return any(c["name"] == name and c.get("state") == "failing" for c in conns)


async def initiate_and_wait(client: ControlClient, control: str | None, name: str, child: str | None,
                            timeout: float) -> int:
    """Initiate and wait for the outcome, like swanctl --initiate: 0 up, 1 failed, 124 undecided."""
    conns = {c["name"]: c for c in (await client.call("list-conns"))["connections"]}
    if name not in conns:
        raise ControlError(f"no connection named '{name}'")
    wanted = {child} if child else {k["name"] for k in conns[name]["children"]}
    if _up((await client.call("list-sas"))["ike_sas"], name, wanted):
        print(f"'{name}' is already up")
        return 0
    watcher = ControlClient(control or client.path, timeout=client.timeout)
    try:
        await watcher.subscribe()  # before initiating: no outcome can slip by unseen
        await client.call("initiate", name=name, child=child)
        print(f"initiating '{name}'", flush=True)
        up: set[str] = set()
        loop = asyncio.get_running_loop()
        limit = call_timeout(timeout)  # 0 and inf: no limit, as for the answers (not: give up at once)
        deadline = loop.time() + (limit if limit is not None else float("inf"))
        while True:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                e = await asyncio.wait_for(watcher.next_event(), left)
            except asyncio.TimeoutError:
                break
            if e is None:
                raise ControlError("the daemon closed the connection")
            if e.get("connection") != name:
                continue
            kind = e.get("type")
            if kind == "ChildSaInstalled" and (not wanted or e.get("child") in wanted):
                up.add(e["child"])
                print(f"CHILD_SA {e['child']}{{{e['unique_id']}}} established with SPIs {e['spi_in']:08x}_i "
                      f"{e['spi_out']:08x}_o")
                if up >= wanted:
                    print(f"connection '{name}' established successfully")
                    return 0
            elif kind == "IkeSaStateChanged" and e.get("new") == "ESTABLISHED" and not wanted:
                print(f"connection '{name}' established successfully")
                return 0
            elif kind == "NegotiationFailed":
                print(escape(f"initiating '{name}' failed: {e.get('notify')}: {e.get('reason')}"), file=sys.stderr)
                if await _failing(client, name):
                    # The daemon tries again (keyingtries): this command ends, the attempts do not.
                    print(f"'{name}' will be tried again (keyingtries); `ipsec-console terminate {name}` stops it",
                          file=sys.stderr)
                return 1
        print(f"initiating '{name}': no outcome within {timeout:g}s (it may still come up: "
              f"ipsec-console sas)", file=sys.stderr)
        return 124
    finally:
        await watcher.close()


def run(args) -> int:
    try:
        return asyncio.run(_run(args))
    except BrokenPipeError:
        return 0
