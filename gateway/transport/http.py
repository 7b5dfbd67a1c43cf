"""HTTP for every provider, written once: pinned host, deadline, retries.

- Only the origin (scheme, host, port) of the provider's configured ``url``
  (and origins the auth layer adds with ``allow_origin``) is ever
  contacted.  A URL is checked as the HTTP library will read it: one with
  a backslash, user information, whitespace or control characters, a
  percent sign or non-ASCII in the host, a bad port, or that urllib and
  urllib3 read differently is refused; the URL checked is the one
  requests prepared, and is sent as is.  Behind that, every connection
  the session opens checks its own host and port against the same set,
  so nothing reaches another host even if the parsers disagreed.  So no
  address, redirect or href a peer sends can steer the gateway (and the
  provider's credentials) to a host the admin did not name.
- Every call gets ``min(provider timeout, time left before the deadline)``
  as a hard limit: requests' timeout is per socket read, so a reaper
  thread shuts the connection's socket down when the limit passes, and a
  peer that trickles its answer a byte at a time cannot hold the worker
  thread or the socket any longer.
- 429 and 503 with Retry-After (a finite, non-negative number of seconds,
  fractional too, or an HTTP date; anything else is ignored, and more
  than an hour counts as an hour) are retried after that delay when the
  deadline allows, else RateLimited; a Retry-After that outlasted one
  lookup goes into the throttle memory (gateway.state), so later lookups
  do not call the throttled system again before it said they may.
  ``throttle(seconds)`` puts a pause a plugin read in a body there too.
- Bodies are read up to a bound; a larger answer is an error, not memory.
- The hop count travels in ``X-Freebusy-Gateway-Hops`` so two gateways that
  federate to each other cannot loop.
"""

import datetime
import email.utils
import heapq
import itertools
import json
import logging
import math
import re
import socket
import threading
import time
import urllib.parse
from typing import Dict, FrozenSet, Mapping, Optional, Tuple

import requests
import requests.adapters
import urllib3.util
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from gateway.state import MemoryThrottleMemory, ThrottleMemory
from gateway.transport.lookup import LookupContext, ProviderError, RateLimited
from gateway.model import Reason

logger = logging.getLogger(__name__)

HOPS_HEADER = "X-Freebusy-Gateway-Hops"
USER_AGENT = "freebusy-gateway/0.1"
MAX_BODY_BYTES = 4 << 20
MAX_ATTEMPTS = 4
MAX_REDIRECTS = 3
#: The longest pause a foreign system can ask for (Retry-After, throttling
#: bodies); more is held to this, so no answer silences a provider for good.
MAX_PAUSE = 3600.0
DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = Tuple[str, str, int]



def in_words(error: BaseException) -> str:
    """What went wrong with a connection, for an admin: the innermost
    cause of a requests error ("[Errno 111] Connection refused",
    "certificate verify failed ..."), without urllib3's pool and object
    dumps around it."""
    inner = error
    for _ in range(6):
        deeper = getattr(inner, "reason", None)
        if not isinstance(deeper, BaseException) and inner.args and \
                isinstance(inner.args[0], BaseException):
            deeper = inner.args[0]
        if not isinstance(deeper, BaseException):
            break
        inner = deeper
    text = re.sub(r"<[^<>]* object at 0x[0-9a-f]+>:?\s*", "", str(inner))
    errno = re.search(r"\[Errno -?\d+\][^'\")\]]*", text)
    if errno:
        return errno.group(0).strip()
    text = re.sub(r"^\w*Pool\(host=[^)]*\): ", "", text)
    return "%s: %s" % (type(inner).__name__, text[:300])


class RefusedURL(ValueError):
    """A URL the gateway will not contact; the text says why."""


