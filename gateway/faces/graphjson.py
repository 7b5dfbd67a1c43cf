"""Microsoft Graph's JSON conventions, for the faces that speak them.

What a Graph client sends and expects, once: a bounded JSON body, keys in
camelCase or PascalCase, ``dateTimeTimeZone`` values (UTC, Windows or
IANA zone names), ISO 8601 durations, ``Prefer: outlook.timezone`` and
its ``Preference-Applied`` answer, and the error envelope
``{"error": {"code": ..., "message": ...}}`` for every refusal.
"""

import datetime
import json
import re
import zoneinfo
from typing import Any, Dict, Optional, Tuple

from gateway.faces import access
from gateway.model import UTC

try:    # icalendar (a gateway dependency) carries CLDR's windowsZones
    from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON
except ImportError:     # pragma: no cover - other icalendar versions
    WINDOWS_TO_OLSON = {"UTC": "Etc/UTC"}

#: Largest JSON body read; a findMeetingTimes for 100 attendees is ~15 kB.
MAX_BODY = 1 << 20
JSON = "application/json; charset=utf-8"
_WINDOWS_ZONES = {k.lower(): v for k, v in WINDOWS_TO_OLSON.items()}
_UTC_NAMES = ("utc", "etc/utc", "z", "gmt", "coordinated universal time")
_DATETIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d)"
                       r"(?:\.(\d{1,9}))?)?(Z|[+-]\d\d:?\d\d)?")
_DURATION = re.compile(
    r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?"
    r"(?:(\d+(?:\.\d{1,9})?)S)?)?")
_PREFER_ZONE = re.compile(r'outlook\.timezone\s*=\s*"([^"]{1,100})"', re.I)


class GraphError(Exception):
    """A refusal in Graph's error envelope."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def answer(self, headers: Optional[Dict[str, str]] = None) -> tuple:
        return json_answer(self.status, {"error": {
            "code": self.code, "message": self.message}}, headers)


def bad_request(message: str, code: str = "ErrorInvalidRequest"
                ) -> GraphError:
    return GraphError(400, code, message)


def json_answer(status: int, value: Any,
                headers: Optional[Dict[str, str]] = None) -> tuple:
    """Radicale's answer tuple with a JSON body."""
    out = {"Content-Type": JSON, "Cache-Control": "no-store"}
    out.update(headers or {})
    return status, out, json.dumps(value).encode("utf-8"), None


