"""``getSchedule`` in the shape of Microsoft Graph, for web apps and Graph.

``POST /.freebusy/getSchedule``, and the same at Graph's own paths
``/v1.0/me/calendar/getSchedule`` and
``/v1.0/users/{id}/calendar/getSchedule``, so code written for Graph works
with the gateway's base URL in place of graph.microsoft.com.  ``{id}``
must be one path segment but grants nothing: the logged-in caller's own
rights decide, under the one access policy (gateway.faces.access).

Request: ``schedules`` (addresses), ``startTime``/``endTime``
(``{"dateTime", "timeZone"}``, Windows or IANA zone names),
``availabilityViewInterval`` (5..1440 minutes, default 30); camelCase,
PascalCase accepted.  Answer: ``{"value": [scheduleInformation]}`` with
``scheduleId``, ``availabilityView`` (0 free, 1 tentative, 2 busy, 3 out
of office; spans without data are 2, never 0, and 4, Graph's "working
elsewhere", is never written), ``scheduleItems`` (status busy, tentative
or oof with start and end, and nothing else: no subject, location or
attendees ever), ``workingHours`` (the user's VAVAILABILITY where its
weekly pattern can be read, else ``[gateway] default_working_hours``),
or ``error`` ``{"message", "responseCode"}`` for that schedule alone.
Times are UTC unless ``Prefer: outlook.timezone="..."`` names a zone.
Bad requests get Graph's ``{"error": {"code", "message"}}`` envelope.
"""

import datetime
import math
import re
import zoneinfo
from typing import Dict, List, Optional, Sequence

import icalendar

from gateway import timezones
from gateway.engine.local import AVAILABILITY_KEY
from gateway.faces import access, cors, graphjson
from gateway.faces.graphjson import (GraphError, bad_request,
                                     format_datetime, json_answer, member,
                                     parse_datetime, preferred_zone)
from gateway.model import (BUSY, BUSY_TENTATIVE, BUSY_UNAVAILABLE,
                           LookupResult, Period, Reason, Window, coalesce,
                           gaps)
from gateway.workhours import WorkingHours

OWN_PATH = "/.freebusy/getSchedule"
ME_PATH = "/v1.0/me/calendar/getSchedule"
USERS_PREFIX = "/v1.0/users/"
_USERS_PATH = re.compile(r"/v1\.0/users/[^/]+/calendar/getSchedule")
#: Most availabilityView digits per schedule (62 days of 5 minutes, the
#: finest view Graph itself gives), so one answer stays bounded.
MAX_VIEW_SLOTS = 62 * 24 * 12
MAX_ADDRESS_LENGTH = 320
DEFAULT_INTERVAL = 30
#: responseCode of a per-schedule error: EWS's ResponseCodeType names,
#: which Graph passes through and Graph clients already know.
RESPONSE_CODES = {
    Reason.UNKNOWN_USER: "ErrorMailRecipientNotFound",
    Reason.NO_AUTHORITY: "ErrorNoFreeBusyAccess",
    Reason.UNAVAILABLE: "ErrorProxyRequestProcessingFailed",
    Reason.TIMED_OUT: "ErrorTimeoutExpired",
    Reason.RATE_LIMITED: "ErrorServerBusy",
    Reason.NO_DATA: "ErrorFreeBusyGenerationFailed",
}
_ICAL_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_GRAPH_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday",
               "saturday", "sunday")


def register(registry) -> None:
    for prefix in (OWN_PATH, ME_PATH, USERS_PREFIX):
        registry.route(("POST",), prefix, handle)
        registry.route(("OPTIONS",), prefix, options)


def is_schedule_path(path: str) -> bool:
    path = path.rstrip("/")
    return path in (OWN_PATH, ME_PATH) or bool(_USERS_PATH.fullmatch(path))


def error_answer(app, environ, error: GraphError, extra=None) -> tuple:
    """``error`` in Graph's envelope, with the CORS headers."""
    return error.answer(dict(cors.headers(app, environ), **(extra or {})))


def options(app, request) -> tuple:
    if not is_schedule_path(request.path):
        return error_answer(app, request.environ, GraphError(
            404, "ResourceNotFound", "no such route"))
    return cors.preflight(app, request.environ, ("POST",))


def refused(app, request) -> Optional[tuple]:
    """The access policy's refusal in Graph's envelope, CORS headers on."""
    return graphjson.refused(app, request,
                             cors.headers(app, request.environ))


