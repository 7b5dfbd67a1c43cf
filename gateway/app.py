"""The WSGI assembly: Radicale serves CalDAV, the gateway adds free/busy.

``GatewayApplication`` is Radicale's own Application with a few methods
taken over: the free-busy-query REPORT, and (through the scheduling face)
the RFC 6638 properties, inbox, outbox and POST.  Everything else, and
authentication and rights for everything, stays Radicale's.  Every XML
body is read once and checked by the hardened parser before Radicale or
the gateway sees it.
"""

import base64
import functools
import io
import logging
import time
import urllib.parse
from typing import List, Optional

import radicale
from radicale import httputils
from radicale import storage as radicale_storage
from radicale.app.base import Access

from gateway import metrics, radicale_compat, timezones, xmlsafe
from gateway.config import GatewayConfig
from gateway import faces
from gateway.addresses import LocalUsers, username_rule
from gateway.faces import (access, autodiscover, ews, finder, graphapi,
                           openapi, ops, push, readurl, report, scheduling,
                           view)
from gateway.engine.fanout import FanOut
from gateway.engine.push import PushWorker
from gateway.model import LookupResult, Reason
from gateway.state import PushQueue
from gateway.stores import Stores
from gateway.transport import auth
from gateway.transport.http import HttpClient
from gateway.engine.calendar_object import Limits
from gateway.engine.local import (AVAILABILITY_KEY, TIMEZONE_KEY,
                           LocalEngine)
from gateway.transport.provider import load_provider

logger = logging.getLogger(__name__)

MAX_XML_BYTES = 1 << 20


XML = {"Content-Type": "application/xml; charset=utf-8"}
#: Methods that make no sense on the virtual inbox and outbox.
_NOT_ON_BOXES = ("GET", "HEAD", "PUT", "DELETE", "MOVE")


def open_queue(gateway_config: GatewayConfig) -> PushQueue:
    """The push queue ``[gateway] queue`` names: a SQLite file (default:
    in Radicale's storage folder, so it lives and is backed up with the
    calendars) or a Redis that several instances share."""
    return Stores.of(gateway_config).open_queue()


def _bad_request(text: str):
    return 400, {"Content-Type": "text/plain; charset=utf-8"}, \
        text.encode("utf-8"), None


def _multistatus(body: bytes):
    return 207, XML, body, None


def http_client_for(provider_config, provider_class=None,
                    shared: Optional[Stores] = None) -> HttpClient:
    """The one HTTP client a provider gets, from its common ini keys;
    credentials, client certificate and CA file as gateway.transport.auth
    reads them (ValueError naming the key for a wrong combination);
    tokens and pauses where ``shared`` keeps them (default: this
    process)."""
    options = provider_config.options
    authenticator, verify, cert = auth.build(
        provider_config.name, options,
        accepted=getattr(provider_class, "AUTH_KINDS", auth.DEFAULT_KINDS),
        scopes=getattr(provider_class, "AUTH_SCOPES", None),
        type_name=options["type"],
        store=shared.tokens() if shared else None)
    return HttpClient(options["url"], options["timeout"], verify=verify,
                      cert=cert, authenticator=authenticator,
                      throttle=shared.throttle_for(provider_config.name)
                      if shared else None)


def load_providers(gateway_config: GatewayConfig):
    factory = functools.partial(http_client_for,
                                shared=Stores.of(gateway_config))
    return [load_provider(gateway_config.path, p, factory)
            for p in gateway_config.providers]


#: Where a Content-Type hidden from Radicale (see _handle_request) is kept.
ORIGINAL_CONTENT_TYPE = "fbgateway.original_content_type"


_ASCII_PROBE = b"Basic:user+name/09=-_."


def _known_charset(charset: str) -> bool:
    """Can Radicale decode credentials with this charset: a known text
    encoding that reads ASCII as ASCII (not UTF-16, UTF-32, base64)?"""
    try:
        return _ASCII_PROBE.decode(charset) == _ASCII_PROBE.decode("ascii")
    except (LookupError, ValueError, TypeError):
        return False


