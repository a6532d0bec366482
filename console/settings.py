"""The console's own settings (theme, follow mode...), remembered in
``$XDG_CONFIG_HOME/ipsec-console/settings.toml`` and written atomically."""

from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import tomli_w

DEFAULT_THEME = "ipsec-dark"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "ipsec-console"


@dataclass
class Settings:
    theme: str = DEFAULT_THEME
    log_follow: bool = True
    export_dir: str = ""
    """Where exports and screenshots go ("" : ~/Downloads if it exists, else here; see console.export)."""
    keymap: dict = field(default_factory=dict)
    """Binding id -> keys, e.g. {"dashboard.initiate" = "I"}: remaps the console's keys (the help screen lists ids)."""

    @classmethod
    def load(cls, path: Path | None = None) -> tuple["Settings", str | None]:
        """The settings and a problem to report (unreadable file), never an exception."""
        path = path or config_dir() / "settings.toml"
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            return cls(), None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            return cls(), f"{path}: ignored ({exc})"
        known = {f.name: f.type for f in fields(cls)}
        kwargs = {}
        for k, v in data.items():
            if k in known and isinstance(v, type(getattr(cls(), k))):
                kwargs[k] = v
        return cls(**kwargs), None

    def save(self, path: Path | None = None) -> None:
        """Write atomically: temp file in the same folder, fsync, rename."""
        path = path or config_dir() / "settings.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".toml", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(tomli_w.dumps(asdict(self)).encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
