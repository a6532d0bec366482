"""Key pairs made ahead of need: a responder's IKE_SA_INIT takes one instead of generating
its key while the initiator waits.

Pure: no clock, no thread, no system call of its own (the keys come from `cryptography`
as `KeyExchange` makes them). Whoever owns the pool decides when to `fill` it: the runtime
does when its loop has been idle for a while (engine.runtime.engine), so under a steady
load the pool is simply empty and keys are made as before.

Each key pair leaves the pool in `take` and is never handed out again; an empty pool
answers None and the caller makes a fresh key.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from .ke import MODP_PRIMES, SUPPORTED_GROUPS, KeyExchange
from .kem import is_kem

POOL_SIZE = 32
"""Key pairs kept ready per group."""


class KeyPool:
    """Ready key pairs per elliptic-curve group (X25519, X448, ECP). Not pooled: KEMs (their
    responder has no key pair) and MODP groups (a key takes milliseconds: a fill step would
    hold the loop that long)."""

    def __init__(self, groups: Iterable[int] = (), size: int = POOL_SIZE) -> None:
        self.size = size
        self._keys: dict[int, deque[KeyExchange]] = {}
        self.taken = 0
        """Key pairs handed out from the pool."""
        self.missed = 0
        """Requests for a pooled group that found the pool empty."""
        self.set_groups(groups)

    def set_groups(self, groups: Iterable[int]) -> None:
        """Pool these groups from now on (those no longer named are dropped with their keys)."""
        wanted: dict[int, deque[KeyExchange]] = {}
        for g in groups:
            g = int(g)
            if g in wanted or is_kem(g) or g in MODP_PRIMES or g not in SUPPORTED_GROUPS:
                continue  # not pooled: made when needed (an unsupported one is refused there)
            wanted[g] = self._keys.get(g, deque())
        self._keys = wanted

    @property
    def groups(self) -> tuple[int, ...]:
        return tuple(self._keys)

    def __len__(self) -> int:
        return sum(len(q) for q in self._keys.values())

    @property
    def short(self) -> bool:
        """Some group has fewer than `size` key pairs ready."""
        return any(len(q) < self.size for q in self._keys.values())

    def take(self, group: int) -> KeyExchange | None:
        """A ready key pair of ``group``, removed from the pool; None when there is none."""
        q = self._keys.get(group)
        if q is None:
            return None
        if not q:
            self.missed += 1
            return None
        self.taken += 1
        return q.popleft()

    def fill(self, budget: int) -> int:
        """Make at most ``budget`` key pairs for the groups that are short; returns how many."""
        made = 0
        for g, q in self._keys.items():
            while len(q) < self.size and made < budget:
                q.append(KeyExchange(g))
                made += 1
        return made

    def __repr__(self) -> str:  # the keys themselves never show
        return f"KeyPool({', '.join(f'{g}: {len(q)}' for g, q in self._keys.items())}; size {self.size})"
