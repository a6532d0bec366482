"""The ``ipsec-console`` command line.

``ipsec-console [CONFIG]`` opens the console (no CONFIG: the lab); the
subcommands validate policies, run the engine headless and control it.
"""

from __future__ import annotations

import argparse
import sys

from console import cli_ops

DEFAULT_CONTROL = "/run/ipsec-console/control.sock"

SUBCOMMANDS = ("check", "daemon", "sas", "conns", "initiate", "terminate", "rekey", "roam", "events", "attach", "pki",
               "serve")
SUBCOMMANDS += cli_ops.SUBCOMMANDS


CALL_TIMEOUT = 30.0
"""Seconds a control command waits for the daemon's answer (--timeout): a wedged daemon that accepts
and never answers must not hang a script forever."""


def _add_control(p: argparse.ArgumentParser, timeout: bool = False) -> None:
    p.add_argument("--control", metavar="PATH", default=None,
                   help=f"control socket of the daemon (default {DEFAULT_CONTROL})")
    if timeout:
        p.add_argument("--timeout", type=_seconds, default=CALL_TIMEOUT, metavar="SECONDS",
                       help=f"give up when the daemon has not answered within this long (default {CALL_TIMEOUT:g}; "
                       "0 or inf: no limit; an event stream waits for events as long as it runs)")


