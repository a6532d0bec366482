"""engine.runtime.evolve: the runtime's cheap copies of events are what dataclasses.replace gives."""

from __future__ import annotations

import dataclasses

from engine.events import ChildKeys, ChildSaInstalled, ExchangeSent, SaCounters
from engine.policy.ts import parse_ts
from engine.runtime.evolve import evolve
from engine.runtime.retention import keyless
from engine.secret import Secret


def _installed() -> ChildSaInstalled:
    k = Secret(b"k" * 36)
    return ChildSaInstalled(ike_sa=1, connection="c", child="lan", unique_id=2, reqid=1, spi_in=0x1001,
                            spi_out=0x2002, local_addr="192.0.2.1", remote_addr="192.0.2.2", mode="tunnel",
                            protocol="esp", encr_id=20, encr_key_length=256, integ_id=None, esn=False,
                            local_ts=(parse_ts("198.51.100.0/25"),), remote_ts=(parse_ts("198.51.100.128/25"),),
                            keys=ChildKeys(k, k, Secret(b""), Secret(b"")))


def test_evolve_gives_what_replace_gives_and_leaves_the_original_alone():
    ev = _installed()
    copy = evolve(ev, keys=None)
    assert copy == dataclasses.replace(ev, keys=None) and copy.keys is None
    assert ev.keys is not None and type(copy) is ChildSaInstalled
    c = SaCounters(1, "in", 10, 1, (), 5.0)
    assert evolve(c, last_used=7.0) == SaCounters(1, "in", 10, 1, (), 7.0)
    assert keyless(ev) == dataclasses.replace(ev, keys=None)
    assert keyless(copy) is copy  # already without keys: nothing to copy


def test_evolve_falls_back_to_replace_where_init_does_work_or_a_name_is_unknown():
    @dataclasses.dataclass(frozen=True)
    class Checked:
        n: int

        def __post_init__(self):
            if self.n < 0:
                raise ValueError("negative")

    try:
        evolve(Checked(1), n=-1)
    except ValueError:
        pass
    else:
        raise AssertionError("__post_init__ was skipped")
    try:
        evolve(SaCounters(1, "in"), nonsense=1)
    except TypeError:
        pass
    else:
        raise AssertionError("an unknown field was accepted")


def test_the_wall_clock_copy_moves_the_time_only():
    from engine.runtime.wallclock import to_wall_clock

    ev = ExchangeSent(1, "c", None, 10.0, ("192.0.2.1", 500), ("192.0.2.2", 500))
    moved = to_wall_clock(ev, 100.0)
    assert moved == dataclasses.replace(ev, time=110.0) and ev.time == 10.0
