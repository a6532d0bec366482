"""The quantum-safety fields of `sas --json` (engine.status): added with defaults, old ones untouched."""

from __future__ import annotations

import dataclasses

from engine.status import ChildSaInfo, IkeSaInfo, ike_sa_from_dict, is_quantum_safe, to_dict

BEFORE_IKE = ["name", "unique_id", "state", "initiator", "spi_i", "spi_r", "local_addr", "local_port",
              "remote_addr", "remote_port", "local_id", "remote_id", "encr", "integ", "prf", "ke", "nat_local",
              "nat_remote", "established_ago", "rekey_in", "reauth_in", "expire_in", "children"]


def test_fields_are_only_added():
    names = [f.name for f in dataclasses.fields(IkeSaInfo)]
    assert names[:len(BEFORE_IKE)] == BEFORE_IKE
    assert names[len(BEFORE_IKE):len(BEFORE_IKE) + 3] == ["additional_ke", "ppk", "quantum_safe"]
    assert [f.name for f in dataclasses.fields(ChildSaInfo)][-3:] == ["drops", "additional_ke", "quantum_safe"]


def test_json_round_trip_and_old_documents():
    child = ChildSaInfo("lan", 1, 1, "INSTALLED", "esp", "tunnel", True, 1, 2, ke="CURVE_25519",
                        additional_ke=("KE1_ML_KEM_768",), quantum_safe=True)
    sa = IkeSaInfo("branch", 1, "ESTABLISHED", True, 1, 2, "192.0.2.1", 500, "192.0.2.2", 500,
                   ke="CURVE_25519", additional_ke=("KE1_ML_KEM_768",), ppk=True, quantum_safe=True,
                   children=(child,))
    d = to_dict(sa)
    assert d["quantum_safe"] is True and d["ppk"] is True and d["additional_ke"] == ["KE1_ML_KEM_768"]
    assert d["children"][0]["quantum_safe"] is True
    assert ike_sa_from_dict(d) == sa
    old = {k: v for k, v in d.items() if k not in ("additional_ke", "ppk", "quantum_safe")}
    old["children"] = [{k: v for k, v in old["children"][0].items() if k not in ("additional_ke", "quantum_safe")}]
    back = ike_sa_from_dict(old)  # a daemon without the fields: the console still reads it
    assert (back.quantum_safe, back.ppk, back.additional_ke, back.children[0].quantum_safe) == (False, False, (), False)


def test_is_quantum_safe():
    assert not is_quantum_safe("CURVE_25519")
    assert is_quantum_safe("ML_KEM_768")
    assert is_quantum_safe("CURVE_25519", ("KE1_ML_KEM_1024",))
    assert not is_quantum_safe("CURVE_25519", ("KE1_ECP_384",))
    assert is_quantum_safe("CURVE_25519", ppk=True)
    assert is_quantum_safe("", parent_quantum_safe=True)  # a CHILD SA of a quantum-safe IKE SA
