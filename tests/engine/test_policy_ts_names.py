"""Protocol and port names in traffic selectors come from the system's
protocols/services database, as swanctl's do (issue 9 item 7)."""

from __future__ import annotations

import socket

import pytest

from engine.policy import PolicyError, parse_policy
from engine.policy import ts as ts_module
from engine.policy.ts import TsSyntaxError, parse_ts


@pytest.fixture(autouse=True)
def fresh_name_cache():
    ts_module.clear_name_cache()
    yield
    ts_module.clear_name_cache()


@pytest.mark.parametrize("text,proto,ports", [
    ("198.51.100.0/24[tcp/smtp]", 6, (25, 25)),
    ("198.51.100.0/24[udp/ntp]", 17, (123, 123)),
    ("198.51.100.0/24[tcp/https]", 6, (443, 443)),
    ("198.51.100.0/24[udp/domain]", 17, (53, 53)),
    ("198.51.100.0/24[udp/ipsec-nat-t]", 17, (4500, 4500)),  # a name with dashes is not a range
    ("198.51.100.0/24[ospf]", 89, (0, 65535)),
    ("198.51.100.0/24[OSPF]", 89, (0, 65535)),
    ("198.51.100.0/24[gre]", 47, (0, 65535)),
    ("198.51.100.0/24[6/25]", 6, (25, 25)),
    ("198.51.100.0/24[tcp/1024-65535]", 6, (1024, 65535)),
    ("198.51.100.0/24[tcp/http-https]", 6, (80, 443)),
    ("198.51.100.0/24[89]", 89, (0, 65535)),
])
def test_names_from_the_system_database_and_numbers(text, proto, ports):
    ts = parse_ts(text)
    assert (ts.protocol, (ts.start_port, ts.end_port)) == (proto, ports)
    assert parse_ts(str(ts)) == ts


def test_unknown_names_are_a_policy_error_naming_the_key_path():
    toml = ('[connections.c]\nremote_addrs = ["192.0.2.2"]\n'
            'local = { auth = "psk" }\nremote = { auth = "psk" }\n'
            '[connections.c.children.x]\nlocal_ts = ["198.51.100.0/25[nosuchproto]"]\n'
            'remote_ts = ["198.51.100.128/25[tcp/nosuchservice]"]\n')
    with pytest.raises(PolicyError) as exc:
        parse_policy(toml)
    found = {f.key_path: f.message for f in exc.value.errors}
    assert "nosuchproto" in found["connections.c.children.x.local_ts"]
    assert "protocol" in found["connections.c.children.x.local_ts"]
    assert "nosuchservice" in found["connections.c.children.x.remote_ts"]
    assert "service" in found["connections.c.children.x.remote_ts"]


def test_without_a_system_database_the_builtin_table_serves_common_names(monkeypatch):
    def missing(*_args):
        raise OSError("service/proto not found")  # what the socket module raises with no /etc/services

    monkeypatch.setattr(socket, "getservbyname", missing)
    monkeypatch.setattr(socket, "getprotobyname", missing)
    assert parse_ts("0.0.0.0/0[tcp/smtp]").start_port == 25
    assert parse_ts("0.0.0.0/0[udp/ntp]").start_port == 123
    assert parse_ts("0.0.0.0/0[tcp/https]").start_port == 443
    assert parse_ts("0.0.0.0/0[ospf]").protocol == 89
    with pytest.raises(TsSyntaxError, match="nosuchservice"):
        parse_ts("0.0.0.0/0[tcp/nosuchservice]")


def test_the_system_database_wins_and_lookups_are_cached(monkeypatch):
    calls = []

    def getservbyname(name, proto=None):
        calls.append((name, proto))
        if name == "smtp":
            return 2525  # a site that moved it: the system database is the authority
        raise OSError("not found")

    monkeypatch.setattr(socket, "getservbyname", getservbyname)
    for _ in range(3):
        assert parse_ts("0.0.0.0/0[tcp/smtp]").start_port == 2525
    assert calls == [("smtp", "tcp")]
