"""Import every swanctl.conf under the given folders (e.g. strongSwan's own
testing/tests, or ../shared/interop) and print how many parse, how many import
to a policy that validates, and which unsupported keys come up most.

    python3 -m benchmarks.swanctl_corpus DIR... [--fill-placeholders]

``--fill-placeholders`` replaces the interop harness's @LOCAL_ADDR@-style
placeholders with the left side's values first. Nothing is written.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from engine.ops.swanctl_import import SwanctlError, import_text

PLACEHOLDERS = {"@LOCAL_ADDR@": "192.0.2.1", "@REMOTE_ADDR@": "192.0.2.2", "@LOCAL_TS@": "198.51.100.1/32",
                "@REMOTE_TS@": "198.51.100.129/32", "@LOCAL_ID@": "left.example", "@REMOTE_ID@": "right.example",
                "@LOCAL_CERT@": "left.crt"}


def files(folders: list[str]) -> list[Path]:
    out: list[Path] = []
    for folder in folders:
        p = Path(folder)
        out += [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.name.endswith("swanctl.conf"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--fill-placeholders", action="store_true")
    ap.add_argument("--show-errors", type=int, default=0, metavar="N", help="print N validation errors")
    a = ap.parse_args()
    counts: Counter = Counter()
    reasons: Counter = Counter()
    errors: list[str] = []
    started = time.perf_counter()
    out_dir = Path(tempfile.mkdtemp(prefix="swanctl-corpus-"))
    for path in files(a.folders):
        counts["files"] += 1
        text = path.read_text(errors="replace")
        if a.fill_placeholders:
            for k, v in PLACEHOLDERS.items():
                text = text.replace(k, v)
        try:
            r = import_text(text, source=str(path), conf_dir=path.parent, out_dir=out_dir)
        except SwanctlError as exc:
            counts["syntax errors"] += 1
            errors.append(str(exc))
            continue
        counts["parsed"] += 1
        counts["connections imported"] += r.connections
        counts["connections left out"] += r.skipped
        counts["children"] += r.children
        counts["rules (pass/drop children)"] += r.rules
        counts["secrets"] += r.secrets
        counts["warnings"] += len(r.warnings)
        if (r.connections or r.rules) and not r.errors:
            counts["imported and valid"] += 1
        elif r.connections or r.rules:
            counts["imported, not valid"] += 1
            errors += r.errors[:1]
        else:
            counts["nothing importable"] += 1
        for w in r.warnings:
            m = re.search(r": ([^:]+): not imported: (.*)$", w)
            if m:
                key = re.sub(r"^connections\.[^.]+", "connections.*", m.group(1))
                key = re.sub(r"children\.[^.]+", "children.*", key)
                key = re.sub(r"^(secrets|pools|authorities)\.[^.]+", r"\1.*", key)
                key = re.sub(r"\.(local|remote)[^.]*", r".\1*", key)
                reasons[key] += 1
    elapsed = time.perf_counter() - started
    width = max(len(k) for k in counts) if counts else 10
    for k in ("files", "parsed", "syntax errors", "imported and valid", "imported, not valid", "nothing importable",
              "connections imported", "connections left out", "children", "rules (pass/drop children)", "secrets",
              "warnings"):
        print(f"{k:<{width}}  {counts[k]}")
    print(f"{'time':<{width}}  {elapsed:.2f} s ({1000 * elapsed / max(1, counts['files']):.1f} ms per file)")
    print("\nmost frequent keys not imported:")
    for key, n in reasons.most_common(15):
        print(f"  {n:5}  {key}")
    for e in errors[:a.show_errors]:
        print("  error:", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
