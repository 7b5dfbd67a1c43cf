"""A WebDAV folder that takes published free/busy files (reference/
peers.md: Outlook's "Publish at my location" and Kolab's free/busy
folder): ``PUT /fb/{address}.ifb`` with a VFREEBUSY, answered 201 the
first time and 204 after, as WebDAV servers do; GET gives the file back.

Tests script what goes wrong per request (``script``: 500, 503 with
Retry-After, or a hang until released) and read every PUT it took.
"""

import base64
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Tuple


class Put:
    def __init__(self, path: str, body: bytes, headers) -> None:
        self.path = path
        self.body = body
        self.headers = headers
        self.time = time.monotonic()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class WebDavFolder:
    """One folder; ``files`` is what it holds now, ``puts`` every PUT
    that got an answer, ``attempts`` every PUT that arrived."""

    def __init__(self, user: str = "", password: str = "") -> None:
        self.files: Dict[str, bytes] = {}
        self.puts: List[Put] = []
        self.attempts: List[Put] = []
        #: what to do with the next PUTs: ("status", n) or ("hang",)
        self.script: List[Tuple] = []
        self.release = threading.Event()
        self.credentials = (user, password) if user else None
        self._lock = threading.Lock()
        folder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes = b"",
                      headers=()) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorized(self) -> bool:
                if folder.credentials is None:
                    return True
                expected = "Basic " + base64.b64encode(
                    ("%s:%s" % folder.credentials).encode()).decode()
                if self.headers.get("Authorization") == expected:
                    return True
                self._send(401, b"", [("WWW-Authenticate",
                                       'Basic realm="fb"')])
                return False

            def do_PUT(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                put = Put(self.path, body, dict(self.headers))
                with folder._lock:
                    folder.attempts.append(put)
                    step = folder.script.pop(0) if folder.script else None
                if not self._authorized():
                    return
                if step and step[0] == "hang":
                    folder.release.wait(60)
                    return
                if step and step[0] == "status":
                    headers = [("Retry-After", str(step[2]))] \
                        if len(step) > 2 else []
                    self._send(step[1], b"scripted failure", headers)
                    return
                if not self.headers.get("Content-Type", "").startswith(
                        "text/calendar"):
                    self._send(415, b"text/calendar only")
                    return
                with folder._lock:
                    existed = self.path in folder.files
                    folder.files[self.path] = body
                    folder.puts.append(put)
                self._send(204 if existed else 201)

            def do_GET(self):
                if not self._authorized():
                    return
                body = folder.files.get(self.path)
                if body is None:
                    self._send(404, b"not found")
                else:
                    self._send(200, body, [("Content-Type",
                                            "text/calendar")])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()

    def wait_for_puts(self, count: int, timeout: float = 30.0) -> List[Put]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.puts) >= count:
                    return list(self.puts)
            time.sleep(0.05)
        raise AssertionError("%d PUTs after %.0f s, expected %d" % (
            len(self.puts), timeout, count))

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
