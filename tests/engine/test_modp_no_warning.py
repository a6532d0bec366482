"""MODP key exchange prints no CryptographyDeprecationWarning (cryptography 51+ deprecates FFDH
as a whole; the engine still needs the MODP groups for interop), yet other code's warnings stay."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import os, warnings
from engine.crypto.ke import KeyExchange, KeId
a = KeyExchange(KeId.MODP_1024)
b = KeyExchange(KeId.MODP_2048, rng=os.urandom)
c = KeyExchange(KeId.MODP_1024, rng=os.urandom)
assert a.compute_shared(c.public_bytes()) == c.compute_shared(a.public_bytes())
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    warnings.warn("Diffie-Hellman over finite fields elsewhere", UserWarning)
assert len(seen) == 1, seen  # only our own calls are silenced
print("ok")
"""


def test_modp_key_exchange_prints_no_deprecation_warning():
    run = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", SCRIPT], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
    assert "Warning" not in run.stderr
