"""What the policy parser's sections share: the keys each table may hold, the limits, swanctl's
derived defaults and the address helpers. Split from parse.py (one concept per module)."""

from __future__ import annotations

import ipaddress
import re

from engine.policy.ts import TrafficSelector

TOP_KEYS = ("engine", "lab", "connections", "rules", "pools")
ENGINE_KEYS = ("datapath", "listen", "ike_port", "natt_port", "secrets", "control", "retransmit_timeout",
               "retransmit_base", "retransmit_tries", "half_open_threshold", "keepalive", "crls", "pki",
               "tun_device", "tun_mtu", "tun_offload", "state_dir", "save_keys", "metrics_textfile",
               "metrics_listen", "metrics_interval", "max_packet", "cookie_threshold_ip", "block_threshold",
               "init_limit_half_open")
LAB_KEYS = ("peers", "rate", "flows")
CONNECTION_KEYS = ("local_addrs", "remote_addrs", "local_port", "remote_port", "remote_natt_port", "proposals",
                   "local", "remote",
                   "encap", "dpd_delay", "rekey_time", "over_time", "rand_time", "fragmentation", "mobike",
                   "send_certreq", "keyingtries", "unique", "children", "ppk_id", "ppk_required", "pools", "vips",
                   "expected_clients", "redirect_to")
AUTH_KEYS = ("auth", "id", "certs", "cacerts", "eap_id", "revocation", "cert_policy")
REVOCATION = ("relaxed", "ifuri", "strict")
POOL_KEYS = ("addrs", "dns", "split_include", "split_exclude")
AUTH_METHODS = ("psk", "pubkey", "eap-mschapv2", "eap-tls", "eap")
CHILD_KEYS = ("mode", "protocol", "local_ts", "remote_ts", "esp_proposals", "ah_proposals", "rekey_time",
              "life_time", "rand_time", "rekey_bytes", "life_bytes", "rekey_packets", "life_packets",
              "start_action", "dpd_action", "close_action", "replay_window", "priority")
RULE_KEYS = ("action", "local_ts", "remote_ts", "priority")

PRIORITY_MAX = 99_999
"""Explicit priorities are 1..PRIORITY_MAX; computed ones lie above, so an explicit one always wins."""
REPLAY_WINDOW_MAX = 4096
LAB_FLOWS = ("icmp", "udp", "tcp")
_NAME = re.compile(r"^[^\s\x00-\x1f\x7f]{1,64}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


# -- derived defaults (shared with the serializer so it writes only what differs) ----------
def ike_over_time(rekey_time: float) -> float:
    return rekey_time / 10


def child_life_time(rekey_time: float) -> float:
    return rekey_time * 11 / 10


def child_life_count(rekey: int) -> int:
    return rekey + rekey // 10


def default_ts(other: tuple[TrafficSelector, ...] | None) -> tuple[TrafficSelector, ...]:
    """A rule side left out: everything, in the IP versions the other side uses."""
    versions = sorted({t.version for t in other}) if other else [4, 6]
    return tuple(TrafficSelector.any(v) for v in versions)


# -- addresses ---------------------------------------------------------------------------------
def address_kind(text: str) -> str | None:
    """What an entry of local_addrs/remote_addrs is: any, ip, network, range, dns; None if invalid."""
    t = text.strip()
    if t in ("%any", "%any4", "%any6"):
        return "any"
    try:
        ipaddress.ip_address(t)
        return "ip"
    except ValueError:
        pass
    if "/" in t:
        try:
            ipaddress.ip_network(t, strict=False)
            return "network"
        except ValueError:
            return None
    if "-" in t:
        lo, _, hi = t.partition("-")
        if _is_ip(lo) and _is_ip(hi):
            a, b = ipaddress.ip_address(lo.strip()), ipaddress.ip_address(hi.strip())
            return "range" if a.version == b.version and a <= b else None
    if _HOSTNAME.match(t) and not t.replace(".", "").isdigit():
        return "dns"
    return None


def split_host_port(text: str) -> tuple[str | None, int | None]:
    """``"127.0.0.1:9814"`` or ``"[::1]:9814"`` -> (address, port); (None, None) when malformed."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None, None
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return (host, int(port)) if _is_ip(host) else (None, None)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip())
        return True
    except ValueError:
        return False


def single_host(addrs: tuple[str, ...]) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address when ``addrs`` is exactly one IP literal (what ``dynamic`` resolves to)."""
    if len(addrs) == 1 and address_kind(addrs[0]) == "ip":
        return ipaddress.ip_address(addrs[0].strip())
    return None


def _is_loopback(text: str) -> bool:
    kind = address_kind(text)
    t = text.strip()
    if kind == "ip":
        return ipaddress.ip_address(t).is_loopback
    if kind == "network":
        net = ipaddress.ip_network(t, strict=False)
        return net.network_address.is_loopback and net.broadcast_address.is_loopback
    if kind == "range":
        a, b = (ipaddress.ip_address(p.strip()) for p in t.split("-", 1))
        return a.is_loopback and b.is_loopback
    return False
