"""rtnl.AddressBook keeps this host's addresses from the kernel's notifications. The kernel
sends RTM_NEWADDR not only when an address appears but whenever one changes (IPv6 DAD done,
lifetimes refreshed by each router advertisement, ``ip addr change``): counting those as more
carriers kept a removed address in the book for ever (a route's source that no longer exists,
privacy addresses piling up)."""

from __future__ import annotations

import ipaddress
import socket

from engine.datapath.rtnl import _IFADDRMSG, IFA_ADDRESS, IFA_LOCAL, RTM_DELADDR, RTM_NEWADDR, AddressBook, _attr


def _body(addr: str, index: int) -> bytes:
    ip = ipaddress.ip_address(addr)
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    kind = IFA_LOCAL if ip.version == 4 else IFA_ADDRESS
    return _IFADDRMSG.pack(family, 64 if ip.version == 6 else 24, 0, 0, index) + _attr(kind, ip.packed)


def _book() -> AddressBook:
    book = AddressBook.__new__(AddressBook)  # no socket: only the notification handling
    book.addresses, book.packed, book._src_cache = {}, set(), {}
    return book


def test_an_address_updated_then_removed_is_gone():
    book = _book()
    net = (ipaddress.ip_network("2001:db8::/64"),)
    for _ in range(3):  # added, then DAD done, then refreshed by a router advertisement
        book._message(RTM_NEWADDR, _body("2001:db8::5", 2))
    assert book.address_in(net) == "2001:db8::5"
    book._message(RTM_DELADDR, _body("2001:db8::5", 2))
    assert book.address_in(net) is None and book.packed == set() and book.addresses == {}


def test_an_address_on_two_interfaces_stays_until_both_lose_it():
    book = _book()
    net = (ipaddress.ip_network("192.0.2.0/24"),)
    for index in (2, 3, 3):
        book._message(RTM_NEWADDR, _body("192.0.2.7", index))
    book._message(RTM_DELADDR, _body("192.0.2.7", 3))
    assert book.address_in(net) == "192.0.2.7"
    book._message(RTM_DELADDR, _body("192.0.2.7", 2))
    assert book.address_in(net) is None and book.packed == set()
    book._message(RTM_DELADDR, _body("192.0.2.7", 2))  # a late duplicate: harmless
    assert book.addresses == {}
