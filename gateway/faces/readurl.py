"""The free/busy read URL: ``GET /.freebusy/<address>`` (CalConnect CC/S 0903).

What Outlook's Internet free/busy, Kolab, Zimbra and peer gateways fetch:
one VCALENDAR with one VFREEBUSY (METHOD:PUBLISH, ORGANIZER the address,
DTSTART/DTEND the window, UID and DTSTAMP as RFC 5546 asks of a PUBLISH).
``.ifb`` or ``.vfb`` may follow the address, as Outlook's search path
templates and Kolab write it.

Parameters (all optional): ``start`` and ``end`` in RFC 3339 (``Z`` or an
offset; no date-only values), ``period`` an RFC 5545 duration instead of
``end``, ``format`` (only ``text/calendar``: anything else is 406); Kolab's
``dtstart``/``dtend`` are read too.  With
none the window is 42 days from the start of today (UTC), the CC/S 0903
recommendation; a window past ``[gateway] max_window_days`` is 400.  A
bad parameter is 400 and the text names it.

Answers follow the one access policy (gateway.faces.access): 404 unknown
address (authenticated callers only: anonymous callers see it free), 403
no authority, 503 with the reason when the lookup timed out, was
throttled, could not reach the system or has no data, never an empty 200.
"""

import datetime
import re
import urllib.parse
import uuid
from typing import Dict, List, Tuple

from gateway import timezones, vfreebusy
from gateway.addresses import bare_address
from gateway.faces import access
from gateway.model import FIRST_ANSWERED, Reason, Window

PREFIX = "/.freebusy/"
SUFFIXES = (".ifb", ".vfb")
#: CC/S 0903's recommended default window.
DEFAULT_PERIOD = datetime.timedelta(days=42)
CALENDAR = "text/calendar"
#: The longest query string read; a real one is under 200 bytes.
MAX_QUERY = 2048
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(\.\d{1,9})?"
    r"([Zz]|[+ -]\d\d:\d\d)")
_DURATION = re.compile(
    r"\+?P(?:(\d+)W|(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?)")
#: Failures and their status; everything else (no data, timed out,
#: throttled, unreachable) is 503: a client must not read it as free.
STATUS = {Reason.UNKNOWN_USER: 404, Reason.NO_AUTHORITY: 403}


class BadParameter(ValueError):
    """400: ``name`` is wrong, ``text`` says how."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__("%s: %s" % (name, text))
        self.name = name


def register(registry) -> None:
    registry.route(("GET", "HEAD"), PREFIX, handle)


def _text(status: int, text: str, extra=()) -> tuple:
    return status, dict([("Content-Type", "text/plain; charset=utf-8"),
                         *extra]), text.encode("utf-8"), None


def handle(app, request) -> tuple:
    refused = access.refusal(app, request)
    if refused is not None:
        return refused
    environ = request.environ
    try:
        address = address_of(request.path)
        params = query_of(environ.get("QUERY_STRING", ""))
        window = window_of(params, datetime.datetime.now(timezones.UTC),
                           app.gateway_options["max_window_days"])
        wanted = params.get("format")
    except BadParameter as e:
        return _text(400, "bad parameter %s" % e)
    if wanted is not None and not _is_calendar(wanted):
        return _text(406, "format %r is not served; only %s is" % (
            wanted[:80], CALENDAR))
    if not accepts_calendar(environ.get("HTTP_ACCEPT", "")):
        return _text(406, "only %s is served, and Accept excludes it"
                     % CALENDAR)
    caller = access.Caller.of(request)
    result = access.lookup(
        app, caller, ["mailto:" + address], window,
        hops=access.incoming_hops(environ),
        face="readurl")["mailto:" + address]
    if not result.ok:
        status = STATUS.get(result.failure, 503)
        if status == 403:
            # No detail: who opted out and who lacks a right look alike.
            return _text(403, "%s: no authority" % address)
        return _text(status, "%s: %s%s" % (
            address, result.failure.value,
            ": " + result.detail if result.detail else ""))
    body = vfreebusy.render(
        result.periods, window, method="PUBLISH",
        uid=str(uuid.uuid5(uuid.NAMESPACE_URL, "freebusy:%s/%s/%s" % (
            address, window.start.isoformat(), window.end.isoformat()))),
        organizer="mailto:" + address)
    return 200, {"Content-Type": CALENDAR + "; charset=utf-8",
                 # Someone's busy time: never kept by a shared cache.
                 "Cache-Control": "private, no-cache"}, \
        body.encode("utf-8"), None


def address_of(path: str) -> str:
    """The bare address a read URL names (``.ifb``/``.vfb`` and a
    trailing slash taken off)."""
    name = path[len(PREFIX):].rstrip("/")
    if name[-4:].lower() in SUFFIXES:
        name = name[:-4]
    bare = bare_address("mailto:" + name) if name else None
    if bare is None:
        raise BadParameter("address", "the path must name one address, as "
                           "in /.freebusy/alice@example.com")
    return bare


def query_of(query: str) -> Dict[str, str]:
    """The parameters, each at most once (a repeated one is 400)."""
    if len(query) > MAX_QUERY:
        raise BadParameter("query", "longer than %d bytes" % MAX_QUERY)
    params: Dict[str, str] = {}
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True,
                                       strict_parsing=False,
                                       errors="strict")
    except UnicodeDecodeError:
        raise BadParameter("query", "not UTF-8") from None
    for name, value in pairs:
        if name in params:
            raise BadParameter(name, "given more than once")
        params[name] = value
    return params


def parse_time(name: str, text: str) -> datetime.datetime:
    """An RFC 3339 date-time with ``Z`` or an offset, as UTC.  A ``+``
    decoded to a space by a client that did not percent-encode it is
    read as ``+``."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise BadParameter(name, "%r is not an RFC 3339 date-time with Z or "
                           "an offset, as in 2026-12-01T00:00:00Z" % text[:64])
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or ".")[1:7].ljust(6, "0"))
    try:
        zone = timezones.UTC
        if offset not in ("Z", "z"):
            sign = -1 if offset[0] == "-" else 1
            delta = datetime.timedelta(hours=int(offset[1:3]),
                                       minutes=int(offset[4:6]))
            zone = datetime.timezone(sign * delta)
        return datetime.datetime(int(year), int(month), int(day), int(hour),
                                 int(minute), int(second), micro,
                                 tzinfo=zone).astimezone(timezones.UTC)
    except (ValueError, OverflowError) as e:
        raise BadParameter(name, "%r: %s" % (text[:64], e)) from None


