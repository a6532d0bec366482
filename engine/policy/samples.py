"""Where the shipped sample policies are, in a source tree, an editable install or a wheel.

The wheel carries ``sample-configs/`` as the data package
``console.sample_configs`` (see setup.py); a source tree or an editable
install reads the folder directly.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

PACKAGE = "console.sample_configs"
_SOURCE = Path(__file__).resolve().parents[2] / "sample-configs"


def sample_dir() -> Path:
    """The folder holding the sample policies."""
    if _SOURCE.is_dir():
        return _SOURCE
    # Installed: a data package. Its files are plain files in site-packages.
    root = importlib.resources.files(PACKAGE)
    return Path(str(root.joinpath("lab.toml"))).parent


def sample_path(name: str) -> Path:
    """Path of one sample, e.g. ``sample_path("lab.toml")``; FileNotFoundError if there is none."""
    path = sample_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"no sample policy named {name!r} (samples: {', '.join(sample_names())})")
    return path


def sample_names() -> list[str]:
    """The shipped policy samples (secrets files left out)."""
    return sorted(p.name for p in sample_dir().glob("*.toml") if not p.name.endswith(".secrets.toml"))


def resolve_policy_path(arg: str | os.PathLike) -> str:
    """``arg`` itself if it names an existing file or has a folder part; else the sample of that name
    if there is one (``ipsec-console check lab.toml`` from any folder); else ``arg`` unchanged."""
    text = os.fspath(arg)
    if os.path.exists(text) or os.path.dirname(text):
        return text
    try:
        return str(sample_path(text))
    except (FileNotFoundError, ModuleNotFoundError):
        return text
