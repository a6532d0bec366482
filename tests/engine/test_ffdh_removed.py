"""A cryptography without finite-field DH (deprecated in 50, "support will be removed in a future
release"): the engine still imports and negotiates with the other groups; the MODP groups are not
offered (not in ``default``), a policy that names one is refused with a reason that says what to do,
and a MODP key is never half-made. Run in a subprocess whose cryptography has lost finite-field DH."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from cryptography.exceptions import UnsupportedAlgorithm
import cryptography.hazmat.primitives.asymmetric.dh as dh

def gone(*args, **kw):
    raise UnsupportedAlgorithm("finite-field DH has been removed")

for name in ("DHParameterNumbers", "DHPublicNumbers", "DHPrivateNumbers", "generate_parameters"):
    if sys.argv[1] == "removed":
        delattr(dh, name)
    else:
        setattr(dh, name, gone)

from engine.crypto import ke
from engine.crypto.errors import UnsupportedTransform
from engine.crypto.transforms import KeId
from engine.policy.proposals import ProposalError, default_proposals, parse_proposal, parse_proposals

try:
    ke.KeyExchange(KeId.MODP_2048)
except UnsupportedTransform as exc:
    assert "MODP_2048" in str(exc) and "not available in the installed cryptography" in str(exc), exc
else:
    raise AssertionError("a MODP key was made")
for text, proto in (("aes256-sha256-modp2048", "ike"), ("aes256gcm16-x25519-ke1_modp3072", "ike"),
                    ("aes256gcm16-modp2048", "esp")):
    try:
        parse_proposal(text, proto)
    except ProposalError as exc:
        assert "not available in the installed cryptography" in str(exc) and "x25519" in str(exc), exc
    else:
        raise AssertionError(f"{text} accepted")
for proto in ("ike", "esp"):
    for p in parse_proposals(["default"], proto) + default_proposals(proto):
        assert not any(t.id in ke.MODP_PRIMES for t in p.ke), p

# the rest still works: a whole handshake with x25519
from tests.engine.ike_pair import Pair, connection, mirror, policy
from tests.engine.ike_pair import LEFT, RIGHT
p = Pair(policy(connection(), address=LEFT), policy(mirror(connection()), address=RIGHT))
p.a.initiate(connection().name, p.now)
p.deliver()
assert any(sa.established and sa.children for sa in p.a.sas), [sa.state for sa in p.a.sas]
assert not (ke.SUPPORTED_GROUPS & set(ke.MODP_PRIMES))
print("ok")
"""


@pytest.mark.parametrize("how", ["removed", "refused"])
def test_the_engine_works_without_finite_field_dh(how):
    """``removed``: the classes are gone from cryptography's dh module; ``refused``: they raise
    UnsupportedAlgorithm (as for an algorithm the OpenSSL build lacks)."""
    run = subprocess.run([sys.executable, "-c", SCRIPT, how], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
