"""Key-derivation vectors from two strongSwan 6.1 peers (hybrid ML-KEM, IKE_INTERMEDIATE, PPK).

strongSwan logs every input and output of its IKE key derivation at level 4
(``ike = 4``, ``chd = 4``): shared secrets, nonces, SKEYSEED, SK_*, the IntAuth
octets and values, the PPK-derived keys, the AUTH octets. This module runs the
scenario below between two charon 6.1 in namespaces and turns the initiator's
log into a JSON vector file that tests/engine/test_pq_strongswan_vectors.py
recomputes with engine.crypto and engine.wire:

    IKE:  aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024, PSK, ppk_required
    ESP:  aes256gcm16-x25519-ke1_mlkem768
    initiate, rekey the CHILD SA (CREATE_CHILD_SA + IKE_FOLLOWUP_KE), rekey the IKE SA
    (CREATE_CHILD_SA + two IKE_FOLLOWUP_KE)

    python3 -m tests.interop.strongswan6_vectors [OUT.json]     (root; needs .ci/strongswan6-root)

The PSK and PPK are test values; nothing here is secret.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

from tests.interop.lab import PSK, STRONGSWAN6_ROOT, Charon, Lab, wait_for

IKE_PROPOSAL = "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024"
ESP_PROPOSAL = "aes256gcm16-x25519-ke1_mlkem768"
PPK_ID = "pqc-ppk-1"
PPK_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
CONN_EXTRA = f"ppk_id = {PPK_ID}\nppk_required = yes"
SECRETS_EXTRA = f"ppk-1 {{\n  id = {PPK_ID}\n  secret = 0x{PPK_HEX}\n}}"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "strongswan6_pq_vectors.json"

_HEAD = re.compile(r"^\S+ (\d+)\[(\w+)\] <([^>]*)> (.*?) => (\d+) bytes @ ")
_ROW = re.compile(r"^\S+ (\d+)\[(\w+)\] <[^>]*> +(\d+): ([0-9A-F ]+)")


def dumps(log: str) -> list[tuple[str, str, bytes]]:
    """Every ``label => N bytes`` hex dump in a charon log: (IKE SA tag, label, data), in order."""
    out: list[tuple[str, str, bytes]] = []
    lines = log.splitlines()
    i = 0
    while i < len(lines):
        m = _HEAD.match(lines[i])
        i += 1
        if not m:
            continue
        thread, tag, label, size = m.group(1), m.group(3), m.group(4), int(m.group(5))
        data = bytearray()
        while len(data) < size and i < len(lines):
            row = _ROW.match(lines[i])
            if not row or row.group(1) != thread or int(row.group(3)) != len(data):
                break  # another thread's line: dumps are written whole, so this does not happen
            tokens = row.group(4).split()
            data += bytes.fromhex("".join(tokens[:min(16, size - len(data))]))
            i += 1
        if len(data) != size:
            raise ValueError(f"dump {label!r} ends after {len(data)} of {size} bytes")
        out.append((tag, label, bytes(data)))
    return out


class _Cursor:
    def __init__(self, items: list[tuple[str, str, bytes]]) -> None:
        self.items = items
        self.pos = 0

    def next(self, label: str, tag: str | None = None) -> bytes:
        while self.pos < len(self.items):
            t, lab, data = self.items[self.pos]
            self.pos += 1
            if lab == label and (tag is None or t == tag):
                return data
        raise ValueError(f"no further dump {label!r}" + (f" for {tag}" if tag else ""))


def _keys(c: _Cursor, tag: str | None = None) -> dict:
    return {k: c.next(label, tag).hex() for k, label in (
        ("skeyseed", "SKEYSEED"), ("sk_d", "Sk_d secret"), ("sk_ei", "Sk_ei secret"),
        ("sk_er", "Sk_er secret"), ("sk_pi", "Sk_pi secret"), ("sk_pr", "Sk_pr secret"))}


def extract(log: str, spis_after_rekey: tuple[str, str]) -> dict:
    """The vectors from the initiator's log (see the module docstring for the scenario)."""
    c = _Cursor(dumps(log))
    v: dict = {"ike_proposal": IKE_PROPOSAL, "esp_proposal": ESP_PROPOSAL, "prf": "HMAC_SHA2_384",
               "encr": "AES_GCM_16_256", "psk": PSK.encode().hex(), "ppk_id": PPK_ID, "ppk": PPK_HEX}
    # natd_chunk = SPIi | SPIr | IP | port; the third one is built after the response (both SPIs)
    for _ in range(3):
        chunk = c.next("natd_chunk")
    v["spi_i"], v["spi_r"] = chunk[:8].hex(), chunk[8:16].hex()
    init = {"shared": c.next("key exchange secret").hex()}
    nonces = c.next("nonces")
    v["nonce_i"], v["nonce_r"] = nonces[:32].hex(), nonces[32:].hex()
    init.update(_keys(c))
    v["ike_sa_init"] = init
    rounds = []
    for group in ("ML_KEM_768", "ML_KEM_1024"):
        r: dict = {"group": group}
        for side in ("i", "r"):
            prev = c.next("IntAuth_N-1")
            r[f"int_auth_prev_{side}"] = prev.hex()
            r[f"octets_{side}"] = c.next("IntAuth_A|P").hex()
            r[f"sk_p_{side}"] = c.next("SK_p").hex()
            r[f"int_auth_{side}"] = c.next("IntAuth_N = prf(Sk_px, data)").hex()
        r["shared"] = c.next("key exchange secret").hex()
        if c.next("nonces") != nonces:
            raise ValueError("IKE_INTERMEDIATE keys must use the IKE_SA_INIT nonces")
        r.update(_keys(c))
        rounds.append(r)
    v["intermediate"] = rounds
    auth = {}
    for side in ("i", "r"):  # our AUTH first (SK_pi'), then the peer's (SK_pr')
        auth[f"ppk_{side}"] = c.next("PPK").hex()
        auth[f"id_body_{side}"] = c.next("IDx'").hex()
        auth[f"sk_p_{side}"] = c.next("SK_p").hex()
        auth[f"octets_{side}"] = c.next("octets = message + nonce + prf(Sk_px, IDx') + IntAuth").hex()
        auth[f"auth_{side}"] = c.next("AUTH = prf(prf(secret, keypad), octets)").hex()
    v["auth"] = auth
    c.next("derive keys using PPK")
    v["ppk_keys"] = {"sk_d": c.next("Sk_d secret").hex(), "sk_pi": c.next("Sk_pi secret").hex(),
                     "sk_pr": c.next("Sk_pr secret").hex()}
    v["child"] = {"seed": c.next("seed").hex(), "encr_i": c.next("encryption initiator key").hex(),
                  "encr_r": c.next("encryption responder key").hex()}
    v["child_rekey"] = {"shared": c.next("key exchange secret").hex(),
                        "additional": c.next("additional key exchange secret").hex(),
                        "seed": c.next("seed").hex(), "encr_i": c.next("encryption initiator key").hex(),
                        "encr_r": c.next("encryption responder key").hex()}
    rekey = {"shared": c.next("key exchange secret").hex(), "additional": c.next("additional key exchange secret").hex()}
    rn = c.next("nonces")
    rekey["nonce_i"], rekey["nonce_r"] = rn[:32].hex(), rn[32:].hex()
    rekey.update(_keys(c))
    rekey["spi_i"], rekey["spi_r"] = spis_after_rekey
    v["ike_rekey"] = rekey
    return v


