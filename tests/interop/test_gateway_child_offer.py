"""Our gateway's CREATE_CHILD_SA to a charon road warrior (its rekey; close_action = start)."""

from __future__ import annotations

import pytest

from tests.interop.peers import (  # noqa: F401  (fixtures)
    FQDN_SECRETS,
    charon_conn,
    control,
    module_lab,
    peers,
    wait_or_explain,
    with_children,
)
from tests.interop.test_roadwarrior import POOL_FIRST, _gateway_policy

pytestmark = pytest.mark.interop


def test_our_gateway_rekeys_a_charon_road_warriors_child(peers):
    """Our gateway's CREATE_CHILD_SA to a charon client (here its rekey) proposes the virtual IP
    it leased for the dynamic selector: charon accepts it (it refused the client's IKE address)."""
    c = peers.charon("left", charon_conn("left", vips="0.0.0.0", children={"local_ts": "dynamic"}))
    o = peers.ours("right", _gateway_policy("right"), FQDN_SECRETS)
    c.swanctl("--initiate", "--child", "t", "--timeout", "10", check=False)
    sas = wait_or_explain(lambda: with_children(o), "our IKE and CHILD SA", o)
    old = {ch["spi_in"] for ch in sas[0]["children"]}
    assert control(o, "rekey", name="t")["rekeyed"] == 1
    wait_or_explain(lambda: any(ch["state"] == "INSTALLED" and ch["spi_in"] not in old
                                for sa in with_children(o) for ch in sa["children"]), "the rekeyed CHILD SA", o)
    (sa,) = with_children(o)
    assert all(ch["remote_ts"] == [f"{POOL_FIRST}/32"] for ch in sa["children"] if ch["state"] == "INSTALLED")
    assert "TS_UNACCEPTABLE" not in c.log()
