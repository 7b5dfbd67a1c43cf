"""EWS ``GetUserAvailability`` for local users, at ``POST /EWS/Exchange.asmx``.

So that an Exchange organisation can add the gateway as an availability
address space, and EWS clients (exchangelib, DavMail, Outlook through
Exchange) see local free/busy.  The wire format is Exchange's (SOAP 1.1,
MS-OXWAVLS); what the gateway decided where Exchange leaves room:

- Only addresses in ``[gateway] domains`` are answered (Exchange asks
  this face for the gateway's own domains); any other address, and a
  ``RoutingType`` other than SMTP, is ``ErrorMailRecipientNotFound``.
- One ``FreeBusyResponse`` per ``MailboxData``, in request order.
  Failures: unknown user ``ErrorMailRecipientNotFound``; no authority or
  opted out ``ErrorNoFreeBusyAccess``; timed out ``ErrorTimeoutExpired``;
  no data or anything else ``ErrorFreeBusyGenerationFailed`` (never an
  empty, free answer).  The access policy is gateway.faces.access's.
- Views: ``MergedOnly`` (digits only), ``FreeBusy``, ``FreeBusyMerged``;
  ``Detailed`` and ``DetailedMerged`` are answered as ``FreeBusy`` and
  ``FreeBusyMerged`` (the view type says so, as Exchange does for a
  caller without detail rights): no ``CalendarEventDetails`` ever.
  Events are the user's busy periods (merged, clipped to the window) with
  ``BusyType`` Busy, Tentative, OOF (BUSY-UNAVAILABLE) or NoData.
  ``MergedFreeBusy`` has one digit per ``MergedFreeBusyIntervalInMinutes``
  from the window start, the highest in the interval: 0 free,
  1 tentative, 2 busy, 3 OOF, 4 no data.
- Times: naive wall-clock time in the request's ``TimeZone``, as Exchange
  2010 and later write them; request times without an offset are read in
  that zone, with an offset as written.
- ``WorkingHours`` (every view but MergedOnly): from the user's
  VAVAILABILITY (the working spans of the week that starts on the
  window's first day, in the zone of its DTSTART), else ``[gateway]
  default_working_hours``.
- Limits, as Exchange's defaults: 100 mailboxes
  (``ErrorMailboxDataArrayTooBig``) and 42 days
  (``ErrorTimeIntervalTooBig``); bodies over 1 MiB get 413.
- A malformed request is a SOAP 1.1 fault: HTTP 500, ``faultcode``
  ``s:Client``, the EWS code in ``detail/ResponseCode`` (exchangelib
  raises that class); the only 500 sent on purpose.  A caller over
  ``requests_per_minute`` gets the ``ErrorServerBusy`` fault with
  ``BackOffMilliseconds`` and ``Retry-After``; anonymous callers 401
  unless ``anonymous_freebusy``.
- What exchangelib sends first is answered: ``ConvertId`` (its version
  probe; no ids convert here, each is ``ErrorItemNotFound``) and
  ``GetServerTimeZones`` (real definitions, gateway.exchange_xml).  Every
  answer carries ``ServerVersionInfo`` (Exchange 2016's API version).
  Any other operation is the ``ErrorInvalidOperation`` fault.
- ``SuggestionsViewOptions`` (meeting suggestions) get a
  ``SuggestionsResponse`` error pointing to findMeetingTimes.
"""

import datetime
import logging
import math
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Tuple

import icalendar
from lxml import etree
from radicale.app import REQUEST_METHODS

from gateway import xmlsafe
from gateway.addresses import bare_address
from gateway.engine.local import AVAILABILITY_KEY
from gateway.exchange_xml import (DAY_NAMES, EWS_PATH, NS_E, NS_SOAP, NSMAP,
                                  SerializableZone, format_local, iana_zone,
                                  m, parse_datetime, sub, t,
                                  windows_zone_ids, zone_definition)
