"""`ipsec-console sas` prints what swanctl --list-sas prints: the peer's EAP identity, virtual IPs
and the RFC 9370 additional key exchanges (ML-KEM) were in the JSON but not in the text."""

from __future__ import annotations

from console.cli_control import format_sas
from engine.status import ChildSaInfo, IkeSaInfo, to_dict


def _sa(**kw) -> dict:
    child = ChildSaInfo(name="net", unique_id=2, reqid=1, state="INSTALLED", protocol="esp", mode="tunnel",
                        encap=False, spi_in=0xc1, spi_out=0xc2, encr="AES_GCM_16_256", ke="CURVE_25519",
                        additional_ke=("KE1_ML_KEM_768",), local_ts=("198.51.100.0/25",),
                        remote_ts=("198.51.100.128/25",))
    base = dict(name="rw", unique_id=1, state="ESTABLISHED", initiator=False, spi_i=1, spi_r=2,
                local_addr="192.0.2.1", local_port=500, remote_addr="192.0.2.2", remote_port=4500,
                local_id="gw.example", remote_id="192.0.2.2", encr="AES_GCM_16_256", prf="PRF_HMAC_SHA2_256",
                ke="CURVE_25519", children=(child,))
    base.update(kw)
    return to_dict(IkeSaInfo(**base))


def test_eap_identity_virtual_ip_and_ml_kem_are_listed():
    text = format_sas([_sa(eap_identity="carol", virtual_ips=("198.51.100.200",), pool="rw_pool",
                           additional_ke=("KE1_ML_KEM_768",), ppk=True)])
    lines = text.splitlines()
    assert lines[2] == "  remote '192.0.2.2' @ 192.0.2.2[4500] EAP: 'carol' [198.51.100.200]", text
    assert lines[3] == "  AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519/KE1_ML_KEM_768/PPK", text
    assert "ESP:AES_GCM_16_256/CURVE_25519/KE1_ML_KEM_768" in text


def test_our_own_virtual_ip_is_on_the_local_line():
    text = format_sas([_sa(initiator=True, virtual_ips=("198.51.100.201",))])
    assert text.splitlines()[1] == "  local  'gw.example' @ 192.0.2.1[500] [198.51.100.201]", text
    assert "EAP" not in text and "PPK" not in text
