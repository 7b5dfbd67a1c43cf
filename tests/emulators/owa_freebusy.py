"""Exchange 2003 Outlook Web Access: the XML free/busy interface
(reference/foreign-apis.md section 8), on 127.0.0.1.

``GET /public/?cmd=freebusy&start=&end=&interval=&u=SMTP:a&u=SMTP:b``
answers as OWA does::

    <a:response xmlns:a="WM"><a:recipients>
      <a:item><a:displayname>All Attendees</a:displayname><a:type>1</a:type>
        <a:fbdata>0022...</a:fbdata></a:item>
      <a:item><a:displayname>Carol</a:displayname>
        <a:email type="SMTP">carol@...</a:email><a:type>1</a:type>
        <a:fbdata>0022...</a:fbdata></a:item>
    </a:recipients></a:response>

- one digit per ``interval`` minutes from ``start`` (UTC), as many as the
  window holds (a last partial slot counts): 0 free, 1 tentative, 2 busy,
  3 out of office (the highest wins), 4 no data (``Mailbox.no_data``);
- a recipient Exchange does not know is left out (``unknown_users =
  "nodata"``: listed with all 4s instead); mailbox addresses are matched
  case-insensitively and echoed as the directory spells them;
- the publishing horizon: a mailbox's free/busy is published from the
  start of the current month (UTC) for ``publish_months``; slots outside
  read ``past_horizon`` ("0", as CDO, by default; or "4");
- ``cmd``/``Cmd``, ``end`` or Zimbra's ``endt``; times with ``Z`` are UTC,
  without it they are read in the server's own zone (``server_offset``),
  as Exchange does;
- a browser that is not Internet Explorer gets OWA's HTML page (200);
- ``script``: behaviours for the next free/busy requests, one each:
  "hang", "500", "html", "garbage", "wrong-namespace", "truncate".

Front doors (auth): ``OwaFreeBusy(auth="basic")`` is its own server with
IIS Basic authentication (``auth=None``: anonymous); ``OwaNtlm`` is
emulators.ntlm_server's NTLM acceptor and ``OwaFormsFreeBusy`` is
emulators.owa_forms' forms login, both answering with the same store.
Every free/busy request is recorded (``requests``).
"""

import base64
import datetime
import math
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Dict, Iterable, List, Optional, Tuple
from xml.sax.saxutils import escape

from emulators.ntlm_server import NtlmServer
from emulators.owa_forms import OwaForms
from emulators.tls import HttpsServer

UTC = datetime.timezone.utc
PATH = "/public/"
OWA_HTML = (b"<html><head><title>Microsoft Outlook Web Access</title></head>"
            b"<body><p>Outlook Web Access Basic<br>You are using a browser "
            b"that OWA does not support fully.</p></body></html>")
LOGON_HTML = (b"<HTML><HEAD><TITLE>Microsoft Outlook Web Access</TITLE>"
              b"</HEAD><BODY><FORM action=\"/exchweb/bin/auth/owaauth.dll\""
              b" method=\"POST\" name=\"logonForm\"><INPUT name=username>"
              b"<INPUT type=password name=password></FORM></BODY></HTML>")


def month_start(moment: datetime.datetime, months: int = 0
                ) -> datetime.datetime:
    index = moment.year * 12 + moment.month - 1 + months
    return datetime.datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


class Mailbox:
    """A mailbox's published free/busy: ``events`` are (start, end,
    digit "1"/"2"/"3"); ``no_data`` are spans that read 4."""

    def __init__(self, address: str, display: str,
                 events: Iterable[Tuple[datetime.datetime, datetime.datetime,
                                        str]] = (),
                 no_data: Iterable[Tuple[datetime.datetime,
                                         datetime.datetime]] = ()) -> None:
        self.address = address
        self.display = display
        self.events = list(events)
        self.no_data = list(no_data)