def _login_first(method):
    """Answer an anonymous request 401 (Radicale adds WWW-Authenticate to
    NOT_ALLOWED for anonymous users) when the anonymous user has no right
    there, before the method can tell whether ``path`` exists."""
    @functools.wraps(method)
    def handler(self, environ, base_prefix, path, user, user_groups,
                request_info):
        if not user and self._anonymous_refused(path):
            return httputils.NOT_ALLOWED
        return method(self, environ, base_prefix, path, user, user_groups,
                      request_info)
    return handler


#: The faces that register REPORTs and routes (gateway.faces).  The
#: scheduling face (gateway.faces.scheduling) is different: it adds to
#: Radicale's own PROPFIND, PROPPATCH and POST answers, so its calls are
#: in the methods below.
FACES = (report, push, readurl, graphapi, openapi, finder, view, ews,
         autodiscover, ops)


def _route_first(method_name: str, radicale_method):
    """A do_METHOD that hands paths a face registered to that face."""
    def handler(self, environ, base_prefix, path, user, user_groups,
                request_info):
        route = self.faces.find_route(method_name, path)
        if route is not None:
            return route.handler(self, faces.Request(
                environ, base_prefix, path, user, user_groups))
        return radicale_method(self, environ, base_prefix, path, user,
                               user_groups, request_info)
    handler.__name__ = "do_" + method_name
    handler.__doc__ = radicale_method.__doc__
    return handler


