"""``python3 -m console.demo``: the console on the scripted fake runtime,
moving in real time. For looking at the UI before (or without) an engine."""

from __future__ import annotations

import sys
import tempfile
import time

from console.app import main
from console.runtime.fake import FakeRuntime


def demo_runtime(folder: str, children: int = 0) -> FakeRuntime:
    """The demo's runtime; its policy and PKI files go to ``folder`` (the caller removes it)."""
    if children:
        return FakeRuntime(kind="fake", label=f"DEMO — {children} scripted CHILD SAs", scale_children=children,
                           live=True, active_fraction=0.1, counters_events=False, start_time=time.time())
    # (the fake's fixed start time is for the tests' snapshots; the live demo shows the real clock)
    return FakeRuntime.in_folder(folder, kind="lab", label="LAB — scripted demo peers (no engine)", live=True,
                                 start_time=time.time())


def run(children: int = 0) -> int:
    # A folder of its own for the demo's files, gone when the console quits (it was left in /tmp).
    with tempfile.TemporaryDirectory(prefix="ipsec-console-demo-") as folder:
        return main(runtime=demo_runtime(folder, children))


if __name__ == "__main__":
    sys.exit(run(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