def run(workdir: Path, root: Path = STRONGSWAN6_ROOT) -> tuple[str, tuple[str, str]]:
    """Run the scenario; (initiator's charon.log, the rekeyed IKE SA's SPIs as hex)."""
    lab = Lab().up()
    started: list[Charon] = []
    try:
        for side in ("right", "left"):
            started.append(Charon(lab, side, workdir, root=root, proposals=IKE_PROPOSAL, esp_proposals=ESP_PROPOSAL,
                                  debug_keys=True, conn_extra=CONN_EXTRA, secrets_extra=SECRETS_EXTRA).start())
        left = started[-1]
        left.swanctl("--initiate", "--child", "psk-tunnel", "--timeout", "20")
        left.swanctl("--rekey", "--child", "psk-tunnel")
        wait_for(lambda: "IKE_FOLLOWUP_KE response" in left.log() and "rekeyed CHILD_SA" in left.log(),
                 what="CHILD rekey")
        left.swanctl("--rekey", "--ike", "psk-tunnel")
        wait_for(lambda: "IKE_SA psk-tunnel[2] rekeyed" in left.log(), what="IKE rekey")
        time.sleep(0.5)
        sas = left.list_sas()
        m = re.search(r"psk-tunnel: #2, ESTABLISHED, IKEv2, ([0-9a-f]{16})_i\*? ([0-9a-f]{16})_r", sas)
        if not m:
            raise RuntimeError(f"no rekeyed IKE SA in:\n{sas}")
        return left.log(), (m.group(1), m.group(2))
    finally:
        for ch in reversed(started):
            ch.stop()
        lab.down()


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    with tempfile.TemporaryDirectory() as tmp:
        log, spis = run(Path(tmp))
    vectors = extract(log, spis)
    out.write_text(json.dumps(vectors, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
