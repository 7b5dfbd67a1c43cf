"""A free/busy read URL server (CalConnect dialect) that trickles.

For addresses whose local part starts with ``trickle`` it sends its
status line and headers one byte every quarter second, without end, so
every socket read succeeds and a per-read timeout never fires; other
addresses get an ordinary VFREEBUSY covering the window asked for.  It
records when each trickling connection opened and when the client hung
up, so a test can see the socket released at the gateway's deadline.
"""

import socket
import threading
import time
import urllib.parse
from typing import Dict, List, Optional

from emulators import RawServer


class TricklingPeer(RawServer):
    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        #: one dict per trickling request: opened, closed (monotonic)
        self.trickles: List[Dict[str, Optional[float]]] = []
        self.answered: List[str] = []
        self._stop = threading.Event()
        super().__init__()

    def url_template(self) -> str:
        return self.base + "/freebusy/{address}.ifb"

    def serve(self, connection: socket.socket) -> None:
        try:
            while True:  # keep-alive: one request after another
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    request += chunk
                target = request.split(b" ", 2)[1].decode("latin-1")
                split = urllib.parse.urlsplit(target)
                address = urllib.parse.unquote(
                    split.path.rsplit("/", 1)[-1][:-len(".ifb")])
                if address.startswith("trickle"):
                    return self._trickle(connection)
                query = dict(urllib.parse.parse_qsl(split.query))
                start = query["start"].replace("-", "").replace(":", "")
                end = query["end"].replace("-", "").replace(":", "")
                body = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//trickle"
                        "//EN\r\nBEGIN:VFREEBUSY\r\nDTSTART:%s\r\nDTEND:%s"
                        "\r\nFREEBUSY:20260105T100000Z/20260105T110000Z\r\n"
                        "END:VFREEBUSY\r\nEND:VCALENDAR\r\n" % (start, end)
                        ).encode()
                self.answered.append(address)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: "
                                   b"text/calendar\r\nContent-Length: %d\r\n"
                                   b"\r\n%s" % (len(body), body))
        except OSError:
            pass
        finally:
            connection.close()

    def _trickle(self, connection: socket.socket) -> None:
        record = {"opened": time.monotonic(), "closed": None}
        self.trickles.append(record)
        head = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"z" * 100000
        try:
            for byte in head:
                if self._stop.wait(self.interval):
                    return
                connection.sendall(bytes([byte]))
        except OSError:
            record["closed"] = time.monotonic()   # the client hung up
        finally:
            if record["closed"] is None and not self._stop.is_set():
                record["closed"] = time.monotonic()

    def close(self) -> None:
        self._stop.set()
        super().close()