def _bare_host(host: str) -> str:
    host = (host or "").lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def origin(url: str) -> Origin:
    """``(scheme, host, port)`` of ``url``, lower-case, default ports
    filled in; RefusedURL for anything ambiguous (see the module doc)."""
    if not isinstance(url, str) or not url:
        raise RefusedURL("empty URL")
    if any(ord(c) <= 0x20 or ord(c) == 0x7f for c in url):
        raise RefusedURL("whitespace or control character in the URL")
    if "\\" in url:
        raise RefusedURL("backslash in the URL")
    try:
        split = urllib.parse.urlsplit(url)
        port = split.port
    except ValueError as e:
        raise RefusedURL("unreadable URL: %s" % e) from None
    scheme = split.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise RefusedURL("not an http or https URL")
    netloc = split.netloc
    if not netloc or not split.hostname:
        raise RefusedURL("no host in the URL")
    if "@" in netloc:
        raise RefusedURL("user information in the URL")
    if "%" in netloc or not netloc.isascii():
        raise RefusedURL("percent-encoding or non-ASCII in the host")
    try:
        other = urllib3.util.parse_url(url)
    except Exception as e:  # LocationParseError, ValueError
        raise RefusedURL("unreadable URL: %s" % e) from None
    if port is None:
        port = DEFAULT_PORTS[scheme]
    host = _bare_host(split.hostname)
    if ((other.scheme or "").lower() != scheme or other.auth or
            _bare_host(other.host) != host or
            (other.port if other.port is not None else
             DEFAULT_PORTS.get((other.scheme or "").lower())) != port):
        raise RefusedURL("URL read differently by the HTTP library")
    return scheme, host, port


def _seconds(value: float) -> Optional[float]:
    """A pause in seconds, or None if it is no number of seconds at all;
    held to MAX_PAUSE."""
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if math.isnan(value) or value < 0:
        return None
    return min(value, MAX_PAUSE)


_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?\Z")


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a Retry-After header: ``2``, ``0.5`` or an HTTP date.

    Only a non-negative decimal number or an HTTP date counts (``inf``,
    ``nan``, ``-1`` and other text are None: ignored); more than
    MAX_PAUSE is held to it, a date in the past is 0.
    """
    if value is None:
        return None
    value = str(value).strip()
    if not value:
        return None
    if _DELTA_SECONDS.match(value):
        return _seconds(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        seconds = when.timestamp() - time.time()
    except Exception:  # TypeError, ValueError, IndexError, OverflowError
        return None
    return _seconds(max(0.0, seconds))


# -- the hard deadline and the host check at the connection ----------------

#: The watch of the request this thread is sending, if any.
_current = threading.local()


class _HostRefused(Exception):
    """A connection to a host:port outside the allowed origins."""


def _shut(sock) -> None:
    """Shut a socket down, which wakes a thread blocked on it; the plain
    socket method, so that an SSLSocket keeps its state for the reader."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError, ValueError):
        pass


class _Watch:
    """One request's hard limit and allowed origins.  The sockets its
    connections use are shut down when the limit passes."""

    def __init__(self, limit: float, allowed: FrozenSet[Origin]) -> None:
        self.limit = limit          # time.monotonic() value
        self.allowed = allowed
        self.expired = False
        self.done = False
        self._sockets = []
        self._lock = threading.Lock()

    def allows(self, scheme: str, host: str, port: int) -> bool:
        return (scheme, _bare_host(host).rstrip("."), port) in {
            (s, h.rstrip("."), p) for s, h, p in self.allowed}

    def add(self, sock) -> None:
        with self._lock:
            if not self.expired:
                self._sockets.append(sock)
                return
        _shut(sock)

    def expire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    def start(self) -> "_Watch":
        """This thread's requests are under this watch from now on."""
        _current.watch = self
        _REAPER.watch(self)
        return self

    def stop(self) -> None:
        with self._lock:
            self.done = True
            self._sockets = []
        _current.watch = None


class _Reaper:
    """One daemon thread that expires every watch at its limit."""

    def __init__(self) -> None:
        self._heap = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._thread: Optional[threading.Thread] = None

    def watch(self, watch: _Watch) -> None:
        with self._condition:
            heapq.heappush(self._heap, (watch.limit, next(self._order),
                                        watch))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="http-deadline", daemon=True)
                self._thread.start()
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while True:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._condition.wait(
                        self._heap[0][0] - now if self._heap else None)
                due = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
            for watch in due:
                watch.expire()


_REAPER = _Reaper()


