"""HTTP for every provider, written once: pinned host, deadline, retries.

- Only the origin (scheme, host, port) of the provider's configured ``url``
  is ever contacted; any other URL, including a redirect elsewhere, is
  refused before a socket opens.  So no address a caller sends can steer
  the gateway to a host the admin did not name.
- Every call gets ``min(provider timeout, time left before the deadline)``.
- 429 and 503 with Retry-After (seconds, fractional too, or an HTTP date)
  are retried after that delay when the deadline allows, else RateLimited;
  a Retry-After that outlasted one lookup is remembered, so later lookups
  do not call the throttled system again before it said they may.
- Bodies are read up to a bound; a larger answer is an error, not memory.
- The hop count travels in ``X-Freebusy-Gateway-Hops`` so two gateways that
  federate to each other cannot loop.
"""

import email.utils
import logging
import threading
import time
import urllib.parse
from typing import Dict, Mapping, Optional

import requests

from gateway.transport.lookup import LookupContext, ProviderError, RateLimited
from gateway.model import Reason

logger = logging.getLogger(__name__)

HOPS_HEADER = "X-Freebusy-Gateway-Hops"
USER_AGENT = "freebusy-gateway/0.1"
MAX_BODY_BYTES = 4 << 20
MAX_ATTEMPTS = 4
MAX_REDIRECTS = 3


def origin(url: str) -> tuple:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a Retry-After header: ``2``, ``0.5`` or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
        return max(0.0, seconds) if seconds == seconds else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


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


class HttpClient:
    """One provider's HTTP: a keep-alive session pinned to its origin."""

    def __init__(self, base_url: str, timeout: float, *, username: str = "",
                 password: str = "", token: str = "", verify: bool = True,
                 max_body: int = MAX_BODY_BYTES) -> None:
        self.base_url = base_url
        self.allowed_origin = origin(base_url) if base_url else None
        self.timeout = timeout
        self.verify = verify
        self.max_body = max_body
        self._auth = (username, password) if username else None
        self._token = token
        self._local = threading.local()
        #: time.monotonic() before which the foreign side asked us (by a
        #: Retry-After we could not wait for) not to call again.
        self._quiet_until = 0.0

    @property
    def _session(self) -> requests.Session:
        # requests.Session is not thread-safe; one per worker thread.
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            session.trust_env = False  # no proxies or netrc from the env
            self._local.session = session
        return session

    def url(self, path: str) -> str:
        """Join a path or relative reference onto the base URL."""
        return urllib.parse.urljoin(self.base_url, path)

    def check_allowed(self, url: str) -> None:
        if self.allowed_origin is None or origin(url) != self.allowed_origin:
            raise ProviderError(Reason.UNAVAILABLE,
                                "refused to contact %s: not the configured "
                                "host" % urllib.parse.urlsplit(url).netloc,
                                "sent us to another host, which is not "
                                "allowed")

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
            response = self._send(method, url, context, all_headers, data,
                                  params, auth)
            if response.status not in (429, 503):
                return response
            delay = parse_retry_after(response.headers.get("Retry-After"))
            left = context.deadline - time.monotonic()
            if delay is None or attempt == MAX_ATTEMPTS or delay >= left:
                if delay:
                    self._quiet_until = max(self._quiet_until,
                                            time.monotonic() + delay)
                raise RateLimited(delay, "%s answered %d%s" % (
                    urllib.parse.urlsplit(url).netloc, response.status,
                    "" if delay is None else
                    ", Retry-After %.3g s beyond the deadline" % delay
                    if delay >= left else ", still after retries"))
            logger.info("%s answered %d; retrying after %.3g s", url,
                        response.status, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _respect_quiet_time(self, url: str, context: LookupContext) -> None:
        """Wait out an earlier Retry-After, or fail at once if it outlasts
        the deadline: a throttled system is not asked again early."""
        wait = self._quiet_until - time.monotonic()
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
            self.check_allowed(url)
            left = context.deadline - time.monotonic()
            if left <= 0:
                raise ProviderError(Reason.TIMED_OUT, "deadline passed "
                                    "before calling %s" % url)
            timeout = min(self.timeout, left)
            try:
                with self._session.request(
                        method, url, headers=headers, data=data,
                        params=params, timeout=timeout, stream=True,
                        allow_redirects=False, verify=self.verify,
                        auth=self._auth if auth else None) as raw:
                    body = self._read_bounded(raw, context)
                    response = Response(raw.status_code, raw.headers, body,
                                        url)
            except requests.Timeout:
                raise ProviderError(
                    Reason.TIMED_OUT, "%s %s did not answer in %.3g s" % (
                        method, url, timeout),
                    "did not answer within %.3g s" % timeout) from None
            except requests.exceptions.SSLError as e:
                raise ProviderError(
                    Reason.UNAVAILABLE, "%s %s: %s: %s" % (
                        method, url, type(e).__name__, e),
                    "could not be reached securely (TLS failed)") from None
            except requests.RequestException as e:
                raise ProviderError(
                    Reason.UNAVAILABLE, "%s %s: %s: %s" % (
                        method, url, type(e).__name__, e),
                    "is unreachable") from None
            if response.status in (301, 302, 303, 307, 308) and \
                    "Location" in response.headers:
                url = urllib.parse.urljoin(url, response.headers["Location"])
                if response.status == 303:
                    method, data = "GET", None
                params = None
                continue
            return response
        raise ProviderError(Reason.UNAVAILABLE, "more than %d redirects, "
                            "last to %s" % (MAX_REDIRECTS, url),
                            "redirected too often")

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
