"""The one way this service calls other servers (webhooks, ``api_integration``): SPEC §7.

- ``http`` and ``https`` only;
- the host is resolved once and every address it resolves to is checked: loopback, private,
  link-local, multicast, reserved, unspecified and other non-global addresses are refused
  (an IPv4 address hidden in an IPv6 one — mapped, 6to4, Teredo — is checked as IPv4),
  unless it lies in ``OUTBOUND_ALLOWED_NETWORKS``; unspecified and multicast never pass;
- the connection goes to the checked address (no second lookup, so no DNS rebinding), with
  the original ``Host`` header and TLS server name, and no proxy from the environment;
- redirects are not followed unless asked, and then each hop is checked like the first
  (at most ``MAX_REDIRECTS``); credentials (``Authorization``, ``Cookie``) go to the first
  origin only, as browsers, curl and requests do: a hop to another scheme, host or port
  drops them;
- a timeout bounds the whole exchange: connecting, sending, the answer's head and body,
  every hop (each read waits at most for what is left of it, so a server that drips its
  answer a byte at a time cannot stretch it); the body is read up to ``OUTBOUND_MAX_BODY``
  bytes and the rest dropped (``truncated``), and a compressed answer (gzip, deflate, in
  up to ``MAX_CODINGS`` layers) is inflated a bounded step at a time, never further than that: a
  few hundred bytes of nested gzip can hold gigabytes.
"""

from __future__ import annotations

import http.cookiejar
import ipaddress
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import httpcore
import httpx
from django.conf import settings

MAX_REDIRECTS = 5
MAX_TIMEOUT = 30.0
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
# Sent to the first origin only (see the module's rules).
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundError(Exception):
    """The call was refused or could not be made."""


class OutboundRefused(OutboundError):
    """The target is not allowed (scheme, address, too many redirects): never retried."""


class OutboundUnavailable(OutboundError):
    """The call could not be made or did not finish (connection, timeout, name lookup):
    worth trying again later."""


@dataclass(frozen=True)
class Response:
    status_code: int
    headers: dict[str, str]
    body: bytes
    truncated: bool
    url: str


# --- address rules ------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in spec)