def handle(app, request) -> tuple:
    environ = request.environ
    if not is_schedule_path(request.path):
        return error_answer(app, environ, GraphError(
            404, "ResourceNotFound", "no such route"))
    answer = refused(app, request)
    if answer is not None:
        return answer
    try:
        body = read_body(environ)
        ask = ScheduleRequest.parse(body, app.gateway_options)
        zone_name, zone, applied = preferred_zone(environ)
    except GraphError as e:
        return error_answer(app, environ, e)
    caller = access.Caller.of(request)
    addresses = list(dict.fromkeys("mailto:" + _bare(s)
                                   for s in ask.schedules))
    results = access.lookup(app, caller, addresses, ask.window,
                            face="getschedule")
    value = [schedule_information(
        app, caller, schedule, results["mailto:" + _bare(schedule)], ask,
        zone_name, zone) for schedule in ask.schedules]
    return json_answer(200, {"value": value},
                       dict(cors.headers(app, environ), **applied))


# -- the request ------------------------------------------------------------

def read_body(environ) -> object:
    return graphjson.read_json_body(environ)


def _bare(address: str) -> str:
    address = address.strip()
    return address[7:] if address[:7].lower() == "mailto:" else address


def _interval(value) -> int:
    if value is None:
        return DEFAULT_INTERVAL
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or \
            not 5 <= value <= 1440:
        raise bad_request("availabilityViewInterval: minutes from 5 to "
                          "1440")
    return value


class ScheduleRequest:
    """A checked getSchedule body."""

    def __init__(self, schedules: List[str], window: Window,
                 interval: int) -> None:
        self.schedules, self.window, self.interval = \
            schedules, window, interval

    @property
    def slot(self) -> datetime.timedelta:
        return datetime.timedelta(minutes=self.interval)

    @classmethod
    def parse(cls, body, options) -> "ScheduleRequest":
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object")
        schedules = member(body, "schedules")
        if not isinstance(schedules, list) or not schedules or not all(
                isinstance(s, str) and s.strip() and
                len(s) <= MAX_ADDRESS_LENGTH for s in schedules):
            raise bad_request("schedules: a list of one or more addresses")
        if len(schedules) > options["max_attendees"]:
            raise bad_request("schedules: at most %d addresses a request; %d "
                              "given" % (options["max_attendees"],
                                         len(schedules)),
                              "ErrorMailboxDataArrayTooBig")
        for name in ("startTime", "endTime"):
            if member(body, name) is None:
                raise bad_request("%s is missing" % name)
        start = parse_datetime(member(body, "startTime"), "startTime")
        end = parse_datetime(member(body, "endTime"), "endTime")
        interval = _interval(member(body, "availabilityViewInterval"))
        if end <= start:
            raise bad_request("endTime must be after startTime")
        try:
            window = Window.checked(start, end, options["max_window_days"])
        except ValueError as e:
            raise bad_request("startTime/endTime: %s" % e,
                              "ErrorTimeIntervalTooBig" if "longer" in str(e)
                              else "ErrorInvalidRequest") from None
        slots = math.ceil((end - start) / datetime.timedelta(
            minutes=interval))
        if slots > MAX_VIEW_SLOTS:
            raise bad_request(
                "availabilityViewInterval: the window holds %d intervals of "
                "%d minutes; at most %d are served: ask for a shorter window"
                " or a longer interval" % (slots, interval, MAX_VIEW_SLOTS),
                "ErrorTimeIntervalTooBig")
        return cls([s.strip() for s in schedules], window, interval)


# -- the answer -------------------------------------------------------------

def graph_periods(result: LookupResult) -> List[Period]:
    """The result's periods as Graph states them: no-data spans are busy
    (not out of office, which is what the model's BUSY-UNAVAILABLE for
    them would read as)."""
    holes = sorted(result.nodata)
    unavailable = [p for p in result.periods if p.fbtype == BUSY_UNAVAILABLE]
    others = [p for p in result.periods if p.fbtype != BUSY_UNAVAILABLE]
    return coalesce(others + [
        Period(s, e, p.fbtype) for p in unavailable
        for s, e in gaps(holes, Window(p.start, p.end))] +
        [Period(s, e, BUSY) for s, e in holes])


STATUS = {BUSY: "busy", BUSY_TENTATIVE: "tentative", BUSY_UNAVAILABLE: "oof"}
DIGIT = {BUSY: ord("2"), BUSY_TENTATIVE: ord("1"), BUSY_UNAVAILABLE: ord("3")}


def availability_view(periods: Sequence[Period], window: Window,
                      slot: datetime.timedelta) -> str:
    """One digit per slot from the window's start: the strongest status
    in it (out of office over busy over tentative over free)."""
    count = math.ceil((window.end - window.start) / slot)
    digits = bytearray(b"0" * count)
    for period in periods:
        first = (period.start - window.start) // slot
        last = min(count, math.ceil((period.end - window.start) / slot))
        digit = DIGIT[period.fbtype]
        for index in range(max(0, first), last):
            if digits[index] < digit:
                digits[index] = digit
    return digits.decode("ascii")


def _time_of_day(offset: datetime.timedelta) -> str:
    seconds = min(int(offset.total_seconds()), 86399)
    return "%02d:%02d:%02d.0000000" % (seconds // 3600, seconds // 60 % 60,
                                       seconds % 60)


