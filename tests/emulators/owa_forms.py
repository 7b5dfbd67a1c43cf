"""Exchange 2003 OWA behind forms-based authentication.

As Zimbra's and DavMail's clients see it (reference/peers.md): a POST of
``destination``, ``username``, ``password`` (and OWA's ``flags``,
``trusted``, ``SubmitCreds``) to ``/exchweb/bin/auth/owaauth.dll``
answers 302 to the destination with the session cookies ``sessionid`` and
``cadata``; wrong credentials answer 302 back to
``/exchweb/bin/auth/owalogon.asp?...&reason=2``.  A request without a
live session is sent to the logon page (302, ``reason=0``) and the logon
page is a 200 HTML form, as OWA does; ``timeout_status = 440`` answers
440 Login Timeout instead.  ``expire_sessions()`` ends every session.
"""

import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Dict, List, Optional, Set

from emulators.tls import HttpsServer

LOGIN_PATH = "/exchweb/bin/auth/owaauth.dll"
LOGON_PAGE = "/exchweb/bin/auth/owalogon.asp"


class OwaForms:
    def __init__(self, username: str = "CORP\\fbsync",
                 password: str = "pw", context=None) -> None:
        self.username = username
        self.password = password
        #: (sessionid, cadata) pairs of live sessions
        self.sessions: Set[tuple] = set()
        #: form fields of every login POST
        self.logins: List[Dict[str, str]] = []
        #: (path, had a live session) of every other request
        self.requests: List[tuple] = []
        self.login_delay = 0.0
        self.timeout_status: Optional[int] = None
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                owner._get(self)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                owner._post(self, self.rfile.read(length))

        self.server = HttpsServer(Handler, context)
        self.base = self.server.base

    def close(self) -> None:
        self.server.close()

    def expire_sessions(self) -> None:
        with self._lock:
            self.sessions.clear()

    @staticmethod
    def _send(handler, status: int, body: bytes = b"",
              headers: Optional[list] = None,
              content_type: str = "text/html") -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for key, value in headers or []:
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)

    def _post(self, handler, body: bytes) -> None:
        path = urllib.parse.urlsplit(handler.path).path
        if path != LOGIN_PATH:
            return self._send(handler, 404, b"Not Found")
        form = dict(urllib.parse.parse_qsl(body.decode("utf-8")))
        self.logins.append(form)
        if self.login_delay:
            time.sleep(self.login_delay)
        destination = form.get("destination", "/")
        if form.get("username") != self.username or \
                form.get("password") != self.password:
            return self._send(handler, 302, headers=[(
                "Location", "%s?url=%s&reason=2" % (
                    LOGON_PAGE, urllib.parse.quote(destination, safe="")))])
        session = (secrets.token_hex(8), secrets.token_urlsafe(16))
        with self._lock:
            self.sessions.add(session)
        self._send(handler, 302, headers=[
            ("Location", destination),
            ("Set-Cookie", "sessionid=%s; path=/" % session[0]),
            ("Set-Cookie", "cadata=\"%s\"; HttpOnly; path=/" % session[1])])

    def _session_of(self, handler) -> bool:
        cookies = {}
        for part in (handler.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            cookies[name] = value.strip('"')
        with self._lock:
            return (cookies.get("sessionid"), cookies.get("cadata")) in \
                self.sessions

    def _get(self, handler) -> None:
        split = urllib.parse.urlsplit(handler.path)
        if split.path == LOGON_PAGE:
            return self._send(handler, 200, b"<html><form action=\""
                              + LOGIN_PATH.encode() + b"\" method=\"POST\">"
                              b"<input name=\"username\"></form></html>")
        live = self._session_of(handler)
        self.requests.append((handler.path, live))
        if not live:
            if self.timeout_status:
                return self._send(handler, self.timeout_status,
                                  b"Login Timeout")
            return self._send(handler, 302, headers=[(
                "Location", "%s?url=%s&reason=0" % (
                    LOGON_PAGE, urllib.parse.quote(handler.path, safe="")))])
        if split.path.startswith("/public/"):
            return self._send(
                handler, 200, b'<a:response xmlns:a="WM"><a:recipients>'
                b'</a:recipients></a:response>', content_type="text/xml")
        self._send(handler, 404, b"Not Found")