class GatewayApplication(radicale.Application):
    """Radicale plus the gateway's free/busy faces."""

    def __init__(self, gateway_config: GatewayConfig,
                 providers=None, admin: bool = False) -> None:
        """``admin``: for ``fbgateway query`` and ``find``, which read
        only and see all: no push worker (a query must not publish
        anyone, nor take the server's queue), and each local user's busy
        time as they see it themselves (no rights, no opt-out)."""
        self.admin = admin
        radicale_compat.check_version()
        radicale_compat.self_test()
        super().__init__(gateway_config.radicale)
        self.gateway_config = gateway_config
        self.gateway_options = gateway_config.gateway
        self.local_users = LocalUsers(self.gateway_options["domains"],
                                      username_rule(self.configuration))
        #: What each face answers (see gateway.faces).
        self.faces = faces.Registry()
        for face in FACES:
            face.register(self.faces)
        self.local = LocalEngine(
            self._storage, self._rights,
            limits=Limits(self.configuration.get(
                "reporting", "max_freebusy_occurrence")),
            max_cost=gateway_config.gateway["local_cache_size"],
            answer_seconds=gateway_config.gateway["timeout"],
            addresses_of=self.local_users.addresses_of,
            disk_cache=gateway_config.gateway["local_disk_cache"])
        options = self.gateway_options
        self.providers = load_providers(gateway_config) \
            if providers is None else providers
        #: Requests per caller on the /.freebusy/, Graph and EWS routes.
        self.request_counter = access.RequestCounter(
            options["requests_per_minute"])
        #: Where answers, peers' pushes and the queue are kept (Redis
        #: when instances share them: gateway.stores).
        self.stores = Stores.of(gateway_config)
        self.fanout = FanOut(options["domains"], self._lookup_local,
                             self.providers, options["cache_ttl"],
                             options["timeout"], options["max_hops"],
                             local_username=self.local_users.rule,
                             cache=self.stores.answers(),
                             pushed=self.stores.pushed())
        #: Tells other instances on the same storage what was written
        #: here, and hears what they wrote (None without Redis).
        self.change_signal = None if admin else \
            self.stores.change_signal(self._changed_elsewhere)
        #: Pushes local free/busy out (None when no provider publishes).
        self.push = None if admin else self._push_worker()
        if self.push is not None:
            self.push.start()

    # -- the push direction -----------------------------------------------

    def _push_worker(self) -> Optional[PushWorker]:
        publishing = [p for p in self.providers if p.can_publish]
        if not publishing:
            return None
        options = self.gateway_options
        return PushWorker(
            self.stores.open_queue(), publishing, self._own_busy,
            self.local_user_names,
            lambda user: self.local_users.addresses_of(user)[0][7:],
            options["push_window_days"],
            options["push_republish_hours"] * 3600, options["timeout"])

    def _own_busy(self, user: str, window):
        """What a push of ``user`` carries: all their busy time, as they
        see it; nothing (no authority) once they have opted out."""
        if self.local.opted_out(user):
            return LookupResult.failed(Reason.NO_AUTHORITY, "opted out")
        return self.local.lookup_user(
            user, window, user, set(), check_rights=False,
            deadline=time.monotonic() + self.gateway_options["timeout"])

    def local_user_names(self) -> List[str]:
        """Every local user with a principal (calendar home) here."""
        with self._storage.acquire_lock("r"):
            return sorted(
                c.path for c in self._storage.discover("/", depth="1")
                if isinstance(c, radicale_storage.BaseCollection) and
                c.path and "/" not in c.path)

    def _changed(self, path: str) -> None:
        """A write under ``path`` succeeded: its owner's free/busy may
        have changed, so it is pushed (coalesced with other changes), and
        other instances on the same storage are told."""
        if self.change_signal is not None:
            self.change_signal.publish(path.strip("/"))
        owner = path.strip("/").split("/", 1)[0]
        if self.push is not None and owner and not owner.startswith("."):
            try:
                self.push.changed(owner)
            except Exception:
                # The write stands; the daily republish catches up.
                logger.exception("Could not queue the push of %s", owner)

    def _changed_elsewhere(self, path: str) -> None:
        """Another instance wrote under ``path`` ("": anything may have
        changed): the local engine stops trusting its stat-based view of
        it.  An engine without ``invalidate`` has its stat check only."""
        invalidate = getattr(self.local, "invalidate", None)
        if invalidate is not None:
            invalidate(path)

    # -- who may see whose free/busy, and who must log in first -----------

    def _lookup_local(self, owner: str, window, user: str,
                      user_groups: set):
        """One local user's busy time under ``[gateway] freebusy_access``:
        ``authenticated`` shows it to every logged-in user whatever the
        rights file says; ``rights`` leaves it to Radicale's r/f rights."""
        if self.admin:
            return self.local.lookup_user(owner, window, owner, set(),
                                          check_rights=False)
        return self.local.lookup_user(
            owner, window, user, user_groups,
            check_rights=not self.open_to(user))

    def open_to(self, user: str) -> bool:
        """Does ``user`` see every local user's busy time without rights?"""
        return bool(user) and \
            self.gateway_options.get(
            "freebusy_access", "authenticated") == "authenticated"

    def _anonymous_refused(self, path: str) -> bool:
        """An anonymous request for ``path`` where the rights give the
        anonymous user nothing at all: 401 before anything is looked up,
        so existing and missing users, calendars and events look alike.
        Top-level names starting with a dot (Radicale's web UI,
        /.well-known, the gateway's own routes) decide for themselves."""
        first = path.strip("/").split("/", 1)[0]
        if not first or first.startswith("."):
            return False
        access = Access(self._rights, "", set(), path)
        return not (access.permissions or access.parent_permissions)

    # -- request bodies ---------------------------------------------------

    def _handle_request(self, environ):
        """Radicale decodes even the Basic credentials with the charset of
        the request's Content-Type, and answers 500 for one it does not
        know or one that does not read ASCII as ASCII (UTF-16): hide such
        a charset from Radicale (its own methods then read bodies as
        UTF-8); the outbox POST still reads the body in it."""
        problem = _credentials_problem(environ.get("HTTP_AUTHORIZATION",
                                                   ""))
        if problem:
            # Radicale would split credentials without a colon and fail.
            logger.info("Refused %s %r: %s", environ.get("REQUEST_METHOD"),
                        environ.get("PATH_INFO", ""), problem)
            return ("400 Bad Request",
                    [("Content-Type", "text/plain; charset=utf-8")],
                    [problem.encode("utf-8")])
        content_type = environ.get("CONTENT_TYPE") or ""
        if "charset=" in content_type and not _known_charset(
                content_type.split("charset=")[1].split(";")[0].strip()):
            environ[ORIGINAL_CONTENT_TYPE] = content_type
            environ["CONTENT_TYPE"] = ";".join(
                part for part in content_type.split(";")
                if "charset=" not in part)
        return super()._handle_request(environ)

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

    @_login_first
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
        handler = self.faces.reports.get(getattr(root, "tag", None))
        if handler is not None:
            return metrics.counted_answer("report", handler(
                self, faces.Request(environ, base_prefix, path, user,
                                    user_groups, root)))
        if root is not None and any(
                not (href.text or "").strip()
                for href in root.iter(xmlsafe.clark("D:href"))):
            # Radicale answers an empty multiget href with a 500.
            return _bad_request("empty DAV:href in REPORT body")
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

    @_login_first
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

    def _organizer_zone(self, user: str):
        """Zone of floating times in ``user``'s outbox POST: the
        CALDAV:calendar-timezone of their first calendar (by name) that
        has one, else UTC."""
        with self._storage.acquire_lock("r", user):
            calendars = sorted(
                (c for c in self._storage.discover("/%s/" % user, depth="1")
                 if isinstance(c, radicale_storage.BaseCollection)
                 and c.path != user and c.tag == "VCALENDAR"),
                key=lambda c: c.path)
            for calendar in calendars:
                text = calendar.get_meta(TIMEZONE_KEY)
                if text and str(text).strip():
                    return timezones.zone_from_calendar_timezone(str(text))
        return timezones.UTC

    @_login_first
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
            return self._patch_inbox(base_prefix, path, user, root)
        found = scheduling.instructions(root)
        problems = [p for p in (scheduling.collection_problem(is_set, e)
                                for is_set, e in found) if p]
        if problems and self._may_patch(path, user, user_groups):
            # RFC 4918 9.2: all or nothing; Radicale is never called.
            logger.info("Refused PROPPATCH on %r: %s", path,
                        "; ".join(p.text for p in problems))
            return _multistatus(scheduling.refused_multistatus(
                base_prefix, path, found, problems))
        self._store_transp_as_text(environ, root)
        return super().do_PROPPATCH(environ, base_prefix, path, user,
                                    user_groups, request_info)

    def _may_patch(self, path: str, user: str, user_groups) -> bool:
        """Would Radicale's PROPPATCH get as far as the values?  Only then
        does a bad value get its 207; otherwise Radicale answers (403, 404)
        as it always does, so a refusal tells nothing new."""
        access = Access(self._rights, user, user_groups, path)
        if not access.check("w"):
            return False
        with self._storage.acquire_lock("r", user):
            item = next(iter(self._storage.discover(path)), None)
        return isinstance(item, radicale_storage.BaseCollection) and \
            access.check("w", item)

    def _patch_inbox(self, base_prefix, path, user, root):
        """CALDAV:calendar-availability on the inbox: every instruction
        checked first, then all applied in document order, or none."""
        found = scheduling.instructions(root)
        if not found:
            return _bad_request("PROPPATCH names no property")
        problems = [p for p in (scheduling.inbox_problem(is_set, e)
                                for is_set, e in found) if p]
        if problems:
            logger.info("Refused inbox PROPPATCH by %r: %s", user,
                        "; ".join(p.text for p in problems))
            return _multistatus(scheduling.refused_multistatus(
                base_prefix, path, found, problems))
        with self._storage.acquire_lock("w", user):
            principal = next(iter(self._storage.discover(
                "/%s/" % user, depth="0")), None)
            if principal is None:
                return httputils.NOT_FOUND
            meta = dict(principal.get_meta())
            for is_set, element in found:
                if is_set:
                    meta[AVAILABILITY_KEY] = scheduling.availability_value(
                        element.text or "")
                else:
                    meta.pop(AVAILABILITY_KEY, None)
            principal.set_meta(meta)
        return _multistatus(scheduling.proppatch_ok(
            base_prefix, path, list(dict.fromkeys(e.tag for _, e in found))))

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
        found = scheduling.instructions(root)
        problems = [p for p in (scheduling.collection_problem(is_set, e)
                                for is_set, e in found) if p]
        if problems and self._may_create(path, user, user_groups):
            logger.info("Refused %s on %r: %s", method, path,
                        "; ".join(p.text for p in problems))
            if method == "MKCOL":   # RFC 5689 3: 403 with mkcol-response
                return 403, XML, scheduling.refused_mkcol(found,
                                                          problems), None
            # RFC 4791 5.3.1.1: 207, nothing created
            return _multistatus(scheduling.refused_multistatus(
                base_prefix, path, found, problems))
        self._store_transp_as_text(environ, root)
        return getattr(super(), "do_" + method)(
            environ, base_prefix, path, user, user_groups, request_info)

    def _may_create(self, path: str, user: str, user_groups) -> bool:
        """Would Radicale's MKCALENDAR/MKCOL get as far as the properties
        (a right to create, nothing there yet)?"""
        if not set("wW") & set(self._rights.authorization(
                user, user_groups, path)):
            return False
        with self._storage.acquire_lock("r", user):
            return next(iter(self._storage.discover(path)), None) is None

    @_login_first
    def do_MKCALENDAR(self, environ, base_prefix, path, user, user_groups,
                      request_info):
        return self._create_collection("MKCALENDAR", environ, base_prefix,
                                       path, user, user_groups, request_info)

    @_login_first
    def do_MKCOL(self, environ, base_prefix, path, user, user_groups,
                 request_info):
        return self._create_collection("MKCOL", environ, base_prefix, path,
                                       user, user_groups, request_info)

    @_login_first
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
                body, environ.get(ORIGINAL_CONTENT_TYPE,
                                  environ.get("CONTENT_TYPE", "")),
                self.local_users.addresses_of(user),
                options["max_window_days"],
                floating_zone=lambda: self._organizer_zone(user))
        except scheduling.SchedulingError as e:
            logger.info("Refused outbox POST by %r: %s", user, e.text)
            return e.status, XML, e.body(), None
        attendees = request.attendees[:options["max_attendees"]]
        over_limit = request.attendees[options["max_attendees"]:]
        results = self.fanout.lookup(
            [str(a).strip() for a in attendees], request.window,
            requester=user, requester_groups=user_groups,
            hops=access.incoming_hops(environ))
        metrics.observe_lookup("outbox", results)
        return 200, XML, scheduling.schedule_response(
            request, results, over_limit), None


