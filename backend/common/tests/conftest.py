import ipaddress
import socket

import pytest

_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _check(address) -> None:
    if isinstance(address, tuple) and address:
        host = str(address[0]).split("%", 1)[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise AssertionError(f"a test connected to a name, not an address: {host}") from None
        if not ip.is_loopback:
            raise AssertionError(f"a test tried to connect outside loopback: {host}")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """Every connection these tests make goes to 127.0.0.0/8 or ::1; any other fails the
    test before a packet leaves (this machine's network rules)."""

    def connect(self, address):
        _check(address)
        return _connect(self, address)

    def connect_ex(self, address):
        _check(address)
        return _connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
