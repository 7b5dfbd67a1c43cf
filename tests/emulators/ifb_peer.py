"""An emulated free/busy read URL server (reference/foreign-apis.md s. 7).

Speaks the four dialects the ``ifb`` provider knows, with their real
paths, window parameters, limits and errors:

- CalConnect CC/S 0903: ``/freebusy/{address}.ifb?start=&end=`` (RFC 3339)
- Kolab: ``/freebusy/{address}.ifb?dtstart=&dtend=`` (iCalendar UTC)
- Zimbra: ``/service/pubcal/freebusy.ifb?acct=&s=&e=`` (milliseconds;
  400 past 200 days or for end before start; 404 "mailbox not found")
- SOGo: ``/SOGo/dav/{user}/freebusy.ifb``, no parameters, always 7 days
  either side of its own "now".

Per address a test can script what goes wrong: 401, 404, 429 with any
Retry-After, a hang, garbage, an HTML page with 200, an endless body,
partial coverage, redirects.  Every request is recorded.
"""

import datetime
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple

UTC = datetime.timezone.utc
Busy = List[Tuple[datetime.datetime, datetime.datetime, str]]


def utc(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC)


def _ical(moment: datetime.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


class Recorded:
    def __init__(self, path: str, query: Dict[str, str], headers) -> None:
        self.path = path
        self.query = query
        self.headers = headers
        self.time = time.monotonic()


class IfbPeer:
    """One emulated server; ``style`` is calconnect, kolab, zimbra or sogo."""

    def __init__(self, style: str, busy: Dict[str, Busy],
                 now: Optional[datetime.datetime] = None) -> None:
        self.style = style
        self.busy = busy
        self.now = now or datetime.datetime(2026, 1, 7, tzinfo=UTC)
        self.requests: List[Recorded] = []
        #: address -> list of behaviours, used up one per request; a
        #: behaviour is a string ("404", "hang", "garbage", ...) or a tuple
        #: ("429", retry_after) / ("redirect", location).
        self.script: Dict[str, list] = {}
        self.hang_seconds = 30.0
        self._released = threading.Event()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                peer._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        self.base = "http://127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        daemon=True)
        self._thread.start()

    # -- configuration for the gateway ------------------------------------

    def url_template(self) -> str:
        if self.style in ("calconnect", "kolab"):
            return self.base + "/freebusy/{address}.ifb"
        if self.style == "zimbra":
            return self.base + "/service/pubcal/freebusy.ifb?acct={address}"
        return self.base + "/SOGo/dav/{address}/freebusy.ifb"

    def window_params(self) -> str:
        return "none" if self.style == "sogo" else self.style

    def close(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()

    # -- serving -------------------------------------------------------------

    def _address_and_window(self, path: str, query: Dict[str, str]):
        """(address, start, end) or an (status, text) error."""
        if self.style in ("calconnect", "kolab"):
            prefix = "/freebusy/"
            if not (path.startswith(prefix) and path.endswith(".ifb")):
                return None, (404, "no such resource")
            address = urllib.parse.unquote(path[len(prefix):-4])
            try:
                if self.style == "calconnect":
                    start = datetime.datetime.strptime(
                        query["start"], "%Y-%m-%dT%H:%M:%SZ")
                    end = datetime.datetime.strptime(
                        query["end"], "%Y-%m-%dT%H:%M:%SZ")
                else:
                    start = datetime.datetime.strptime(
                        query["dtstart"], "%Y%m%dT%H%M%SZ")
                    end = datetime.datetime.strptime(
                        query["dtend"], "%Y%m%dT%H%M%SZ")
            except (KeyError, ValueError):
                return None, (400, "bad or missing window parameters")
            start, end = start.replace(tzinfo=UTC), end.replace(tzinfo=UTC)
        elif self.style == "zimbra":
            if path != "/service/pubcal/freebusy.ifb" or "acct" not in query:
                return None, (404, "no such resource")
            address = query["acct"]
            try:
                start = datetime.datetime.fromtimestamp(
                    int(query["s"]) / 1000, UTC)
                end = datetime.datetime.fromtimestamp(
                    int(query["e"]) / 1000, UTC)
            except (KeyError, ValueError):
                start = self.now - datetime.timedelta(days=30)
                end = self.now + datetime.timedelta(days=60)
            if end <= start:
                return None, (400, "End time must be after Start time")
            if end - start > datetime.timedelta(days=200):
                return None, (400, "Requested range is too large "
                              "(max 200 days)")
        else:
            parts = path.split("/")
            if len(parts) != 5 or parts[1:3] != ["SOGo", "dav"] or \
                    parts[4] != "freebusy.ifb":
                return None, (404, "no such resource")
            address = urllib.parse.unquote(parts[3])
            start = self.now - datetime.timedelta(days=7)
            end = self.now + datetime.timedelta(days=7)
        return (address, start, end), None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        split = urllib.parse.urlsplit(handler.path)
        query = dict(urllib.parse.parse_qsl(split.query,
                                            keep_blank_values=True))
        self.requests.append(Recorded(split.path, query,
                                      dict(handler.headers)))
        found, error = self._address_and_window(split.path, query)
        if error:
            return self._send(handler, error[0], error[1].encode(),
                              "text/plain")
        address, start, end = found
        script = self.script.get(address)
        behaviour = script.pop(0) if script else None
        if behaviour == "hang":
            self._released.wait(self.hang_seconds)
            return
        if isinstance(behaviour, tuple) and behaviour[0] == "429":
            return self._send(handler, 429, b"Too Many Requests",
                              "text/plain", {"Retry-After": behaviour[1]})
        if isinstance(behaviour, tuple) and behaviour[0] == "redirect":
            return self._send(handler, 302, b"", "text/plain",
                              {"Location": behaviour[1]})
        if behaviour == "401":
            return self._send(handler, 401, b"Unauthorized", "text/plain",
                              {"WWW-Authenticate": 'Basic realm="fb"'})
        if behaviour == "garbage":
            return self._send(handler, 200, b"\x00\xff garbage \x13\x37",
                              "text/calendar")
        if behaviour == "html":
            return self._send(handler, 200, b"<html><body>Login required"
                              b"</body></html>", "text/html")
        if behaviour == "huge":
            return self._send_huge(handler)
        if behaviour == "partial":
            end = start + (end - start) / 2
        if address not in self.busy:
            text = b"mailbox not found" if self.style == "zimbra" else \
                b"Not Found"
            return self._send(handler, 404, text, "text/plain")
        self._send(handler, 200, self._vfreebusy(address, start, end),
                   "text/calendar; charset=utf-8")

    def _vfreebusy(self, address: str, start, end) -> bytes:
        lines = ["BEGIN:VCALENDAR", "VERSION:2.0",
                 "PRODID:Zimbra-Calendar-Provider" if self.style == "zimbra"
                 else "PRODID:-//emulated %s//EN" % self.style,
                 "METHOD:PUBLISH", "BEGIN:VFREEBUSY",
                 "ORGANIZER:mailto:%s" % address,
                 "DTSTAMP:%s" % _ical(self.now),
                 "DTSTART:%s" % _ical(start), "DTEND:%s" % _ical(end)]
        for busy_start, busy_end, fbtype in self.busy[address]:
            if busy_start < end and busy_end > start:
                lines.append("FREEBUSY;FBTYPE=%s:%s/%s" % (
                    fbtype, _ical(max(busy_start, start)),
                    _ical(min(busy_end, end))))
        lines += ["END:VFREEBUSY", "END:VCALENDAR", ""]
        return "\r\n".join(lines).encode()

    @staticmethod
    def _send(handler, status: int, body: bytes, content_type: str,
              headers: Optional[Dict[str, str]] = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)

    def _send_huge(self, handler) -> None:
        """A VFREEBUSY that never ends (chunked, 64 MiB at most)."""
        handler.send_response(200)
        handler.send_header("Content-Type", "text/calendar")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        line = b"FREEBUSY:20260105T100000Z/20260105T110000Z\r\n" * 1000
        try:
            for _ in range((64 << 20) // len(line)):
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass        # the gateway hung up: what it should do
