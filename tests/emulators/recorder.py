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


class RecordingServer:
    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.port = self.socket.getsockname()[1]
        self.base = "http://127.0.0.1:%d" % self.port
        #: (time.monotonic(), first bytes the client sent)
        self.connections: List[Tuple[float, bytes]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,),
                             daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
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

    def close(self) -> None:
        self.socket.close()