def parse_duration(name: str, text: str) -> datetime.timedelta:
    """A positive RFC 5545 duration (``P42D``, ``P1W``, ``PT36H``)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or text.strip() in ("P", "+P"):
        raise BadParameter(name, "%r is not a positive RFC 5545 duration, "
                           "as in P7D or PT12H" % text[:64])
    weeks, days, hours, minutes, seconds = (int(g or 0)
                                            for g in match.groups())
    try:
        value = datetime.timedelta(weeks=weeks, days=days, hours=hours,
                                   minutes=minutes, seconds=seconds)
    except OverflowError:
        raise BadParameter(name, "%r is too long" % text[:64]) from None
    if value <= datetime.timedelta(0):
        raise BadParameter(name, "must be longer than zero")
    return value


def _kolab_time(name: str, text: str) -> datetime.datetime:
    try:
        return timezones.parse_utc(text)
    except ValueError:
        raise BadParameter(name, "%r is not a UTC date-time like "
                           "20261201T000000Z" % text[:64]) from None


def window_of(params: Dict[str, str], now: datetime.datetime,
              max_days: int) -> Window:
    """The window ``start``/``end``/``period`` ask for, defaults filled.
    Kolab's ``dtstart``/``dtend`` (iCalendar UTC form) are read as
    ``start``/``end``, so its clients get the window they asked for, and
    errors name the parameter the client sent."""
    names = {"start": "start", "end": "end"}
    params = dict(params)
    for ours, kolab in (("start", "dtstart"), ("end", "dtend")):
        if kolab in params:
            if ours in params:
                raise BadParameter(kolab, "give %s or %s, not both" % (
                    ours, kolab))
            names[ours] = kolab
            params[ours] = _kolab_time(kolab, params.pop(kolab))
    if "end" in params and "period" in params:
        raise BadParameter("period", "give %s or period, not both" %
                           names["end"])
    if "start" in params:
        start = _time("start", params["start"])
    else:
        start = now.astimezone(timezones.UTC).replace(
            hour=0, minute=0, second=0, microsecond=0)
    if "end" in params:
        name, end = names["end"], _time("end", params["end"])
    else:
        name = "period"
        length = parse_duration("period", params["period"]) \
            if "period" in params else DEFAULT_PERIOD
        if length > datetime.timedelta(days=max_days):
            raise BadParameter("period", "longer than %d days, the longest "
                               "window served" % max_days)
        try:
            end = start + length
        except OverflowError:
            raise BadParameter("period", "ends past the year 3000") from None
    if end <= start:
        raise BadParameter(name, "must be after %s (%s)" % (
            names["start"], start.strftime("%Y-%m-%dT%H:%M:%SZ")))
    if end - start > datetime.timedelta(days=max_days):
        raise BadParameter(name, "the window is longer than %d days, the "
                           "longest served" % max_days)
    try:
        return Window.checked(start, end, max_days)
    except ValueError as e:
        raise BadParameter(names["start"] if start < FIRST_ANSWERED
                           else name, str(e)) from None


def _time(name: str, value) -> datetime.datetime:
    return value if isinstance(value, datetime.datetime) else \
        parse_time(name, value)


def _is_calendar(media_type: str) -> bool:
    return media_type.split(";")[0].strip().lower() == CALENDAR


def accepts_calendar(accept: str) -> bool:
    """Does an Accept header take text/calendar?  No header, ``*/*`` and
    ``text/*`` do; so does a header nobody can read (clients that send
    odd ones still want the calendar)."""
    ranges: List[Tuple[str, float]] = []
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        if not fields[0]:
            continue
        quality = 1.0
        for field in fields[1:]:
            if field[:2].lower() == "q=":
                try:
                    quality = float(field[2:])
                except ValueError:
                    return True
        ranges.append((fields[0].lower(), quality))
    if not ranges:
        return True
    for media_range, quality in ranges:
        if media_range in (CALENDAR, "text/*", "*/*") and quality > 0:
            return True
    return False
