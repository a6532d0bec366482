"""Anti-replay window (RFC 4303 §3.4.3 and appendix A) and ESN inference (RFC 4303 A2).

The window is one Python int used as a bitmap: bit ``i`` set means sequence
number ``top - i`` was received. Shifting a 4096-bit int is a single C call,
so there is no per-word loop as in the RFC's array version.

A size of 0 disables the protection (strongSwan's ``replay_window = 0``).

Checking and updating are separate on purpose: a packet is checked before
its ICV is verified and the window moves only after it verifies
(RFC 4303 §3.4.3), so forged packets cannot slide the window.
"""

from __future__ import annotations

MIN_WINDOW = 1
MAX_WINDOW = 4096
DEFAULT_WINDOW = 64


class ReplayWindow:
    """A sliding anti-replay window over full (64-bit with ESN) sequence numbers."""

    __slots__ = ("size", "top", "bitmap", "_mask")

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if not MIN_WINDOW <= size <= MAX_WINDOW:
            raise ValueError(f"replay window must be {MIN_WINDOW}..{MAX_WINDOW} packets, got {size}")
        self.size = size
        """Window width in packets."""
        self.top = 0
        """Highest sequence number accepted so far (0: none yet)."""
        self.bitmap = 0
        """Bit i set: ``top - i`` was accepted."""
        self._mask = (1 << size) - 1

    def check(self, seq: int) -> bool:
        """True when ``seq`` is new and not too old; does not change the window."""
        if seq > self.top:
            return True
        if seq <= 0:
            return False  # sequence numbers start at 1 (RFC 4303 §3.3.3)
        diff = self.top - seq
        if diff >= self.size:
            return False
        return not (self.bitmap >> diff) & 1

    def update(self, seq: int) -> None:
        """Record ``seq`` as received (call only after its ICV verified and check() passed)."""
        top = self.top
        if seq > top:
            shift = seq - top
            self.bitmap = ((self.bitmap << shift) | 1) & self._mask if shift < self.size else 1
            self.top = seq
        else:
            self.bitmap |= 1 << (top - seq)

    def infer(self, seq_low: int) -> int:
        """The full sequence number of a packet carrying ``seq_low`` (ESN, see infer_esn)."""
        return infer_esn(seq_low, self.top, self.size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, top={self.top})"


class DisabledWindow(ReplayWindow):
    """``replay_window = 0``: no replay protection, but the highest number is still
    tracked so ESN can infer the high bits."""

    __slots__ = ()

    def __init__(self) -> None:
        self.size = 0
        self.top = 0
        self.bitmap = 0
        self._mask = 0

    def check(self, seq: int) -> bool:
        return seq > 0

    def update(self, seq: int) -> None:
        if seq > self.top:
            self.top = seq

    def infer(self, seq_low: int) -> int:
        return infer_esn(seq_low, self.top, 1)


def make_window(size: int) -> ReplayWindow:
    """A window of ``size`` packets (1..4096), or a DisabledWindow for 0."""
    return DisabledWindow() if size == 0 else ReplayWindow(size)


def infer_esn(seq_low: int, top: int, size: int) -> int:
    """The full 64-bit sequence number of a packet carrying ``seq_low`` (RFC 4303 A2.2).

    ``top`` is the highest full number received so far and ``size`` the
    window width. When the low 32 bits sit in the window's lower part the
    packet is taken from the current 2**32 subspace (or the previous one if
    the window straddles a boundary); otherwise it is ahead of the window.
    """
    tl = top & 0xFFFFFFFF
    th = top >> 32
    bottom = (tl - size + 1) & 0xFFFFFFFF
    if tl >= size - 1:
        # Case A: the window lies within one subspace.
        if seq_low >= bottom:
            return (th << 32) | seq_low
        return ((th + 1) << 32) | seq_low
    # Case B: the window spans two subspaces.
    if seq_low >= bottom:
        if th == 0:
            return seq_low  # there is no subspace below 0: read it as ahead in subspace 0
        return ((th - 1) << 32) | seq_low
    return (th << 32) | seq_low
