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
from gateway.faces import report, scheduling
from gateway.fanout import FanOut
from gateway.http import HOPS_HEADER, HttpClient
from gateway.local import AVAILABILITY_KEY, LocalEngine
from gateway.provider import load_provider

logger = logging.getLogger(__name__)

MAX_XML_BYTES = 1 << 20


XML = {"Content-Type": "application/xml; charset=utf-8"}
#: Methods that make no sense on the virtual inbox and outbox.
_NOT_ON_BOXES = ("GET", "HEAD", "PUT", "DELETE", "MOVE")


def _bad_request(text: str):
    return 400, {"Content-Type": "text/plain; charset=utf-8"}, \
        text.encode("utf-8"), None


def _multistatus(body: bytes):
    return 207, XML, body, None


def http_client_for(provider_config) -> HttpClient:
    """The one HTTP client a provider gets, from its common ini keys."""
    options = provider_config.options
    return HttpClient(options["url"], options["timeout"],
                      username=options["username"],
                      password=options["password"], token=options["token"],
                      verify=options["verify_tls"])


def load_providers(gateway_config: GatewayConfig):
    return [load_provider(gateway_config.path, p, http_client_for)
            for p in gateway_config.providers]


class GatewayApplication(radicale.Application):
    """Radicale plus the gateway's free/busy faces."""

    def __init__(self, gateway_config: GatewayConfig,
                 providers=None) -> None:
        radicale_compat.check_version()
        radicale_compat.allow_freebusy_components()
        super().__init__(gateway_config.radicale)
        self.gateway_config = gateway_config
        self.gateway_options = gateway_config.gateway
        self.local = LocalEngine(
            self._storage, self._rights,
            max_occurrences=self.configuration.get(
                "reporting", "max_freebusy_occurrence"),
            addresses_of=lambda owner: scheduling.user_addresses(
                owner, self.gateway_options["domains"]))
        options = self.gateway_options
        self.providers = load_providers(gateway_config) \
            if providers is None else providers
        self.fanout = FanOut(options["domains"], self.local.lookup_user,
                             self.providers, options["cache_ttl"],
                             options["timeout"], options["max_hops"],
                             local_username=_username_rule(
                                 self.configuration))

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
        if scheduling.box_of(path):
            return (403, XML, report.supported_report_error(), None) \
                if user else httputils.NOT_ALLOWED
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

    def do_OPTIONS(self, environ, base_prefix, path, user, user_groups,
                   request_info):
        status, headers, answer, xml = super().do_OPTIONS(
            environ, base_prefix, path, user, user_groups, request_info)
        headers = dict(headers)
        if "DAV" in headers and "calendar-auto-schedule" not in headers["DAV"]:
            headers["DAV"] += ", calendar-auto-schedule, calendar-availability"
        return status, headers, answer, xml

    # -- RFC 6638: principals, inbox, outbox -------------------------------

    def _own_box(self, path: str, user: str):
        """(owner, box) when ``user`` owns the inbox/outbox at ``path``."""
        box = scheduling.box_of(path)
        if box is None:
            return None, None
        if not user or box[0] != user:
            return box, httputils.NOT_ALLOWED
        return box, None

    def do_PROPFIND(self, environ, base_prefix, path, user, user_groups,
                    request_info):
        try:
            root = self._xml_body(environ)
        except xmlsafe.XMLError as e:
            return _bad_request(str(e))
        wanted = scheduling.requested_props(root)
        box, refused = self._own_box(path, user)
        if refused:
            return refused
        if box:
            return _multistatus(scheduling.box_propfind(
                base_prefix, box[0], box[1], wanted,
                self._stored_availability(box[0])))
        status, headers, answer, xml = super().do_PROPFIND(
            environ, base_prefix, path, user, user_groups, request_info)
        if status == 207 and answer:
            domains = self.gateway_options["domains"]
            prefix = base_prefix + "/"

            def fixes_for(href):
                if not href or not href.startswith(prefix):
                    return None
                name = href[len(prefix):].rstrip("/")
                if not name or "/" in name:
                    return None
                return scheduling.principal_values(base_prefix, name,
                                                   domains)
            answer = scheduling.augment_multistatus(answer, fixes_for, wanted)
        return status, headers, answer, xml

    def _stored_availability(self, owner: str):
        with self._storage.acquire_lock("r", owner):
            principal = next(iter(self._storage.discover(
                "/%s/" % owner, depth="0")), None)
            return principal.get_meta(AVAILABILITY_KEY) if principal else None

    def do_PROPPATCH(self, environ, base_prefix, path, user, user_groups,
                     request_info):
        try:
            root = self._xml_body(environ)
        except xmlsafe.XMLError as e:
            return _bad_request(str(e))
        box, refused = self._own_box(path, user)
        if refused:
            return refused
        if box:
            if box[1] != scheduling.INBOX or root is None:
                return 403, XML, None, None
            try:
                found, text = scheduling.parse_availability_patch(root)
            except ValueError as e:
                return _bad_request(str(e))
            if not found:
                return _bad_request("nothing to change")
            with self._storage.acquire_lock("w", user):
                principal = next(iter(self._storage.discover(
                    "/%s/" % user, depth="0")), None)
                if principal is None:
                    return httputils.NOT_FOUND
                meta = dict(principal.get_meta())
                if text is None:
                    meta.pop(AVAILABILITY_KEY, None)
                else:
                    meta[AVAILABILITY_KEY] = text
                principal.set_meta(meta)
            names = [c.tag for a in root for p in a for c in p]
            return _multistatus(scheduling.proppatch_ok(base_prefix, path,
                                                        names))
        self._store_transp_as_text(environ, root)
        return super().do_PROPPATCH(environ, base_prefix, path, user,
                                    user_groups, request_info)

    def _store_transp_as_text(self, environ, root) -> None:
        """Hand Radicale schedule-calendar-transp in a form it keeps."""
        if root is not None and scheduling.transp_as_text(root):
            body = xmlsafe.tostring(root)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))

    def _create_collection(self, method: str, environ, base_prefix, path,
                           user, user_groups, request_info):
        if scheduling.box_of(path):
            return httputils.METHOD_NOT_ALLOWED if user else \
                httputils.NOT_ALLOWED
        try:
            root = self._xml_body(environ)
        except xmlsafe.XMLError as e:
            return _bad_request(str(e))
        self._store_transp_as_text(environ, root)
        return getattr(super(), "do_" + method)(
            environ, base_prefix, path, user, user_groups, request_info)

    def do_MKCALENDAR(self, environ, base_prefix, path, user, user_groups,
                      request_info):
        return self._create_collection("MKCALENDAR", environ, base_prefix,
                                       path, user, user_groups, request_info)

    def do_MKCOL(self, environ, base_prefix, path, user, user_groups,
                 request_info):
        return self._create_collection("MKCOL", environ, base_prefix, path,
                                       user, user_groups, request_info)

    def do_POST(self, environ, base_prefix, path, user, user_groups,
                request_info):
        box, refused = self._own_box(path, user)
        if box is None:
            return super().do_POST(environ, base_prefix, path, user,
                                   user_groups, request_info)
        if refused:
            return refused
        if box[1] != scheduling.OUTBOX:
            return httputils.METHOD_NOT_ALLOWED
        body = self._read_body(environ)
        options = self.gateway_options
        try:
            request = scheduling.parse_request(
                body, environ.get("CONTENT_TYPE", ""),
                scheduling.user_addresses(user, options["domains"]),
                options["max_window_days"])
        except scheduling.SchedulingError as e:
            logger.info("Refused outbox POST by %r: %s", user, e.text)
            return e.status, XML, e.body(), None
        attendees = request.attendees[:options["max_attendees"]]
        over_limit = request.attendees[options["max_attendees"]:]
        results = self.fanout.lookup(
            [str(a).strip() for a in attendees], request.window,
            requester=user, requester_groups=user_groups,
            hops=_incoming_hops(environ))
        return 200, XML, scheduling.schedule_response(
            request, results, over_limit), None


def _username_rule(configuration):
    """How Radicale turns a login into a user name, for address local
    parts: user@domain means the account that logs in as ``user``."""
    if configuration.get("auth", "lc_username"):
        return str.lower
    if configuration.get("auth", "uc_username"):
        return str.upper
    return str


def _incoming_hops(environ) -> int:
    """Hops a federated request has made so far (0 from a client)."""
    raw = environ.get("HTTP_" + HOPS_HEADER.upper().replace("-", "_"), "0")
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


def _refuse_on_boxes(method: str):
    def handler(self, environ, base_prefix, path, user, user_groups,
                request_info):
        if scheduling.box_of(path):
            return httputils.METHOD_NOT_ALLOWED if user else \
                httputils.NOT_ALLOWED
        return getattr(super(GatewayApplication, self), "do_" + method)(
            environ, base_prefix, path, user, user_groups, request_info)
    handler.__name__ = "do_" + method
    handler.__doc__ = ("Radicale's %s, refused on the inbox and outbox."
                       % method)
    return handler


for _method in _NOT_ON_BOXES:
    setattr(GatewayApplication, "do_" + _method, _refuse_on_boxes(_method))
