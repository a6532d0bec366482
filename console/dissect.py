"""Packet samples made readable: the ESP packet as it crossed the wire (outer
IP, UDP when NAT-T encapsulated, SPI, sequence, IV, ciphertext and ICV
lengths) with a check that nothing protected shows in it, beside the
decrypted inner packet; and the samples as a pcap file Wireshark opens.

The datapaths sample tunnel-mode ESP from the SPI on (what a UDP or raw ESP
socket carries): the outer IP/UDP header is then rebuilt from the CHILD SA's
addresses and ports (``ChildSaInstalled``), and says so.

scapy is imported on first use (the dissection runs in a thread worker).
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from dataclasses import dataclass

from engine.crypto.encr import encr_keymat_size, make_cipher
from engine.crypto.integ import integ_icv_size
from engine.events import ChildSaInstalled, PacketSample
from engine.crypto.transforms import EncrId, IntegId

_SKIP = {"version", "ihl", "tos", "chksum", "options", "len", "frag", "dataofs", "reserved", "window",
         "urgptr", "plen", "fl", "tc"}
PLAINTEXT_WINDOW = 8
"""Bytes of the inner packet that must not appear on the wire (shorter runs occur by chance)."""
RANDOM_ENTROPY = 0.9
"""Share of the maximum entropy above which ciphertext looks random."""


def _scapy():
    # Imported on first use (in a thread worker): scapy is not needed to open the console.
    from scapy.layers.inet import IP, UDP  # noqa: F401
    import scapy.layers.ipsec  # noqa: F401  (binds ESP to IP proto 50 and UDP 4500)
    from scapy.layers.inet6 import IPv6  # noqa: F401
    from scapy.packet import Raw

    return IP, IPv6, UDP, Raw


@dataclass(frozen=True)
class Sizes:
    """ESP field sizes of one SA's algorithms."""

    iv: int
    icv: int
    algorithm: str


def esp_sizes(sa: ChildSaInstalled | None) -> Sizes | None:
    """IV and ICV sizes of the SA's transforms (None for AH, or when the SA is unknown)."""
    if sa is None or sa.protocol != "esp" or sa.encr_id is None:
        return None
    try:
        cipher = make_cipher(sa.encr_id, sa.encr_key_length,
                             bytes(encr_keymat_size(sa.encr_id, sa.encr_key_length)))
        icv = cipher.icv_size if cipher.aead else (integ_icv_size(sa.integ_id) if sa.integ_id else 0)
    except (ValueError, KeyError):
        return None
    name = _name(EncrId, sa.encr_id) + (f"_{sa.encr_key_length}" if sa.encr_key_length else "")
    if not cipher.aead and sa.integ_id:
        name += "/" + _name(IntegId, sa.integ_id)
    return Sizes(cipher.iv_size, icv, name)


def _name(enum, value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return str(value)


def entropy(data: bytes) -> float:
    """Shannon entropy in bits per byte."""
    if not data:
        return 0.0
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in Counter(data).values())


def max_entropy(n: int) -> float:
    """The highest entropy ``n`` bytes can have (log2 of the distinct values they can take)."""
    return math.log2(min(n, 256)) if n > 1 else 0.0


def longest_printable(data: bytes) -> int:
    best = run = 0
    for b in data:
        run = run + 1 if 32 <= b < 127 else 0
        best = max(best, run)
    return best


def plaintext_leaks(inner: bytes, wire: bytes, window: int = PLAINTEXT_WINDOW) -> int:
    """How many ``window``-byte pieces of the inner packet appear verbatim on the wire."""
    if len(inner) < window or len(wire) < window:
        return 0
    pieces = {wire[i:i + window] for i in range(len(wire) - window + 1)}
    return sum(1 for i in range(0, len(inner) - window + 1, window) if inner[i:i + window] in pieces)


@dataclass(frozen=True)
class WireView:
    """One sample as it was (or would have been) on the wire."""

    packet: bytes
    """The whole outer IP packet."""
    esp: bytes
    """From the SPI to the ICV (empty when the sample is not ESP)."""
    rebuilt: bool
    """The outer IP/UDP header was rebuilt from the SA (the datapath sampled from the SPI on)."""
    encap: bool
    """UDP-encapsulated (RFC 3948)."""


