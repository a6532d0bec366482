"""Certificate authentication (RFC 7427) against strongSwan: certificates
made with openssl as ../shared/interop/make-certs does, and certificates
issued by our own `pki`; ECDSA and RSA; both directions; revocation; IKE
fragmentation (RFC 7383) of the RSA IKE_AUTH."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from engine.pki.cli import main as pki_main
from tests.interop.lab import Charon, Ours, lab, our_policy, wait_for

pytestmark = pytest.mark.interop


def openssl_certs(d: Path, kind: str) -> Path:
    """The make-certs layout: ca.crt, left.{crt,key}, right.{crt,key}."""
    d.mkdir(parents=True, exist_ok=True)
    alg = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ecdsa" else \
        ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]

    def run(*args, **kw):
        subprocess.run(args, cwd=d, check=True, capture_output=True, **kw)

    run("openssl", "genpkey", *alg, "-out", "ca.key")
    run("openssl", "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "3650",
        "-subj", "/O=Interop Lab/CN=Interop Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "ca.crt")
    for name, ip in (("left", "192.0.2.1"), ("right", "192.0.2.2")):
        run("openssl", "genpkey", *alg, "-out", f"{name}.key")
        (d / f"{name}.key").chmod(0o600)
        run("openssl", "req", "-new", "-key", f"{name}.key", "-subj", f"/O=Interop Lab/CN={name}.example",
            "-out", f"{name}.csr")
        (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                       f"subjectAltName=DNS:{name}.example,IP:{ip}\n")
        run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-sha256", "-days", "3650", "-extfile", f"{name}.ext", "-out", f"{name}.crt")
    return d


def our_pki_certs(d: Path, kind: str, *, revoke_left: bool = False) -> Path:
    """The same layout issued by `ipsec-console pki`."""
    key_type = "ecdsa-p256" if kind == "ecdsa" else "rsa-2048"
    assert pki_main(["--dir", str(d), "init-ca", "O=Interop Lab, CN=Our Test CA",
                     "--key-type", key_type]) == 0
    for name, kind_ in (("left", "client"), ("right", "server")):
        assert pki_main(["--dir", str(d), "issue", f"{name}.example", "--san", f"{name}.example",
                         "--kind", kind_, "--name", name]) == 0
    if revoke_left:
        assert pki_main(["--dir", str(d), "revoke", "left"]) == 0
    else:
        assert pki_main(["--dir", str(d), "crl"]) == 0
    for name in ("left", "right"):
        (d / f"{name}.crt").write_bytes((d / "certs" / f"{name}.crt").read_bytes())
        (d / f"{name}.key").write_bytes((d / "private" / f"{name}.key").read_bytes())
        (d / f"{name}.key").chmod(0o600)
    return d


@pytest.fixture
def env(tmp_path):
    with lab() as L:
        started: list = []
        try:
            yield L, tmp_path, started
        finally:
            for x in reversed(started):
                x.stop()
            for x in started:
                print(f"===== {x.dir.name} log (tail)\n{x.log()[-5000:]}")


def run_pair(L, work, started, d: Path, direction: str, *, crl: bool = False):
    charon_side, our_side = ("right", "left") if direction == "we_initiate" else ("left", "right")
    c = Charon(L, charon_side, work, certs={"ca": d / "ca.crt", "cert": d / f"{charon_side}.crt",
                                            "key": d / f"{charon_side}.key"}).start()
    started.append(c)
    certs = {"ca": d / "ca.crt", "cert": d / f"{our_side}.crt"}
    if crl:
        certs["crl"] = d / "crl.pem"
    o = Ours(L, our_side, work, our_policy(our_side, certs=certs), key=d / f"{our_side}.key")
    o.start("--datapath", "none")
    o.watch_events()
    started.append(o)
    if direction == "we_initiate":
        o.cli("initiate", "psk-tunnel", "--no-wait")  # the tests wait for what they expect
    else:
        c.swanctl("--initiate", "--child", "psk-tunnel", "--timeout", "20", check=False)
    return c, o


@pytest.mark.parametrize("direction", ["we_initiate", "charon_initiates"])
@pytest.mark.parametrize("issuer", ["openssl", "ours"])
@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_certificate_tunnel(env, kind, issuer, direction):
    L, work, started = env
    d = work / "certs"
    if issuer == "openssl":
        openssl_certs(d, kind)
    else:
        our_pki_certs(d, kind)
    c, o = run_pair(L, work, started, d, direction, crl=issuer == "ours")
    wait_for(lambda: [sa for sa in o.sas() if sa["state"] == "ESTABLISHED" and sa["children"]],
             what="certificate-authenticated SA")
    log = c.log()
    assert "successful" in log and ("with RSA" in log or "with ECDSA" in log or "with RSASSA" in log)
    if kind == "rsa":
        # RFC 7383: the RSA IKE_AUTH exceeds the fragment size in both directions
        got = [e["message"] for e in o.events("ExchangeReceived") if e["message"]["exchange"] == "IKE_AUTH"]
        sent = [e["message"] for e in o.events("ExchangeSent") if e["message"]["exchange"] == "IKE_AUTH"]
        assert got[0]["fragments"] > 1 and sent[0]["fragments"] > 1
        assert "received fragment" in log or "reassembled" in log


def test_revoked_client_certificate_is_refused(env):
    L, work, started = env
    d = our_pki_certs(work / "certs", "ecdsa", revoke_left=True)
    c, o = run_pair(L, work, started, d, "charon_initiates", crl=True)
    failed = wait_for(lambda: o.events("NegotiationFailed"), what="NegotiationFailed")[0]
    assert failed["notify"] == "AUTHENTICATION_FAILED" and "revoked" in failed["reason"]
    assert not [sa for sa in o.sas() if sa["state"] == "ESTABLISHED"]
