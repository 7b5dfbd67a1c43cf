"""An Exchange Web Services availability server (GetUserAvailability).

A real HTTP(S) server on 127.0.0.1 holding mailboxes and their events,
answering ``POST /EWS/Exchange.asmx`` as Exchange does (the shapes are
those of /work/shared/reference/foreign-apis.md section 1, MS-OXWAVLS
4.2 and the captures quoted there):

- the request is checked as Exchange's schema validation would:
  SOAP 1.1 envelope, ``RequestServerVersion``, a SerializableTimeZone
  (Bias, StandardTime, DaylightTime), ``MailboxData`` with Email/Address
  and AttendeeType, ``ExcludeConflicts`` 0/1/true/false, a TimeWindow
  (naive times are in the request's time zone, times with an offset as
  written), ``MergedFreeBusyIntervalInMinutes`` 5..1440 and a
  ``RequestedView``; anything else is an ``ErrorSchemaValidation``
  fault;
- limits: more than ``max_mailboxes`` (100) mailboxes is
  ``ErrorMailboxDataArrayTooBig``, a window longer than ``max_days``
  (42) is ``ErrorTimeIntervalTooBig``, as a SOAP fault (HTTP 500) or,
  with ``too_big_style = "response"``, in every FreeBusyResponse;
- the answer: one ``FreeBusyResponse`` per mailbox in request order (no
  address echoed), ``ResponseClass``/``ResponseCode``, a ``FreeBusyView``
  whose ``FreeBusyViewType`` is the view asked for (or the mailbox's
  ``max_view``), ``MergedFreeBusy`` digits (0 free, 1 tentative, 2 busy,
  3 OOF, 4 no data or working elsewhere: each interval takes the highest)
  and ``CalendarEventArray`` (events overlapping the window, whole, Free
  ones included; times naive in the request's zone, or with
  ``time_zone`` set, with the offset of that zone as Exchange 2007
  wrote them), ``WorkingHours``; unknown mailboxes get the captured
  ``ErrorMailRecipientNotFound`` block, ``Mailbox.error`` any other code;
- credentials: ``auth = "basic"`` (``users``), ``"ntlm"`` (pyspnego's
  acceptor, users from ``NTLM_USER_FILE``), ``"bearer"`` (live tokens of
  an ``IdentityProvider``: app-only tokens must impersonate a mailbox of
  ``impersonable`` through ExchangeImpersonation and name it in
  X-AnchorMailbox, as Exchange Online requires); 401 otherwise;
- ``script``: what the next calls do instead of answering, one entry per
  call: ``("busy", ms)`` the ErrorServerBusy fault with
  BackOffMilliseconds, ``("slow", s)`` answer after s seconds,
  ``"garbage"``, ``"html"`` (a 200 login page), ``"html500"``,
  ``"truncated"``, ``"short"`` (one FreeBusyResponse missing),
  ``"notsoap"``, ``"doctype"``, ``("fault", code)``.

Every call is recorded (``calls``) with what it asked and how it ended.
"""

import base64
import datetime
import math
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Dict, List, Optional, Sequence, Tuple

import spnego
import spnego.exceptions
from lxml import etree

from emulators.tls import HttpsServer

UTC = datetime.timezone.utc
S = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"
VIEWS = ("MergedOnly", "FreeBusy", "FreeBusyMerged", "Detailed",
         "DetailedMerged")
BUSY_TYPES = ("Free", "Tentative", "Busy", "OOF", "NoData",
              "WorkingElsewhere")
DIGIT = {"Free": 0, "Tentative": 1, "Busy": 2, "OOF": 3, "NoData": 4,
         "WorkingElsewhere": 4}
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
            "Saturday", "Sunday")
VERSIONS = ("Exchange2007", "Exchange2007_SP1", "Exchange2010",
            "Exchange2010_SP1", "Exchange2010_SP2", "Exchange2013",
            "Exchange2013_SP1", "Exchange2016")
SERVER_VERSION = (b'<h:ServerVersionInfo xmlns:h="%s" MajorVersion="15" '
                  b'MinorVersion="1" MajorBuildNumber="2507" '
                  b'MinorBuildNumber="6"/>' % T.encode())


