"""Themes are data: TOML files in ``themes/`` (shipped as the package
``console.themes``) and in ``$XDG_CONFIG_HOME/ipsec-console/themes/``.
A file that cannot be read is reported, never fatal."""

from __future__ import annotations

import importlib.resources
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Iterable

from textual.color import Color, ColorParseError
from textual.theme import Theme

from console.settings import config_dir

_COLOR_KEYS = ("primary", "secondary", "warning", "error", "success", "accent", "foreground",
               "background", "surface", "panel", "boost")
_OTHER_KEYS = {"name": str, "dark": bool, "luminosity_spread": float, "text_alpha": float, "ansi": bool}


class ThemeFileError(ValueError):
    """A theme file that cannot be used; the message names the file and the key."""


def _packaged_files() -> list[tuple[str, str]]:
    """(file name, text) of the shipped themes."""
    try:
        root = importlib.resources.files("console.themes")
        entries = [(e.name, e) for e in root.iterdir() if e.name.endswith(".toml")]
        return sorted((name, e.read_text(encoding="utf-8")) for name, e in entries)
    except ModuleNotFoundError:
        # A source checkout without installation: themes/ beside console/.
        folder = Path(__file__).resolve().parent.parent / "themes"
        return sorted((p.name, p.read_text(encoding="utf-8")) for p in folder.glob("*.toml"))


def parse_theme(text: str, source: str) -> Theme:
    """Build a Theme from TOML text; raises ThemeFileError naming ``source`` and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ThemeFileError(f"{source}: not valid TOML ({exc})") from None
    kwargs: dict = {}
    for key, value in data.items():
        if key == "variables":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ThemeFileError(f"{source}: variables: must be a table of strings")
            kwargs["variables"] = dict(value)
        elif key in _COLOR_KEYS:
            if not isinstance(value, str):
                raise ThemeFileError(f"{source}: {key}: must be a colour string like \"#4fa3e0\"")
            try:
                Color.parse(value)
            except ColorParseError:
                raise ThemeFileError(f"{source}: {key}: {value!r} is not a colour") from None
            kwargs[key] = value
        elif key in _OTHER_KEYS:
            want = _OTHER_KEYS[key]
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, want):
                raise ThemeFileError(f"{source}: {key}: must be a {want.__name__}")
            kwargs[key] = value
        else:
            known = ", ".join(sorted((*_COLOR_KEYS, *_OTHER_KEYS, "variables")))
            raise ThemeFileError(f"{source}: {key}: unknown key (known: {known})")
    for required in ("name", "primary"):
        if required not in kwargs:
            raise ThemeFileError(f"{source}: {required}: missing")
    return Theme(**kwargs)


def load_themes(extra_dirs: Iterable[Path] | None = None) -> tuple[list[Theme], list[str]]:
    """Every theme that loads, and one message per file that does not."""
    themes: list[Theme] = []
    problems: list[str] = []
    sources: list[tuple[str, str]] = [(f"themes/{n}", t) for n, t in _packaged_files()]
    dirs = list(extra_dirs) if extra_dirs is not None else [config_dir() / "themes"]
    for d in dirs:
        try:
            files = sorted(d.glob("*.toml"))
        except OSError:
            continue
        for p in files:
            try:
                sources.append((str(p), p.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{p}: unreadable ({exc})")
    for source, text in sources:
        try:
            themes.append(parse_theme(text, source))
        except ThemeFileError as exc:
            problems.append(str(exc))
    return themes, problems


THEME_FIELDS = {f.name for f in fields(Theme)}