def allowed_networks():
    return _networks(tuple(settings.OUTBOUND_ALLOWED_NETWORKS))


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
    return None


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` may not be called, or None when it may."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        if address.ipv4_mapped is None:  # 6to4 / Teredo: both halves must pass
            own = _plain_refusal(address)
            if own is not None:
                return own
        return refusal(embedded)
    return _plain_refusal(address)


def _plain_refusal(address: IPAddress) -> str | None:
    if address.is_unspecified:
        return f"{address} is an unspecified address"
    if address.is_multicast:
        return f"{address} is a multicast address"
    if any(address in network for network in allowed_networks()):
        return None
    for label, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        # fec0::/10, deprecated (RFC 3879) but still routed inside some networks; Python
        # counts it as global.
        ("site-local", getattr(address, "is_site_local", False)),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-public", not address.is_global),
    ):
        if flag:
            return f"{address} is a {label} address"
    return None


def check_address(address: IPAddress, *, name: str = "") -> IPAddress:
    """The address to connect to (an IPv4-mapped one as plain IPv4), or OutboundRefused.

    ``name``: the host name ``address`` was resolved from. The refusal then names the name
    and the kind of address, not the address: a user could otherwise map the internal
    network's names to its addresses through the errors of tasks."""
    reason = refusal(address)
    if reason is not None:
        if name:
            reason = f"{name} resolves to {reason.partition(' is ')[2]}"
        raise OutboundRefused(f"refused: {reason} (not in OUTBOUND_ALLOWED_NETWORKS)")
    return address.ipv4_mapped if getattr(address, "ipv4_mapped", None) else address


def literal_address(host: str) -> IPAddress | None:
    """``host`` read as a numeric address in any form the system accepts (``127.1``,
    ``2130706433``, ``0x7f.1``, ``::ffff:127.0.0.1``), without any lookup; None for a name.
    Percent-encoding is decoded first (``%31%32%37.0.0.1``), and an IPv6 zone
    (``[fe80::1%25eth0]``) is dropped: the address alone decides."""
    host = unquote(host.strip("[]")).split("%", 1)[0]
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(infos[0][4][0].split("%", 1)[0])


# --- resolving ----------------------------------------------------------------------------


def getaddrinfo(host: str, port: int) -> list[tuple]:
    """The system resolver (a seam for tests of the resolver step)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)


def resolve(host: str, port: int, deadline: float | None = None) -> list[IPAddress]:
    """Resolve ``host`` once; every address must pass, else the whole target is refused
    (a name with one public and one private address could be steered to the private one).
    With ``deadline`` (``time.monotonic()``), a lookup still going then is given up."""
    host = host.strip("[]")
    # "10.0.0.1." is the address as much as "10.0.0.1" (the check at create reads it so);
    # looked up as a name it failed, and the call was tried again as if the network were down.
    literal = literal_address(host.removesuffix("."))
    if literal is not None:
        return [check_address(literal)]
    try:
        infos = _looked_up(host, port, deadline)
    except (socket.gaierror, UnicodeError) as exc:
        raise OutboundUnavailable(f"could not resolve {host!r}") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        address = check_address(ipaddress.ip_address(info[4][0].split("%", 1)[0]), name=host)
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OutboundUnavailable(f"{host!r} resolved to no address")
    return addresses


def _looked_up(host: str, port: int, deadline: float | None) -> list[tuple]:
    """``getaddrinfo``, waited for until ``deadline`` at most: the system resolver takes
    no timeout (a slow DNS server held a call of ``timeout`` 1 s for as long as it took,
    up to about 30 s a lookup). A lookup given up goes on in its thread until the resolver
    ends it; its answer is dropped."""
    if deadline is None:
        return getaddrinfo(host, port)
    outcome: dict = {}

    def look_up() -> None:
        try:
            outcome["infos"] = getaddrinfo(host, port)
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    lookup = threading.Thread(target=look_up, name=f"lookup {host}", daemon=True)
    lookup.start()
    lookup.join(max(0.0, deadline - time.monotonic()))
    if lookup.is_alive():
        raise OutboundUnavailable(f"no answer from the resolver for {host!r} in time")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["infos"]


# --- URLs ---------------------------------------------------------------------------------


def parse_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise OutboundRefused(f"not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise OutboundRefused("only http and https URLs are allowed")
    try:
        parsed.host  # noqa: B018 - decoding an "xn--" name may fail (UnicodeError)
    except ValueError as exc:
        raise OutboundRefused(f"not a valid host name: {exc}") from None
    if not parsed.host:
        raise OutboundRefused("the URL names no host")
    if not _resolvable_name(parsed.raw_host):
        raise OutboundRefused(
            "not a valid host name: each dot-separated label holds 1 to 63 characters, 253 in all"
        )
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise OutboundRefused("the port must be between 1 and 65535")
    return parsed


def _resolvable_name(raw_host: bytes) -> bool:
    """A name a resolver can look up (an address literal passes): no empty label (``a..b``)
    and none over 63 characters, 253 in all, as the name is sent (IDNA's ASCII form).
    One that breaks these failed every lookup, retried as if the network were down."""
    if b":" in raw_host:  # an IPv6 literal
        return True
    name = raw_host.removesuffix(b".")
    return len(name) <= 253 and all(1 <= len(label) <= 63 for label in name.split(b"."))


def validate_url(url: str) -> httpx.URL:
    """Checks that need no lookup, for input validation and every hop of a call: scheme,
    host, and a literal address (or ``localhost``) that would be refused. Raises
    OutboundRefused; returns the parsed URL."""
    parsed = parse_url(url)
    host = parsed.host.lower().rstrip(".")
    if "%" in host and literal_address(host) is None:
        # A name written percent-encoded (``%6c%6f%63alhost``) is no name a resolver reads;
        # a numeric one is decoded and checked below.
        raise OutboundRefused(
            "a host name may hold letters, digits, hyphens and dots only (no space, nothing "
            "percent-encoded)"
        )
    if host == "localhost" or host.endswith(".localhost"):  # always loopback (RFC 6761)
        check_address(ipaddress.ip_address("127.0.0.1"), name=host)
    elif (literal := literal_address(host)) is not None:
        check_address(literal)
    return parsed


# --- calling ------------------------------------------------------------------------------


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write waits at most until the call's deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float):
        self._stream = stream
        self._deadline = deadline

    def _left(self, timeout: float | None, error: type[Exception]) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise error("the call's timeout is spent")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> _DeadlineStream:
        timeout = self._left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, timeout), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.SyncBackend):
    def __init__(self, deadline: float):
        self._deadline = deadline

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ConnectTimeout("the call's timeout is spent")
        timeout = left if timeout is None else min(timeout, left)
        stream = super().connect_tcp(host, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)


class _OneHopClient(httpx.Client):
    """A client that sends one request and hands back its answer: ``request`` follows
    redirects itself, each hop checked. httpx's own handling read every 3xx's Location
    even when not following it, and one that is no URL ("http://000.000.000.000/",
    "http://xn--/") failed the call: retried as if the network were down, or escaping as an
    ``IDNAError``; not following, the 3xx is the answer."""

    def _send_handling_redirects(self, request, follow_redirects, history):
        response = self._send_single_request(request)
        response.history = list(history)
        return response


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool whose connections keep the deadline
    (httpcore's pool takes a network backend; httpx's transport does not pass one on)."""

    def __init__(self, deadline: float):
        super().__init__(verify=True, trust_env=False, retries=0)
        self._pool.close()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=True, trust_env=False),
            network_backend=_DeadlineBackend(deadline),
        )


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host, url.port or {"http": 80, "https": 443}[url.scheme]


def _connect_url(url: httpx.URL, address: IPAddress) -> httpx.URL:
    return url.copy_with(host=str(address))


def _host_header(url: httpx.URL) -> str:
    default = {"http": 80, "https": 443}[url.scheme]
    host = url.raw_host.decode("ascii")
    if ":" in host:
        host = f"[{host}]"
    return host if url.port in (None, default) else f"{host}:{url.port}"


def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    json: Any = None,
    content: bytes | None = None,
    timeout: float = 10.0,
    follow_redirects: bool = False,
    max_body: int | None = None,
) -> Response:
    """Make one call under the rules above. Raises OutboundRefused for a refused target,
    OutboundError when the call could not be made; any HTTP status is a Response. With
    ``max_body`` 0 the answer's body is not read: its status and headers are the answer."""
    timeout = min(float(timeout), MAX_TIMEOUT)
    max_body = settings.OUTBOUND_MAX_BODY if max_body is None else max_body
    deadline = time.monotonic() + timeout
    method = method.upper()
    target = validate_url(url)  # as at create (a row kept from before a rule is checked too)
    body = content
    if json is not None:
        body = _json_bytes(json)
        headers = dict(headers or {})
        if not any(key.lower() == "content-type" for key in headers):
            headers["content-type"] = "application/json"
    transport = _DeadlineTransport(deadline)
    # No cookie jar: httpx's kept a Set-Cookie of one hop and sent it on to the next, to
    # another host (the jar matched the address connected to, which names can share).
    no_cookies = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    with _OneHopClient(
        trust_env=False, follow_redirects=False, transport=transport, cookies=no_cookies
    ) as client:
        for _hop in range(MAX_REDIRECTS + 1):
            port = target.port or {"http": 80, "https": 443}[target.scheme]
            # The name as sent in Host (IDNA 2008, "xn--"): the Unicode one is encoded by
            # the resolver and ssl with IDNA 2003, which reads some names as others
            # ("faß.de" as "fass.de"): another domain would be checked, called and trusted.
            name = target.raw_host.decode("ascii")
            address = resolve(name, port, deadline)[0]
            extensions = {"sni_hostname": name} if target.scheme == "https" else {}
            remaining = max(0.1, deadline - time.monotonic())
            built = client.build_request(
                method,
                _connect_url(target, address),
                headers={**(headers or {}), "host": _host_header(target)},
                content=body,
                extensions=extensions,
                timeout=httpx.Timeout(remaining),
            )
            try:
                response = client.send(built, stream=True)
            except httpx.TimeoutException as exc:
                raise OutboundUnavailable(
                    f"no answer from {target.host} within {timeout:g} s"
                ) from exc
            except httpx.HTTPError as exc:
                raise OutboundUnavailable(
                    f"could not reach {target.host}: {type(exc).__name__}"
                ) from exc
            try:
                location = response.headers.get("location")
                if follow_redirects and response.status_code in REDIRECT_STATUSES and location:
                    try:
                        joined = str(target.join(location))
                    except (httpx.InvalidURL, ValueError) as exc:
                        # The server's answer, which another try does not change.
                        raise OutboundRefused(f"{target.host} redirected to no valid URL") from exc
                    # Each hop checked as a URL given at create is (a host written
                    # percent-encoded was looked up, failed, and was tried again).
                    previous, target = target, validate_url(joined)
                    if _origin(target) != _origin(previous):
                        headers = {
                            k: v
                            for k, v in (headers or {}).items()
                            if k.lower() not in CREDENTIAL_HEADERS
                        }
                    if response.status_code == 303 or (
                        response.status_code in (301, 302) and method == "POST"
                    ):
                        method, body = "GET", None
                        headers = {
                            k: v for k, v in (headers or {}).items() if k.lower() != "content-type"
                        }
                    continue
                data, truncated = b"", False
                if max_body:
                    data, truncated = _read_capped(response, max_body, deadline, target.host)
                return Response(
                    status_code=response.status_code,
                    headers=_headers(response),
                    body=data,
                    truncated=truncated,
                    url=str(target),
                )
            finally:
                response.close()
    raise OutboundRefused(f"more than {MAX_REDIRECTS} redirects")


def _headers(response: httpx.Response) -> dict[str, str]:
    merged: dict[str, str] = {}
    for key, value in response.headers.multi_items():
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _read_capped(response: httpx.Response, limit: int, deadline: float, host: str):
    chunks: list[bytes] = []
    size = 0
    try:
        read = _decoded(response)
        while chunk := read(min(INFLATE_STEP, limit + 1 - size)):
            if time.monotonic() > deadline:
                raise OutboundUnavailable(f"the answer from {host} took longer than the timeout")
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                return b"".join(chunks)[:limit], True
    except httpx.TimeoutException as exc:
        raise OutboundUnavailable(f"the answer from {host} stopped within the timeout") from exc
    except httpx.HTTPError as exc:
        raise OutboundUnavailable(
            f"reading the answer from {host} failed: {type(exc).__name__}"
        ) from exc
    return b"".join(chunks), False


# At most this much is inflated per call of a layer: what one layer holds at once.
INFLATE_STEP = 64 * 1024
# Content codings an answer may list (one is usual).
MAX_CODINGS = 8
_WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}

Read = Callable[[int], bytes]  # up to about ``size`` bytes more; b"" at the end


def _decoded(response: httpx.Response) -> Read:
    """The answer's body as sent (httpx's ``iter_raw``), with its content codings undone
    by ``_Inflater`` layers (the last coding listed is the outermost). httpx's own decoding
    inflates each chunk received whole before anything can stop it. A coding other than
    gzip and deflate (httpx asks for no other) leaves the body as sent."""
    chunks = response.iter_raw()

    def raw(_size: int) -> bytes:
        return next((chunk for chunk in chunks if chunk), b"")

    codings = [
        coding.strip().lower()
        for coding in response.headers.get_list("content-encoding", split_commas=True)
    ]
    codings = [coding for coding in codings if coding and coding != "identity"]
    if len(codings) > MAX_CODINGS:  # each a layer, nested: 2,000 exhausted the stack
        raise OutboundRefused(f"the answer has more than {MAX_CODINGS} content codings")
    if not all(coding in _WBITS for coding in codings):
        return raw
    read: Read = raw
    for coding in reversed(codings):
        read = _Inflater(coding, read).read
    return read


class _Inflater:
    """One gzip or deflate layer, undone at most ``size`` bytes per call. Bad data raises
    httpx's DecodingError, as httpx's own decoders do (deflate is tried with the zlib header
    first, then raw, as httpx does)."""

    def __init__(self, coding: str, source: Read):
        self._coding = coding
        self._source = source
        self._inflate = zlib.decompressobj(_WBITS[coding])
        self._started = False

    def read(self, size: int) -> bytes:
        while not self._inflate.eof:
            data = self._inflate.unconsumed_tail or self._source(INFLATE_STEP)
            if not data:
                return self._undo(self._flush)
            out = self._undo(self._decompress, data, size)
            self._started = True
            if out:
                return out
        return b""  # anything after the end of the stream is ignored, as httpx does

    def _decompress(self, data: bytes, size: int) -> bytes:
        return self._inflate.decompress(data, size)

    def _flush(self) -> bytes:
        return self._inflate.flush()

    def _undo(self, step: Callable[..., bytes], *args) -> bytes:
        try:
            return step(*args)
        except zlib.error:
            if self._coding == "deflate" and not self._started:
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)  # deflate without header
                self._started = True
                return self._undo(step, *args)
            raise httpx.DecodingError(f"the answer's {self._coding} data is corrupt") from None


def _json_bytes(value: Any) -> bytes:
    import json

    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