def _seconds(text: str) -> float:
    """A number of seconds, 0 or more (inf: no limit)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value != value or value < 0:  # NaN never compares: it would never time out, nor be reached
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def _unique_id(text: str) -> int:
    """An IKE SA's unique id: `sas` shows it as #N (the # may be typed too)."""
    try:
        value = int(text.lstrip("#"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IKE SA id (the #N of `ipsec-console sas`)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IKE SA id (1 or more)")
    return value


def _tcp_port(text: str) -> int:
    """A TCP port to listen on, 1 to 65535 (0 would take a random port the printed URL cannot name)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1 to 65535)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipsec-console",
        description="Terminal administration console for IPsec (IKEv2 + ESP/AH). "
        "With no command, opens the console on CONFIG, or on the built-in lab when CONFIG is omitted.",
    )
    cli_ops.add_version(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("check", help="validate and lint a policy file",
                       description="Validate and lint a policy. One line per finding: "
                       "FILE:LINE:COL: KEY.PATH: error|warning|info: message, then one summary line. "
                       "Exit 0 when valid (warnings allowed unless --strict, advice (info) always), 1 on errors.")
    p.add_argument("config", metavar="CONFIG", help="policy TOML file")
    cli_ops.add_check_options(p)

    p = sub.add_parser("daemon", help="run the engine headless in the foreground",
                       description="Run the engine headless: logs to stderr, serves the control socket, "
                       "deletes its SAs and exits 0 on SIGTERM.")
    p.add_argument("config", metavar="CONFIG", help="policy TOML file")
    _add_control(p)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log detail (repeat for debug)")
    p.add_argument("--datapath", choices=("kernel", "userspace", "lab", "none"),
                   help="override the policy's datapath; 'none' negotiates SAs without protecting traffic; "
                   "'lab' runs a lab policy whole, its simulated peers too")

    p = sub.add_parser("sas", help="list IKE and CHILD SAs (like swanctl --list-sas)",
                       description="List the daemon's IKE and CHILD SAs.")
    _add_control(p, timeout=True)
    p.add_argument("--json", action="store_true", help="the stable JSON schema documented in README.md")

    p = sub.add_parser("conns", help="list configured connections (like swanctl --list-conns)",
                       description="List the daemon's configured connections.")
    _add_control(p, timeout=True)
    p.add_argument("--json", action="store_true", help="JSON output")

    p = sub.add_parser("initiate", help="bring a connection up (waits for the outcome, like swanctl)",
                       description="Initiate a connection and wait for the outcome. Exit 0 when its CHILD SAs "
                       "are up (or already were), 1 when the negotiation failed or the daemon refused, 124 when "
                       "nothing was decided within --timeout.")
    p.add_argument("name", metavar="NAME", help="connection name")
    p.add_argument("--child", help="only this CHILD SA config")
    p.add_argument("--wait", dest="wait", action="store_true", default=True,
                   help="wait for the CHILD SAs to be up or the negotiation to fail (the default)")
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="return once the daemon accepted the command")
    p.add_argument("--timeout", type=_seconds, default=30.0, metavar="SECONDS",
                   help="give up waiting after this long (default 30), for the outcome and for each answer "
                   "of the daemon (0 or inf: no limit)")
    _add_control(p)

    p = sub.add_parser("terminate", help="take a connection down",
                       description="Delete a connection's IKE SAs (and their CHILD SAs), or one IKE SA with "
                       "--ike-id (like swanctl --terminate --ike-id). Exit 1 when there was nothing to delete.")
    p.add_argument("name", metavar="NAME", nargs="?", help="connection name (optional with --ike-id)")
    p.add_argument("--ike-id", type=_unique_id, metavar="ID",
                   help="only the IKE SA with this unique id (the #N `sas` shows)")
    _add_control(p, timeout=True)

    p = sub.add_parser("rekey", help="rekey a connection's CHILD SAs (or IKE SA with --ike)",
                       description="Rekey a connection's CHILD SAs, or its IKE SA with --ike.")
    p.add_argument("name", metavar="NAME", help="connection name")
    p.add_argument("--ike", action="store_true", help="rekey the IKE SA instead of the CHILD SAs")
    _add_control(p, timeout=True)

    p = sub.add_parser("roam", help="MOBIKE: move our SAs to our current address now",
                       description="Look at our addresses now instead of within the next second: IKE SAs we "
                       "initiated with MOBIKE move to the source address the host now uses towards their peer "
                       "(UPDATE_SA_ADDRESSES, RFC 4555). Exit 1 when none moved.")
    p.add_argument("name", metavar="NAME", nargs="?", help="only this connection")
    _add_control(p, timeout=True)

    p = sub.add_parser("events", help="stream engine events as JSON lines",
                       description="Subscribe to the daemon's events and print one JSON object per line. "
                       "Times are Unix time. PacketSample events leave out the decrypted inner packet unless "
                       "--plaintext is given.")
    _add_control(p, timeout=True)
    p.add_argument("--type", dest="types", action="append", metavar="TYPE",
                   help="only events of this type (repeat, or comma-separate), e.g. "
                   "--type NegotiationFailed,ChildSaInstalled")
    p.add_argument("--plaintext", action="store_true",
                   help="include the decrypted inner packet of PacketSample events (off by default: "
                   "events often end up in logs)")

    p = sub.add_parser("attach", help="open the console on a running daemon",
                       description="Open the console on a daemon through its control socket; closing it leaves the tunnels up.")
    _add_control(p)

    p = sub.add_parser("serve", help="the console in a web browser (textual-serve)",
                       description="Serve the console to web browsers: each browser session runs one console "
                       "(--attach: on the daemon, else on CONFIG or the lab). Listens on 127.0.0.1 and answers "
                       "only requests carrying the token printed in the URL at start.")
    p.add_argument("config", metavar="CONFIG", nargs="?", help="policy TOML file (default: the lab)")
    p.add_argument("--attach", action="store_true", help="each session attaches to the daemon")
    _add_control(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_tcp_port, default=8022, help="TCP port, 1 to 65535 (default 8022)")
    p.add_argument("--token", help="the access token (default: a random one, printed in the URL)")

    p = sub.add_parser("pki", help="a small CA: init-ca, issue, revoke, crl, list",
                       description="Certificate authority for IKE certificates.")
    p.add_argument("pki_args", nargs=argparse.REMAINDER, help="pki subcommand and its arguments")

    cli_ops.add_parsers(sub, _add_control)
    return parser


def _console_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ipsec-console",
        description="Open the console on CONFIG (engine embedded), or on the built-in lab without CONFIG. "
        f"Commands: {', '.join(SUBCOMMANDS)} (ipsec-console COMMAND --help).",
    )
    p.add_argument("config", metavar="CONFIG", nargs="?", help="policy TOML file (default: the lab)")
    cli_ops.add_version(p)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "pki":  # its own parser, so `pki --help` lists the pki subcommands
        return _cmd_pki(argparse.Namespace(pki_args=argv[1:]))
    if not argv or argv[0] not in SUBCOMMANDS + ("-h", "--help"):
        args = _console_parser().parse_args(argv)
        mistyped = _mistyped_command(args.config)
        if mistyped:
            print(f"ipsec-console: {mistyped}", file=sys.stderr)
            return 2
        return run_console(args.config)
    args = build_parser().parse_args(argv)
    clash = _output_clash(args)
    if clash:
        print(f"ipsec-console {args.command}: {clash}; nothing was written", file=sys.stderr)
        return 2
    handler = {
        "check": _cmd_check,
        "daemon": _cmd_daemon,
        "sas": _cmd_control,
        "conns": _cmd_control,
        "initiate": _cmd_control,
        "terminate": _cmd_control,
        "rekey": _cmd_control,
        "roam": _cmd_control,
        "events": _cmd_control,
        "attach": _cmd_attach,
        "pki": _cmd_pki,
        "serve": _cmd_serve,
        **cli_ops.HANDLERS,
    }[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


def _mistyped_command(config: str | None) -> str | None:
    """A bare word that is no file and no policy name (no .toml, no folder) is a mistyped command,
    not a new policy to author: opening the full-screen console on it would hang a script."""
    import difflib
    import os

    if not config or os.path.exists(config) or config.endswith(".toml") or os.sep in config:
        return None
    aliases = {"list-sas": "sas", "list-conns": "conns", "load-all": "reload"}
    guess = aliases.get(config.lstrip("-")) or next(iter(difflib.get_close_matches(config, SUBCOMMANDS, 1)), None)
    hint = f" (did you mean '{guess}'?)" if guess else ""
    return (f"unknown command '{config}'{hint}; commands: {', '.join(SUBCOMMANDS)}. To author a new policy, "
            f"name its file: ipsec-console {config}.toml")


def _same_file(a: str, b: str) -> bool:
    import os

    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _output_clash(args) -> str | None:
    """import/export/doc: an output that is also their input, or one file named for both outputs
    (each would be written over the other, or over the file being converted)."""
    if args.command not in ("import", "export", "doc"):
        return None
    source = args.swanctl_conf if args.command == "import" else args.config
    outputs = [(opt, path) for opt, path in (("-o", getattr(args, "output", None)),
                                             ("--secrets", getattr(args, "secrets", None))) if path]
    for opt, path in outputs:
        if source and _same_file(path, source):
            return f"{opt} {path} is also the file being read ({source})"
    if len(outputs) == 2 and _same_file(outputs[0][1], outputs[1][1]):
        return f"-o {outputs[0][1]} is also the --secrets file"
    return None


def run_console(config: str | None) -> int:
    from console.app import main as console_main

    return console_main(config)


def _cmd_check(args) -> int:
    return cli_ops.cmd_check(args)


def _cmd_daemon(args) -> int:
    from engine.runtime.daemon import main as daemon_main

    return daemon_main(args.config, args.control, args.verbose, args.datapath)


def _cmd_control(args) -> int:
    from console.cli_control import run

    return run(args)


def _cmd_attach(args) -> int:
    from console.app import main as console_main

    return console_main(attach=args.control or DEFAULT_CONTROL)


def _cmd_serve(args) -> int:
    from console.serve import serve

    if args.attach and args.config:
        print("ipsec-console: serve takes CONFIG or --attach, not both", file=sys.stderr)
        return 2
    return serve(args.config, attach=args.attach, control=args.control, host=args.host, port=args.port,
                 token=args.token)


def _cmd_pki(args) -> int:
    from engine.pki.cli import main as pki_main

    return pki_main(args.pki_args)


if __name__ == "__main__":
    sys.exit(main())
