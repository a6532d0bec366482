"""close_action against a real charon: charon closes the CHILD SA (swanctl --terminate --child)
or the IKE SA (--terminate --ike) and our close_action = start brings it back."""

from __future__ import annotations

import pytest

from tests.interop.lab import Charon, Ours, lab, our_policy, wait_for

pytestmark = pytest.mark.interop


@pytest.fixture
def up(tmp_path):
    with lab() as L:
        started: list = []
        try:
            c = Charon(L, "right", tmp_path).start()
            started.append(c)
            text = our_policy("left").replace('dpd_action = "clear"', 'dpd_action = "clear"\nclose_action = "start"')
            o = Ours(L, "left", tmp_path, text).start("--datapath", "none")
            started.append(o)
            o.watch_events()
            o.cli("initiate", "psk-tunnel")
            wait_for(lambda: "INSTALLED" in c.list_sas(), what="charon's CHILD SA")
            yield c, o
        finally:
            for x in reversed(started):
                x.stop()
            for x in started:
                print(f"===== {x.dir.name} log (tail)\n{x.log()[-6000:]}")


def _installed(o: Ours) -> int:
    return len(o.events("ChildSaInstalled"))


def test_charon_closes_the_child_and_we_create_it_again(up):
    c, o = up
    ike = o.sas()[0]["unique_id"]
    c.swanctl("--terminate", "--child", "psk-tunnel")
    wait_for(lambda: _installed(o) == 2, what="the CHILD SA created again")
    wait_for(lambda: "INSTALLED" in c.list_sas(), what="charon's new CHILD SA")
    assert [sa["unique_id"] for sa in o.sas()] == [ike]  # on the same IKE SA


def test_charon_closes_the_ike_sa_and_we_set_it_up_again(up):
    c, o = up
    ike = o.sas()[0]["unique_id"]
    c.swanctl("--terminate", "--ike", "psk-tunnel")
    wait_for(lambda: _installed(o) == 2 and [sa["unique_id"] for sa in o.sas()] not in ([], [ike]),
             what="a new IKE SA with the CHILD SA")
    wait_for(lambda: "INSTALLED" in c.list_sas(), what="charon's new CHILD SA")
