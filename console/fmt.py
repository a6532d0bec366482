"""Small formatting helpers shared by the screens (pure functions)."""

from __future__ import annotations

import time

_UNITS = ("B", "KB", "MB", "GB", "TB")


def size(n: float) -> str:
    """1536 -> '1.5 KB' (powers of 1000, like swanctl)."""
    n = float(n)
    for unit in _UNITS:
        if abs(n) < 1000 or unit == _UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def rate(bps: float | None) -> str:
    if bps is None:
        return "–"
    return size(bps) + "/s"


def count(n: int) -> str:
    if n < 10_000:
        return str(n)
    if n < 10_000_000:
        return f"{n / 1000:.0f}k"
    return f"{n / 1_000_000:.0f}M"


def duration(seconds: float | None) -> str:
    """Coarse on purpose, so a table cell changes rarely: 2h05m, 54m, 9m12s, 7s."""
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 0:
        return "due"
    if s < 60:
        return f"{s}s"
    if s < 600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def spi32(spi: int) -> str:
    return f"{spi:08x}"


def spi64(spi: int) -> str:
    return f"{spi:016x}"


def clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def clock_ms(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 1000):03d}"


def algorithms(encr: str, integ: str = "", ke: str = "", prf: str = "", sep: str = "/") -> str:
    """Names joined by ``sep``: " " lets a narrow column wrap between names, never inside one."""
    return sep.join(x for x in (encr, integ, prf, ke) if x)
