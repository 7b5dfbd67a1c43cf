"""An emulated RFC 6638 CalDAV server: discovery and the outbox POST.

Speaks what the ``caldav`` provider uses, with Basic authentication on
every request: PROPFIND of DAV:current-user-principal (404 at
``/.well-known/caldav``, so the provider asks its base URL), PROPFIND of
the principal's schedule-outbox-URL and calendar-user-address-set, and
the outbox POST of a VFREEBUSY REQUEST answered with a schedule-response.

A test can script, per base path ("case"), which principal href the
server answers (``principal_hrefs``), which outbox href the principal
has, how much of the window the VFREEBUSY replies cover (``cover``:
"full", "half", "none" for no DTSTART/DTEND), and a delay before each
POST answer.  Every request and every POST's attendees are recorded.
"""

import base64
import datetime
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Tuple
from xml.sax.saxutils import escape

UTC = datetime.timezone.utc
ACCOUNT = "/principals/fed/"


def _utc(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC)


def _ical(moment: datetime.datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def _multistatus(href: str, props: str) -> bytes:
    return ('<?xml version="1.0" encoding="utf-8"?>'
            '<D:multistatus xmlns:D="DAV:" '
            'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:response>'
            '<D:href>%s</D:href><D:propstat><D:prop>%s</D:prop>'
            '<D:status>HTTP/1.1 200 OK</D:status></D:propstat>'
            '</D:response></D:multistatus>' % (escape(href), props)
            ).encode("utf-8")


class CaldavPeer:
    def __init__(self, busy: Dict[str, List[Tuple[str, str]]],
                 username: str = "fed", password: str = "fed-pw") -> None:
        self.busy = busy            # {address: [(start, end)]} in UTC text
        self.credentials = "Basic " + base64.b64encode(
            ("%s:%s" % (username, password)).encode()).decode()
        #: "/case/" -> the current-user-principal href answered there
        self.principal_hrefs: Dict[str, str] = {}
        self.outbox_href = ACCOUNT + "outbox/"
        self.cover = "full"
        self.delay = 0.0
        self.requests: List[Tuple[str, str]] = []
        #: (time.monotonic(), [attendees]) per outbox POST
        self.posts: List[Tuple[float, List[str]]] = []
        self._lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_PROPFIND(self) -> None:
                peer._handle(self, "PROPFIND")

            def do_POST(self) -> None:
                peer._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        self.base = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- serving ----------------------------------------------------------

    def _handle(self, handler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = handler.path
        with self._lock:
            self.requests.append((method, path))
        if handler.headers.get("Authorization") != self.credentials:
            return self._send(handler, 401, b"", "text/plain",
                              {"WWW-Authenticate": 'Basic realm="peer"'})
        if method == "PROPFIND":
            if path in self.principal_hrefs:
                return self._send(handler, 207, _multistatus(
                    path, "<D:current-user-principal><D:href>%s</D:href>"
                    "</D:current-user-principal>" % escape(
                        self.principal_hrefs[path])))
            if path == ACCOUNT:
                return self._send(handler, 207, _multistatus(
                    path, "<C:schedule-outbox-URL><D:href>%s</D:href>"
                    "</C:schedule-outbox-URL><C:calendar-user-address-set>"
                    "<D:href>mailto:fed@peer.example</D:href>"
                    "</C:calendar-user-address-set>" % escape(
                        self.outbox_href)))
            return self._send(handler, 404, b"", "text/plain")
        if path != self.outbox_href:
            return self._send(handler, 404, b"", "text/plain")
        lines = body.decode("utf-8").replace("\r\n ", "").split("\r\n")
        value = {}
        attendees = []
        for line in lines:
            name, _, text = line.partition(":")
            name = name.split(";")[0].upper()
            if name == "ATTENDEE":
                attendees.append(text[7:] if text.lower().startswith(
                    "mailto:") else text)
            elif name in ("DTSTART", "DTEND"):
                value[name] = _utc(text)
        with self._lock:
            self.posts.append((time.monotonic(), attendees))
        time.sleep(self.delay)
        start, end = value["DTSTART"], value["DTEND"]
        if self.cover == "half":
            end = start + (end - start) / 2
        responses = []
        for attendee in attendees:
            if attendee not in self.busy:
                responses.append((attendee, "3.7;Invalid calendar user",
                                  None))
                continue
            lines = ["BEGIN:VCALENDAR", "VERSION:2.0",
                     "PRODID:-//emulated caldav//EN", "METHOD:REPLY",
                     "BEGIN:VFREEBUSY", "UID:x", "DTSTAMP:20260101T000000Z"]
            if self.cover != "none":
                lines += ["DTSTART:%s" % _ical(start),
                          "DTEND:%s" % _ical(end)]
            for busy_start, busy_end in self.busy[attendee]:
                if _utc(busy_start) < end and _utc(busy_end) > start:
                    lines.append("FREEBUSY;FBTYPE=BUSY:%s/%s" % (
                        busy_start, busy_end))
            lines += ["END:VFREEBUSY", "END:VCALENDAR", ""]
            responses.append((attendee, "2.0;Success", "\r\n".join(lines)))
        xml = ['<?xml version="1.0" encoding="utf-8"?>'
               '<C:schedule-response xmlns:D="DAV:" '
               'xmlns:C="urn:ietf:params:xml:ns:caldav">']
        for attendee, status, data in responses:
            xml.append("<C:response><C:recipient><D:href>mailto:%s</D:href>"
                       "</C:recipient><C:request-status>%s</C:request-status>"
                       "%s</C:response>" % (
                           escape(attendee), status,
                           "" if data is None else
                           "<C:calendar-data>%s</C:calendar-data>"
                           % escape(data)))
        xml.append("</C:schedule-response>")
        self._send(handler, 200, "".join(xml).encode("utf-8"))

    @staticmethod
    def _send(handler, status: int, body: bytes,
              content_type: str = "application/xml; charset=utf-8",
              headers=None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)
