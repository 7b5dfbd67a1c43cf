"""An emulated HCL Domino Access Services freebusy API (foreign-apis.md s. 6).

- ``GET /api/freebusy/busytime?name=&since=&before=`` (or ``&days=N``;
  ``before`` and ``days`` together are 400), one name a call;
- HTTP Basic with the configured account (401 with a Basic challenge
  without it, or with a wrong password), unless ``anonymous``;
- dates only as ``2017-09-01T13:00:00Z``: anything else, milliseconds
  included, is 400 "Unparseable date", as Domino answers;
- parameters it does not know (``until``) are ignored, as a server
  ignores them: without ``before`` the range is ``since`` plus the
  default 30 days, and without ``since`` it starts 30 minutes before
  the emulator's "now";
- 200: ``{"start", "end", "busyTimes": [{"start", "end"}]}`` with each
  time as ``{"date", "time", "utc"}``: in UTC, or with ``local_zone``
  set, as wall-clock times of that zone with ``"utc": false``;
- a name it cannot resolve (compared without case) is 400
  ``errorResponse`` "Name not found";
- a script of misbehaviour per name, one entry used up per request:
  ``("slow", seconds)``, ``"garbage"``, ``("json", object or text)``,
  ``("status", code, message)`` (an ``errorResponse``).

Every request is recorded, and the most requests answered at once is
kept (``peak``).  The server listens on 127.0.0.1 only (TLS with the
test CA) and stops with ``close()``.
"""

import base64
import datetime
import threading
import time
import urllib.parse
import zoneinfo
from typing import Dict, Iterable, List, Optional, Tuple

from emulators import JsonHandler, Overlap
from emulators.tls import HttpsServer, Pki

UTC = datetime.timezone.utc
PATH = "/api/freebusy/busytime"
DEFAULT_RANGE = datetime.timedelta(days=30)
STACK = ("com.ibm.domino.services.ServiceException: %s\n\tat com.ibm."
         "domino.freebusy.BusyTimeResource.getBusyTime(BusyTimeResource."
         "java:112)")


def utc(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC)


def error_response(code: int, message: str) -> Dict:
    """Domino's ``errorResponse``."""
    return {"code": code, "text": {400: "Bad Request", 401: "Unauthorized",
                                   403: "Forbidden", 404: "Not Found",
                                   500: "Internal Server Error"}.get(
                                       code, "Error"),
            "message": message, "type": "text", "data": STACK % message}


class Recorded:
    def __init__(self, path: str, query: Dict[str, List[str]],
                 headers) -> None:
        self.path = path
        self.query = query
        self.headers = headers
        self.status = 0
        self.time = time.monotonic()


class DominoServer:
    """DAS freebusy for ``people`` (name -> busy (start, end) in UTC)."""

    def __init__(self, pki: Pki,
                 people: Dict[str, Iterable[Tuple[str, str]]],
                 username: str = "fbgateway", password: str = "das-secret",
                 anonymous: bool = False, delay: float = 0.0,
                 now: Optional[datetime.datetime] = None) -> None:
        self.people = {k.lower(): [(utc(s), utc(e)) for s, e in v]
                       for k, v in people.items()}
        self.username = username
        self.password = password
        self.anonymous = anonymous
        #: seconds every answer takes (to watch calls overlap)
        self.delay = delay
        self.now = now or datetime.datetime(2026, 1, 2, 12, tzinfo=UTC)
        #: answer in wall-clock times of this zone, "utc": false
        self.local_zone: Optional[str] = None
        self.script: Dict[str, list] = {}
        self.requests: List[Recorded] = []
        self.overlap = Overlap()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        handler = type("Handler", (JsonHandler,), {"owner": self})
        self.server = HttpsServer(handler, pki.server_context())
        self.base = self.server.base
        self.url = self.base + "/api/freebusy"

    def close(self) -> None:
        self._closing.set()
        self.server.close()

    def statuses(self) -> List[int]:
        return [r.status for r in self.requests]

    @property
    def peak(self) -> int:
        """The most requests answered at the same moment."""
        return self.overlap.peak

    def basic(self) -> str:
        """The Authorization header of the configured account."""
        return "Basic " + base64.b64encode(("%s:%s" % (
            self.username, self.password)).encode("utf-8")).decode("ascii")

    # -- serving --------------------------------------------------------

    def handle(self, handler: JsonHandler) -> None:
        split = urllib.parse.urlsplit(handler.path)
        record = Recorded(split.path, urllib.parse.parse_qs(split.query),
                          dict(handler.headers))
        with self._lock:
            self.requests.append(record)
        with self.overlap:
            status, body, content_type, headers = self._answer(handler,
                                                               record)
            record.status = status
            handler.send(status, body, content_type, headers)

    def _answer(self, handler, record: Recorded):
        if self.delay:
            self._closing.wait(self.delay)
        if not self.anonymous and \
                handler.headers.get("Authorization") != self.basic():
            return 401, "<html><head><title>Unauthorized</title></head>" \
                "<body>You are not authorized to access this resource." \
                "</body></html>", "text/html", {
                    "WWW-Authenticate": 'Basic realm="/api/freebusy"'}
        if record.path != PATH:
            return 404, error_response(404, "Resource not found"), \
                "application/json", {}
        query = {k: v[-1] for k, v in record.query.items()}
        name = query.get("name", "")
        with self._lock:
            steps = self.script.get(name.lower())
            step = steps.pop(0) if steps else None
        kind, *args = step if isinstance(step, tuple) else (step,)
        if kind == "slow":
            self._closing.wait(args[0])
        if kind == "garbage":
            return 200, b"\x00\xff{not json", "application/json", {}
        if kind == "json":
            return 200, args[0], "application/json", {}
        if kind == "status":
            return args[0], error_response(*args), "application/json", {}
        try:
            since = self._date(query["since"]) if "since" in query \
                else self.now - datetime.timedelta(minutes=30)
            if "before" in query and "days" in query:
                return 400, error_response(
                    400, "Parameters before and days are mutually "
                    "exclusive"), "application/json", {}
            if "before" in query:
                before = self._date(query["before"])
            else:
                before = since + (datetime.timedelta(days=int(
                    query["days"])) if "days" in query else DEFAULT_RANGE)
        except ValueError as e:
            return 400, error_response(400, str(e)), "application/json", {}
        if not name:
            return 400, error_response(400, "Missing name parameter"), \
                "application/json", {}
        if name.lower() not in self.people:
            return 400, error_response(400, "Name not found"), \
                "application/json", {}
        return 200, {
            "start": self._time(since), "end": self._time(before),
            "busyTimes": [{"start": self._time(s), "end": self._time(e)}
                          for s, e in self.people[name.lower()]
                          if s < before and e > since]}, \
            "application/json", {}

    @staticmethod
    def _date(text: str) -> datetime.datetime:
        """What Domino parses; anything else is its "Unparseable date"."""
        try:
            return datetime.datetime.strptime(
                text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise ValueError('Unparseable date: "%s"' % text) from None

    def _time(self, moment: datetime.datetime) -> Dict:
        if self.local_zone:
            local = moment.astimezone(zoneinfo.ZoneInfo(self.local_zone))
            return {"date": local.strftime("%Y-%m-%d"),
                    "time": local.strftime("%H:%M:%S"), "utc": False}
        return {"date": moment.strftime("%Y-%m-%d"),
                "time": moment.strftime("%H:%M:%S"), "utc": True}