class _Guarded:
    """What the session's connections add to urllib3's: the host check
    (as urllib3 itself reads the host) before a socket opens, and every
    socket handed to the current request's watch."""

    scheme = "http"

    def _new_conn(self):
        watch = getattr(_current, "watch", None)
        host = getattr(self, "_dns_host", None) or self.host
        if watch is None or not watch.allows(self.scheme, host, self.port):
            raise _HostRefused("%s://%s:%s" % (self.scheme, host, self.port))
        sock = super()._new_conn()
        watch.add(sock)
        return sock

    def connect(self):
        super().connect()
        watch = getattr(_current, "watch", None)
        if watch is not None and self.sock is not None:
            watch.add(self.sock)

    def request(self, *args, **kwargs):
        watch = getattr(_current, "watch", None)
        if watch is None:
            raise _HostRefused("request outside the HTTP client")
        if self.sock is not None:
            watch.add(self.sock)
        return super().request(*args, **kwargs)


class _GuardedHTTPConnection(_Guarded, HTTPConnection):
    scheme = "http"


class _GuardedHTTPSConnection(_Guarded, HTTPSConnection):
    scheme = "https"


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


def _joined(base: str, reference: str) -> str:
    try:
        return urllib.parse.urljoin(base, reference)
    except ValueError as e:  # "Invalid IPv6 URL" and the like
        raise ProviderError(Reason.UNAVAILABLE, "unreadable URL %r: %s" % (
            reference[:200], e), "sent us to an address that is not "
            "allowed") from None


def _prepared_url(url: str, params) -> str:
    """The URL exactly as requests will send it."""
    prepared = requests.models.PreparedRequest()
    prepared.prepare_url(url, params)
    return prepared.url