def _credentials_problem(authorization: str) -> Optional[str]:
    """Why Basic credentials cannot be read (Radicale would answer 500)."""
    if not authorization.startswith("Basic"):
        return None
    try:
        decoded = base64.b64decode(authorization[5:].strip().encode("ascii"),
                                   validate=True)
    except (ValueError, UnicodeError):
        return "malformed Basic credentials"
    if b":" not in decoded:
        return "malformed Basic credentials (no colon)"
    return None


def _refuse_on_boxes(method: str):
    def handler(self, environ, base_prefix, path, user, user_groups,
                request_info):
        if scheduling.box_of(path):
            return httputils.METHOD_NOT_ALLOWED if user else \
                httputils.NOT_ALLOWED
        return getattr(super(GatewayApplication, self), "do_" + method)(
            environ, base_prefix, path, user, user_groups, request_info)
    handler = _login_first(handler)
    handler.__name__ = "do_" + method
    handler.__doc__ = ("Radicale's %s, refused on the inbox and outbox."
                       % method)
    return handler


for _method in _NOT_ON_BOXES:
    setattr(GatewayApplication, "do_" + _method, _refuse_on_boxes(_method))


def _pushing_changes(method: str, inner):
    """``inner`` (a do_METHOD), then, if it wrote something, a push of
    the owner's free/busy is queued and other instances are told
    (Radicale's own hook mechanism is told nothing of the result)."""
    def handler(self, environ, base_prefix, path, user, user_groups,
                request_info):
        answer = inner(self, environ, base_prefix, path, user, user_groups,
                       request_info)
        if (self.push is not None or self.change_signal is not None) and \
                str(answer[0])[:1] == "2":
            self._changed(path)
            if method == "MOVE":
                self._changed(urllib.parse.urlsplit(
                    environ.get("HTTP_DESTINATION", "")).path[
                        len(base_prefix):])
        return answer
    handler.__name__ = "do_" + method
    handler.__doc__ = inner.__doc__
    return handler


for _method in ("PUT", "DELETE", "MOVE", "PROPPATCH"):
    setattr(GatewayApplication, "do_" + _method, _pushing_changes(
        _method, getattr(GatewayApplication, "do_" + _method)))


for _method in radicale.app.REQUEST_METHODS:
    setattr(GatewayApplication, "do_" + _method, _route_first(
        _method, getattr(GatewayApplication, "do_" + _method)))