def read_json(environ) -> Any:
    """The request's JSON body (at most :data:`MAX_BODY` bytes)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise bad_request("Content-Length is not a number") from None
    if length > MAX_BODY:
        raise GraphError(413, "RequestEntityTooLarge", "the body is larger "
                         "than %d bytes" % MAX_BODY)
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    if not body.strip():
        raise bad_request("the request needs a JSON body", "RequestBodyRead")
    try:
        return json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as e:
        raise bad_request("the body is not JSON: %s" % e,
                          "RequestBodyRead") from None


def read_json_body(environ) -> Any:
    """The JSON body; 415 unless it is declared ``application/json``,
    which also makes a browser ask a CORS preflight before it sends
    credentials (no form on another site can post it)."""
    media = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise GraphError(415, "UnsupportedMediaType", "send the body as "
                         "application/json")
    return read_json(environ)


def refused(app, request, headers: Dict[str, str]) -> Optional[tuple]:
    """The access policy's refusal (gateway.faces.access) in Graph's
    envelope with ``headers`` (CORS) added, or None to go on."""
    answer = access.refusal(app, request)
    if answer is None:
        return None
    status, found = answer[0], dict(answer[1])
    if status == 429:
        return GraphError(429, "TooManyRequests", answer[2].decode(
            "utf-8")).answer(dict(headers, **{
                "Retry-After": found["Retry-After"]}))
    # Radicale's NOT_ALLOWED for an anonymous caller: 401 with its realm.
    return GraphError(401, "InvalidAuthenticationToken", "log in (HTTP "
                      "Basic) to ask for free/busy").answer(dict(headers, **{
                          "WWW-Authenticate": 'Basic realm="%s"' %
                          app.configuration.get("auth", "realm")}))


def member(value: Dict[str, Any], name: str, default: Any = None) -> Any:
    """``value[name]`` in camelCase or PascalCase (Graph takes both)."""
    if not isinstance(value, dict):
        return default
    for key in (name, name[:1].upper() + name[1:]):
        if key in value:
            return value[key]
    return default


def zone(name: Any, what: str = "timeZone") -> datetime.tzinfo:
    """tzinfo of a Graph time-zone name: UTC, Windows or IANA."""
    if not isinstance(name, str) or not name.strip():
        raise bad_request("%s must name a time zone" % what)
    name = name.strip()
    if name.lower() in _UTC_NAMES:
        return UTC
    iana = _WINDOWS_ZONES.get(name.lower(), name)
    try:
        return zoneinfo.ZoneInfo(iana)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise bad_request("%s %r is not a time zone" % (what, name[:80]),
                          "ErrorInvalidTimeZone") from None


def parse_datetime(value: Any, what: str) -> datetime.datetime:
    """A ``dateTimeTimeZone`` as an aware UTC datetime; an offset in the
    dateTime wins over the timeZone, as Graph does."""
    text = member(value, "dateTime")
    match = _DATETIME.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise bad_request("%s needs a dateTime like 2026-12-07T09:00:00 "
                          "and a timeZone" % what)
    year, month, day, hour, minute, second, fraction, offset = \
        match.groups()
    try:
        moment = datetime.datetime(
            int(year), int(month), int(day), int(hour), int(minute),
            int(second or 0), int((fraction or "").ljust(9, "0")[:6]))
    except ValueError as e:
        raise bad_request("%s: %s" % (what, e)) from None
    if offset == "Z":
        tzinfo: datetime.tzinfo = UTC
    elif offset:
        digits = offset[1:].replace(":", "")
        tzinfo = datetime.timezone((-1 if offset[0] == "-" else 1) * (
            datetime.timedelta(hours=int(digits[:2]),
                               minutes=int(digits[2:]))))
    else:
        tzinfo = zone(member(value, "timeZone"), what + ".timeZone")
    try:
        return moment.replace(tzinfo=tzinfo).astimezone(UTC)
    except (OverflowError, ValueError) as e:
        raise bad_request("%s: %s" % (what, e)) from None


def format_datetime(moment: datetime.datetime,
                    zone_name: str = "UTC",
                    tzinfo: datetime.tzinfo = UTC) -> Dict[str, str]:
    """A ``dateTimeTimeZone`` in ``zone_name``'s wall-clock time, with
    Graph's seven fraction digits."""
    local = moment.astimezone(tzinfo)
    return {"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.") +
            "%06d0" % local.microsecond, "timeZone": zone_name}


def parse_duration(text: Any, what: str) -> datetime.timedelta:
    """A positive ISO 8601 duration without years or months (``PT1H30M``,
    ``P1D``, ``PT90M``, ``PT0.5H`` is not one)."""
    match = _DURATION.fullmatch(text.strip()) \
        if isinstance(text, str) else None
    if match is None or text.strip() in ("P", "PT") or \
            text.strip().endswith("T"):
        raise bad_request("%s must be an ISO 8601 duration like PT1H or "
                          "PT30M" % what)
    weeks, days, hours, minutes = (int(g or 0) for g in match.groups()[:4])
    try:
        value = datetime.timedelta(weeks=weeks, days=days, hours=hours,
                                   minutes=minutes,
                                   seconds=float(match.group(5) or 0))
    except OverflowError:
        raise bad_request("%s is too long" % what) from None
    if value <= datetime.timedelta(0):
        raise bad_request("%s must be longer than zero" % what)
    return value


def preferred_zone(environ) -> Tuple[str, datetime.tzinfo,
                                     Dict[str, str]]:
    """(name, tzinfo, answer headers) of ``Prefer: outlook.timezone``;
    UTC and no header without one."""
    match = _PREFER_ZONE.search(environ.get("HTTP_PREFER", ""))
    if match is None:
        return "UTC", UTC, {}
    name = match.group(1).strip()
    return name, zone(name, "Prefer: outlook.timezone"), {
        "Preference-Applied": 'outlook.timezone="%s"' % name}
