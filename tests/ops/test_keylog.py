"""Wireshark key export (``[engine] save_keys``): strongSwan's save-keys format,
off by default, a lint warning when on, and tshark decrypting a captured
exchange with charon (network namespaces) using only the files we wrote."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time

import pytest

from engine.crypto.keys import IkeKeys
from engine.crypto.transforms import EncrId, IntegId
from engine.events import ChildKeys, ChildSaInstalled
from engine.ops.keylog import esp_lines, ike_line
from engine.policy.lint import lint
from engine.policy.parse import parse_policy
from engine.policy.ts import parse_ts
from engine.secret import Secret


def _keys(*sizes: int) -> list[Secret]:
    return [Secret(bytes([n]) * s) for n, s in enumerate(sizes, 1)]


def test_ike_line_is_strongswans_format():
    ks = IkeKeys(*_keys(32, 0, 0, 36, 36, 32, 32))
    line = ike_line(bytes.fromhex("0102030405060708"), bytes.fromhex("1112131415161718"),
                    (EncrId.AES_GCM_16, 256), None, ks)
    assert line == ("0102030405060708,1112131415161718," + "04" * 36 + "," + "05" * 36 +
                    ',"AES-GCM-256 with 16 octet ICV [RFC5282]",,,"NONE [RFC4306]"')
    ks = IkeKeys(*_keys(32, 32, 32, 16, 16, 32, 32))
    line = ike_line(b"\1" * 8, b"\2" * 8, (EncrId.AES_CBC, 128), IntegId.HMAC_SHA2_256_128, ks)
    assert line.endswith(',"AES-CBC-128 [RFC3602]",' + "02" * 32 + "," + "03" * 32 + ',"HMAC_SHA2_256_128 [RFC4868]"')
    assert ike_line(b"\1" * 8, b"\2" * 8, (EncrId.CHACHA20_POLY1305, 256), None, ks) is None  # Wireshark cannot


def _installed(encr, integ, keys) -> ChildSaInstalled:
    return ChildSaInstalled(ike_sa=1, connection="c", child="k", unique_id=1, reqid=1, protocol="esp", mode="tunnel",
                            spi_in=0xC0000001, spi_out=0xC0000002, local_addr="192.0.2.1", remote_addr="192.0.2.2",
                            local_ts=(parse_ts("198.51.100.1/32"),), remote_ts=(parse_ts("198.51.100.129/32"),),
                            encr_id=encr, encr_key_length=128, integ_id=integ, esn=False, keys=keys)


def test_esp_lines_one_per_direction():
    k = ChildKeys(*_keys(16, 32, 16, 32))
    out, inbound = esp_lines(_installed(EncrId.AES_CBC, IntegId.HMAC_SHA2_256_128, k))
    assert out == ('"IPv4","192.0.2.1","192.0.2.2","0xc0000002","AES-CBC [RFC3602]","0x' + "03" * 16 +
                   '","HMAC-SHA-256-128 [RFC4868]","0x' + "04" * 32 + '"')
    assert inbound.startswith('"IPv4","192.0.2.2","192.0.2.1","0xc0000001","AES-CBC [RFC3602]","0x' + "01" * 16)
    gcm = esp_lines(_installed(EncrId.AES_GCM_16, None, ChildKeys(*_keys(20, 0, 20, 0))))
    assert gcm[0].endswith('"AES-GCM [RFC4106]","0x' + "03" * 20 + '","ANY 128 bit authentication [no checking]","0x"')


def test_off_by_default_and_a_lint_warning_when_on():
    assert parse_policy('[engine]\ndatapath = "kernel"\n', load_secrets=False).engine.save_keys is None
    p = parse_policy('[engine]\ndatapath = "kernel"\nsave_keys = "/var/tmp/keys"\n', load_secrets=False)
    [w] = [f for f in lint(p) if f.rule == "save-keys"]
    assert w.key_path == "engine.save_keys" and "/var/tmp/keys" in w.message


@pytest.mark.interop
def test_tshark_decrypts_ike_and_esp_with_only_our_files(tmp_path):
    from tests.interop.lab import lab, our_policy
    from tests.interop.lab_esp import Stopper, wait_child

    if shutil.which("tshark") is None:
        pytest.skip("tshark is missing: echo 'wireshark-common wireshark-common/install-setuid boolean false' | "
                    "debconf-set-selections && apt-get install -y tshark")
    pcap = tmp_path / "exchange.pcap"
    with lab() as net, Stopper() as st:
        st.charon(net, "right", tmp_path, proposals="aes256gcm16-prfsha256-x25519", esp_proposals="aes128-sha256")
        dump = st.popen("ip", "netns", "exec", net.ns["left"], "tcpdump", "-Z", "root", "-U", "--immediate-mode", "-n",
                        "-i", "veth0", "-w", str(pcap), "udp port 500 or udp port 4500",
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while "listening" not in dump.stderr.readline() and time.monotonic() < deadline:
            pass
        ours = st.ours(net, "left", tmp_path, our_policy("left", esp=("aes128-sha256",), start_action="start",
                                                         extra_engine='save_keys = "keys"'))
        wait_child(ours, 30)
        net.ping("left", "198.51.100.129", count=3, interval=0.2)
        time.sleep(0.5)
        dump.terminate()
        dump.wait(10)
    keys = ours.dir / "keys"
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o700
    assert sorted(p.name for p in keys.iterdir()) == ["esp_sa", "ikev2_decryption_table"]
    for p in keys.iterdir():
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    env = {**os.environ, "WIRESHARK_CONFIG_DIR": str(keys), "HOME": str(tmp_path)}

    def tshark(*args: str) -> str:
        run = subprocess.run(["tshark", "-n", "-r", str(pcap), "-o", "esp.enable_encryption_decode:TRUE", *args],
                             env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        return run.stdout

    ike = tshark("-V", "-Y", "isakmp.exchangetype == 35")  # IKE_AUTH
    assert "Decrypted Data" in ike and "left.example" in ike and "right.example" in ike
    icmp = tshark("-Y", "icmp", "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type")
    pairs = [tuple(line.split("\t")) for line in icmp.splitlines() if line.strip()]
    # Each ICMP packet shows the outer (192.0.2.x) and, decrypted, the inner (198.51.100.x) header.
    assert sum(1 for p in pairs if "198.51.100.1" in p[0] and "198.51.100.129" in p[1] and p[2] == "8") == 3, pairs
    assert sum(1 for p in pairs if "198.51.100.129" in p[0] and p[2] == "0") == 3, pairs
