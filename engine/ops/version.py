"""The installed version, for ``--version``, ``stats`` and the metrics."""

from __future__ import annotations

import functools
import importlib.metadata
import tomllib
from pathlib import Path

DISTRIBUTION = "ipsec-console"


@functools.lru_cache(maxsize=1)
def engine_version() -> str:
    """The package version: from the installed metadata, else from a source tree's pyproject.toml."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
        return str(project["project"]["version"])
    except (OSError, KeyError, ValueError):
        return "unknown"
