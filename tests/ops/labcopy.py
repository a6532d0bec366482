"""A copy of the shipped lab (sample-configs/lab*.toml) on addresses and ports of its own, with extra
lines for hq: the endpoints move from 127.0.0.1-3 to hosts 1-3 of this process's loopback /24
(tests/loopback.py), so another test run at the same time (or someone's lab on the shipped ports) never
shares an address and port with it, and each copy of this run gets ports of its own."""

from __future__ import annotations

import itertools
import re
import shutil
from pathlib import Path

from engine.policy.samples import sample_dir

from tests.loopback import addr

LAB_PORTS = (15500, 15501, 15510, 15511, 15520, 15521)
_copies = itertools.count()


def lab_copy(tmp_path: Path, *, engine: str = "", tail: str = "") -> Path:
    """The copied hq policy (lab.toml); ``engine`` lines go into its [engine] section, ``tail`` at its end."""
    folder = tmp_path / f"lab{next(_copies)}"
    shutil.copytree(sample_dir(), folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    # 16,500-25,491: under the 255xx-258xx that other tests use on host 1 (tests/engine/test_control_*.py).
    shift = 1000 + next(_copies) % 300 * 30
    for name in ("lab.toml", "lab-branch.toml", "lab-roadwarrior.toml"):
        text = (folder / name).read_text()
        text = re.sub(r"\b127\.0\.0\.([123])\b", lambda m: addr(int(m.group(1))), text)
        for port in LAB_PORTS:
            text = text.replace(str(port), str(port + shift))
        (folder / name).write_text(text)
    hq = folder / "lab.toml"
    text = hq.read_text().replace('secrets = "lab.secrets.toml"', 'secrets = "lab.secrets.toml"\n' + engine)
    hq.write_text(text + tail)
    return hq


def lab_address(endpoint: str) -> str:
    """Where a lab copy's ``hq``, ``branch`` or ``roadwarrior`` listens (127.0.0.1-3 in the shipped lab)."""
    return addr(("hq", "branch", "roadwarrior").index(endpoint) + 1)