from gateway.faces import access
from gateway.model import (BUSY, BUSY_TENTATIVE, BUSY_UNAVAILABLE, UTC,
                           LookupResult, Reason, Window, coalesce, gaps,
                           Period)

logger = logging.getLogger(__name__)

#: Exchange's limits for one GetUserAvailability (its defaults).
MAX_MAILBOXES = 100
MAX_WINDOW_DAYS = 42
#: Largest SOAP body read; 100 mailboxes take about 40 KB.
MAX_SOAP_BYTES = 1 << 20
#: Time zone ids one GetServerTimeZones may name.
MAX_ZONE_IDS = 200
VIEWS = ("MergedOnly", "FreeBusy", "FreeBusyMerged", "Detailed",
         "DetailedMerged")
MERGED_VIEWS = ("MergedOnly", "FreeBusyMerged", "DetailedMerged")
#: Detailed views are answered without details, and say so.
ANSWERED_VIEW = {"Detailed": "FreeBusy", "DetailedMerged": "FreeBusyMerged"}
DEFAULT_VIEW = "DetailedMerged"
DEFAULT_INTERVAL = 30
ATTENDEE_TYPES = ("Optional", "Organizer", "Required", "Resource", "Room")
BUSY_TYPES = {BUSY: "Busy", BUSY_TENTATIVE: "Tentative",
              BUSY_UNAVAILABLE: "OOF"}
DIGITS = {"Tentative": 1, "Busy": 2, "OOF": 3, "NoData": 4}
ERROR_CODES = {Reason.UNKNOWN_USER: "ErrorMailRecipientNotFound",
               Reason.NO_AUTHORITY: "ErrorNoFreeBusyAccess",
               Reason.TIMED_OUT: "ErrorTimeoutExpired"}
GENERATION_FAILED = "ErrorFreeBusyGenerationFailed"
#: What ServerVersionInfo claims: Exchange 2016's API version.
SERVER_VERSION = {"MajorVersion": "15", "MinorVersion": "1",
                  "MajorBuildNumber": "0", "MinorBuildNumber": "0",
                  "Version": "Exchange2016"}
XML_TYPE = {"Content-Type": "text/xml; charset=utf-8"}
PATHS = (EWS_PATH, EWS_PATH.lower(), "/ews/Exchange.asmx",
         "/EWS/exchange.asmx")


