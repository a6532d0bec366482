"""Test-only: ``ipsec-console daemon`` whose datapath also writes the CHILD SA
keys the engine derived to a file, so a test can compare them with what the
kernel holds (``ip xfrm state``) and with what the peer installed. The
product never exports keys: this wrapper lives in tests/ and is never
installed.

usage: python -m tests.kernel.keys_daemon KEYS.json CONFIG --control SOCK [-v]

Everything else is the real daemon (engine.runtime.daemon.main: policy
loading, make_datapath, the control socket, SIGTERM handling); only the
datapath object is wrapped. The key file is rewritten atomically (mode
0600) after each install, as a JSON list of records.
"""

from __future__ import annotations

import argparse
import json
import os

from engine.runtime import daemon


class KeyRecorder:
    """A datapath that records each ChildSaInstalled's keys, then hands every
    call to the real datapath it wraps."""

    def __init__(self, inner, out: str) -> None:
        self._inner = inner
        self._out = out
        self._records: list[dict] = []

    def __getattr__(self, name: str):
        # name, start, stop, remove, counters, prepare_socket, ...: the real datapath's
        return getattr(self._inner, name)

    def install(self, ev) -> None:
        k = ev.keys
        self._records.append({
            "connection": ev.connection, "child": ev.child, "protocol": ev.protocol, "mode": ev.mode,
            "reqid": ev.reqid, "initiator": ev.initiator,
            "spi_in": ev.spi_in, "spi_out": ev.spi_out,
            "encr_in": k.encr_in.reveal().hex(), "integ_in": k.integ_in.reveal().hex(),
            "encr_out": k.encr_out.reveal().hex(), "integ_out": k.integ_out.reveal().hex(),
        })
        tmp = self._out + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._records, f)
        os.replace(tmp, self._out)
        self._inner.install(ev)


def main() -> int:
    ap = argparse.ArgumentParser(prog="keys_daemon")
    ap.add_argument("keys")
    ap.add_argument("config")
    ap.add_argument("--control", required=True)
    ap.add_argument("--datapath")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    a = ap.parse_args()
    real = daemon.make_datapath
    daemon.make_datapath = lambda policy, kind=None: KeyRecorder(real(policy, kind), a.keys)
    return daemon.main(a.config, a.control, a.verbose, a.datapath)


if __name__ == "__main__":
    raise SystemExit(main())