def wire_view(sample: PacketSample, sa: ChildSaInstalled | None) -> WireView | None:
    """The outer packet of an ESP sample; None when it is not one (e.g. a packet dropped before
    any SA, which never left as ESP)."""
    data = bytes(sample.outer)
    if not data or not sample.spi:
        return None
    spi = sample.spi.to_bytes(4, "big")
    if data[:4] == spi and len(data) >= 8:
        if sa is None:
            return WireView(b"", data, False, False)
        return WireView(_rebuild(sample, sa, data), data, True, sa.encap)
    IP, IPv6, UDP, _ = _scapy()
    try:
        pkt = IPv6(data) if data[0] >> 4 == 6 else IP(data)
    except Exception:
        return WireView(data, b"", False, False)
    udp = pkt.getlayer(UDP)
    if udp is not None:
        payload = bytes(udp.payload)
        return WireView(data, payload if payload[:4] == spi else b"", False, True)
    payload = bytes(pkt.payload)
    return WireView(data, payload if payload[:4] == spi else b"", False, False)


def _rebuild(sample: PacketSample, sa: ChildSaInstalled, esp: bytes) -> bytes:
    IP, IPv6, UDP, Raw = _scapy()
    ours = (sa.local_addr, sa.local_port or 4500)
    theirs = (sa.remote_addr, sa.remote_port or 4500)
    src, dst = (ours, theirs) if sample.direction == "out" else (theirs, ours)
    six = ":" in src[0]
    if sa.encap:
        l3 = IPv6(src=src[0], dst=dst[0], nh=17) if six else IP(src=src[0], dst=dst[0], proto=17)
        return bytes(l3 / UDP(sport=src[1], dport=dst[1]) / Raw(esp))
    l3 = IPv6(src=src[0], dst=dst[0], nh=50) if six else IP(src=src[0], dst=dst[0], proto=50)
    return bytes(l3 / Raw(esp))


def wire_lines(sample: PacketSample, sa: ChildSaInstalled | None) -> list[str]:
    """The "on the wire" side: outer headers, ESP fields and the no-plaintext check."""
    view = wire_view(sample, sa)
    if view is None:
        if sample.direction == "drop":
            return [f"dropped before encryption: {sample.verdict or 'unknown reason'}",
                    "it never left this host as ESP", *dissect(sample.outer, encrypted_payload=False)]
        return ["(nothing captured)"]
    lines: list[str] = []
    if view.packet:
        lines += _outer_headers(view.packet)
        if view.rebuilt:
            lines.append("  (outer header rebuilt from the SA)")
    else:
        lines.append("outer header unknown (the SA is not known to the console)")
    esp = view.esp
    if not esp:
        return lines + dissect(view.packet, encrypted_payload=True)
    spi = int.from_bytes(esp[:4], "big")
    seq = int.from_bytes(esp[4:8], "big")
    lines.append(f"ESP   SPI 0x{spi:08x}  seq {seq}")
    sizes = esp_sizes(sa)
    if sizes is not None and len(esp) >= 8 + sizes.iv + sizes.icv:
        ct = esp[8 + sizes.iv:len(esp) - sizes.icv]
        lines.append(f"  {len(esp)} bytes: ciphertext {len(ct)}")
        lines.append(f"  IV {sizes.iv}  ICV {sizes.icv}  {sizes.algorithm}")
    else:
        ct = esp[8:]
        lines.append(f"  {len(esp)} bytes: IV, ciphertext, ICV (algorithm unknown)")
    lines += evidence_lines(ct, sample.inner, null_cipher=sa is not None and sa.encr_id == EncrId.NULL)
    return lines


def evidence_lines(ciphertext: bytes, inner: bytes, *, null_cipher: bool = False) -> list[str]:
    """Why the ciphertext holds nothing readable (or why it does)."""
    e = entropy(ciphertext)
    top = max_entropy(len(ciphertext))
    printable = longest_printable(ciphertext)
    leaks = plaintext_leaks(bytes(inner), ciphertext) if inner else 0
    random_looking = top > 0 and e >= RANDOM_ENTROPY * top
    measure = [f"  entropy {e:.2f} of {top:.2f} bits/byte", f"  longest printable run {printable} bytes"]
    if null_cipher or leaks:
        why = "ENCR_NULL: integrity only" if null_cipher else f"{leaks} pieces of the inner packet seen"
        return ["✗ PLAINTEXT on the wire", f"  {why}", *measure]
    if inner:
        verdict = ["✓ no plaintext on the wire", "  no 8-byte piece of the inner packet"]
    else:
        verdict = ["✓ looks encrypted", "  (inner packet not shared: no comparison)"]
    if not random_looking:
        verdict = ["? " + verdict[0][2:] + ", but entropy is low", *verdict[1:]]
    return [*verdict, *measure]


