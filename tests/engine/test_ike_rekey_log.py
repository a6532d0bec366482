"""An IKE SA rekey says so in the INFO log, on both sides, naming the old and the new SA (charon:
"IKE_SA tun[1] rekeyed between ..." at its default level). The INFO log otherwise carries a line per
CHILD SA established and the failures; without this line an admin reading the log saw CHILD SAs of
an IKE SA number it never saw set up. Sans-IO pair."""

from __future__ import annotations

import logging

from tests.engine.ike_pair import live, started


def test_an_ike_rekey_is_one_info_line_on_each_side_naming_both_sas(caplog):
    p = started()
    old_a, old_b = live(p, "a")[0], live(p, "b")[0]
    with caplog.at_level(logging.INFO, logger="engine"):
        assert p.a.rekey("tun", p.now, ike=True, unique_id=old_a.unique_id) == 1
        p.advance(5)
    (new_a,) = [s for s in live(p, "a") if s.established]
    (new_b,) = [s for s in live(p, "b") if s.established]
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "rekeyed" in r.getMessage()]
    assert f"tun[{old_a.unique_id}]: IKE SA rekeyed into tun[{new_a.unique_id}]" in " ".join(lines), lines
    assert f"tun[{old_b.unique_id}]: IKE SA rekeyed into tun[{new_b.unique_id}]" in " ".join(lines), lines
    assert len(lines) == 2, lines
    assert new_a.spi_i.hex() in " ".join(lines) and new_a.spi_r.hex() in " ".join(lines)