def working_hours_json(hours: WorkingHours) -> dict:
    return {"daysOfWeek": [_GRAPH_DAYS[d] for d in sorted(hours.days)],
            "startTime": _time_of_day(hours.start),
            "endTime": _time_of_day(hours.end),
            "timeZone": {"name": getattr(hours.zone, "key", None) or "UTC"}}


def hours_of_availability(text: str) -> Optional[WorkingHours]:
    """The weekly pattern of a VAVAILABILITY as working hours: its weekly
    AVAILABLE blocks, grouped by time of day and zone, the group covering
    the most weekdays; None when it has no such block."""
    groups: Dict[tuple, set] = {}
    try:
        blocks = [_weekly_block(available) for available in
                  icalendar.Calendar.from_ical(text).walk("AVAILABLE")]
    except Exception:  # icalendar and mixed date kinds raise many kinds
        return None
    for found in blocks:
        if found is not None:
            key, days = found
            groups.setdefault(key, set()).update(days)
    if not groups:
        return None
    (start, end, zone_key), days = max(
        groups.items(), key=lambda item: (len(item[1]), -item[0][0]))
    zone = timezones.UTC if zone_key == "UTC" else zoneinfo.ZoneInfo(
        zone_key)
    return WorkingHours(frozenset(days), start, end, zone)


def _weekly_block(available):
    """((start, end, zone name), weekdays) of one weekly AVAILABLE."""
    rule = available.get("RRULE")
    if rule is None or "DTSTART" not in available or \
            [str(f).upper() for f in rule.get("FREQ", [])] != ["WEEKLY"]:
        return None
    begin = available["DTSTART"].dt
    if not isinstance(begin, datetime.datetime):
        return None
    if "DTEND" in available:
        length = available["DTEND"].dt - begin
    elif "DURATION" in available:
        length = available["DURATION"].dt
    else:
        return None
    if not isinstance(length, datetime.timedelta):
        return None
    midnight = begin.replace(hour=0, minute=0, second=0, microsecond=0)
    start = begin - midnight
    end = start + length
    if length <= datetime.timedelta(0) or end > datetime.timedelta(days=1):
        return None
    zone_key = _zone_key(available["DTSTART"], begin)
    if zone_key is None:
        return None
    days = set()
    for value in rule.get("BYDAY", []) or [_ICAL_DAYS[begin.weekday()]]:
        code = str(value).upper()[-2:]
        if code in _ICAL_DAYS:
            days.add(_ICAL_DAYS.index(code))
    return ((start, end, zone_key), days) if days else None


def _zone_key(prop, moment: datetime.datetime) -> Optional[str]:
    """IANA name (or UTC) of an AVAILABLE's DTSTART; floating is UTC."""
    if moment.tzinfo is None or moment.utcoffset() == datetime.timedelta(0) \
            and getattr(moment.tzinfo, "key", "UTC") in ("UTC", "Etc/UTC"):
        return "UTC"
    for name in (getattr(moment.tzinfo, "key", None),
                 prop.params.get("TZID")):
        if name:
            try:
                zoneinfo.ZoneInfo(str(name))
                return str(name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
                continue
    return None


def working_hours_for(app, caller, address: str) -> WorkingHours:
    """A local user's hours from their VAVAILABILITY when the caller may
    see them, else the gateway's default (so an anonymous caller sees an
    opted-out or unknown user exactly as a user without hours)."""
    default = app.gateway_options["default_working_hours"]
    kind, user = app.fanout.route(address)
    if kind != "local":
        return default
    if user != caller.user and app.local.opted_out(user):
        return default
    text = app.local.principal_meta(user, AVAILABILITY_KEY)
    return (hours_of_availability(str(text)) if text else None) or default


def schedule_information(app, caller, schedule: str, result: LookupResult,
                         ask: ScheduleRequest, zone_name: str,
                         zone: datetime.tzinfo) -> dict:
    if not result.ok:
        message = result.failure.value
        if result.detail and result.failure is not Reason.NO_AUTHORITY:
            message += ": " + result.detail
        return {"scheduleId": schedule, "error": {
            "message": message,
            "responseCode": RESPONSE_CODES[result.failure]}}
    periods = graph_periods(result)
    return {
        "scheduleId": schedule,
        "availabilityView": availability_view(periods, ask.window,
                                              ask.slot),
        "scheduleItems": [{
            "status": STATUS[p.fbtype],
            "start": format_datetime(p.start, zone_name, zone),
            "end": format_datetime(p.end, zone_name, zone)}
            for p in sorted(periods, key=lambda p: (p.start, p.end))],
        "workingHours": working_hours_json(working_hours_for(
            app, caller, "mailto:" + _bare(schedule))),
    }
