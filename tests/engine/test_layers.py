"""DESIGN.md: imports point down only; the sans-IO core touches no I/O."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENGINE = ROOT / "engine"
SANS_IO = ("ike", "esp", "wire", "crypto", "eap")
FORBIDDEN_IN_CORE = {"socket", "asyncio", "threading", "time", "pyroute2", "select", "subprocess", "selectors"}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_engine_never_imports_the_ui():
    offenders = [
        f"{p.relative_to(ROOT)} imports {sorted(_imports(p) & {'textual', 'console'})}"
        for p in ENGINE.rglob("*.py")
        if _imports(p) & {"textual", "console"}
    ]
    assert not offenders, offenders


def test_sans_io_core_has_no_io():
    offenders = []
    for pkg in SANS_IO:
        for p in (ENGINE / pkg).rglob("*.py"):
            bad = _imports(p) & FORBIDDEN_IN_CORE
            if bad:
                offenders.append(f"{p.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, offenders


def test_only_engine_crypto_imports_cryptography():
    offenders = [
        str(p.relative_to(ROOT))
        for p in ENGINE.rglob("*.py")
        if "cryptography" in _imports(p) and p.parent.name not in ("crypto", "pki") and "crypto" not in p.parts and "pki" not in p.parts
    ]
    assert not offenders, offenders


def test_no_digest_or_mac_outside_cryptography():
    """DESIGN: every cryptographic primitive comes from `cryptography`; hashlib's and hmac.new's digests
    are a second library (hmac.compare_digest stays: a comparison, not a primitive)."""
    offenders = []
    for p in list(ENGINE.rglob("*.py")) + list((ROOT / "console").rglob("*.py")):
        tree = ast.parse(p.read_text(), filename=str(p))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "hashlib" for a in node.names) \
                    or isinstance(node, ast.ImportFrom) and node.module == "hashlib" \
                    or isinstance(node, ast.Attribute) and node.attr in ("new", "digest") \
                    and isinstance(node.value, ast.Name) and node.value.id == "hmac":
                offenders.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
