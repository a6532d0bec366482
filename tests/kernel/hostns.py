"""Helpers for the host-side kernel tests: ``ip`` and our policies in a namespace."""

from __future__ import annotations

import subprocess


def ip(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode:
        raise AssertionError(f"ip {' '.join(args)}: {proc.stderr}")
    return proc.stdout


def our_policies(ns: str) -> list[str]:
    """The lines of ``ip xfrm policy`` with a priority in our band (367001600-367132671)."""
    out = ip("-n", ns, "xfrm", "policy")
    return [line for line in out.splitlines() if "priority 3670" in line or "priority 3671" in line]
