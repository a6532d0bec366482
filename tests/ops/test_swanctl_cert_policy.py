"""swanctl.conf import of remote cert_policy fails closed: a restriction on which certificates a peer
may hold that cannot be carried over leaves the connection out, never a connection accepting more."""

from __future__ import annotations

from engine.ops.swanctl_import import import_text
from engine.policy.parse import parse_policy

from tests.ops.test_swanctl import ROADWARRIOR_GW


def _import(tmp_path, remote_lines: str):
    text = ROADWARRIOR_GW.replace("      revocation = strict\n", "      revocation = strict\n" + remote_lines)
    return import_text(text, source="gw.conf", conf_dir=tmp_path / "swanctl", out_dir=tmp_path)


def test_unreadable_cert_policy_leaves_the_connection_out(tmp_path):
    """charon stores any cert_policy string and refuses every peer whose certificate lacks it (a name
    like anyPolicy never matches the dotted OIDs it compares with): dropping only the setting made
    the imported connection accept any certificate of the CA."""
    r = _import(tmp_path, "      cert_policy = 1.3.6.1.4.1.36906.1.1, anyPolicy\n")
    assert any("cert_policy" in w and "anyPolicy" in w and "left out" in w for w in r.warnings), r.warnings
    policy = parse_policy(r.policy_toml, tmp_path / "p.toml", load_secrets=False)
    assert "rw-base" not in [c.name for c in policy.connections]


def test_cert_policy_on_an_eap_remote_leaves_the_connection_out(tmp_path):
    """We check cert_policy only with auth = pubkey; charon checks it in any round (an EAP-TLS
    client's certificate, and refuses a PSK peer, which holds no policy)."""
    text = ROADWARRIOR_GW.replace("      auth = pubkey\n      cacerts", "      auth = eap-tls\n      cacerts") \
        .replace("      revocation = strict\n",
                 "      revocation = strict\n      cert_policy = 1.3.6.1.4.1.36906.1.1\n")
    r = import_text(text, source="gw.conf", conf_dir=tmp_path / "swanctl", out_dir=tmp_path)
    assert any("cert_policy" in w and "left out" in w for w in r.warnings), r.warnings
    policy = parse_policy(r.policy_toml, tmp_path / "p.toml", load_secrets=False)
    assert "rw-base" not in [c.name for c in policy.connections]


def test_good_cert_policy_still_imported(tmp_path):
    r = _import(tmp_path, "      cert_policy = 1.3.6.1.4.1.36906.1.1\n")
    policy = parse_policy(r.policy_toml, tmp_path / "p.toml", load_secrets=False)
    assert policy.connection("rw-base").remote.cert_policy == ("1.3.6.1.4.1.36906.1.1",)


def test_empty_cert_policy_is_nothing(tmp_path):
    r = _import(tmp_path, "      cert_policy =\n")
    policy = parse_policy(r.policy_toml, tmp_path / "p.toml", load_secrets=False)
    assert policy.connection("rw-base").remote.cert_policy == ()
