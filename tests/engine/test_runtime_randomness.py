"""The runtime's buffered CSPRNG (engine.runtime.randomness): every byte handed out once,
a forked child never repeats its parent's bytes."""

from __future__ import annotations

import os

from engine.runtime.randomness import RandomBytes


class Counting:
    """A source whose every byte is distinct by position, so reuse shows."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.n = 0

    def __call__(self, n: int) -> bytes:
        self.calls.append(n)
        out = b"".join(i.to_bytes(4, "big") for i in range(self.n, self.n + n // 4))
        self.n += n // 4
        return out


def test_each_byte_is_handed_out_once_and_blocks_are_read_whole():
    src = Counting()
    rng = RandomBytes(block=64, source=src)
    got = [rng(4) for _ in range(40)]  # 160 bytes from 64-byte blocks
    assert len(set(got)) == 40
    assert b"".join(got) == b"".join(i.to_bytes(4, "big") for i in range(40))
    assert src.calls == [64, 64, 64]


def test_a_request_past_the_block_end_takes_a_new_block_and_drops_the_tail():
    src = Counting()
    rng = RandomBytes(block=64, source=src)
    got = [rng(16), rng(16), rng(16), rng(12)]  # 60 of the first block's 64 bytes
    nxt = rng(8)  # 4 left: a new block; the last 4 bytes of the first are never handed out
    assert src.calls == [64, 64]
    assert b"".join(got) == b"".join(i.to_bytes(4, "big") for i in range(15))
    assert nxt == b"".join(i.to_bytes(4, "big") for i in (16, 17))


def test_large_requests_go_straight_to_the_source():
    src = Counting()
    rng = RandomBytes(block=64, source=src)
    assert len(rng(32)) == 32 and src.calls == [32]


def test_a_forked_child_does_not_repeat_the_parents_bytes():
    rng = RandomBytes()
    rng(8)  # a block is buffered now
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.write(w, rng(32 // 2) + rng(16))
        finally:
            os._exit(0)
    os.close(w)
    child = b""
    while chunk := os.read(r, 64):
        child += chunk
    os.close(r)
    os.waitpid(pid, 0)
    parent = rng(16) + rng(16)
    assert len(child) == 32 and child != parent