class Response:
    """What a provider gets back: status, headers and a bounded body."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes,
                 url: str) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.url = url

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        """The body read as JSON; None when it is not JSON (a proxy's HTML
        page, a cut-off answer), so the caller decides what that means."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class HttpClient:
    """One provider's HTTP: a keep-alive session pinned to its origin."""

    def __init__(self, base_url: str, timeout: float, *, username: str = "",
                 password: str = "", token: str = "", verify: bool = True,
                 max_body: int = MAX_BODY_BYTES,
                 throttle: Optional[ThrottleMemory] = None,
                 throttle_key: str = "", cert=None,
                 authenticator=None) -> None:
        self.base_url = base_url
        #: The origins this client may contact: the ``url``'s, and what
        #: ``allow_origin`` adds (an OAuth token endpoint, say).
        self.allowed_origins = set()
        self.allowed_origin = None
        if base_url:
            self.allowed_origin = origin(base_url)
            self.allowed_origins.add(self.allowed_origin)
        #: Where pauses the foreign side asked for are kept, by key.
        self.throttle_memory = throttle or MemoryThrottleMemory()
        self.throttle_key = throttle_key or (
            "%s://%s:%d" % self.allowed_origin if self.allowed_origin
            else "")
        self.timeout = timeout
        self.verify = verify
        self.max_body = max_body
        self._auth = (username, password) if username else None
        self._token = token
        self._local = threading.local()
        # -- auth (gateway.transport.auth) --------------------------------
        #: requests' ``cert``: a client certificate file, or (cert, key).
        self.cert = cert
        #: Credentials applied to every request with ``auth=True``; it may
        #: add origins (token endpoints) and send its token requests
        #: through this client.
        self.authenticator = authenticator
        if authenticator is not None:
            authenticator.bind(self)
        # -- end auth -------------------------------------------------------

    @property
    def _session(self) -> requests.Session:
        # requests.Session is not thread-safe; one per worker thread.
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            session.trust_env = False  # no proxies or netrc from the env
            # Connections that check their host and obey the hard limit.
            session.mount("http://", _GuardedAdapter())
            session.mount("https://", _GuardedAdapter())
            self._local.session = session
        return session

    def url(self, path: str) -> str:
        """Join a path or relative reference onto the base URL."""
        return _joined(self.base_url, path)

    def allow_origin(self, url: str) -> None:
        """Let this client contact ``url``'s origin too (scheme, host and
        port; for an OAuth token endpoint and the like).  ValueError for a
        URL that is not plainly http(s)://host[:port]/..."""
        self.allowed_origins.add(origin(url))

    def check_allowed(self, url: str) -> Origin:
        """The URL's origin if it may be contacted, else ProviderError."""
        try:
            found = origin(url)
        except RefusedURL as e:
            raise ProviderError(Reason.UNAVAILABLE, "refused to contact "
                                "%r: %s" % (url[:200], e), "sent us to an "
                                "address that is not allowed") from None
        if found not in self.allowed_origins:
            raise ProviderError(Reason.UNAVAILABLE,
                                "refused to contact %s://%s:%d: not a "
                                "configured host" % found,
                                "sent us to another host, which is not "
                                "allowed")
        return found

    def post_json(self, url: str, context: LookupContext, payload,
                  headers: Optional[Dict[str, str]] = None) -> Response:
        """POST ``payload`` as JSON, asking for JSON back (the REST
        providers' one call); ``headers`` adds to those two."""
        return self.request(
            "POST", url, context,
            headers=dict({"Content-Type": "application/json",
                          "Accept": "application/json"}, **(headers or {})),
            data=json.dumps(payload).encode("utf-8"))

    def throttle(self, seconds) -> None:
        """Remember that the foreign side asked for a pause of ``seconds``
        (read from a body: EWS BackOffMilliseconds, a Nylas error): calls
        fail fast as rate limited until it is over.  Values that are no
        finite, non-negative number are ignored; more than an hour counts
        as an hour."""
        seconds = _seconds(seconds)
        if seconds:
            self.throttle_memory.pause(self.throttle_key,
                                       time.time() + seconds)

    def paused_for(self) -> float:
        """Seconds left of a pause the foreign side asked for (0: none)."""
        return max(0.0, self.throttle_memory.paused_until(
            self.throttle_key) - time.time())

    def request(self, method: str, url: str, context: LookupContext, *,
                headers: Optional[Dict[str, str]] = None,
                data: Optional[bytes] = None, params=None,
                auth: bool = True) -> Response:
        """Send one request under the context's deadline; see module doc."""
        url = self.url(url)
        self._respect_quiet_time(url, context)
        all_headers = dict(headers or {})
        all_headers[HOPS_HEADER] = str(context.hops + 1)
        if auth and self._token:
            all_headers["Authorization"] = "Bearer " + self._token
        for attempt in range(1, MAX_ATTEMPTS + 1):
            response = self._send_authenticated(
                method, url, context, all_headers, data, params, auth)
            if response.status not in (429, 503):
                return response
            delay = parse_retry_after(response.headers.get("Retry-After"))
            left = context.deadline - time.monotonic()
            if delay is None or attempt == MAX_ATTEMPTS or delay >= left:
                if delay:
                    self.throttle(delay)
                raise RateLimited(delay, "%s answered %d%s" % (
                    urllib.parse.urlsplit(url).netloc, response.status,
                    "" if delay is None else
                    ", Retry-After %.3g s beyond the deadline" % delay
                    if delay >= left else ", still after retries"),
                    status=response.status)
            logger.info("%s answered %d; retrying after %.3g s", url,
                        response.status, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    # -- auth (gateway.transport.auth) ------------------------------------

    def _send_authenticated(self, method, url, context, headers, data,
                            params, auth) -> Response:
        """``_send`` with the authenticator's headers; after an answer
        that refused them, once more with a fresh credential, and a
        second refusal is a ProviderError (NO_AUTHORITY)."""
        authenticator = self.authenticator if auth else None
        if authenticator is None:
            return self._send(method, url, context, headers, data, params,
                              auth)
        for renewed in (False, True):
            sent = dict(headers, **authenticator.headers(context))
            response = self._send(method, url, context, sent, data, params,
                                  auth)
            if not authenticator.refused(response):
                return response
            if renewed:
                raise authenticator.refused_again(response)
            logger.info("%s refused the %s credential; fetching a fresh "
                        "one", response.url, authenticator.kind)
            authenticator.renew(sent, context)
        raise AssertionError("unreachable")

    def _requests_auth(self):
        if self.authenticator is not None:
            return self.authenticator.requests_auth()
        return self._auth

    def session_cookies(self):
        """This thread's cookie jar (a forms login reads its cookie)."""
        return self._session.cookies

    # -- end auth -------------------------------------------------------------

    def _respect_quiet_time(self, url: str, context: LookupContext) -> None:
        """Wait out an earlier Retry-After, or fail at once if it outlasts
        the deadline: a throttled system is not asked again early."""
        wait = self.paused_for()
        if wait <= 0:
            return
        if wait >= context.deadline - time.monotonic():
            raise RateLimited(wait, "%s asked for a pause; %.3g s left" % (
                urllib.parse.urlsplit(url).netloc, wait),
                "asked for a pause (retry after %.0f s)" % wait)
        time.sleep(wait)

    def _send(self, method, url, context, headers, data, params, auth
              ) -> Response:
        for _ in range(MAX_REDIRECTS + 1):
            url = self._checked_url(url, params)
            params = None
            left = context.deadline - time.monotonic()
            if left <= 0:
                raise ProviderError(Reason.TIMED_OUT, "deadline passed "
                                    "before calling %s" % url)
            timeout = min(self.timeout, left)
            # The hard limit: the sockets are shut down when it passes.
            watch = _Watch(time.monotonic() + timeout,
                           frozenset(self.allowed_origins)).start()
            try:
                with self._session.request(
                        method, url, headers=headers, data=data,
                        params=params, timeout=timeout, stream=True,
                        allow_redirects=False, verify=self.verify,
                        cert=self.cert,
                        auth=self._requests_auth() if auth else None) as raw:
                    body = self._read_bounded(raw, context)
                    response = Response(raw.status_code, raw.headers, body,
                                        url)
            except ProviderError:
                raise
            except _HostRefused as e:
                raise ProviderError(
                    Reason.UNAVAILABLE, "%s %s: refused to connect to %s: "
                    "not a configured host" % (method, url, e),
                    "sent us to another host, which is not allowed") \
                    from None
            except requests.Timeout:
                raise ProviderError(
                    Reason.TIMED_OUT, "%s %s did not answer in %.3g s" % (
                        method, url, timeout),
                    "did not answer within %.3g s" % timeout) from None
            except Exception as e:
                if watch.expired:
                    # requests saw the socket we shut down at the limit.
                    raise ProviderError(
                        Reason.TIMED_OUT, "%s %s cut off at its %.3g s "
                        "limit (%s)" % (method, url, timeout,
                                        type(e).__name__),
                        "did not answer within %.3g s" % timeout) from None
                if isinstance(e, requests.exceptions.SSLError):
                    raise ProviderError(
                        Reason.UNAVAILABLE, "%s %s: %s" % (
                            method, url, in_words(e)),
                        "could not be reached securely (TLS failed)") \
                        from None
                if isinstance(e, requests.RequestException):
                    raise ProviderError(
                        Reason.UNAVAILABLE, "%s %s: %s" % (
                            method, url, in_words(e)),
                        "is unreachable") from None
                raise
            finally:
                watch.stop()
            if response.status in (301, 302, 303, 307, 308) and \
                    "Location" in response.headers:
                url = _joined(url, response.headers["Location"])
                if response.status == 303 or (
                        response.status in (301, 302) and method == "POST"):
                    # As browsers and requests do: a login form or a
                    # query is never posted again to where it was sent.
                    method, data = "GET", None
                params = None
                continue
            return response
        raise ProviderError(Reason.UNAVAILABLE, "more than %d redirects, "
                            "last to %s" % (MAX_REDIRECTS, url),
                            "redirected too often")

    def _checked_url(self, url: str, params) -> str:
        """The URL as requests will send it, if it may be contacted."""
        self.check_allowed(url)
        try:
            prepared = _prepared_url(url, params)
            stable = _prepared_url(prepared, None) == prepared
        except Exception as e:  # requests' InvalidURL, UnicodeError, ...
            raise ProviderError(Reason.UNAVAILABLE, "refused to contact "
                                "%r: %s" % (url[:200], e), "sent us to an "
                                "address that is not allowed") from None
        if not stable:
            raise ProviderError(Reason.UNAVAILABLE, "refused to contact %r:"
                                " it changes when prepared again"
                                % url[:200], "sent us to an address that "
                                "is not allowed")
        self.check_allowed(prepared)
        return prepared

    def _read_bounded(self, raw: requests.Response,
                      context: LookupContext) -> bytes:
        chunks, size = [], 0
        for chunk in raw.iter_content(65536):
            size += len(chunk)
            if size > self.max_body:
                raise ProviderError(Reason.NO_DATA, "answer from %s larger "
                                    "than %d bytes" % (raw.url,
                                                       self.max_body),
                                    "sent an answer larger than %d bytes"
                                    % self.max_body)
            if time.monotonic() > context.deadline:
                raise ProviderError(Reason.TIMED_OUT, "answer from %s "
                                    "still arriving at the deadline"
                                    % raw.url, "did not finish its answer "
                                    "in time")
            chunks.append(chunk)
        return b"".join(chunks)
