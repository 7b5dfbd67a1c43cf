"""The WSGI assembly: Radicale serves CalDAV, the gateway adds free/busy.

``GatewayApplication`` is Radicale's own Application with a few methods
taken over: the free-busy-query REPORT, and (through the scheduling face)
the RFC 6638 properties, inbox, outbox and POST.  Everything else, and
authentication and rights for everything, stays Radicale's.  Every XML
body is read once and checked by the hardened parser before Radicale or
the gateway sees it.
"""

import io
import logging
from typing import Optional

import radicale
from radicale import httputils

from gateway import radicale_compat, xmlsafe
from gateway.config import GatewayConfig
from gateway.faces import report
from gateway.local import LocalEngine

logger = logging.getLogger(__name__)

MAX_XML_BYTES = 1 << 20


def _bad_request(text: str):
    return 400, {"Content-Type": "text/plain; charset=utf-8"}, \
        text.encode("utf-8"), None


class GatewayApplication(radicale.Application):
    """Radicale plus the gateway's free/busy faces."""

    def __init__(self, gateway_config: GatewayConfig) -> None:
        radicale_compat.check_version()
        radicale_compat.allow_freebusy_components()
        super().__init__(gateway_config.radicale)
        self.gateway_config = gateway_config
        self.gateway_options = gateway_config.gateway
        self.local = LocalEngine(
            self._storage, self._rights,
            max_occurrences=self.configuration.get(
                "reporting", "max_freebusy_occurrence"))

    # -- request bodies ---------------------------------------------------

    def _read_body(self, environ) -> bytes:
        body = httputils.read_raw_request_body(self.configuration, environ)
        # Radicale reads the body again for the methods it keeps.
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return body

    def _xml_body(self, environ) -> Optional[object]:
        """The parsed XML body, None when empty; XMLError when hostile."""
        body = self._read_body(environ)
        if not body.strip():
            return None
        return xmlsafe.parse(body, MAX_XML_BYTES)

    # -- methods ----------------------------------------------------------

    def do_REPORT(self, environ, base_prefix, path, user, user_groups,
                  request_info):
        try:
            root = self._xml_body(environ)
        except xmlsafe.XMLError as e:
            logger.info("Refused REPORT body on %r: %s", path, e)
            return _bad_request(str(e))
        if root is not None and root.tag == xmlsafe.clark("C:free-busy-query"):
            return report.free_busy_report(
                self, root, path, user, user_groups,
                environ.get("HTTP_DEPTH"))
        return super().do_REPORT(environ, base_prefix, path, user,
                                 user_groups, request_info)
