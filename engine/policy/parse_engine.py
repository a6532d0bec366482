"""The [engine] and [lab] tables of a policy file: the parser's first sections (a mixin of
parse._PolicyParser: ``self.r`` is its Reader)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from engine.policy._reader import key_path
from engine.policy.model import EngineConfig, LabConfig

from engine.policy.parse_common import (ENGINE_KEYS, LAB_FLOWS, LAB_KEYS, _is_ip, split_host_port)


class EngineSection:
    def engine(self, doc: dict) -> EngineConfig:
        r, P = self.r, "engine"
        t = r.table(doc, "engine", "") or {}
        r.check_keys(t, P, ENGINE_KEYS)
        d = EngineConfig()
        listen = r.str_list(t, "listen", P, [])
        for a in listen:
            if not _is_ip(a):
                r.error(key_path(P, "listen"), f"{a!r} is not an IP address (listen takes addresses, not names)")
        ike_port = r.int_(t, "ike_port", P, d.ike_port, lo=1, hi=65535)
        natt_port = r.int_(t, "natt_port", P, d.natt_port, lo=1, hi=65535)
        if ike_port == natt_port:
            r.error(key_path(P, "natt_port"), f"must differ from ike_port ({ike_port}): "
                    "NAT-T traffic is told apart by its port")
        secrets = r.str_(t, "secrets", P)
        if secrets == "":
            r.error(key_path(P, "secrets"), "empty path: remove the key or name the secrets file")
            secrets = None
        control = r.str_(t, "control", P)
        pki_dir = r.str_(t, "pki", P)
        if pki_dir is not None and not pki_dir.strip():
            r.error(key_path(P, "pki"), "empty path: remove the key (the CA folder is then pki/ next to this "
                    "file) or name the CA folder")
            pki_dir = None
        return EngineConfig(
            datapath=r.str_(t, "datapath", P, d.datapath, choices=("kernel", "userspace", "lab")),
            listen=tuple(a.strip() for a in listen),
            ike_port=ike_port,
            natt_port=natt_port,
            secrets=secrets,
            control=control,
            retransmit_timeout=self._positive(t, "retransmit_timeout", P, d.retransmit_timeout),
            retransmit_base=r.float_(t, "retransmit_base", P, d.retransmit_base, lo=1.0),
            retransmit_tries=r.int_(t, "retransmit_tries", P, d.retransmit_tries, lo=0),
            half_open_threshold=r.int_(t, "half_open_threshold", P, d.half_open_threshold, lo=0),
            keepalive=r.duration(t, "keepalive", P, d.keepalive),
            crls=tuple(r.str_list(t, "crls", P, [])),
            pki_dir=pki_dir,
            tun_device=self._tun_device(t, P, d.tun_device),
            tun_mtu=r.int_(t, "tun_mtu", P, d.tun_mtu, lo=576, hi=65535),
            tun_offload=r.str_(t, "tun_offload", P, d.tun_offload, choices=("on", "off", "auto", "jumbo")),
            state_dir=self._folder(t, "state_dir", P),
            save_keys=self._folder(t, "save_keys", P),
            metrics_textfile=self._folder(t, "metrics_textfile", P),
            metrics_listen=self._metrics_listen(t, P),
            metrics_interval=self._positive(t, "metrics_interval", P, d.metrics_interval),
            # RFC 7296 §2: every implementation takes 1280-byte messages; 65535 is the UDP limit.
            max_packet=r.int_(t, "max_packet", P, d.max_packet, lo=1280, hi=65535),
            cookie_threshold_ip=r.int_(t, "cookie_threshold_ip", P, d.cookie_threshold_ip, lo=1),
            block_threshold=r.int_(t, "block_threshold", P, d.block_threshold, lo=1),
            init_limit_half_open=r.int_(t, "init_limit_half_open", P, d.init_limit_half_open, lo=0),
        )

    def _folder(self, t: dict, key: str, path: str) -> str | None:
        value = self.r.str_(t, key, path)
        if value is not None and not value.strip():
            self.r.error(key_path(path, key), "empty path: remove the key or name a path")
            return None
        return value

    def _metrics_listen(self, t: dict, path: str) -> str | None:
        value = self.r.str_(t, "metrics_listen", path)
        if value is None:
            return None
        host, port = split_host_port(value)
        if host is None or port is None:
            self.r.error(key_path(path, "metrics_listen"), f"{value!r} is not ADDRESS:PORT "
                         '(e.g. "127.0.0.1:9814" or "[::1]:9814")')
            return None
        if not ipaddress.ip_address(host).is_loopback:
            self.r.error(key_path(path, "metrics_listen"), f"{host} is not a loopback address: the metrics "
                         "endpoint has no authentication, so it listens on 127.0.0.1 or ::1 only (let "
                         "node_exporter's textfile collector or a local proxy take them further)")
            return None
        return value

    def _tun_device(self, t: dict, path: str, default: str) -> str:
        name = self.r.str_(t, "tun_device", path, default)
        if not name or len(name) > 15 or "/" in name or any(c.isspace() for c in name):
            self.r.error(key_path(path, "tun_device"), f"{name!r} is not a usable interface name "
                         "(1-15 characters, no '/' or spaces)")
            return default
        return name

    def _positive(self, t: dict, key: str, path: str, default: float) -> float:
        v = self.r.duration(t, key, path, default)
        if v <= 0:
            self.r.error(key_path(path, key), "must be longer than 0s")
            return default
        return v

    def lab(self, doc: dict, engine: EngineConfig) -> LabConfig | None:
        r, P = self.r, "lab"
        t = r.table(doc, "lab", "")
        if t is None:
            return None
        r.check_keys(t, P, LAB_KEYS)
        if engine.datapath != "lab":
            r.error(P, f'a [lab] section needs datapath = "lab" in [engine] (it is "{engine.datapath}")')
        d = LabConfig()
        peers = r.str_list(t, "peers", P, [])
        for peer in peers:
            if not peer:
                r.error(key_path(P, "peers"), "empty file name")
                continue
            target = self.base_dir / peer
            if not target.is_file():
                r.error(key_path(P, "peers"), f"peer policy {peer!r} not found next to this file")
            elif self.file != "<string>" and target.resolve() == (self.base_dir / Path(self.file).name).resolve():
                r.error(key_path(P, "peers"), f"{peer!r} is this file: a peer is another endpoint's policy")
        rate = r.float_(t, "rate", P, d.rate, lo=0.0)
        if "rate" in t and rate <= 0:
            r.error(key_path(P, "rate"), "must be more than 0 packets per second")
            rate = d.rate
        flows = r.str_list(t, "flows", P, list(d.flows))
        for f in flows:
            if f not in LAB_FLOWS:
                r.error(key_path(P, "flows"), f"unknown flow {f!r}: use {', '.join(LAB_FLOWS)}")
        flows = [f for f in flows if f in LAB_FLOWS]
        return LabConfig(peers=tuple(peers), rate=rate, flows=tuple(dict.fromkeys(flows)))  # type: ignore[arg-type]
