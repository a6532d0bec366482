"""CRLs fetched over HTTP from certificates' distribution points, as charon's revocation plugin
and curl fetcher do (revocation_fetcher.c, curl_fetcher.c).

The sans-IO engine never waits on the network: IKE_AUTH validates with the CRLs it has and names
the http:// distribution points it found no current CRL for (`Credentials.want`, drained after
each datagram). This fetcher gets them in the background. Meanwhile the IKE_AUTH request of an
otherwise acceptable peer is held unanswered (`crl_pending`): the peer retransmits it and it is
checked again once the fetch has ended; after a failed fetch remote.revocation decides (relaxed
accepts, ifuri and strict refuse, naming the URI and why). It also fetches, when credentials are
loaded, the distribution points our CA certificates and our own certificates name (usually the
very CRL peers' certificates point to), so most peers find the CRL there already.

Bounded: MAX_CRL_BYTES per body (charon sets no limit), FETCH_TIMEOUT for the whole transfer
(charon's default), MAX_CONCURRENT transfers, MAX_QUEUED waiting, MAX_CACHED URIs and
MAX_CACHE_BYTES in all. A URI whose fetch failed is not tried again for FAILURE_HOLD (charon
degrades it for 3 timeouts). A cached CRL is refreshed once its nextUpdate has passed (hourly when
it has none), or after FAILURE_HOLD when IKE_AUTH found no good, current CRL in it (it does not
verify, is of another issuer: a nextUpdate it states is not trusted for that). What is fetched is
only parsed here: validate_chain checks its signature, its issuer's cRLSign and its dates at each
use, as for [engine] crls. Only http:// (no LDAP, no redirects, no OCSP).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

from engine.pki.errors import PkiError
from engine.pki.validate import crl_uris, load_crls

log = logging.getLogger("engine.runtime.crlfetch")

MAX_CRL_BYTES = 4 * 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024
FETCH_TIMEOUT = 10.0
MAX_CONCURRENT = 4
MAX_QUEUED = 32
MAX_CACHED = 64
MAX_CACHE_BYTES = 32 * 1024 * 1024
MAX_FAILED = 256
MAX_CRLS_PER_URI = 4
FAILURE_HOLD = 3 * FETCH_TIMEOUT
NO_NEXT_UPDATE_REFRESH = 3600.0
REFRESH_EVERY = 60.0


class FetchError(Exception):
    """A CRL could not be fetched; the message says why, in plain words."""


@dataclass
class _Cached:
    crls: list
    size: int
    fetched: float
    refresh_at: float
    """Wall time (Unix) after which it is fetched again: the earliest nextUpdate of its CRLs."""

    @property
    def settled(self) -> float:
        """Until when a validation it did not help does not fetch it again."""
        return min(self.refresh_at, self.fetched + FAILURE_HOLD)


def _hhmm(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


async def http_get(uri: str, *, max_bytes: int = MAX_CRL_BYTES) -> bytes:
    """The body of an http:// URI answered 200 (HTTP/1.0: no chunked encoding), at most max_bytes.
    No time limit here: the caller wraps it (fetch_crl)."""
    if not (uri.isascii() and uri.isprintable()) or " " in uri:  # nothing may bend the request line
        raise FetchError("not a valid URI (a space, a control or a non-ASCII character)")
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # e.g. an unclosed [ of an IPv6 literal
        raise FetchError(f"not a valid URI ({exc})") from None
    if parts.scheme.lower() != "http" or not parts.hostname:
        raise FetchError("only http:// URIs are fetched")
    try:
        port = parts.port or 80
    except ValueError:
        raise FetchError("bad port") from None
    host = parts.hostname
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rsplit("@", 1)[-1]
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEADER_BYTES)
    except OSError as exc:
        raise FetchError(f"cannot connect: {exc.strerror or exc}") from None
    except UnicodeError:  # the IDNA codec: an empty or over-long label
        raise FetchError(f"cannot connect: {host!r} is not a valid host name") from None
    try:
        writer.write(f"GET {target} HTTP/1.0\r\nHost: {host_header}\r\nUser-Agent: ipsec-console\r\n"
                     "Accept: */*\r\nConnection: close\r\n\r\n".encode("ascii"))
        await writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise FetchError(f"the response headers exceed {MAX_HEADER_BYTES} bytes") from None
        except asyncio.IncompleteReadError:
            raise FetchError("the server closed the connection before answering") from None
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or not status[0].startswith("HTTP/"):
            raise FetchError("not an HTTP response")
        if status[1] != "200":
            raise FetchError(f"HTTP {' '.join(status[1:])}" + (" (redirects are not followed)"
                                                                if status[1].startswith("3") else ""))
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length" and value.isdigit():
                length = int(value)
                if length > max_bytes:
                    raise FetchError(f"the CRL has {length} bytes, more than the {max_bytes} we take")
            elif name in ("transfer-encoding", "content-encoding") and value.lower() not in ("", "identity"):
                # not asked for (HTTP/1.0, no Accept-Encoding): say so rather than "not a CRL"
                raise FetchError(f"the server sent {line.split(':')[0].strip()} {value}, which we did not ask for")
        if length is not None:
            # the body ends there, whether or not the server closes (some ignore Connection: close)
            try:
                return await reader.readexactly(length)
            except asyncio.IncompleteReadError as exc:
                raise FetchError(f"the server closed the connection after {len(exc.partial)} of the "
                                 f"{length} bytes it announced") from None
        body = bytearray()
        while chunk := await reader.read(65536):
            body += chunk
            if len(body) > max_bytes:
                raise FetchError(f"the CRL is larger than the {max_bytes} bytes we take")
        return bytes(body)
    except OSError as exc:
        raise FetchError(f"transfer failed: {exc.strerror or exc}") from None
    finally:
        writer.close()


async def fetch_crl(uri: str, *, timeout: float = FETCH_TIMEOUT, max_bytes: int = MAX_CRL_BYTES) -> list:
    """The CRLs (PEM or DER) at an http:// URI; FetchError saying why not."""
    try:
        body = await asyncio.wait_for(http_get(uri, max_bytes=max_bytes), timeout)
    except asyncio.TimeoutError:
        raise FetchError(f"no complete answer within {timeout:g} s") from None
    try:
        crls = load_crls(body, uri)
    except PkiError:
        raise FetchError("the answer is neither a PEM nor a DER CRL") from None
    if len(crls) > MAX_CRLS_PER_URI:  # each is looked at in every IKE_AUTH: charon reads one
        raise FetchError(f"the answer holds {len(crls)} CRLs; at most {MAX_CRLS_PER_URI} are taken from one URI")
    return crls


