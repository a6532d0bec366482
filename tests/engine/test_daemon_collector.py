"""The daemon's collector policy: young passes after GC_YOUNG_THRESHOLD net allocations,
the older generations left as they were (reference cycles, if any, are still collected)."""

from __future__ import annotations

import gc

from engine.runtime import daemon


def test_young_passes_are_rarer_and_the_older_generations_keep_their_thresholds():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        daemon.roomy_collector()
        assert gc.get_threshold() == (daemon.GC_YOUNG_THRESHOLD, 10, 10)
        assert daemon.GC_YOUNG_THRESHOLD >= 10 * 700
        assert gc.isenabled()
    finally:
        gc.set_threshold(*before)
