"""Emulators of foreign systems, each a real HTTP server on loopback."""

import socket
import threading


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
