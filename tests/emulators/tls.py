"""TLS for emulators: a test CA (trustme) and HTTPS servers on loopback.

``Pki(directory)`` makes a CA, a server certificate for 127.0.0.1 and
localhost, and a client certificate, and writes them as PEM files the
gateway's ini keys can name (``ca_file``, ``client_cert``,
``client_key``).  ``HttpsServer`` is a ThreadingHTTPServer whose TLS
handshake runs in the connection's own thread (a client that never
finishes it holds up nobody), optionally requiring a client certificate
from the CA.  Servers listen on 127.0.0.1 only and stop with ``close()``.
"""

import pathlib
import ssl
import threading
from http.server import ThreadingHTTPServer
from typing import List, Optional

import trustme


class Pki:
    """A CA with a server and a client certificate, as PEM files."""

    def __init__(self, directory: pathlib.Path, name: str = "test") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name="Freebusy Gateway %s CA"
                             % name)
        self.server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.client = self.ca.issue_cert(
            "gateway@freebusy.example", common_name="freebusy-gateway")
        self.ca_file = str(directory / ("%s-ca.pem" % name))
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.client_cert = str(directory / ("%s-client.pem" % name))
        self.client_key = str(directory / ("%s-client.key" % name))
        self.client.cert_chain_pems[0].write_to_path(self.client_cert)
        self.client.private_key_pem.write_to_path(self.client_key)
        #: certificate and key in one file
        self.client_combined = str(directory / ("%s-client-all.pem" % name))
        self.client.private_key_and_cert_chain_pem.write_to_path(
            self.client_combined)

    def server_context(self, require_client_cert: bool = False
                       ) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.configure_cert(context)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(context)
        return context


class HttpsServer(ThreadingHTTPServer):
    """A threading HTTP server speaking TLS on 127.0.0.1."""

    daemon_threads = True

    def __init__(self, handler, context: Optional[ssl.SSLContext]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.context = context
        self.port = self.server_port
        scheme = "https" if context is not None else "http"
        self.base = "%s://127.0.0.1:%d" % (scheme, self.port)
        #: TLS handshakes that failed (no client certificate, ...)
        self.handshake_errors: List[str] = []
        self._thread = threading.Thread(target=self.serve_forever,
                                        daemon=True)
        self._thread.start()

    def finish_request(self, request, client_address) -> None:
        if self.context is not None:
            try:
                request = self.context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                self.handshake_errors.append(str(e))
                return
        try:
            self.RequestHandlerClass(request, client_address, self)
        finally:
            if self.context is not None:
                try:
                    request.close()
                except OSError:
                    pass

    def handle_error(self, request, client_address) -> None:
        pass          # a client that hung up is no test failure

    def close(self) -> None:
        self.shutdown()
        self.server_close()
