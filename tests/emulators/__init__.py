"""Emulators of foreign systems, each a real HTTP server on loopback."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Dict, Optional


class RawServer:
    """A TCP server on a free loopback port that hands each connection
    to ``serve(connection)`` on its own thread: for peers that must
    misbehave below HTTP (trickle, hang, record) where an HTTP server
    class would get in the way."""

    def __init__(self, backlog: int = 64) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(backlog)
        self.port = self.socket.getsockname()[1]
        self.base = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(connection,),
                             daemon=True).start()

    def serve(self, connection: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.socket.close()


class JsonHandler(BaseHTTPRequestHandler):
    """The request handler of an emulated JSON API: a GET goes to
    ``owner.handle(self)``; ``send`` writes one answer (a dict or list as
    JSON, text as UTF-8) with its length.  Each server names itself the
    owner: ``type("Handler", (JsonHandler,), {"owner": self})``."""

    protocol_version = "HTTP/1.1"
    owner = None
    #: the request's body: a POST's bytes (JsonPostHandler), None for a GET
    body: Optional[bytes] = None

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.body = None            # the connection's last POST is past
        self.owner.handle(self)

    def send(self, status: int, body, content_type: str = "application/json",
             headers: Optional[Dict[str, str]] = None) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class JsonPostHandler(JsonHandler):
    """A JsonHandler for APIs that take POSTs too (their body in
    ``body``); APIs that serve only GET keep http.server's 501 for
    POST."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        self.owner.handle(self)


class Overlap:
    """``with overlap:`` around answering a request; ``peak`` is the most
    requests that were being answered at the same moment."""

    def __init__(self) -> None:
        self.peak = 0
        self._running = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self._running += 1
            self.peak = max(self.peak, self._running)

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._running -= 1


class JsonRecord:
    """One request a JSON API emulator answered: its path, headers,
    parsed body and status, and when it came."""

    def __init__(self, path: str, headers, body, status: int) -> None:
        self.path = path
        self.headers = headers
        self.body = body
        self.status = status
        self.time = time.monotonic()