class Fault(Exception):
    """A request the server will not answer: a SOAP fault."""

    def __init__(self, code: str, text: str, faultcode: str = "Client",
                 back_off_ms: Optional[int] = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.faultcode = faultcode
        self.back_off_ms = back_off_ms


def _schema(text: str) -> Fault:
    return Fault("ErrorSchemaValidation", "The request failed schema "
                 "validation: %s" % text)


def register(registry) -> None:
    """POST is SOAP; every other method gets 405."""
    for path in PATHS:
        registry.route(REQUEST_METHODS, path, _handle)


# -- HTTP -----------------------------------------------------------------


def _plain(status: int, text: str, headers=()):
    return status, dict([("Content-Type", "text/plain; charset=utf-8"),
                         *headers]), text.encode("utf-8"), None


def _envelope(content=None, fault: Optional[Fault] = None):
    envelope = etree.Element("{%s}Envelope" % NS_SOAP, nsmap=NSMAP)
    header = sub(envelope, "{%s}Header" % NS_SOAP)
    sub(header, t("ServerVersionInfo"), **SERVER_VERSION)
    body = sub(envelope, "{%s}Body" % NS_SOAP)
    if content is not None:
        body.append(content)
    if fault is not None:
        element = sub(body, "{%s}Fault" % NS_SOAP)
        sub(element, "faultcode", "s:" + fault.faultcode)
        sub(element, "faultstring", xmlsafe.text(fault.text)).set(
            "{http://www.w3.org/XML/1998/namespace}lang", "en-US")
        detail = sub(element, "detail")
        sub(detail, "{%s}ResponseCode" % NS_E, fault.code)
        sub(detail, "{%s}Message" % NS_E, xmlsafe.text(fault.text))
        if fault.back_off_ms is not None:
            values = sub(detail, t("MessageXml"))
            sub(values, t("Value"), str(fault.back_off_ms),
                Name="BackOffMilliseconds")
    return xmlsafe.tostring(envelope)


def _fault(fault: Fault, headers=()):
    """SOAP 1.1 (4.4): a fault is HTTP 500."""
    return 500, dict([*XML_TYPE.items(), *headers]), \
        _envelope(fault=fault), None


def _handle(app, request) -> Tuple:
    if request.path.lower() != EWS_PATH.lower():
        return _plain(404, "not found")
    if request.environ.get("REQUEST_METHOD") != "POST":
        return _plain(405, "EWS takes SOAP requests by POST",
                      [("Allow", "POST")])
    refused = access.refusal(app, request)
    if refused is not None:
        if refused[0] != 429:
            return refused
        wait = int(refused[1].get("Retry-After", "1"))
        return _fault(Fault("ErrorServerBusy", "The server cannot service "
                            "this request right now. Try again later.",
                            "Server", back_off_ms=wait * 1000),
                      [("Retry-After", str(wait))])
    try:
        length = int(request.environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _plain(400, "bad Content-Length")
    if length > MAX_SOAP_BYTES:
        return _plain(413, "SOAP bodies are limited to %d bytes"
                      % MAX_SOAP_BYTES)
    body = request.environ["wsgi.input"].read(length) if length > 0 else b""
    try:
        return 200, XML_TYPE, _envelope(_operation(app, request, body)), None
    except Fault as fault:
        logger.info("EWS fault for %r: %s %s", request.user or "anonymous",
                    fault.code, fault.text)
        return _fault(fault)
    except Exception:   # never a bare 500: a bug is a SOAP server fault
        logger.exception("EWS request by %r failed",
                         request.user or "anonymous")
        return _fault(Fault("ErrorInternalServerError", "The server failed "
                            "to answer this request.", "Server"))


def _operation(app, request, body: bytes):
    """The answer element of the one operation in ``body``."""
    try:
        root = xmlsafe.parse(body, MAX_SOAP_BYTES)
    except xmlsafe.XMLError as e:
        raise _schema(str(e)) from None
    if root.tag == "{http://www.w3.org/2003/05/soap-envelope}Envelope":
        raise Fault("ErrorSchemaValidation", "SOAP 1.2 is not spoken here; "
                    "send a SOAP 1.1 envelope", "VersionMismatch")
    if root.tag != "{%s}Envelope" % NS_SOAP:
        raise _schema("the root element is not a SOAP 1.1 Envelope")
    found = root.findall("{%s}Body" % NS_SOAP)
    if len(found) != 1 or len(found[0]) != 1:
        raise _schema("the Envelope needs one Body with one operation")
    operation = found[0][0]
    if operation.tag == m("GetUserAvailabilityRequest"):
        return _availability(app, request, operation)
    if operation.tag == m("GetServerTimeZones"):
        return _server_time_zones(operation)
    if operation.tag == m("ConvertId"):
        return _convert_id(operation)
    name = etree.QName(operation).localname if isinstance(
        operation.tag, str) else "?"
    raise Fault("ErrorInvalidOperation", "%s is not served here: this "
                "free/busy gateway answers GetUserAvailability, "
                "GetServerTimeZones and ConvertId" % name[:80])


# -- reading a request ----------------------------------------------------


def _one(parent, tag: str, required: bool = True):
    found = parent.findall(tag)
    if len(found) > 1 or (required and not found):
        raise _schema("%s needs %s %s, found %d" % (
            etree.QName(parent).localname,
            "exactly one" if required else "at most one",
            etree.QName(tag).localname, len(found)))
    return found[0] if found else None


def _text(parent, tag: str, required: bool = True) -> Optional[str]:
    element = _one(parent, tag, required)
    if element is None:
        return None
    value = (element.text or "").strip()
    if not value:
        raise _schema("%s is empty" % etree.QName(tag).localname)
    return value


def _boolean(value: str, name: str) -> bool:
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise _schema("%s must be true, false, 1 or 0" % name)


class Mailbox(NamedTuple):
    """One MailboxData: the ``mailto:`` address to look up, or why not."""

    shown: str
    address: Optional[str]
    refusal: Optional[Tuple[str, str]]


def _mailboxes(app, request_element) -> List[Mailbox]:
    array = _one(request_element, m("MailboxDataArray"))
    data = list(array)
    if any(d.tag != t("MailboxData") for d in data):
        raise _schema("MailboxDataArray holds only MailboxData")
    if not data:
        raise Fault("ErrorMailboxDataArrayEmpty", "MailboxDataArray is "
                    "empty.")
    if len(data) > MAX_MAILBOXES:
        raise Fault("ErrorMailboxDataArrayTooBig", "There are too many "
                    "target users in the EmailAddress array. The allowed "
                    "size = %d; the actual size = %d." % (MAX_MAILBOXES,
                                                          len(data)))
    out = []
    for element in data:
        email = _one(element, t("Email"))
        shown = _text(email, t("Address"))[:320]
        routing = _text(email, t("RoutingType"), required=False) or "SMTP"
        attendee = _text(element, t("AttendeeType"))
        if attendee not in ATTENDEE_TYPES:
            raise _schema("AttendeeType must be one of %s" %
                          ", ".join(ATTENDEE_TYPES))
        exclude = _text(element, t("ExcludeConflicts"), required=False)
        if exclude is not None:
            _boolean(exclude, "ExcludeConflicts")
        address = shown[5:] if shown[:5].lower() == "smtp:" else shown
        mailto = "mailto:" + address
        if routing.upper() != "SMTP":
            out.append(Mailbox(shown, None, (
                "ErrorMailRecipientNotFound", "Only SMTP addresses are "
                "answered here, not RoutingType %s." % routing[:20])))
        elif "@" not in address or bare_address(mailto) is None:
            out.append(Mailbox(shown, None, (
                "ErrorInvalidSmtpAddress", "%s is not an SMTP address."
                % shown)))
        elif not access.is_local(app, mailto):
            out.append(Mailbox(shown, None, (
                "ErrorMailRecipientNotFound", "%s is not in a domain this "
                "gateway answers for." % shown)))
        else:
            out.append(Mailbox(shown, mailto, None))
    return out


class Options(NamedTuple):
    """What FreeBusyViewOptions ask for."""

    window: Window
    interval: datetime.timedelta
    view: str


def _options(element, zone: SerializableZone) -> Options:
    window_element = _one(element, t("TimeWindow"))
    try:
        start, end = (parse_datetime(_text(window_element, t(name)), zone)
                      for name in ("StartTime", "EndTime"))
    except ValueError as e:
        raise _schema("TimeWindow: %s" % e) from None
    if end <= start:
        raise Fault("ErrorInvalidTimeInterval", "EndTime must be after "
                    "StartTime.")
    if end - start > datetime.timedelta(days=MAX_WINDOW_DAYS):
        raise Fault("ErrorTimeIntervalTooBig", "The specified time interval "
                    "is invalid (larger than %d days)." % MAX_WINDOW_DAYS)
    try:
        window = Window.checked(start, end)
    except ValueError as e:
        raise Fault("ErrorInvalidTimeInterval", "TimeWindow: %s." % e
                    ) from None
    text = _text(element, t("MergedFreeBusyIntervalInMinutes"),
                 required=False)
    interval = DEFAULT_INTERVAL
    if text is not None:
        try:
            interval = int(text)
        except ValueError:
            interval = 0
        if not 5 <= interval <= 1440:
            raise Fault("ErrorInvalidMergedFreeBusyInterval",
                        "MergedFreeBusyIntervalInMinutes must be 5 to "
                        "1440, not %s." % text[:20])
    view = _text(element, t("RequestedView"), required=False) or \
        DEFAULT_VIEW
    if view not in VIEWS:
        raise Fault("ErrorInvalidFreeBusyViewType", "RequestedView must be "
                    "one of %s." % ", ".join(VIEWS))
    return Options(window, datetime.timedelta(minutes=interval), view)


# -- GetUserAvailability --------------------------------------------------


def _availability(app, request, operation):
    try:
        zone = SerializableZone.from_element(_one(operation, t("TimeZone")))
    except ValueError as e:
        raise _schema("TimeZone: %s" % e) from None
    mailboxes = _mailboxes(app, operation)
    view_element = _one(operation, t("FreeBusyViewOptions"), required=False)
    suggestions = _one(operation, t("SuggestionsViewOptions"),
                       required=False)
    if view_element is None and suggestions is None:
        raise _schema("GetUserAvailabilityRequest needs "
                      "FreeBusyViewOptions")
    answer = etree.Element(m("GetUserAvailabilityResponse"), nsmap=NSMAP)
    if view_element is not None:
        options = _options(view_element, zone)
        caller = access.Caller.of(request)
        wanted = list(dict.fromkeys(b.address for b in mailboxes
                                    if b.address))
        results = access.lookup(app, caller, wanted, options.window,
                                face="ews") \
            if wanted else {}
        array = sub(answer, m("FreeBusyResponseArray"))
        for mailbox in mailboxes:
            response = sub(array, m("FreeBusyResponse"))
            if mailbox.refusal is not None:
                _error(response, *mailbox.refusal)
                continue
            result = results[mailbox.address]
            if not result.ok:
                _error(response, ERROR_CODES.get(result.failure,
                                                 GENERATION_FAILED),
                       "%s: %s%s." % (mailbox.shown, result.failure.value,
                                      " (%s)" % result.detail
                                      if result.detail else ""))
                continue
            message = sub(response, m("ResponseMessage"),
                          ResponseClass="Success")
            sub(message, m("ResponseCode"), "NoError")
            hours = None
            if options.view != "MergedOnly":
                hours = working_hours(app, mailbox.address, options.window,
                                      caller.user)
            _free_busy_view(response, result, options, zone, hours)
    if suggestions is not None:
        response = sub(answer, m("SuggestionsResponse"))
        message = sub(response, m("ResponseMessage"), ResponseClass="Error")
        sub(message, m("MessageText"), "Meeting suggestions are not made "
            "here; POST /.freebusy/findMeetingTimes instead.")
        sub(message, m("ResponseCode"),
            "ErrorMeetingSuggestionGenerationFailed")
        sub(message, m("DescriptiveLinkKey"), "0")
    return answer


def _error(response, code: str, text: str) -> None:
    message = sub(response, m("ResponseMessage"), ResponseClass="Error")
    sub(message, m("MessageText"), xmlsafe.text(text))
    sub(message, m("ResponseCode"), code)
    sub(message, m("DescriptiveLinkKey"), "0")
    view = sub(response, m("FreeBusyView"))
    sub(view, t("FreeBusyViewType"), "None")


Spans = List[Tuple[datetime.datetime, datetime.datetime]]


def busy_spans(result: LookupResult) -> Dict[str, Spans]:
    """BusyType -> spans: BUSY-UNAVAILABLE is OOF except where the
    source had no data, which is NoData."""
    nodata = sorted(result.nodata)
    spans: Dict[str, Spans] = {kind: [] for kind in DIGITS}
    spans["NoData"] = list(nodata)
    for period in result.periods:
        kind = BUSY_TYPES.get(period.fbtype, "Busy")
        if kind == "OOF":
            spans[kind].extend(gaps(nodata, Window(period.start,
                                                       period.end)))
        else:
            spans[kind].append((period.start, period.end))
    return spans


def merged_digits(spans: Dict[str, Spans], window: Window,
                  interval: datetime.timedelta) -> str:
    """One digit per interval from the window start: the highest status
    in it (0 free, 1 tentative, 2 busy, 3 OOF, 4 no data)."""
    count = math.ceil((window.end - window.start) / interval)
    digits = [0] * count
    for kind, kind_spans in spans.items():
        digit = DIGITS[kind]
        for start, end in kind_spans:
            first = (start - window.start) // interval
            last = min(count, -((window.start - end) // interval))
            for index in range(max(0, first), last):
                if digits[index] < digit:
                    digits[index] = digit
    return "".join(map(str, digits))


def _free_busy_view(response, result: LookupResult, options: Options,
                    zone: SerializableZone, hours) -> None:
    view = sub(response, m("FreeBusyView"))
    sub(view, t("FreeBusyViewType"), ANSWERED_VIEW.get(options.view,
                                                       options.view))
    spans = busy_spans(result)
    if options.view in MERGED_VIEWS:
        sub(view, t("MergedFreeBusy"), merged_digits(
            spans, options.window, options.interval))
    if options.view == "MergedOnly":
        return
    events = sorted((start, end, kind) for kind, kind_spans in spans.items()
                    for start, end in kind_spans)
    if events:
        array = sub(view, t("CalendarEventArray"))
        for start, end, kind in events:
            event = sub(array, t("CalendarEvent"))
            sub(event, t("StartTime"), format_local(start, zone))
            sub(event, t("EndTime"), format_local(end, zone))
            sub(event, t("BusyType"), kind)
    hours_zone, periods = hours
    element = sub(view, t("WorkingHours"))
    SerializableZone.of_zone(hours_zone, options.window.start.astimezone(
        hours_zone).year).append_to(element)
    array = sub(element, t("WorkingPeriodArray"))
    for days, start, end in periods:
        period = sub(array, t("WorkingPeriod"))
        sub(period, t("DayOfWeek"), " ".join(DAY_NAMES[d]
                                             for d in sorted(days)))
        sub(period, t("StartTimeInMinutes"), str(start))
        sub(period, t("EndTimeInMinutes"), str(end))


# -- working hours ----------------------------------------------------------

WorkingPeriods = List[Tuple[FrozenSet[int], int, int]]


def working_hours(app, address: str, window: Window, viewer: str
                  ) -> Tuple[datetime.tzinfo, WorkingPeriods]:
    """(zone, [(weekdays, start minute, end minute)]) of a local user:
    from their VAVAILABILITY, else ``[gateway] default_working_hours``.
    An opted-out user's own hours are shown to themselves only (anonymous
    callers see an opted-out user as free, not as refused)."""
    user = app.local_users.user_of(address)
    text = None
    if user and (user == viewer or not app.local.opted_out(user)):
        text = app.local.principal_meta(user, AVAILABILITY_KEY)
    if text and str(text).strip():
        derived = _availability_hours(app, str(text), window)
        if derived is not None:
            return derived
    hours = app.gateway_options["default_working_hours"]
    return hours.zone, [(hours.days,
                         int(hours.start.total_seconds()) // 60,
                         int(hours.end.total_seconds()) // 60)]


def _availability_zone(text: str) -> datetime.tzinfo:
    """The zone a VAVAILABILITY's hours are written in: the DTSTART of
    its first AVAILABLE (else of the VAVAILABILITY) with a zone; UTC for
    floating times, as the engine reads them."""
    try:
        calendar = icalendar.Calendar.from_ical(text)
    except ValueError:
        return UTC
    for name in ("AVAILABLE", "VAVAILABILITY"):
        for component in calendar.walk(name):
            start = component.get("DTSTART")
            zone = getattr(getattr(start, "dt", None), "tzinfo", None)
            if zone is not None:
                return zone
    return UTC


def _availability_hours(app, text: str, window: Window
                        ) -> Optional[Tuple[datetime.tzinfo, WorkingPeriods]]:
    """Working hours of the week from the window's first day, as the
    engine computes the VAVAILABILITY; None if it says nothing then."""
    zone = _availability_zone(text)
    first = window.start.astimezone(zone).date()
    days = [first + datetime.timedelta(days=i) for i in range(8)]
    midnights = [datetime.datetime.combine(day, datetime.time()).replace(
        tzinfo=zone).astimezone(UTC) for day in days]
    week = Window(midnights[0], midnights[7])
    unavailable = coalesce(Period(p.start, p.end)
                           for p in app.local.availability_of_text(text,
                                                                   week))
    if not unavailable:
        return None
    holes = [(p.start, p.end) for p in unavailable]
    by_span: Dict[Tuple[int, int], set] = {}
    for index in range(7):
        naive_midnight = datetime.datetime.combine(days[index],
                                                   datetime.time())
        for start, end in gaps(holes, Window(midnights[index],
                                             midnights[index + 1])):
            minutes = [int((moment.astimezone(zone).replace(tzinfo=None)
                            - naive_midnight).total_seconds()) // 60
                       for moment in (start, end)]
            by_span.setdefault((max(0, minutes[0]), min(1440, minutes[1])),
                               set()).add(days[index].weekday())
    return zone, [(frozenset(weekdays), start, end) for (start, end), weekdays
                  in sorted(by_span.items())]


# -- GetServerTimeZones and ConvertId ------------------------------------


def _server_time_zones(operation):
    full = _boolean(operation.get("ReturnFullTimeZoneData", "true"),
                    "ReturnFullTimeZoneData")
    ids_element = _one(operation, m("Ids"), required=False)
    if ids_element is None:
        ids = windows_zone_ids()
    else:
        ids = [(e.text or "").strip() for e in ids_element
               if e.tag == t("Id")]
        if len(ids) > MAX_ZONE_IDS:
            raise _schema("at most %d time zone Ids" % MAX_ZONE_IDS)
        ids = list(dict.fromkeys(ids))
    answer = etree.Element(m("GetServerTimeZonesResponse"), nsmap=NSMAP)
    messages = sub(answer, m("ResponseMessages"))
    message = sub(messages, m("GetServerTimeZonesResponseMessage"))
    unknown = [i for i in ids if iana_zone(i) is None]
    if unknown:
        message.set("ResponseClass", "Error")
        sub(message, m("MessageText"), xmlsafe.text(
            "Unknown time zone id: %s." % ", ".join(u[:80]
                                                    for u in unknown[:5])))
        sub(message, m("ResponseCode"), "ErrorTimeZone")
        sub(message, m("DescriptiveLinkKey"), "0")
        return answer
    message.set("ResponseClass", "Success")
    sub(message, m("ResponseCode"), "NoError")
    definitions = sub(message, m("TimeZoneDefinitions"))
    for ident in ids:
        zone_definition(definitions, ident, full)
    return answer


def _convert_id(operation):
    """No item lives here, so no id converts; exchangelib sends one
    ConvertId to learn the server version from the answer's header."""
    sources = _one(operation, m("SourceIds"))
    ids = list(sources)
    if not ids or len(ids) > MAX_MAILBOXES:
        raise _schema("SourceIds holds 1 to %d ids" % MAX_MAILBOXES)
    answer = etree.Element(m("ConvertIdResponse"), nsmap=NSMAP)
    messages = sub(answer, m("ResponseMessages"))
    for _ in ids:
        message = sub(messages, m("ConvertIdResponseMessage"),
                      ResponseClass="Error")
        sub(message, m("MessageText"), "This free/busy gateway holds no "
            "items, so no id converts.")
        sub(message, m("ResponseCode"), "ErrorItemNotFound")
        sub(message, m("DescriptiveLinkKey"), "0")
    return answer