class Recorded:
    def __init__(self, path: str, pairs: List[Tuple[str, str]],
                 headers: Dict[str, str]) -> None:
        self.path = path
        self.pairs = pairs
        self.headers = headers
        self.time = time.monotonic()

    def get(self, key: str) -> Optional[str]:
        values = [v for k, v in self.pairs if k.lower() == key.lower()]
        return values[-1] if values else None

    @property
    def users(self) -> List[str]:
        return [v for k, v in self.pairs if k.lower() == "u"]


class FreeBusyStore:
    """The mailboxes and the answer; shared by every front door."""

    def __init__(self, mailboxes: Iterable[Mailbox], publish_months: int = 3,
                 past_horizon: str = "0", unknown_users: str = "missing",
                 server_offset: datetime.timedelta =
                 datetime.timedelta(hours=-5), path: str = PATH) -> None:
        self.mailboxes = {m.address.lower(): m for m in mailboxes}
        self.publish_months = publish_months
        self.past_horizon = past_horizon
        self.unknown_users = unknown_users
        self.server_zone = datetime.timezone(server_offset)
        self.path = path
        self.requests: List[Recorded] = []
        self.script: List[str] = []
        self.hang_seconds = 30.0
        self._released = threading.Event()
        self._lock = threading.Lock()

    def release(self) -> None:
        self._released.set()

    def published(self) -> Tuple[datetime.datetime, datetime.datetime]:
        now = datetime.datetime.now(UTC)
        return month_start(now), month_start(now, self.publish_months)

    # -- the answer ------------------------------------------------------

    @staticmethod
    def send(handler, status: int, body: bytes,
             content_type: str = "text/html",
             headers: Optional[list] = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for key, value in headers or []:
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)

    def _time(self, text: Optional[str]) -> datetime.datetime:
        if not text:
            raise ValueError("missing")
        if text.endswith("Z"):
            return datetime.datetime.strptime(
                text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        moment = datetime.datetime.fromisoformat(text)
        if moment.tzinfo is None:       # Exchange: the server's own zone
            moment = moment.replace(tzinfo=self.server_zone)
        return moment.astimezone(UTC)

    def _digit(self, mailbox: Mailbox, start, end, published) -> str:
        if start >= published[1] or end <= published[0]:
            return self.past_horizon
        if any(s < end and e > start for s, e in mailbox.no_data):
            return "4"
        return max([d for s, e, d in mailbox.events
                    if s < end and e > start] or ["0"])

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        split = urllib.parse.urlsplit(handler.path)
        pairs = urllib.parse.parse_qsl(split.query, keep_blank_values=True)
        with self._lock:
            self.requests.append(Recorded(split.path, pairs,
                                          dict(handler.headers)))
        if split.path.rstrip("/") != self.path.rstrip("/"):
            return self.send(handler, 404, b"<html>Not Found</html>")
        params = {k.lower(): v for k, v in pairs if k.lower() != "u"}
        if params.get("cmd", "").lower() != "freebusy":
            return self.send(handler, 200, OWA_HTML)       # the folder view
        if "MSIE" not in handler.headers.get("User-Agent", ""):
            return self.send(handler, 200, OWA_HTML)
        with self._lock:
            behaviour = self.script.pop(0) if self.script else None
        if behaviour == "hang":
            self._released.wait(self.hang_seconds)
            return
        if behaviour == "500":
            return self.send(handler, 500, b"<html>The server encountered "
                             b"an error</html>")
        if behaviour == "html":
            return self.send(handler, 200, LOGON_HTML)
        if behaviour == "garbage":
            return self.send(handler, 200, b"\x00\xff<a:resp", "text/xml")
        try:
            start = self._time(params.get("start"))
            end = self._time(params.get("end") or params.get("endt"))
            interval = int(params.get("interval") or "30")
            if interval < 1 or end <= start:
                raise ValueError("bad window or interval")
        except ValueError:
            return self.send(handler, 400, b"<html>Bad Request</html>")
        step = datetime.timedelta(minutes=interval)
        count = math.ceil((end - start) / step)
        published = self.published()
        items, merged = [], ["0"] * count
        for user in [v for k, v in pairs if k.lower() == "u"]:
            if not user.upper().startswith("SMTP:"):
                continue
            mailbox = self.mailboxes.get(user[5:].lower())
            if mailbox is None:
                if self.unknown_users != "nodata":
                    continue
                mailbox = Mailbox(user[5:], user[5:],
                                  no_data=[(start, end)])
            digits = [self._digit(mailbox, start + i * step,
                                  start + (i + 1) * step, published)
                      for i in range(count)]
            merged = [max(a, b) for a, b in zip(merged, digits)]
            fbdata = "".join(digits)
            if behaviour == "truncate":
                fbdata = fbdata[:len(fbdata) // 2]
            items.append(
                "<a:item><a:displayname>%s</a:displayname>"
                "<a:email type=\"SMTP\">%s</a:email><a:type>1</a:type>"
                "<a:fbdata>%s</a:fbdata></a:item>" % (
                    escape(mailbox.display), escape(mailbox.address),
                    fbdata))
        namespace = "urn:schemas-microsoft-com:office:office" \
            if behaviour == "wrong-namespace" else "WM"
        body = ("<a:response xmlns:a=\"%s\"><a:recipients><a:item>"
                "<a:displayname>All Attendees</a:displayname>"
                "<a:type>1</a:type><a:fbdata>%s</a:fbdata></a:item>%s"
                "</a:recipients></a:response>" % (
                    namespace, "".join(merged), "".join(items)))
        self.send(handler, 200, body.encode("utf-8"), "text/xml")


class OwaFreeBusy(FreeBusyStore):
    """OWA with IIS Basic authentication (``auth="basic"``) or none."""

    def __init__(self, mailboxes, auth: Optional[str] = "basic",
                 username: str = "CORP\\fbsync", password: str = "pw",
                 **kwargs) -> None:
        super().__init__(mailboxes, **kwargs)
        self.auth = auth
        self.expected = "Basic " + base64.b64encode(
            ("%s:%s" % (username, password)).encode()).decode()
        #: the Authorization header of every request (None: without)
        self.authorizations: List[Optional[str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                owner._basic(self)

        self.server = HttpsServer(Handler, None)
        self.base = self.server.base

    def _basic(self, handler) -> None:
        sent = handler.headers.get("Authorization")
        self.authorizations.append(sent)
        if self.auth == "basic" and sent != self.expected:
            return self.send(handler, 401, b"<html>You are not authorized "
                             b"to view this page</html>", headers=[(
                                 "WWW-Authenticate",
                                 "Basic realm=\"owa.example\"")])
        self.answer(handler)

    def close(self) -> None:
        self.release()
        self.server.close()


class OwaNtlm(NtlmServer):
    """OWA behind IIS integrated authentication: NtlmServer's real NTLM
    acceptor; what it would answer 200 to gets the free/busy answer."""

    def __init__(self, store: FreeBusyStore, context=None) -> None:
        self.store = store
        super().__init__(context)

    def _send(self, handler, status, body, challenge="NTLM"):
        if status == 200:
            return self.store.answer(handler)
        return NtlmServer._send(handler, status, body, challenge)

    def close(self) -> None:
        self.store.release()
        super().close()


class OwaFormsFreeBusy(OwaForms):
    """OWA behind forms-based authentication (emulators.owa_forms): with a
    live session, ``cmd=freebusy`` requests get the free/busy answer;
    everything else (logon page, expired sessions, 440) is OwaForms'."""

    def __init__(self, store: FreeBusyStore, **kwargs) -> None:
        self.store = store
        super().__init__(**kwargs)

    def _get(self, handler) -> None:
        split = urllib.parse.urlsplit(handler.path)
        if "cmd=" in split.query.lower() and self._session_of(handler):
            self.requests.append((split.path, True))
            return self.store.answer(handler)
        return super()._get(handler)

    def close(self) -> None:
        self.store.release()
        super().close()
