"""The clients screen after an IKE rekey the gateway initiated: the header's Initiator flag (status
``initiator``, as charon's vici list-sas) then says we initiated, but the road warrior still set
the connection up (IkeSa.connection_initiator, charon's COND_ORIGINAL_INITIATOR)."""

from console.screens.clients import is_client
from engine.status import IkeSaInfo, ike_sa_from_dict
from engine.jsonable import to_jsonable


def _sa(initiator: bool, connection_initiator: bool | None) -> IkeSaInfo:
    return IkeSaInfo("rw", 1, "ESTABLISHED", initiator, 1, 2, "192.0.2.1", 4500, "198.51.100.7", 4500,
                     connection_initiator=connection_initiator)


def test_a_client_rekeyed_by_the_gateway_stays_a_client():
    assert is_client(_sa(initiator=True, connection_initiator=False), {"rw"})


def test_our_own_connection_is_no_client_after_the_gateway_rekeyed():
    assert not is_client(_sa(initiator=False, connection_initiator=True), {"rw"})


def test_without_the_field_the_header_role_decides():
    assert is_client(_sa(initiator=False, connection_initiator=None), {"rw"})
    assert not is_client(_sa(initiator=True, connection_initiator=None), {"rw"})


def test_the_field_survives_json():
    sa = _sa(initiator=True, connection_initiator=False)
    assert ike_sa_from_dict(to_jsonable(sa)).connection_initiator is False


def test_the_engine_reports_who_set_the_connection_up_after_the_gateways_rekey():
    from engine.ike.status import ike_sa_info
    from tests.engine.test_ike_mobike import pair
    from tests.engine.test_ike_rekey_connection_initiator import _rekeyed
    p = pair()
    client, gw = _rekeyed(p, "b")
    info = ike_sa_info(gw, p.now)
    assert info.initiator is True  # the header role, as charon's vici list-sas shows it
    assert info.connection_initiator is False
    assert ike_sa_info(client, p.now).connection_initiator is True
