"""A TrafficSelector is hashed once: it is the key (alone or in tuples) of the caches that every
CHILD SA's narrowing, SA construction and datapath install look up, and a generated dataclass
``__hash__`` hashes every field, two ipaddress objects among them, at every lookup. The cached
value must not travel: an address's hash is a string hash, different in another process."""

from __future__ import annotations

import ipaddress
import os
import pickle
import subprocess
import sys

from engine.policy.ts import TrafficSelector, parse_ts


class CountingAddress(ipaddress.IPv4Address):
    hashed = 0

    def __hash__(self) -> int:
        CountingAddress.hashed += 1
        return super().__hash__()


def test_a_selector_hashes_its_fields_once():
    ts = TrafficSelector(CountingAddress("198.51.100.0"), CountingAddress("198.51.100.127"), 6, 80, 80)
    CountingAddress.hashed = 0
    first = hash(ts)
    assert CountingAddress.hashed == 2
    assert all(hash(ts) == first for _ in range(5))
    assert CountingAddress.hashed == 2, "the selector's fields were hashed again"
    assert {ts: 1}[TrafficSelector(CountingAddress("198.51.100.0"), CountingAddress("198.51.100.127"), 6, 80, 80)] == 1


def test_equal_selectors_hash_equal_and_order_and_equality_ignore_the_cache():
    a, b = parse_ts("198.51.100.0/25"), parse_ts("198.51.100.0/25")
    hash(a)
    assert a == b and hash(a) == hash(b) and not a < b and not b < a
    assert a != parse_ts("198.51.100.0/26") and repr(a) == repr(b)


def test_the_cached_hash_does_not_travel_in_a_pickle():
    ts = parse_ts("198.51.100.0/25")
    hash(ts)
    back = pickle.loads(pickle.dumps(ts))
    assert back == ts and "_hash" not in back.__dict__
    # Another process hashes addresses (strings) with another seed: its own hash must be used.
    code = ("import pickle, sys; from engine.policy.ts import parse_ts; "
            "ts = pickle.loads(sys.stdin.buffer.read()); "
            "print(hash(ts) == hash(parse_ts('198.51.100.0/25')))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(ts), capture_output=True, env=env,
                         check=True)
    assert out.stdout.strip() == b"True"