def utc(text: str) -> datetime.datetime:
    """``20260105T090000Z`` -> aware UTC datetime."""
    return datetime.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC)


class Mailbox:
    """One mailbox: events ``(start, end, BusyType)`` in UTC, spans of no
    data, a per-mailbox error code, the most detailed view it grants,
    and working hours ``(zone_bias, [(days, start_min, end_min)])``."""

    def __init__(self, events: Sequence[Tuple] = (),
                 no_data: Sequence[Tuple] = (), error: Optional[str] = None,
                 max_view: Optional[str] = None,
                 working_hours: Optional[Tuple] = None) -> None:
        self.events = list(events)
        self.no_data = list(no_data)
        self.error = error
        self.max_view = max_view
        self.working_hours = working_hours


class Call:
    """One POST as the server read it."""

    def __init__(self) -> None:
        self.time = time.monotonic()
        self.mailboxes: List[str] = []
        self.start: Optional[datetime.datetime] = None
        self.end: Optional[datetime.datetime] = None
        self.view = ""
        self.interval = 0
        self.impersonated: Optional[str] = None
        self.anchor: Optional[str] = None
        self.version = ""
        self.bias: Optional[int] = None
        self.user = ""
        self.authorization = ""
        self.outcome = ""

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / 86400


class SchemaError(ValueError):
    pass


# -- the request's time zone -------------------------------------------------


class RequestZone(datetime.tzinfo):
    """A SerializableTimeZone as a tzinfo: UTC = local + Bias + the
    Bias of the StandardTime or DaylightTime rule in force."""

    def __init__(self, bias: int, standard: Tuple, daylight: Tuple) -> None:
        self.bias = bias
        self.standard = standard    # (bias, "HH:MM:SS", order, month, day)
        self.daylight = daylight

    @staticmethod
    def _transition(year: int, rule: Tuple) -> datetime.datetime:
        _, at, order, month, weekday = rule
        days = [d for d in range(1, 32) if _valid(year, month, d) and
                datetime.date(year, month, d).weekday() ==
                WEEKDAYS.index(weekday)]
        day = days[-1] if order >= 5 or order > len(days) else \
            days[order - 1]
        hour, minute, second = (int(x) for x in at.split(":"))
        return datetime.datetime(year, month, day, hour, minute, second)

    def _in_daylight(self, local: datetime.datetime) -> bool:
        if self.daylight[0] == self.standard[0] or not self.daylight[3]:
            return False
        local = local.replace(tzinfo=None)
        begin = self._transition(local.year, self.daylight)
        end = self._transition(local.year, self.standard)
        if begin < end:
            return begin <= local < end
        return not end <= local < begin

    def utcoffset(self, dt):
        rule = self.daylight if self._in_daylight(dt) else self.standard
        return -datetime.timedelta(minutes=self.bias + rule[0])

    def dst(self, dt):
        return datetime.timedelta(0)

    def local(self, moment: datetime.datetime) -> datetime.datetime:
        """UTC -> naive wall-clock time of this zone."""
        naive = moment.astimezone(UTC).replace(tzinfo=None)
        for rule in (self.daylight, self.standard):
            candidate = naive - datetime.timedelta(minutes=self.bias +
                                                   rule[0])
            if (rule is self.daylight) == self._in_daylight(candidate):
                return candidate
        return naive - datetime.timedelta(minutes=self.bias +
                                          self.standard[0])


def _valid(year, month, day) -> bool:
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    return True


# -- the server --------------------------------------------------------------


