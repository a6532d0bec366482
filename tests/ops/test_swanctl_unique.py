"""swanctl.conf's unique: a value charon does not know is warned about with a message that is true
now that keep is carried over (it said "unique = keep is not supported")."""

from __future__ import annotations

from engine.ops.swanctl_import import import_text

from tests.ops.test_swanctl import PSK_TUNNEL


def test_an_unknown_unique_value_is_not_reported_as_keep(tmp_path):
    r = import_text(PSK_TUNNEL.replace("    dpd_delay = 30s\n", "    dpd_delay = 30s\n    unique = always\n"),
                    source="u.conf", conf_dir=tmp_path, out_dir=tmp_path)
    text = " ".join(str(w) for w in r.warnings)
    assert "unique" in text and "keep is not supported" not in text, text
    assert "keep" in text and "replace" in text, text  # what swanctl takes
