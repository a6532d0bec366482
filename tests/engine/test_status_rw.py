"""The road-warrior fields of `sas --json` (engine.status): added last with defaults, documented."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from engine.status import IkeSaInfo, PoolInfo, StatusSnapshot, ike_sa_from_dict, pool_from_dict, to_dict

RW_FIELDS = ["virtual_ips", "eap_identity", "eap_method", "cert_subject", "mobike_moves", "pool"]


def test_fields_are_added_last_with_defaults():
    fields = dataclasses.fields(IkeSaInfo)
    names = [f.name for f in fields]
    at = names.index(RW_FIELDS[0])
    assert names[at:at + len(RW_FIELDS)] == RW_FIELDS
    # anything added after them has a default too (older JSON still reads)
    assert all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in fields[at:])
    old = ike_sa_from_dict({"name": "rw", "unique_id": 1, "state": "ESTABLISHED", "initiator": False, "spi_i": 1,
                            "spi_r": 2, "local_addr": "192.0.2.1", "local_port": 4500, "remote_addr": "192.0.2.9",
                            "remote_port": 4500})
    assert (old.virtual_ips, old.eap_identity, old.mobike_moves) == ((), "", 0)


def test_json_round_trip():
    sa = IkeSaInfo("rw", 7, "ESTABLISHED", False, 1, 2, "192.0.2.1", 4500, "192.0.2.9", 61000,
                   virtual_ips=("198.51.100.130",), eap_identity="alice@example.org", eap_method="EAP-MSCHAPv2",
                   mobike_moves=2, pool="rw")
    d = to_dict(sa)
    assert d["virtual_ips"] == ["198.51.100.130"] and d["eap_method"] == "EAP-MSCHAPv2"
    assert ike_sa_from_dict(d) == sa
    snap = StatusSnapshot(0.0, (sa,), (), (PoolInfo("rw", "198.51.100.128/25", 126, 1),))
    assert pool_from_dict(to_dict(snap)["pools"][0]) == snap.pools[0]


def test_readme_documents_them():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in RW_FIELDS:
        assert f'"{name}"' in readme
