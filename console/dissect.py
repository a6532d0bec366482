"""Packet samples dissected with scapy, compactly: one line per layer with
the fields an admin reads. The outer packet shows that ESP leaves only the
SPI and the sequence number readable; the inner one what was protected."""

from __future__ import annotations

_SKIP = {"version", "ihl", "tos", "chksum", "options", "len", "frag", "dataofs", "reserved", "window",
         "urgptr", "plen", "fl", "tc"}


def _scapy():
    # Imported on first use (in a thread worker): scapy is not needed to open the console.
    from scapy.layers.inet import IP  # noqa: F401
    import scapy.layers.ipsec  # noqa: F401  (binds ESP to IP proto 50 and UDP 4500)
    from scapy.layers.inet6 import IPv6  # noqa: F401
    from scapy.packet import Raw

    return IP, IPv6, Raw


def dissect(data: bytes, *, encrypted_payload: bool) -> list[str]:
    """Readable lines for one packet. ``encrypted_payload``: ESP data is ciphertext."""
    if not data:
        return ["(nothing: dropped before decryption)"]
    IP, IPv6, Raw = _scapy()
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
            value = layer.getfieldval(f.name)
            if name == "ESP" and f.name == "data":
                size = len(value) if value is not None else 0
                what = "ciphertext, unreadable without the keys" if encrypted_payload else "payload"
                fields.append(f"data={size} bytes {what}")
                continue
            if value is None:
                continue
            shown = f.i2repr(layer, value)
            if f.name == "spi":
                shown = f"0x{value:08x}"
            fields.append(f"{f.name}={shown}")
        lines.append(f"{name:<5}" + "  ".join(fields))
        layer = layer.payload if layer.payload else None
    return lines
