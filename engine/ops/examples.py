"""The generated files under docs/: the key reference, the JSON Schemas, and
``ipsec-console doc`` of every sample policy (docs/examples/).

    python3 -m engine.ops.examples        rewrite them (after changing the model or a sample)

tests/ops/test_doc.py regenerates them and fails when a checked-in copy differs.
Samples are documented from a scratch copy whose secrets files are mode 0600 (a
git checkout leaves them 0644), at a fixed date, so the output is the same on
every machine.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from engine.ops.doc import document_file
from engine.ops.reference import json_schema_text, reference_markdown
from engine.policy.samples import sample_dir, sample_names

DOCS = Path(__file__).resolve().parents[2] / "docs"
FIXED_NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def generate() -> dict[str, str]:
    """Relative path under docs/ -> content."""
    out = {"policy-reference.md": reference_markdown(), "policy.schema.json": json_schema_text("policy"),
           "secrets.schema.json": json_schema_text("secrets")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "sample-configs"
        shutil.copytree(sample_dir(), folder, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
        for secrets in folder.glob("*.secrets.toml"):
            secrets.chmod(0o600)
        for name in sample_names():
            stem = Path(name).stem
            for fmt in ("md", "html"):
                out[f"examples/{stem}.{fmt}"] = document_file(folder / name, fmt=fmt, now=FIXED_NOW)
    return out


def write(docs: Path = DOCS) -> list[Path]:
    written = []
    for rel, text in generate().items():
        path = docs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


if __name__ == "__main__":
    for p in write():
        print(f"wrote {p}")
    sys.exit(0)
