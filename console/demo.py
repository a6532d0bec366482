"""``python3 -m console.demo``: the console on the scripted fake runtime,
moving in real time. For looking at the UI before (or without) an engine."""

from __future__ import annotations

import sys

from console.app import main
from console.runtime.fake import FakeRuntime


def demo_runtime(children: int = 0) -> FakeRuntime:
    if children:
        return FakeRuntime(kind="fake", label=f"DEMO — {children} scripted CHILD SAs", scale_children=children,
                           live=True, active_fraction=0.1, counters_events=False)
    import tempfile

    folder = tempfile.mkdtemp(prefix="ipsec-console-demo-")
    return FakeRuntime.in_folder(folder, kind="lab", label="LAB — scripted demo peers (no engine)", live=True)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    sys.exit(main(runtime=demo_runtime(n)))