class EwsServer:
    def __init__(self, mailboxes: Dict[str, Mailbox], *, auth: str = "basic",
                 users: Optional[Dict[str, str]] = None, idp=None,
                 impersonable: Sequence[str] = (), tls_context=None,
                 max_mailboxes: int = 100, max_days: float = 42,
                 too_big_style: str = "fault",
                 time_zone: Optional[datetime.tzinfo] = None,
                 empty_event_array: bool = False) -> None:
        self.mailboxes = {k.lower(): v for k, v in mailboxes.items()}
        self.auth = auth
        self.users = users or {}
        self.idp = idp
        self.impersonable = {a.lower() for a in impersonable}
        self.max_mailboxes = max_mailboxes
        self.max_days = max_days
        self.too_big_style = too_big_style
        self.time_zone = time_zone
        self.empty_event_array = empty_event_array
        self.script: List = []
        self.calls: List[Call] = []
        #: every HTTP request: (connection, Authorization scheme, status)
        self.requests: List[Tuple[int, str, int]] = []
        self._lock = threading.Lock()
        self._connections = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with owner._lock:
                    owner._connections += 1
                    self.number = owner._connections
                self.ntlm = None
                self.ntlm_user = None

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                owner._send(self, 405, b"Method Not Allowed", "text/plain")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                owner._post(self, body)

        self.server = HttpsServer(Handler, tls_context)
        self.base = self.server.base
        self.url = self.base + "/EWS/Exchange.asmx"

    def close(self) -> None:
        self.server.close()

    def answered(self) -> List[Call]:
        """Calls that got a FreeBusyResponseArray."""
        return [c for c in self.calls if c.outcome == "ok"]

    # -- HTTP -----------------------------------------------------------

    def _send(self, handler, status: int, body: bytes,
              content_type: str = "text/xml; charset=utf-8",
              headers: Optional[Dict[str, str]] = None) -> None:
        scheme = handler.headers.get("Authorization", "").split(" ")[0]
        self.requests.append((handler.number, scheme, status))
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass        # the client gave up (its deadline)

    def _authenticate(self, handler) -> Optional[Tuple[str, str]]:
        """(user, kind) or None after answering 401 itself."""
        header = handler.headers.get("Authorization", "")
        if self.auth == "none":
            return "anonymous", "none"
        if self.auth == "basic":
            if header.startswith("Basic "):
                try:
                    user, _, password = base64.b64decode(
                        header[6:]).decode("utf-8").partition(":")
                except ValueError:
                    user, password = "", None
                if user in self.users and self.users[user] == password:
                    return user, "basic"
            self._send(handler, 401, b"", "text/html",
                       {"WWW-Authenticate": 'Basic realm="mail.corp"'})
            return None
        if self.auth == "ntlm":
            return self._ntlm(handler, header)
        if self.auth == "bearer":
            token = header[7:] if header.startswith("Bearer ") else ""
            issued = self.idp.valid(token) if token else None
            if issued is not None:
                return issued.subject, issued.kind
            self._send(handler, 401, b"", "text/html", {
                "WWW-Authenticate": 'Bearer client_id="00000002-0000-0ff1-'
                'ce00-000000000000", error="invalid_token"'})
            return None
        raise AssertionError(self.auth)

    def _ntlm(self, handler, header):
        if handler.ntlm_user:
            return handler.ntlm_user, "ntlm"    # NTLM: per connection
        if header.startswith("NTLM "):
            token = base64.b64decode(header[5:])
            kind = struct.unpack("<I", token[8:12])[0] \
                if token[:8] == b"NTLMSSP\x00" else 0
            if kind == 1:
                handler.ntlm = spnego.server(
                    protocol="ntlm",
                    options=spnego.NegotiateOptions.use_ntlm)
                challenge = handler.ntlm.step(token)
                self._send(handler, 401, b"", "text/html", {
                    "WWW-Authenticate": "NTLM " + base64.b64encode(
                        challenge).decode("ascii")})
                return None
            if kind == 3 and handler.ntlm is not None:
                try:
                    handler.ntlm.step(token)
                    handler.ntlm_user = handler.ntlm.client_principal
                except spnego.exceptions.SpnegoError:
                    handler.ntlm_user = None
                handler.ntlm = None
                if handler.ntlm_user:
                    return handler.ntlm_user, "ntlm"
        self._send(handler, 401, b"", "text/html",
                   {"WWW-Authenticate": "NTLM"})
        return None

    def _post(self, handler, body: bytes) -> None:
        if handler.path.split("?")[0].lower() != "/ews/exchange.asmx":
            return self._send(handler, 404, b"Not Found", "text/plain")
        who = self._authenticate(handler)
        if who is None:
            return
        call = Call()
        call.user, kind = who
        call.authorization = handler.headers.get("Authorization", "")[:6]
        call.anchor = handler.headers.get("X-AnchorMailbox")
        with self._lock:
            self.calls.append(call)
            behaviour = self.script.pop(0) if self.script else None
        if not handler.headers.get("Content-Type", "").startswith(
                "text/xml"):
            call.outcome = "415"
            return self._send(handler, 415, b"", "text/plain")
        try:
            request = self._read(body, call)
        except SchemaError as e:
            call.outcome = "ErrorSchemaValidation"
            return self._fault(handler, "ErrorSchemaValidation",
                               "The request failed schema validation: %s"
                               % e)
        if kind == "oauth2":
            refusal = self._impersonation(call)
            if refusal:
                call.outcome = refusal[0]
                return self._fault(handler, *refusal)
        if behaviour is not None:
            if self._misbehave(handler, call, behaviour, request):
                return
        if len(call.mailboxes) > self.max_mailboxes:
            return self._too_big(handler, call, "ErrorMailboxDataArrayTooBig",
                                 "There are too many target users in the "
                                 "EmailAddress array. The allowed size = "
                                 "%d; the actual size = %d." % (
                                     self.max_mailboxes,
                                     len(call.mailboxes)))
        if call.days > self.max_days:
            return self._too_big(handler, call, "ErrorTimeIntervalTooBig",
                                 "The specified time interval is invalid "
                                 "(larger than %d days)." % self.max_days)
        call.outcome = "ok"
        self._send(handler, 200, self._answer(call, request))

    def _impersonation(self, call) -> Optional[Tuple[str, str]]:
        if call.impersonated is None:
            return ("ErrorInvalidExchangeImpersonationHeaderData",
                    "ExchangeImpersonation SOAP header must be present for "
                    "this type of OAuth token.")
        if (call.anchor or "").lower() != call.impersonated.lower():
            return ("ErrorInvalidRequest", "X-AnchorMailbox must name the "
                    "impersonated mailbox for app-only requests.")
        if call.impersonated.lower() not in self.mailboxes:
            return ("ErrorNonExistentMailbox", "The SMTP address has no "
                    "mailbox associated with it.")
        if call.impersonated.lower() not in self.impersonable:
            return ("ErrorImpersonateUserDenied", "The account does not "
                    "have permission to impersonate the requested user.")
        return None

    def _misbehave(self, handler, call, behaviour, request) -> bool:
        """True if the behaviour answered instead of the server."""
        name, arg = behaviour if isinstance(behaviour, tuple) else \
            (behaviour, None)
        call.outcome = name
        if name == "slow":
            time.sleep(arg)
            call.outcome = "ok"
            self._send(handler, 200, self._answer(call, request))
            return True
        if name == "busy":
            self._fault(handler, "ErrorServerBusy", "The server cannot "
                        "service this request right now. Try again later.",
                        back_off=arg)
            return True
        if name == "fault":
            self._fault(handler, arg, "The request failed.")
            return True
        if name == "garbage":
            self._send(handler, 200, bytes(range(256)) * 8)
            return True
        if name == "html":
            self._send(handler, 200, b"<!DOCTYPE html><html><head><title>"
                       b"Outlook</title></head><body><form action=\"/owa/"
                       b"auth.owa\">Sign in</form></body></html>",
                       "text/html; charset=utf-8")
            return True
        if name == "html500":
            self._send(handler, 500, b"<html><body><h1>Server Error in "
                       b"'/EWS' Application.</h1></body></html>",
                       "text/html; charset=utf-8")
            return True
        if name == "truncated":
            answer = self._answer(call, request)
            self._send(handler, 200, answer[:len(answer) // 2])
            return True
        if name == "short":
            call.mailboxes = call.mailboxes[:-1]
            self._send(handler, 200, self._answer(call, request))
            return True
        if name == "notsoap":
            self._send(handler, 200, b'<?xml version="1.0"?><Availability '
                       b'xmlns="urn:other"><Free/></Availability>')
            return True
        if name == "doctype":
            self._send(handler, 200, b'<?xml version="1.0"?><!DOCTYPE s '
                       b'[<!ENTITY a "aaaa">]><s:Envelope xmlns:s="%s">'
                       b'&a;</s:Envelope>' % S.encode())
            return True
        raise AssertionError(behaviour)

    def _too_big(self, handler, call, code, text) -> None:
        call.outcome = code
        if self.too_big_style == "fault":
            return self._fault(handler, code, text)
        responses = "".join(
            '<FreeBusyResponse><ResponseMessage ResponseClass="Error">'
            '<MessageText>%s</MessageText><ResponseCode>%s</ResponseCode>'
            '<DescriptiveLinkKey>0</DescriptiveLinkKey></ResponseMessage>'
            '<FreeBusyView><FreeBusyViewType xmlns="%s">None'
            '</FreeBusyViewType></FreeBusyView></FreeBusyResponse>'
            % (text, code, T) for _ in call.mailboxes)
        self._send(handler, 200, self._envelope(
            '<GetUserAvailabilityResponse xmlns="%s"><FreeBusyResponseArray>'
            '%s</FreeBusyResponseArray></GetUserAvailabilityResponse>'
            % (M, responses)))

    @staticmethod
    def _envelope(body: str, header: bool = True) -> bytes:
        return (b'<?xml version="1.0" encoding="utf-8"?><s:Envelope '
                b'xmlns:s="%s">%s<s:Body>%s</s:Body></s:Envelope>' % (
                    S.encode(), (b"<s:Header>%s</s:Header>" % SERVER_VERSION)
                    if header else b"", body.encode("utf-8")))

    def _fault(self, handler, code: str, text: str,
               back_off: Optional[int] = None) -> None:
        extra = ""
        if back_off is not None:
            extra = ('<t:MessageXml xmlns:t="%s"><t:Value Name="'
                     'BackOffMilliseconds">%d</t:Value></t:MessageXml>'
                     % (T, back_off))
        body = self._envelope(
            '<s:Fault><faultcode xmlns:a="%s">a:%s</faultcode>'
            '<faultstring xml:lang="en-US">%s</faultstring><detail>'
            '<e:ResponseCode xmlns:e="%s">%s</e:ResponseCode>'
            '<e:Message xmlns:e="%s">%s</e:Message>%s</detail></s:Fault>'
            % (T, code, text, E, code, E, text, extra), header=False)
        self._send(handler, 500, body)

    # -- reading the request --------------------------------------------

    def _read(self, body: bytes, call: Call) -> Dict:
        try:
            root = etree.fromstring(body, etree.XMLParser(
                resolve_entities=False, no_network=True))
        except etree.XMLSyntaxError as e:
            raise SchemaError("not XML: %s" % e) from None

        def one(parent, path, required=True):
            found = parent.findall(path)
            if len(found) > 1 or (required and not found):
                raise SchemaError("%s: expected one, found %d" % (
                    path, len(found)))
            return found[0] if found else None

        def text(parent, path):
            value = one(parent, path).text
            if value is None or not value.strip():
                raise SchemaError("%s is empty" % path)
            return value.strip()

        if root.tag != "{%s}Envelope" % S:
            raise SchemaError("root is %s" % root.tag)
        header = one(root, "{%s}Header" % S, required=False)
        if header is not None:
            version = one(header, "{%s}RequestServerVersion" % T,
                          required=False)
            if version is not None:
                call.version = version.get("Version", "")
                if call.version not in VERSIONS:
                    raise SchemaError("Version %r" % call.version)
            impersonation = one(header, "{%s}ExchangeImpersonation" % T,
                                required=False)
            if impersonation is not None:
                call.impersonated = text(
                    impersonation, "{%s}ConnectingSID/{%s}SmtpAddress"
                    % (T, T))
        request = one(root, "{%s}Body/{%s}GetUserAvailabilityRequest"
                      % (S, M))
        zone_element = one(request, "{%s}TimeZone" % T)
        rules = []
        for part in ("StandardTime", "DaylightTime"):
            rule = one(zone_element, "{%s}%s" % (T, part))
            weekday = text(rule, "{%s}DayOfWeek" % T)
            if weekday not in WEEKDAYS:
                raise SchemaError("DayOfWeek %r" % weekday)
            try:
                parsed = (int(text(rule, "{%s}Bias" % T)),
                          text(rule, "{%s}Time" % T),
                          int(text(rule, "{%s}DayOrder" % T)),
                          int(text(rule, "{%s}Month" % T)), weekday)
                datetime.time.fromisoformat(parsed[1])
            except ValueError as e:
                raise SchemaError("%s: %s" % (part, e)) from None
            if not (1 <= parsed[2] <= 5 and 0 <= parsed[3] <= 12):
                raise SchemaError("%s out of range" % part)
            rules.append(parsed)
        try:
            call.bias = int(text(zone_element, "{%s}Bias" % T))
        except ValueError:
            raise SchemaError("Bias") from None
        zone = RequestZone(call.bias, rules[0], rules[1])
        array = one(request, "{%s}MailboxDataArray" % M)
        for data in array:
            if data.tag != "{%s}MailboxData" % T:
                raise SchemaError("unexpected %s" % data.tag)
            call.mailboxes.append(text(data, "{%s}Email/{%s}Address"
                                       % (T, T)))
            if text(data, "{%s}AttendeeType" % T) not in (
                    "Optional", "Organizer", "Required", "Resource", "Room"):
                raise SchemaError("AttendeeType")
            exclude = one(data, "{%s}ExcludeConflicts" % T, required=False)
            if exclude is not None and exclude.text not in (
                    "0", "1", "true", "false"):
                raise SchemaError("ExcludeConflicts %r" % exclude.text)
        if not call.mailboxes:
            raise SchemaError("MailboxDataArray is empty")
        options = one(request, "{%s}FreeBusyViewOptions" % T)
        window = one(options, "{%s}TimeWindow" % T)
        try:
            call.start, call.end = (self._instant(text(
                window, "{%s}%s" % (T, key)), zone)
                for key in ("StartTime", "EndTime"))
            call.interval = int(text(
                options, "{%s}MergedFreeBusyIntervalInMinutes" % T))
        except ValueError as e:
            raise SchemaError(str(e)) from None
        if not 5 <= call.interval <= 1440:
            raise SchemaError("ErrorInvalidMergedFreeBusyInterval")
        call.view = text(options, "{%s}RequestedView" % T)
        if call.view not in VIEWS:
            raise SchemaError("RequestedView %r" % call.view)
        if call.end <= call.start:
            raise SchemaError("EndTime before StartTime")
        return {"zone": zone}

    @staticmethod
    def _instant(value: str, zone: RequestZone) -> datetime.datetime:
        moment = datetime.datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        return moment.astimezone(UTC)

    # -- the answer -----------------------------------------------------

    def _format(self, moment: datetime.datetime, zone: RequestZone) -> str:
        if self.time_zone is not None:
            return moment.astimezone(self.time_zone).isoformat()
        return zone.local(moment).strftime("%Y-%m-%dT%H:%M:%S")

    def _answer(self, call: Call, request: Dict) -> bytes:
        parts = []
        for address in call.mailboxes:
            mailbox = self.mailboxes.get(address.lower())
            if mailbox is None:
                parts.append(
                    '<FreeBusyResponse><ResponseMessage ResponseClass="Error">'
                    '<MessageText>Unable to resolve e-mail address &lt;&gt;'
                    'SMTP:%s to an Active Directory object.</MessageText>'
                    '<ResponseCode>ErrorMailRecipientNotFound</ResponseCode>'
                    '<DescriptiveLinkKey>0</DescriptiveLinkKey><MessageXml>'
                    '<ExceptionType xmlns="%s">Microsoft.Exchange.InfoWorker.'
                    'Common.Availability.MailRecipientNotFoundException'
                    '</ExceptionType><ExceptionCode xmlns="%s">5009'
                    '</ExceptionCode></MessageXml></ResponseMessage>'
                    '<FreeBusyView><FreeBusyViewType xmlns="%s">None'
                    '</FreeBusyViewType></FreeBusyView></FreeBusyResponse>'
                    % (_escape(address), E, E, T))
            elif mailbox.error:
                parts.append(
                    '<FreeBusyResponse><ResponseMessage ResponseClass="Error">'
                    '<MessageText>%s</MessageText><ResponseCode>%s'
                    '</ResponseCode><DescriptiveLinkKey>0</DescriptiveLinkKey>'
                    '</ResponseMessage><FreeBusyView><FreeBusyViewType '
                    'xmlns="%s">None</FreeBusyViewType></FreeBusyView>'
                    '</FreeBusyResponse>' % (mailbox.error, mailbox.error, T))
            else:
                parts.append(
                    '<FreeBusyResponse><ResponseMessage '
                    'ResponseClass="Success"><ResponseCode>NoError'
                    '</ResponseCode></ResponseMessage>%s</FreeBusyResponse>'
                    % self._view(mailbox, call, request["zone"]))
        return self._envelope(
            '<GetUserAvailabilityResponse xmlns="%s"><FreeBusyResponseArray>'
            '%s</FreeBusyResponseArray></GetUserAvailabilityResponse>'
            % (M, "".join(parts)))

    def _view(self, mailbox: Mailbox, call: Call, zone) -> str:
        view = call.view
        if mailbox.max_view and VIEWS.index(mailbox.max_view) < \
                VIEWS.index(view):
            view = mailbox.max_view
        events = [e for e in mailbox.events
                  if e[0] < call.end and e[1] > call.start]
        no_data = [(s, e, "NoData") for s, e in mailbox.no_data
                   if s < call.end and e > call.start]
        out = ['<FreeBusyView><FreeBusyViewType xmlns="%s">%s'
               '</FreeBusyViewType>' % (T, view)]
        if view.endswith("Merged") or view == "MergedOnly":
            step = datetime.timedelta(minutes=call.interval)
            count = math.ceil((call.end - call.start) / step)
            digits = []
            for i in range(count):
                begin = call.start + i * step
                finish = begin + step
                digits.append(str(max([DIGIT[kind] for s, e, kind in
                                       events + no_data
                                       if s < finish and e > begin] + [0])))
            out.append('<MergedFreeBusy xmlns="%s">%s</MergedFreeBusy>'
                       % (T, "".join(digits)))
        if view != "MergedOnly":
            shown = sorted(events + no_data)
            if shown or self.empty_event_array:
                out.append('<CalendarEventArray xmlns="%s">' % T)
                for start, end, kind in shown:
                    out.append(
                        "<CalendarEvent><StartTime>%s</StartTime><EndTime>"
                        "%s</EndTime><BusyType>%s</BusyType>%s"
                        "</CalendarEvent>" % (
                            self._format(start, zone),
                            self._format(end, zone), kind,
                            "<CalendarEventDetails><ID>00000</ID><Subject>"
                            "Secret %s</Subject><Location>Room 1</Location>"
                            "<IsMeeting>true</IsMeeting></CalendarEventDetails>"
                            % kind if view.startswith("Detailed") else ""))
                out.append("</CalendarEventArray>")
            if mailbox.working_hours is not None:
                out.append(self._working_hours(mailbox.working_hours))
        out.append("</FreeBusyView>")
        return "".join(out)

    @staticmethod
    def _working_hours(hours) -> str:
        bias, periods = hours
        rule = ("<Bias>%d</Bias><Time>%s</Time><DayOrder>%d</DayOrder>"
                "<Month>%d</Month><DayOfWeek>Sunday</DayOfWeek>")
        # Central European rules: standard from the last Sunday of
        # October 03:00, daylight (bias -60) from the last Sunday of March.
        zone = ("<TimeZone><Bias>%d</Bias><StandardTime>%s</StandardTime>"
                "<DaylightTime>%s</DaylightTime></TimeZone>" % (
                    bias, rule % (0, "03:00:00", 5, 10),
                    rule % (-60, "02:00:00", 5, 3)))
        return ('<WorkingHours xmlns="%s">%s<WorkingPeriodArray>%s'
                '</WorkingPeriodArray></WorkingHours>' % (T, zone, "".join(
                    "<WorkingPeriod><DayOfWeek>%s</DayOfWeek>"
                    "<StartTimeInMinutes>%d</StartTimeInMinutes>"
                    "<EndTimeInMinutes>%d</EndTimeInMinutes></WorkingPeriod>"
                    % period for period in periods)))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(
        ">", "&gt;")
