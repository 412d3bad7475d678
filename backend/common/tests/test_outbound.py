"""The SSRF-safe outbound client: the address rules, the resolver step, and real calls to
servers on loopback. Addresses outside loopback appear only in unit tests of the checks,
where no connection is attempted (and the autouse guard in conftest would fail the test if
one were)."""

import gzip
import ipaddress
import logging
import re
import socket
import threading
import time
import tracemalloc
import zlib

import pytest

from backend.common import outbound

from .httpserver import Answer, HTTPServer

ALLOW_LOOPBACK = ["127.0.0.0/8"]


@pytest.fixture(autouse=True)
def _no_allow_list(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    settings.OUTBOUND_MAX_BODY = 64 * 1024


@pytest.fixture
def server():
    with HTTPServer() as running:
        yield running


def ip(text):
    return ipaddress.ip_address(text)


# --- the address check ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local"),  # Python counts it as global
        ("feff::1", "site-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "non-public"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:7f00:1::1", "loopback"),  # 6to4 wrapping 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address, kind):
    assert kind in outbound.refusal(ip(address))
    with pytest.raises(outbound.OutboundRefused, match="OUTBOUND_ALLOWED_NETWORKS"):
        outbound.check_address(ip(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert outbound.refusal(ip(address)) is None
    assert outbound.check_address(ip(address)) == ip(address)


def test_the_allow_list_lets_its_networks_through_but_never_unspecified_or_multicast(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8", "10.0.0.0/8", "0.0.0.0/0"]
    assert outbound.check_address(ip("127.0.0.1")) == ip("127.0.0.1")
    assert outbound.check_address(ip("10.9.9.9")) == ip("10.9.9.9")
    # An IPv4-mapped address is checked, and connected to, as the IPv4 it holds.
    assert outbound.check_address(ip("::ffff:127.0.0.1")) == ip("127.0.0.1")
    for never in ("0.0.0.0", "224.0.0.1"):
        with pytest.raises(outbound.OutboundRefused):
            outbound.check_address(ip(never))
    assert "loopback" in outbound.refusal(ip("::1"))  # not in any allowed network


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[::1]", "::1"),
        ("%31%32%37.0.0.1", "127.0.0.1"),
        ("[fe80::1%25eth0]", "fe80::1"),
        ("[::ffff:169.254.169.254%25lo]", "::ffff:a9fe:a9fe"),
        ("example.com", None),
        ("localhost", None),
    ],
)
def test_literal_addresses_are_read_in_every_form_without_a_lookup(host, expected, monkeypatch):
    monkeypatch.setattr(outbound, "getaddrinfo", _no_lookup)
    found = outbound.literal_address(host)
    assert (str(found) if found else None) == expected


def _no_lookup(*args):
    raise AssertionError("no name lookup expected")


# --- the resolver step ----------------------------------------------------------------------


def _resolving_to(*addresses):
    def getaddrinfo(host, port):
        family = {4: socket.AF_INET, 6: socket.AF_INET6}
        return [(family[ip(a).version], socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    return getaddrinfo


def test_a_name_is_refused_when_any_of_its_addresses_is(monkeypatch):
    """The refusal names the kind of address, not the address: a user could map the
    internal network's names to their addresses through the errors of tasks."""
    monkeypatch.setattr(outbound, "getaddrinfo", _resolving_to("93.184.215.14", "10.0.0.5"))
    with pytest.raises(outbound.OutboundRefused) as refused:
        outbound.resolve("rebind.example", 80)
    assert str(refused.value) == (
        "refused: rebind.example resolves to a private address (not in OUTBOUND_ALLOWED_NETWORKS)"
    )


@pytest.mark.parametrize("address", ["169.254.169.254", "fe80::1", "224.0.0.1", "240.0.0.1"])
def test_a_name_resolving_to_a_refused_address_is_refused(monkeypatch, address):
    monkeypatch.setattr(outbound, "getaddrinfo", _resolving_to(address))
    with pytest.raises(outbound.OutboundRefused):
        outbound.resolve("metadata.example", 80)


def test_a_public_name_resolves_to_its_checked_addresses(monkeypatch):
    monkeypatch.setattr(
        outbound, "getaddrinfo", _resolving_to("93.184.215.14", "93.184.215.14", "2606::1")
    )
    assert outbound.resolve("example.com", 443) == [ip("93.184.215.14"), ip("2606::1")]


def test_a_name_that_does_not_resolve_is_a_passing_error(monkeypatch):
    def fail(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(outbound, "getaddrinfo", fail)
    with pytest.raises(outbound.OutboundError, match="could not resolve") as caught:
        outbound.resolve("nowhere.invalid", 80)
    assert not isinstance(caught.value, outbound.OutboundRefused)


def test_a_lookup_that_outlasts_the_calls_timeout_ends_the_call_at_its_timeout(
    monkeypatch, settings
):
    """The timeout bounds the whole call, the name's lookup too: the system resolver takes
    no timeout, and a slow DNS server held a call of 1 s for as long as it took."""
    answered = threading.Event()

    def slow(host, port):
        answered.wait(10)  # a resolver that takes its time (ended by the test)
        return _resolving_to("127.0.0.1")(host, port)  # nothing is connected to in time

    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]  # loopback at most, whatever happens

    monkeypatch.setattr(outbound, "getaddrinfo", slow)
    started = time.monotonic()
    try:
        with pytest.raises(outbound.OutboundUnavailable, match="resolver"):
            outbound.request("GET", "http://slow-dns.example/", timeout=1)
        waited = time.monotonic() - started
    finally:
        answered.set()
    assert waited < 5, waited  # the resolver would have held it 10 s


# --- validation without lookups (create time) -----------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://%31%32%37.0.0.1/",
        "http://[fe80::1%25eth0]/",
        "http://[::ffff:169.254.169.254%25lo]/",
        "http://%6c%6f%63alhost/",
        "http://%65xample.com/",
        "http://0.0.0.0/",
        "http://localhost:8000/",
        "http://api.localhost/",
        "http:///nohost",
        "not a url",
    ],
)
def test_validate_url_refuses_schemes_and_literal_addresses(url, monkeypatch):
    monkeypatch.setattr(outbound, "getaddrinfo", _no_lookup)
    with pytest.raises(outbound.OutboundRefused):
        outbound.validate_url(url)


@pytest.mark.parametrize("host", ["localhost", "api.localhost"])
def test_a_refused_localhost_is_named_as_written(host, monkeypatch):
    """The refusal named 127.0.0.1, an address the user never wrote."""
    monkeypatch.setattr(outbound, "getaddrinfo", _no_lookup)
    with pytest.raises(outbound.OutboundRefused) as refused:
        outbound.validate_url(f"http://{host}:8000/")
    assert str(refused.value) == (
        f"refused: {host} resolves to a loopback address (not in OUTBOUND_ALLOWED_NETWORKS)"
    )


def test_validate_url_accepts_a_name_without_looking_it_up(monkeypatch):
    monkeypatch.setattr(outbound, "getaddrinfo", _no_lookup)
    outbound.validate_url("https://hooks.example.com/in?x=1")


# --- real calls on loopback ---------------------------------------------------------------------


def test_without_the_allow_list_no_loopback_form_is_ever_connected(server, monkeypatch):
    monkeypatch.setattr(outbound, "getaddrinfo", _resolving_to("127.0.0.1"))
    port = server.port
    for url in [
        f"http://127.0.0.1:{port}/",
        f"http://localhost:{port}/",
        f"http://[::1]:{port}/",
        f"http://0.0.0.0:{port}/",
        f"http://2130706433:{port}/",
        f"http://0x7f.1:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",
        f"http://loopback-name.example:{port}/",  # a name resolving to 127.0.0.1
    ]:
        with pytest.raises(outbound.OutboundRefused):
            outbound.request("GET", url, timeout=2)
    assert server.connections == 0


def test_a_name_resolving_to_loopback_through_the_system_resolver_is_refused(server):
    with pytest.raises(outbound.OutboundRefused):
        outbound.request("GET", f"http://localhost:{server.port}/", timeout=2)
    assert server.connections == 0


def test_allowed_call_returns_status_headers_and_body(server, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    server.answers = [Answer(201, b'{"ok": true}', {"X-Thing": "1"})]
    response = outbound.request(
        "POST", server.url("/in?a=1"), json={"n": 1}, headers={"X-Api-Key": "k"}, timeout=5
    )
    assert response.status_code == 201
    assert response.headers["x-thing"] == "1"
    assert response.body == b'{"ok": true}' and not response.truncated
    [received] = server.requests
    assert (received.method, received.path, received.body) == ("POST", "/in?a=1", b'{"n":1}')
    assert received.headers["x-api-key"] == "k"
    assert received.headers["content-type"] == "application/json"


def _recording_lookups(monkeypatch, *addresses) -> list[str]:
    """Names resolve to ``addresses``; the list returned collects each name looked up."""
    looked_up: list[str] = []

    def getaddrinfo(host, port):
        looked_up.append(host)
        return _resolving_to(*addresses)(host, port)

    monkeypatch.setattr(outbound, "getaddrinfo", getaddrinfo)
    return looked_up


def test_the_connection_goes_to_the_checked_address_with_the_original_host(
    server, settings, monkeypatch
):
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    looked_up = _recording_lookups(monkeypatch, "127.0.0.1")
    response = outbound.request("GET", f"http://api.example.test:{server.port}/x", timeout=5)
    assert response.status_code == 200
    assert looked_up == ["api.example.test"]  # resolved once
    assert server.requests[0].headers["host"] == f"api.example.test:{server.port}"


def test_a_large_body_is_truncated(server, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    server.answers = [Answer(200, b"x" * 1_000_000)]
    response = outbound.request("GET", server.url(), timeout=10)
    assert response.truncated and response.body == b"x" * 64 * 1024


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _deflate(data: bytes, wbits: int = zlib.MAX_WBITS) -> bytes:
    packer = zlib.compressobj(wbits=wbits)
    return packer.compress(data) + packer.flush()


TEXT = b"the answer, " * 1000


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", _gzip(TEXT)),
        ("x-gzip", _gzip(TEXT)),
        ("deflate", _deflate(TEXT)),
        ("deflate", _deflate(TEXT, -zlib.MAX_WBITS)),  # raw deflate, as some servers send
        ("gzip, gzip", _gzip(_gzip(TEXT))),
        ("deflate, GZIP", _gzip(_deflate(TEXT))),
        ("identity", TEXT),
    ],
    ids=["gzip", "x-gzip", "deflate", "raw-deflate", "gzip-gzip", "deflate-gzip", "identity"],
)
def test_a_compressed_answer_is_read_inflated(server, settings, coding, body):
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    server.answers = [Answer(200, body, {"Content-Encoding": coding})]
    response = outbound.request("GET", server.url(), timeout=5)
    assert response.body == TEXT and not response.truncated


def test_a_compressed_answer_is_truncated_after_inflating(server, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    server.answers = [Answer(200, _gzip(TEXT), {"Content-Encoding": "gzip"})]
    response = outbound.request("GET", server.url(), timeout=5, max_body=100)
    assert response.body == TEXT[:100] and response.truncated


def test_a_corrupt_compressed_answer_is_an_unavailable_target(server, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    server.answers = [Answer(200, b"not gzip at all", {"Content-Encoding": "gzip"})]
    with pytest.raises(outbound.OutboundUnavailable, match="DecodingError"):
        outbound.request("GET", server.url(), timeout=5)


def test_an_answer_in_a_coding_not_asked_for_is_kept_as_sent(server, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    server.answers = [Answer(200, b"\x8b\x01br-bytes", {"Content-Encoding": "br"})]
    response = outbound.request("GET", server.url(), timeout=5)
    assert response.body == b"\x8b\x01br-bytes"
    assert response.headers["content-encoding"] == "br"


def test_nested_gzip_is_never_inflated_past_the_cap(server, settings):
    """httpx inflated each chunk received whole: 661 bytes of gzip inside gzip took a
    worker hundreds of MB to keep a 1 KB webhook answer (any user can aim a webhook or an
    api_integration at such a server). Measured with tracemalloc: what the call allocated
    at its peak, here from 2 KB of gzip holding 64 MiB of zeros."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    packer = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
    zeros = b"\0" * (1 << 20)
    inner = b"".join(packer.compress(zeros) for _ in range(64)) + packer.flush()
    bomb = _gzip(inner)
    assert len(bomb) < 4096
    server.answers = [Answer(200, bomb, {"Content-Encoding": "gzip, gzip"})]

    tracemalloc.start()
    try:
        response = outbound.request("GET", server.url(), timeout=10, max_body=1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.body == b"\0" * 1024 and response.truncated
    assert peak < 8 << 20, f"{peak / (1 << 20):.0f} MiB allocated to keep 1 KB"


def test_no_call_logs_its_url_with_credentials(server, settings, caplog):
    """httpx logged every call at INFO with its URL whole, so a worker's log (run at INFO)
    held the password and token given in an api_integration or webhook URL."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    caplog.set_level(logging.DEBUG)  # the root logger; the levels set in LOGGING hold
    url = server.url("/in?api_key=K123").replace("http://", "http://user:TopSecretPw@")
    assert outbound.request("GET", url, timeout=5).status_code == 200
    assert server.requests[0].headers["authorization"].startswith("Basic ")
    assert not [r for r in caplog.records if "TopSecretPw" in r.getMessage()]
    assert not [r for r in caplog.records if "K123" in r.getMessage()]


def test_redirects_are_not_followed_unless_asked(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    with HTTPServer() as target, HTTPServer([Answer(302, b"", {})]) as hop:
        hop.answers = [Answer(302, b"", {"Location": target.url("/landed")})]
        assert outbound.request("GET", hop.url(), timeout=5).status_code == 302
        assert target.connections == 0
        response = outbound.request("GET", hop.url(), timeout=5, follow_redirects=True)
        assert response.status_code == 200 and response.url.endswith("/landed")
        assert [r.path for r in target.requests] == ["/landed"]


def test_a_redirect_to_a_refused_host_is_refused_before_connecting(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    with HTTPServer(host="127.0.0.2") as refused, HTTPServer() as hop:
        hop.answers = [Answer(302, b"", {"Location": refused.url("/")})]
        with pytest.raises(outbound.OutboundRefused, match=re.escape("127.0.0.2")):
            outbound.request("GET", hop.url(), timeout=5, follow_redirects=True)
        assert refused.connections == 0 and len(hop.requests) == 1


@pytest.mark.parametrize(
    "location, reason",
    [
        # An address with a name's closing dot: looked up as a name, and retried.
        ("http://10.0.0.1.:{port}/", "10.0.0.1 is a private address"),
        ("http://0.0.0.0.:{port}/", "0.0.0.0 is an unspecified address"),
        # A host a URL given at create may not have.
        ("http://a b:{port}/", "a host name may hold letters"),
        ("http://%6c%6f%63alhost:{port}/", "a host name may hold letters"),
        # No URL at all (httpx reads the Location itself): "could not reach", retried.
        ("http://000.000.000.000:{port}/", "redirected to no valid URL"),
        ("http://[::1]x:{port}/", "redirected to no valid URL"),
        # Escaped as an IDNAError (a failure taken for a fault of the service).
        ("http://xn--:{port}/", "not a valid host name"),
    ],
)
def test_a_redirect_to_what_a_create_refuses_is_refused_not_retried(settings, location, reason):
    """Each was an OutboundUnavailable ("could not resolve", "could not reach"), so an
    ``api_integration`` task tried the call four times more; a URL given at create is refused
    at once for the same."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    with HTTPServer() as hop:
        hop.answers = [Answer(302, b"", {"Location": location.format(port=hop.port)})]
        with pytest.raises(outbound.OutboundRefused, match=re.escape(reason)):
            outbound.request("GET", hop.url(), timeout=5, follow_redirects=True)
        assert len(hop.requests) == 1


@pytest.mark.parametrize(
    "location", ["/elsewhere", "http://000.000.000.000/", "http://xn--/", "http://[::1]x:1/"]
)
def test_a_redirect_not_followed_is_the_answer_whatever_its_location(settings, location):
    """httpx read the Location of every 3xx, followed or not: one that is no URL made the
    call fail (retried, or an IDNAError) where the 302 itself is the answer."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    with HTTPServer() as hop:
        hop.answers = [Answer(302, b"moved", {"Location": location})]
        response = outbound.request("GET", hop.url(), timeout=5)
    assert response.status_code == 302
    assert response.headers["location"] == location and response.body == b"moved"


def test_a_first_url_is_checked_as_at_create(settings):
    """A URL kept from before a rule (a host written percent-encoded) was looked up, failed,
    and the call was retried as if the network were down."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    with pytest.raises(outbound.OutboundRefused, match="a host name may hold letters"):
        outbound.request("GET", "http://%6c%6f%63alhost:1/", timeout=5)


def test_an_address_written_with_a_closing_dot_is_called(settings):
    """``127.0.0.1.`` is the address, as the check at create reads it; looked up as a name,
    it failed every time ("could not resolve") and was retried."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    with HTTPServer() as server:
        url = server.url("/dot").replace("127.0.0.1", "127.0.0.1.")
        assert outbound.request("GET", url, timeout=5).status_code == 200
        assert [r.path for r in server.requests] == ["/dot"]


def test_at_most_five_redirects(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    with HTTPServer() as loop:
        loop.answers = [Answer(307, b"", {"Location": loop.url("/again")})]
        with pytest.raises(outbound.OutboundRefused, match="more than 5 redirects"):
            outbound.request("GET", loop.url(), timeout=5, follow_redirects=True)
        assert len(loop.requests) == 6


def test_a_hanging_server_times_out(settings, blackhole):
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    with pytest.raises(outbound.OutboundError, match=re.escape("within 0.5 s")):
        outbound.request("GET", f"http://127.0.0.1:{blackhole.port}/", timeout=0.5)


def test_a_closed_port_is_a_connection_error(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    with HTTPServer() as gone:
        url = gone.url()
    with pytest.raises(outbound.OutboundError, match=re.escape("could not reach 127.0.0.1")):
        outbound.request("GET", url, timeout=2)


class _Dripping:
    """A server that answers one header line every ``every`` seconds, ``lines`` of them,
    then the end of the head; it records how many lines it sent before the client left."""

    def __init__(self, lines: int = 50, every: float = 0.2):
        self.lines, self.every, self.sent = lines, every, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                for _ in range(self.lines):
                    time.sleep(self.every)
                    conn.sendall(b"X-Drip: 1\r\n")
                    self.sent += 1
                conn.sendall(b"Content-Length: 2\r\n\r\nok")
            except OSError:
                pass  # the client hung up: what the test expects

    def close(self):
        self.listener.close()
        self.thread.join(timeout=15)


def test_a_server_dripping_its_answer_cannot_stretch_the_timeout(settings):
    """Each read waited up to the whole timeout, so a head sent a line every 0.2 s kept a
    call with a 1 s timeout going for the 10 s the server took (16 s in a review, until the
    task's time limit failed it, never retried). Now every read waits only for what is
    left, and the call ends as a passing error soon after its second."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    drip = _Dripping()
    try:
        with pytest.raises(outbound.OutboundUnavailable, match=re.escape("within 1 s")):
            outbound.request("GET", f"http://127.0.0.1:{drip.port}/", timeout=1)
    finally:
        drip.close()
    assert drip.sent < drip.lines  # it was left before the end of its head


@pytest.mark.parametrize("code", [302, 307])
def test_credentials_go_to_the_first_origin_only(settings, code):
    """A redirect to another origin (here another port) drops Authorization, Cookie and
    Proxy-Authorization, as curl, requests and browsers do; other headers follow, and a
    redirect within the origin keeps them all."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    secrets = {"Authorization": "Bearer SECRET", "Cookie": "sid=SECRET"}
    with HTTPServer() as elsewhere, HTTPServer() as hop:
        hop.answers = lambda request: (
            Answer(code, b"", {"Location": hop.url("/same")})
            if request.path == "/"
            else Answer(code, b"", {"Location": elsewhere.url("/other")})
        )
        headers = {**secrets, "Proxy-Authorization": "Basic c2VjcmV0", "X-Trace": "t1"}
        response = outbound.request(
            "GET", hop.url("/"), headers=headers, timeout=5, follow_redirects=True
        )
        assert response.status_code == 200
        first, same = hop.requests
        [other] = elsewhere.requests
    assert first.headers["authorization"] == same.headers["authorization"] == "Bearer SECRET"
    assert same.headers["cookie"] == "sid=SECRET" and same.path == "/same"
    assert other.path == "/other" and other.headers["x-trace"] == "t1"
    assert not {"authorization", "cookie", "proxy-authorization"} & set(other.headers)


def test_a_cookie_one_hop_sets_goes_to_no_other(settings):
    """httpx's cookie jar kept the Set-Cookie of a redirect and sent it on to the next hop,
    another port here, or another host on the same address (the jar matched the address
    connected to): a session of one site handed to another."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    with HTTPServer() as elsewhere, HTTPServer() as hop:
        hop.answers = lambda request: Answer(
            302,
            b"",
            {"Location": elsewhere.url("/other"), "Set-Cookie": "session=SECRET; Path=/"},
        )
        response = outbound.request("GET", hop.url("/"), timeout=5, follow_redirects=True)
        assert response.status_code == 200
        [other] = elsewhere.requests
    assert "cookie" not in other.headers


def test_a_host_is_looked_up_and_trusted_by_the_name_it_is_sent_as(server, settings, monkeypatch):
    """The Unicode name was passed to the resolver and to TLS, which encode it with IDNA
    2003: "faß.de" was looked up (and its certificate checked) as "fass.de", another
    domain, while Host said "xn--fa-hia.de" (IDNA 2008)."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    looked_up = _recording_lookups(monkeypatch, "127.0.0.1")
    response = outbound.request("GET", f"http://faß.de:{server.port}/", timeout=5)
    assert response.status_code == 200
    assert looked_up == ["xn--fa-hia.de"]
    assert server.requests[0].headers["host"] == f"xn--fa-hia.de:{server.port}"


def test_an_answer_of_too_many_content_codings_is_refused(server, settings):
    """Each coding listed is a nested layer: 2,000 of them exhausted the stack
    (RecursionError, a traceback in the worker); 19,000 took 75 MB before reading a byte."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ALLOW_LOOPBACK
    body = b"hello"
    for _ in range(outbound.MAX_CODINGS):
        body = _gzip(body)
    server.answers = [
        Answer(200, body, {"Content-Encoding": ", ".join(["gzip"] * outbound.MAX_CODINGS)}),
        Answer(200, _gzip(b"x"), {"Content-Encoding": ", ".join(["gzip"] * 2000)}),
    ]
    assert outbound.request("GET", server.url(), timeout=5).body == b"hello"
    with pytest.raises(outbound.OutboundRefused, match="more than 8 content codings"):
        outbound.request("GET", server.url(), timeout=5)
