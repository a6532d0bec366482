"""CLI commands that talk to a daemon's control socket: sas, conns,
initiate, terminate, rekey, events."""

from __future__ import annotations

import asyncio
import json
import sys

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
        lines.append(f"  local  '{sa['local_id']}' @ {sa['local_addr']}[{sa['local_port']}]{nat_l}")
        lines.append(f"  remote '{sa['remote_id']}' @ {sa['remote_addr']}[{sa['remote_port']}]{nat_r}")
        algs = "/".join(a for a in (sa["encr"], sa["integ"], sa["prf"], sa["ke"]) if a)
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
            algs = "/".join(a for a in (c["encr"], c["integ"], c["ke"]) if a)
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
    return "\n".join(lines)


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
                         f"dpd_action {k['dpd_action']}")
            lines.append(f"    local:  {' '.join(k['local_ts'])}")
            lines.append(f"    remote: {' '.join(k['remote_ts'])}")
            lines.append(f"    proposals: {', '.join(k['proposals'])}")
    return "\n".join(lines)


async def _run(args) -> int:
    client = ControlClient(args.control)
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
            await client.call("initiate", name=args.name, child=args.child)
            print(f"initiating '{args.name}'")
        elif cmd == "terminate":
            res = await client.call("terminate", name=args.name)
            print(f"deleting {res['deleted']} IKE SA(s) of '{args.name}'")
        elif cmd == "rekey":
            res = await client.call("rekey", name=args.name, ike=args.ike)
            what = "IKE SA(s)" if args.ike else "CHILD SA(s)"
            print(f"rekeying {res['rekeyed']} {what} of '{args.name}'")
            if res["rekeyed"] == 0:
                return 1
        elif cmd == "events":
            async for e in client.events_raw():
                print(json.dumps(e), flush=True)
        return 0
    except ControlError as exc:
        print(f"ipsec-console: {exc}", file=sys.stderr)
        for f in exc.findings:
            print(f, file=sys.stderr)
        return 1
    finally:
        await client.close()


def run(args) -> int:
    try:
        return asyncio.run(_run(args))
    except BrokenPipeError:
        return 0