def _outer_headers(packet: bytes) -> list[str]:
    IP, IPv6, UDP, _ = _scapy()
    try:
        pkt = IPv6(packet) if packet[0] >> 4 == 6 else IP(packet)
    except Exception as exc:
        return [f"malformed outer packet ({exc})"]
    lines = []
    if pkt.name == "IPv6":
        lines.append(f"IPv6  {pkt.src} → {pkt.dst}")
        lines.append(f"  next header {pkt.nh}, hlim {pkt.hlim}, {len(packet)} bytes")
    else:
        proto = {50: "ESP (50)", 51: "AH (51)", 17: "UDP (17)"}.get(pkt.proto, str(pkt.proto))
        lines.append(f"IPv4  {pkt.src} → {pkt.dst}")
        lines.append(f"  proto {proto}, ttl {pkt.ttl}, {len(packet)} bytes")
    udp = pkt.getlayer(UDP)
    if udp is not None:
        lines.append(f"UDP   {udp.sport} → {udp.dport}  (NAT-T, RFC 3948)")
    return lines


def dissect(data: bytes, *, encrypted_payload: bool) -> list[str]:
    """Readable lines for one IP packet. ``encrypted_payload``: ESP data is ciphertext."""
    if not data:
        return ["(nothing: dropped before decryption)"]
    IP, IPv6, _, Raw = _scapy()
    version = data[0] >> 4
    try:
        pkt = IPv6(data) if version == 6 else IP(data)
    except Exception as exc:  # a malformed sample is shown as such, never a crash
        return [f"malformed packet ({exc})", data[:32].hex()]
    lines = []
    layer = pkt
    while layer is not None and layer.name != "NoPayload":
        name = layer.name
        if isinstance(layer, Raw):
            raw = bytes(layer.load)
            printable = "".join(chr(b) if 32 <= b < 127 else "·" for b in raw[:40])
            lines.append(f"Raw  {len(raw)} bytes  {printable!s}")
            break
        fields = []
        for f in layer.fields_desc:
            if f.name in _SKIP:
                continue
            cond = getattr(f, "_evalcond", None)  # scapy's ConditionalField: ICMP declares every type's fields
            if cond is not None and not cond(layer):
                continue
            value = layer.getfieldval(f.name)
            if name == "ESP" and f.name == "data":
                size = len(value) if value is not None else 0
                what = "ciphertext, unreadable without the keys" if encrypted_payload else "payload"
                fields.append(f"data={size} bytes {what}")
                continue
            if value is None or (isinstance(value, bytes) and not value):  # an echo's empty 'unused', an absent ICMP extension
                continue
            shown = f.i2repr(layer, value)
            if f.name == "spi":
                shown = f"0x{value:08x}"
            fields.append(f"{f.name}={shown}")
        lines.append(f"{name:<4} " + "  ".join(fields))  # "IP in ICMP" too keeps a space before its fields
        layer = layer.payload if layer.payload else None
    return lines


PCAP_LINKTYPE_RAW = 101
"""Raw IP (IPv4 or IPv6 by the version nibble): no fake link-layer header is needed."""


def pcap_bytes(samples: list[tuple[PacketSample, ChildSaInstalled | None]]) -> tuple[bytes, int]:
    """The samples' outer packets as a classic pcap file (what Wireshark, tshark and tcpdump read),
    timestamps in wall-clock time. Returns the file and how many packets it holds (samples
    with no outer packet, e.g. dropped before encryption, are left out)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, PCAP_LINKTYPE_RAW)]
    n = 0
    for sample, sa in samples:
        view = wire_view(sample, sa)
        if view is None or not view.packet:
            continue
        sec = int(sample.time)
        usec = min(999_999, int(round((sample.time - sec) * 1_000_000)))
        data = view.packet[:65535]
        out.append(struct.pack("<IIII", sec, usec, len(data), len(view.packet)) + data)
        n += 1
    return b"".join(out), n
