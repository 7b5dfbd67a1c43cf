"""A server nobody configured: it records every connection it gets.

Used as the target of hostile redirects and hrefs: whatever the gateway
is told, this server must see no connection at all (a connection would
also carry the provider's credentials).  It answers anything with a
small 200, so a gateway that did connect would be seen using the answer.
"""

import socket
import threading
import time
from typing import List, Tuple

from emulators import RawServer


class RecordingServer(RawServer):
    def __init__(self) -> None:
        #: (time.monotonic(), first bytes the client sent)
        self.connections: List[Tuple[float, bytes]] = []
        self._lock = threading.Lock()
        super().__init__()

    def serve(self, connection: socket.socket) -> None:
        connection.settimeout(2)
        try:
            data = connection.recv(65536)
        except OSError:
            data = b""
        with self._lock:
            self.connections.append((time.monotonic(), data))
        try:
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                               b"Connection: close\r\n\r\n")
        except OSError:
            pass
        connection.close()