class CrlFetcher:
    """Fetches and caches CRLs by URI and puts them into the credentials the engine uses."""

    def __init__(self, on_update: Callable[[], None] | None = None, *, wall: Callable[[], float] = time.time,
                 timeout: float = FETCH_TIMEOUT, max_bytes: int = MAX_CRL_BYTES) -> None:
        self.on_update = on_update
        """Called after the cache changed (the runtime re-drives the engine)."""
        self.wall, self.timeout, self.max_bytes = wall, timeout, max_bytes
        self.cache: OrderedDict[str, _Cached] = OrderedDict()
        self.failed: dict[str, tuple[float, str]] = {}
        """URI -> (wall time until which it is not tried again, why it failed)."""
        self.running: dict[str, asyncio.Task] = {}
        self.queued: OrderedDict[str, None] = OrderedDict()
        self.credentials = None
        self.fetches = 0
        """Transfers started so far (tests, status)."""
        self._refresh_task: asyncio.Task | None = None

    # ------------------------------------------------------------ the engine's side
    def attach(self, credentials) -> None:
        """Serve these credentials (after a start or a policy change): give them what is cached
        and fetch what their CA and own certificates point to."""
        self.credentials = credentials
        if credentials is None:
            return
        credentials.fetching = True
        self._publish()
        uris: list[str] = []
        for cert in [*credentials.all_cas(), *(c for local in credentials.local.values() for c in local.certs)]:
            uris += [u for u in crl_uris(cert) if u not in uris]
        self.want(uris)

    def drain(self) -> None:
        """Fetch what the engine asked for since the last call."""
        if self.credentials is not None and self.credentials.wanted:
            self.want(self.credentials.take_wanted(), unhelpful=True)

    def want(self, uris, *, unhelpful: bool = False) -> None:
        """Fetch these URIs unless fresh in the cache, being fetched or held after a failure.
        `unhelpful`: a validation found no good, current CRL among what they gave (a CRL that does
        not verify, of another issuer, out of date): what is cached is fetched again once
        FAILURE_HOLD has passed, whatever its nextUpdate says (charon keeps only a fetched CRL
        that verifies; a forged one with a far nextUpdate held the URI until then)."""
        now = self.wall()
        for uri in uris:
            cached = self.cache.get(uri)
            if cached is not None and now < (cached.settled if unhelpful else cached.refresh_at):
                continue
            if uri in self.running or uri in self.queued:
                continue
            hold = self.failed.get(uri)
            if hold is not None and now < hold[0]:
                continue
            if len(self.running) < MAX_CONCURRENT:
                self._start(uri)
            elif len(self.queued) < MAX_QUEUED:
                self.queued[uri] = None
            else:
                log.warning("CRL fetch of %s not started: %d fetches are waiting already", uri, MAX_QUEUED)
                self._failed(uri, f"not fetched: {MAX_QUEUED} other CRL fetches were waiting")
        self._publish()

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_loop(), name="crl-refresh")

    def close(self) -> None:
        for task in [*self.running.values(), self._refresh_task]:
            if task is not None:
                task.cancel()
        self.running.clear()
        self.queued.clear()
        self._refresh_task = None

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_EVERY)
            self.refresh()

    def refresh(self) -> None:
        """Fetch again every cached CRL past its nextUpdate."""
        now = self.wall()
        self.want([uri for uri, c in self.cache.items() if now >= c.refresh_at])

    # ------------------------------------------------------------ fetching
    def _start(self, uri: str) -> None:
        self.fetches += 1
        self.running[uri] = asyncio.get_running_loop().create_task(self._fetch(uri), name="crl-fetch")

    async def _fetch(self, uri: str) -> None:
        try:
            crls = await fetch_crl(uri, timeout=self.timeout, max_bytes=self.max_bytes)
        except FetchError as exc:
            self._failed(uri, str(exc))
            log.warning("CRL fetch of %s failed: %s", uri, exc)
        except Exception:  # a bug here must not stop the other fetches
            self._failed(uri, "internal error")
            log.exception("CRL fetch of %s failed", uri)
        else:
            self._store(uri, crls)
        finally:
            self.running.pop(uri, None)
            while self.queued and len(self.running) < MAX_CONCURRENT:
                self._start(self.queued.popitem(last=False)[0])
        self._publish()
        if self.on_update is not None:
            self.on_update()

    def _failed(self, uri: str, why: str) -> None:
        if len(self.failed) >= MAX_FAILED:  # URIs come from trusted CAs' certificates; bounded all the same
            del self.failed[next(iter(self.failed))]
        self.failed.pop(uri, None)
        self.failed[uri] = (self.wall() + FAILURE_HOLD, why)

    def _store(self, uri: str, crls: list) -> None:
        now = self.wall()
        nexts = [c.next_update_utc.timestamp() for c in crls if c.next_update_utc is not None]
        refresh_at = min(nexts) if len(nexts) == len(crls) else now + NO_NEXT_UPDATE_REFRESH
        size = sum(len(c.tbs_certlist_bytes) for c in crls)
        self.failed.pop(uri, None)
        self.cache.pop(uri, None)
        self.cache[uri] = _Cached(crls, size, now, max(refresh_at, now + FAILURE_HOLD))
        while len(self.cache) > MAX_CACHED or sum(c.size for c in self.cache.values()) > MAX_CACHE_BYTES:
            old, _ = self.cache.popitem(last=False)
            log.info("CRL of %s dropped from the cache (the cache is full)", old)
        log.info("CRL fetched from %s: %s", uri, ", ".join(
            f"{len(c)} revoked, next update {_hhmm(c.next_update_utc.timestamp()) if c.next_update_utc else 'none'}"
            for c in crls))

    def status(self, uri: str) -> str | None:
        if uri in self.running or uri in self.queued:
            return "being fetched now, a new attempt can succeed"
        hold = self.failed.get(uri)
        if hold is not None:
            return f"fetching it failed ({hold[1]}); tried again after {_hhmm(hold[0])}"
        cached = self.cache.get(uri)
        if cached is not None:
            return f"fetched at {_hhmm(cached.fetched)}"
        return None

    def _publish(self) -> None:
        creds = self.credentials
        if creds is None:
            return
        creds.fetched_crls = {uri: c.crls for uri, c in self.cache.items()}
        creds.crl_pending = frozenset((*self.running, *self.queued))
        # until when want() leaves a URI IKE_AUTH asks for alone (a recent fetch, a failure held):
        # IKE_AUTH waits for no fetch then
        settled = {uri: c.settled for uri, c in self.cache.items()}  # wanted by IKE_AUTH: it did not help
        settled.update((uri, until) for uri, (until, _) in self.failed.items())
        creds.crl_settled = settled
        creds.crl_status = {uri: s for uri in {*self.cache, *self.failed, *self.running, *self.queued}
                            if (s := self.status(uri)) is not None}
