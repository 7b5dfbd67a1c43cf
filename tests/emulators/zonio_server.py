"""An emulated Zonio Freebusy API over TLS (reference/foreign-apis.md s. 5).

- ``GET /freebusy/{percent-encoded address}?start=&end=`` with the window
  in Unix seconds (digits only; anything else, or an end not after the
  start, is 400) and ``Accept: application/json`` (a client that does
  not accept JSON gets 406);
- 200: a JSON list of ``{"start", "end", "type"}`` with ``type`` busy or
  tentative, times as ``2015-10-26T12:00:00Z``, every interval of the
  user that overlaps the window, as stored: busy and tentative intervals
  may overlap, and the client has to let busy win;
- 404 with an error string for an address Zonio does not know; any
  other path is 404 too;
- pools: a client certificate of the test CA whose common name is one of
  ``customers`` selects the customer's private pool, which is never
  throttled; no certificate (or another certificate of the CA, like
  Zonio's default one) is the shared pool, where more than
  ``shared_limit`` requests within ``shared_period`` seconds get 429 with
  ``Retry-After`` (whole seconds until a slot frees up).  A certificate
  of another CA fails the handshake.  ``require_cert`` makes every
  handshake without a certificate fail (a private-only endpoint);
- a script of misbehaviour per address, one entry used up per request:
  ``"503"`` (Zonio timed out reaching the calendar), ``("slow",
  seconds)``, ``"garbage"``, ``("json", object or text)``, ``("status",
  code)``.

Every request is recorded, with the pool and the certificate's common
name, and the most requests answered at once is kept (``peak``).  The
server listens on 127.0.0.1 only and stops with ``close()``.
"""

import datetime
import math
import re
import ssl
import threading
import time
import urllib.parse
from collections import deque
from typing import Dict, Iterable, List, Optional, Set

from emulators import JsonHandler, Overlap
from emulators.tls import HttpsServer, Pki

UTC = datetime.timezone.utc
PREFIX = "/freebusy/"


def utc(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC)


def zonio_time(moment: datetime.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Interval:
    """One stored interval: ``Interval("20260105T090000Z", ..., "busy")``."""

    def __init__(self, start: str, end: str, kind: str = "busy") -> None:
        self.start = utc(start)
        self.end = utc(end)
        self.kind = kind


class Recorded:
    def __init__(self, raw_path: str, query: Dict[str, List[str]], headers,
                 pool: str, certificate: Optional[str]) -> None:
        #: the path exactly as sent, percent-encoding included
        self.raw_path = raw_path
        self.query = query
        self.headers = headers
        self.pool = pool
        #: common name of the client certificate, None without one
        self.certificate = certificate
        self.status = 0
        self.time = time.monotonic()

    @property
    def address(self) -> Optional[str]:
        """The address the path names, if it is one segment under
        /freebusy/."""
        rest = self.raw_path[len(PREFIX):] if self.raw_path.startswith(
            PREFIX) else None
        return urllib.parse.unquote(rest) if rest and "/" not in rest \
            else None


class ZonioServer:
    """Zonio's free/busy for ``calendars`` (address -> intervals)."""

    def __init__(self, pki: Pki, calendars: Dict[str, Iterable[Interval]],
                 shared_limit: Optional[int] = None,
                 shared_period: float = 60.0,
                 customers: Iterable[str] = ("freebusy-gateway",),
                 require_cert: bool = False, delay: float = 0.0) -> None:
        self.calendars = {k.lower(): list(v) for k, v in calendars.items()}
        #: requests the shared pool answers per ``shared_period`` seconds
        #: (None: unlimited)
        self.shared_limit = shared_limit
        self.shared_period = shared_period
        self.customers: Set[str] = set(customers)
        #: seconds every answer takes (to watch calls overlap)
        self.delay = delay
        self.script: Dict[str, list] = {}
        self.requests: List[Recorded] = []
        self.overlap = Overlap()
        self._shared: deque = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        context = pki.server_context()
        context.verify_mode = ssl.CERT_REQUIRED if require_cert \
            else ssl.CERT_OPTIONAL
        pki.ca.configure_trust(context)
        handler = type("Handler", (JsonHandler,), {"owner": self})
        self.server = HttpsServer(handler, context)
        self.base = self.server.base
        self.url = self.base + "/freebusy"

    def close(self) -> None:
        self._closing.set()
        self.server.close()

    def statuses(self) -> List[int]:
        return [r.status for r in self.requests]

    @property
    def peak(self) -> int:
        """The most requests answered at the same moment."""
        return self.overlap.peak

    # -- serving --------------------------------------------------------

    def handle(self, handler: JsonHandler) -> None:
        raw_path, _, query = handler.path.partition("?")
        peer = handler.connection.getpeercert()
        subject = dict(x[0] for x in peer["subject"]) if peer else {}
        name = subject.get("commonName")
        record = Recorded(raw_path, urllib.parse.parse_qs(query),
                          dict(handler.headers),
                          "private" if name in self.customers else "shared",
                          name)
        with self._lock:
            self.requests.append(record)
        with self.overlap:
            status, body, content_type, headers = self._answer(handler,
                                                               record)
            record.status = status
            handler.send(status, body, content_type, headers)

    def _answer(self, handler, record: Recorded):
        text = "text/plain; charset=utf-8"
        if self.delay:
            self._closing.wait(self.delay)
        if record.pool == "shared" and self.shared_limit is not None:
            pause = self._shared_pause()
            if pause is not None:
                return 429, "Too many requests from the shared pool", text, {
                    "Retry-After": str(pause)}
        address = record.address
        if address is None:
            return 404, "Not found", text, {}
        accept = handler.headers.get("Accept", "")
        if "application/json" not in accept and "*/*" not in accept:
            return 406, "Only application/json is served", text, {}
        with self._lock:
            steps = self.script.get(address.lower())
            step = steps.pop(0) if steps else None
        kind, arg = step if isinstance(step, tuple) else (step, None)
        if kind == "503":
            return 503, "Timed out while reading the calendar", text, {}
        if kind == "slow":
            self._closing.wait(arg)
        if kind == "garbage":
            return 200, b"\x00\xff[{not json", "application/json", {}
        if kind == "json":
            return 200, arg, "application/json", {}
        if kind == "status":
            return arg, "Error %d" % arg, text, {}
        start, end = (self._seconds(record.query, "start"),
                      self._seconds(record.query, "end"))
        if start is None or end is None or end <= start:
            return 400, "start and end must be Unix seconds, end after " \
                "start", text, {}
        if address.lower() not in self.calendars:
            return 404, "User %s not found" % address, text, {}
        return 200, [{"start": zonio_time(i.start), "end": zonio_time(i.end),
                      "type": i.kind}
                     for i in self.calendars[address.lower()]
                     if i.start < end and i.end > start], \
            "application/json", {}

    def _shared_pause(self) -> Optional[int]:
        """None if the shared pool takes this request now, else whole
        seconds until it will."""
        now = time.monotonic()
        with self._lock:
            while self._shared and self._shared[0] <= now - \
                    self.shared_period:
                self._shared.popleft()
            if len(self._shared) < self.shared_limit:
                self._shared.append(now)
                return None
            return max(1, math.ceil(self._shared[0] + self.shared_period
                                    - now))

    @staticmethod
    def _seconds(query: Dict[str, List[str]], key: str
                 ) -> Optional[datetime.datetime]:
        values = query.get(key, [])
        if len(values) != 1 or not re.fullmatch(r"[0-9]{1,11}", values[0]):
            return None
        return datetime.datetime.fromtimestamp(int(values[0]), UTC)
