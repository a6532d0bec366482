"""Wireshark key export (``[engine] save_keys = "DIR"``): debugging only, off by default.

Writes the files of strongSwan's save-keys plugin, which Wireshark and
tshark read from their configuration folder (``WIRESHARK_CONFIG_DIR=DIR``):

- ``DIR/ikev2_decryption_table``, one line per IKE SA:
  ``SPIi,SPIr,SK_ei,SK_er,"ENCR name",SK_ai,SK_ar,"INTEG name"`` (bare hex; an
  AEAD's keys include the salt and its integrity keys are empty);
- ``DIR/esp_sa``, two lines per ESP CHILD SA, one per direction:
  ``"IPv4","src","dst","0xSPI","ENCR name","0xKEY","INTEG name","0xKEY"``.

Algorithm names are Wireshark's (the tables below follow strongSwan's
save_keys_listener.c); a suite Wireshark cannot decrypt (ChaCha20-Poly1305,
AH) is skipped. ESP decryption also needs tshark's
``-o esp.enable_encryption_decode:TRUE``.

Anyone who can read DIR can decrypt every exchange and packet: the folder is
created 0700, the files 0600, ``check`` warns while it is on (lint rule
``save-keys``). Keys go to these files only, never into events or logs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from pathlib import Path

from engine.crypto.transforms import EncrId, IntegId
from engine.events import ChildSaInstalled, IkeSaStateChanged, IkeState
from engine.ops.stats import ike_endpoint

log = logging.getLogger("engine.keylog")

IKEV2_TABLE = "ikev2_decryption_table"
ESP_TABLE = "esp_sa"

_IKE_ENCR = {
    (EncrId.TRIPLE_DES, None): "3DES [RFC2451]",
    (EncrId.NULL, None): "NULL [RFC2410]",
    **{(EncrId.AES_CBC, b): f"AES-CBC-{b} [RFC3602]" for b in (128, 192, 256)},
    **{(EncrId.AES_CTR, b): f"AES-CTR-{b} [RFC5930]" for b in (128, 192, 256)},
    **{(e, b): f"AES-GCM-{b} with {icv} octet ICV [RFC5282]" for e, icv in
       ((EncrId.AES_GCM_8, 8), (EncrId.AES_GCM_12, 12), (EncrId.AES_GCM_16, 16)) for b in (128, 192, 256)},
    **{(e, b): f"AES-CCM-{b} with {icv} octet ICV [RFC5282]" for e, icv in
       ((EncrId.AES_CCM_8, 8), (EncrId.AES_CCM_12, 12), (EncrId.AES_CCM_16, 16)) for b in (128, 192, 256)},
}
_IKE_INTEG = {
    IntegId.HMAC_MD5_96: "HMAC_MD5_96 [RFC2403]",
    IntegId.HMAC_SHA1_96: "HMAC_SHA1_96 [RFC2404]",
    IntegId.HMAC_MD5_128: "HMAC_MD5_128 [RFC4595]",
    IntegId.HMAC_SHA1_160: "HMAC_SHA1_160 [RFC4595]",
    IntegId.HMAC_SHA2_256_128: "HMAC_SHA2_256_128 [RFC4868]",
    IntegId.HMAC_SHA2_384_192: "HMAC_SHA2_384_192 [RFC4868]",
    IntegId.HMAC_SHA2_512_256: "HMAC_SHA2_512_256 [RFC4868]",
    None: "NONE [RFC4306]",
}
_ESP_ENCR = {
    EncrId.NULL: "NULL",
    EncrId.TRIPLE_DES: "TripleDES-CBC [RFC2451]",
    EncrId.AES_CBC: "AES-CBC [RFC3602]",
    EncrId.AES_CTR: "AES-CTR [RFC3686]",
    EncrId.DES: "DES-CBC [RFC2405]",
    EncrId.CAST: "CAST5-CBC [RFC2144]",
    EncrId.BLOWFISH: "BLOWFISH-CBC [RFC2451]",
    EncrId.AES_GCM_8: "AES-GCM [RFC4106]",
    EncrId.AES_GCM_12: "AES-GCM [RFC4106]",
    EncrId.AES_GCM_16: "AES-GCM [RFC4106]",
}
_ESP_INTEG = {
    IntegId.HMAC_SHA1_96: "HMAC-SHA-1-96 [RFC2404]",
    IntegId.HMAC_MD5_96: "HMAC-MD5-96 [RFC2403]",
    IntegId.HMAC_SHA2_256_128: "HMAC-SHA-256-128 [RFC4868]",
    IntegId.HMAC_SHA2_384_192: "HMAC-SHA-384-192 [RFC4868]",
    IntegId.HMAC_SHA2_512_256: "HMAC-SHA-512-256 [RFC4868]",
}
_AEAD_ICV_BITS = {EncrId.AES_GCM_8: 64, EncrId.AES_GCM_12: 96, EncrId.AES_GCM_16: 128}
_AEAD = {EncrId.AES_GCM_8, EncrId.AES_GCM_12, EncrId.AES_GCM_16, EncrId.AES_CCM_8, EncrId.AES_CCM_12,
         EncrId.AES_CCM_16, EncrId.CHACHA20_POLY1305}


def ike_line(spi_i: bytes, spi_r: bytes, encr: tuple[int, int | None] | None, integ: int | None, keys) -> str | None:
    """The ``ikev2_decryption_table`` line of one IKE SA; None if Wireshark cannot decrypt its suite."""
    if encr is None:
        return None
    eid, bits = encr
    ename = _IKE_ENCR.get((eid, bits if eid in (EncrId.AES_CBC, EncrId.AES_CTR) or eid in _AEAD else None))
    iname = _IKE_INTEG.get(None if eid in _AEAD or not integ else integ)
    if ename is None or iname is None:
        return None
    k = keys
    return (f"{spi_i.hex()},{spi_r.hex()},{k.sk_ei.reveal().hex()},{k.sk_er.reveal().hex()},\"{ename}\","
            f"{k.sk_ai.reveal().hex()},{k.sk_ar.reveal().hex()},\"{iname}\"")


def esp_lines(ev: ChildSaInstalled) -> list[str]:
    """The two ``esp_sa`` lines of one ESP CHILD SA (outbound, inbound); [] for AH or an unknown suite."""
    if ev.protocol != "esp" or ev.encr_id is None:
        return []
    ename = _ESP_ENCR.get(ev.encr_id)
    if ev.encr_id in _AEAD:
        bits = _AEAD_ICV_BITS.get(ev.encr_id)
        iname = f"ANY {bits} bit authentication [no checking]" if bits else None
    else:
        iname = _ESP_INTEG.get(ev.integ_id) if ev.integ_id else "NULL"
    if ename is None or iname is None:
        return []
    family = "IPv6" if ipaddress.ip_address(ev.local_addr).version == 6 else "IPv4"
    k = ev.keys

    def line(src: str, dst: str, spi: int, encr, integ) -> str:
        return (f'"{family}","{src}","{dst}","0x{spi:08x}","{ename}","0x{encr.reveal().hex()}",'
                f'"{iname}","0x{integ.reveal().hex()}"')

    return [line(ev.local_addr, ev.remote_addr, ev.spi_out, k.encr_out, k.integ_out),
            line(ev.remote_addr, ev.local_addr, ev.spi_in, k.encr_in, k.integ_in)]


class KeyLog:
    """Appends keys to the folder ``[engine] save_keys`` names while it is set (re-read on every event,
    so a reload turns the export on or off)."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self._sinking = False
        self._ike_done: set[tuple[bytes, bytes]] = set()
        self._warned: set[str] = set()

    def folder(self) -> Path | None:
        name = getattr(self.runtime.policy.engine, "save_keys", None)
        if not name:
            return None
        base = Path(self.runtime.policy.path).parent if self.runtime.policy.path else Path.cwd()
        return base / name

    def start(self) -> None:
        # CHILD SA keys come straight from the runtime (its event queues never hold keys); the IKE
        # SAs that came up from a sink (called as they are published: no queue, no task to wake
        # several times per handshake for a check of the folder setting).
        self.runtime.key_sinks.append(self.handle)
        self.runtime.add_sink((IkeSaStateChanged,), self.handle)
        self._sinking = True

    async def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # a lab runtime already stopped has no sinks left
            if self.handle in self.runtime.key_sinks:
                self.runtime.key_sinks.remove(self.handle)
        if self._sinking:
            self.runtime.remove_sink(self.handle)
            self._sinking = False

    def handle(self, event) -> None:
        folder = self.folder()
        if folder is None:
            return
        if isinstance(event, ChildSaInstalled):
            self._append(folder, ESP_TABLE, esp_lines(event))
        elif isinstance(event, IkeSaStateChanged) and event.new == IkeState.ESTABLISHED:
            endpoint = ike_endpoint(self.runtime)
            found = endpoint.ike_keys(event.ike_sa) if endpoint is not None else None
            if found is None or (found["spi_i"], found["spi_r"]) in self._ike_done:
                return
            self._ike_done.add((found["spi_i"], found["spi_r"]))
            line = ike_line(found["spi_i"], found["spi_r"], found["encr"], found["integ"], found["keys"])
            self._append(folder, IKEV2_TABLE, [line] if line else [])

    def _append(self, folder: Path, name: str, lines: list[str]) -> None:
        if not lines:
            return
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, ("\n".join(lines) + "\n").encode())
            finally:
                os.close(fd)
        except OSError as exc:
            if str(folder) not in self._warned:  # once per folder: a full disk must not flood the log
                self._warned.add(str(folder))
                log.warning("save_keys: cannot write to %s: %s", folder, exc.strerror or exc)
