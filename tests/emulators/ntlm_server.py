"""An HTTP server that really checks NTLM (pyspnego's acceptor).

NTLM authenticates a connection, not a request: the NEGOTIATE message
gets 401 with a CHALLENGE, and the AUTHENTICATE message on the same
connection is checked against the user file (``NTLM_USER_FILE``, lines
``DOMAIN:USER:PASSWORD``; the caller sets the variable).  A request
without NTLM gets ``401 WWW-Authenticate: NTLM``.  Every leg is recorded
with the connection it came on, so tests can see the three-leg exchange.
"""

import base64
import struct
import threading
from http.server import BaseHTTPRequestHandler
from typing import List, Tuple

import spnego
import spnego.exceptions

from emulators.tls import HttpsServer

MESSAGE_TYPES = {1: "negotiate", 2: "challenge", 3: "authenticate"}


def message_type(token: bytes) -> str:
    if token[:8] != b"NTLMSSP\x00" or len(token) < 12:
        return "garbage"
    return MESSAGE_TYPES.get(struct.unpack("<I", token[8:12])[0], "unknown")


class NtlmServer:
    def __init__(self, context=None) -> None:
        #: (connection number, leg, status) of every request
        self.legs: List[Tuple[int, str, int]] = []
        #: users that completed the handshake (DOMAIN\\user)
        self.authenticated: List[str] = []
        self._count = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with owner._lock:
                    owner._count += 1
                    self.number = owner._count
                self.ntlm = None

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                owner._handle(self)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                owner._handle(self)

        self.server = HttpsServer(Handler, context)
        self.base = self.server.base

    def close(self) -> None:
        self.server.close()

    @staticmethod
    def _send(handler, status: int, body: bytes, challenge: str = "NTLM"
              ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(body)))
        if status == 401:
            handler.send_header("WWW-Authenticate", challenge)
        handler.end_headers()
        handler.wfile.write(body)

    def _handle(self, handler) -> None:
        header = handler.headers.get("Authorization", "")
        if not header.startswith("NTLM "):
            self.legs.append((handler.number, "none", 401))
            return self._send(handler, 401, b"NTLM required")
        try:
            token = base64.b64decode(header[5:])
        except ValueError:
            self.legs.append((handler.number, "garbage", 400))
            return self._send(handler, 400, b"bad token")
        leg = message_type(token)
        if leg == "negotiate":
            handler.ntlm = spnego.server(
                protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
            challenge = handler.ntlm.step(token)
            self.legs.append((handler.number, leg, 401))
            return self._send(handler, 401, b"", "NTLM " + base64.b64encode(
                challenge).decode("ascii"))
        if leg == "authenticate" and handler.ntlm is not None:
            try:
                handler.ntlm.step(token)
                user = handler.ntlm.client_principal
            except spnego.exceptions.SpnegoError:
                user = None
            handler.ntlm = None
            if user:
                self.legs.append((handler.number, leg, 200))
                self.authenticated.append(user)
                return self._send(handler, 200, ("hello %s" % user).encode())
        self.legs.append((handler.number, leg, 401))
        self._send(handler, 401, b"NTLM refused")
