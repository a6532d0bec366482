"""A copy of the shipped lab (sample-configs/lab*.toml) on ports of its own, so
tests that run a lab in parallel never share a port, with extra lines for hq."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

from engine.policy.samples import sample_dir

LAB_PORTS = (15500, 15501, 15510, 15511, 15520, 15521)
_copies = itertools.count()


def lab_copy(tmp_path: Path, *, engine: str = "", tail: str = "") -> Path:
    """The copied hq policy (lab.toml); ``engine`` lines go into its [engine] section, ``tail`` at its end."""
    folder = tmp_path / f"lab{next(_copies)}"
    shutil.copytree(sample_dir(), folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    shift = 1000 + (os.getpid() * 7 + next(_copies)) % 300 * 30
    for name in ("lab.toml", "lab-branch.toml", "lab-roadwarrior.toml"):
        text = (folder / name).read_text()
        for port in LAB_PORTS:
            text = text.replace(str(port), str(port + shift))
        (folder / name).write_text(text)
    hq = folder / "lab.toml"
    text = hq.read_text().replace('secrets = "lab.secrets.toml"', 'secrets = "lab.secrets.toml"\n' + engine)
    hq.write_text(text + tail)
    return hq
