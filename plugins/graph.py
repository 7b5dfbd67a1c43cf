"""Microsoft Graph: free/busy from ``calendar/getSchedule``.

``POST {url}/users/{mailbox}/calendar/getSchedule`` (or
``{url}/me/calendar/getSchedule`` when the own key ``mailbox`` is empty,
for a delegated token given as ``token``) with
``{"schedules": [...], "startTime": {"dateTime": ..., "timeZone": "UTC"},
"endTime": {...}, "availabilityViewInterval": N}`` and
``Prefer: outlook.timezone="UTC"``.  The answer has one
``scheduleInformation`` per schedule: ``scheduleItems`` with exact times
(``dateTime``/``timeZone`` pairs, 7-digit fractions; the zone may be UTC,
a Windows or an IANA name whatever we asked for), an ``availabilityView``
of one digit per ``availabilityViewInterval`` minutes (0 free, 1
tentative, 2 busy, 3 out of office, 4 working elsewhere), or an
``error`` (``{"message", "responseCode"}``; the code is a numeric EWS
exception code such as "5009" or a name such as
``ErrorMailRecipientNotFound``).

Items give the times; a slot of the view that says busy where no busy
item lies is busy too (never freer than Graph says), and a schedule
without items is read from its view alone, which must then cover the
window.  Working elsewhere is free, ``unknown`` is no data.  With
``working_hours = yes`` time outside the schedule's ``workingHours`` is
BUSY-UNAVAILABLE.

Limits: 20 schedules and less than 42 days a call (Graph's
documentation; the common keys ``max_addresses`` and ``max_window_days``
change them).  Credentials: ``auth = oauth2`` (client credentials,
scope https://graph.microsoft.com/.default; ``mailbox`` is then
required, since ``/me`` needs a signed-in user) or ``token``.
"""

import datetime
import logging
import re
import urllib.parse
import zoneinfo
from typing import List, Optional

from gateway.provider import (BUSY, BUSY_TENTATIVE, BUSY_UNAVAILABLE,
                              LookupResult, Option, Period, ProviderError,
                              Reason, Span, failure_in_words, gaps, no_data)
from gateway.provider import Provider as BaseProvider
from gateway.timezones import UTC

try:    # icalendar (a gateway dependency) carries CLDR's windowsZones
    from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON
except ImportError:     # pragma: no cover - other icalendar versions
    WINDOWS_TO_OLSON = {"UTC": "Etc/UTC"}

logger = logging.getLogger(__name__)

#: scheduleItem.status (compared lower-case); None is free time.
STATUS = {"free": None, "workingelsewhere": None, "tentative": BUSY_TENTATIVE,
          "busy": BUSY, "oof": BUSY_UNAVAILABLE}
#: availabilityView digits; 4 (working elsewhere) is free.
DIGITS = {"0": None, "4": None, "1": BUSY_TENTATIVE, "2": BUSY,
          "3": BUSY_UNAVAILABLE}
#: responseCodes of per-schedule errors: the user does not exist ...
UNKNOWN_CODES = {"5009", "5016", "errormailrecipientnotfound",
                 "errornonexistentmailbox", "errorinvalidsmtpaddress",
                 "errorinvaliduser", "errormailboxnotfound",
                 "erroritemnotfound", "errorrecipientnotfound",
                 "resourcenotfound"}
#: ... or we may not see their free/busy.
DENIED_CODES = {"errornofreebusyaccess", "erroraccessdenied",
                "errorproxyrequestnotallowed", "accessdenied",
                "erroraccessdeniedfreebusy", "errorfreebusyaccessdenied"}
#: Whole-request errors that mean our limits exceed the tenant's.
TOO_BIG = {"ErrorMailboxDataArrayTooBig": "max_addresses",
           "ErrorTimeIntervalTooBig": "max_window_days"}
_DATETIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d)"
                       r"(?:\.(\d{1,9}))?)?(Z|[+-]\d\d:?\d\d)?")
_CLOCK = re.compile(r"(\d\d):(\d\d)(?::(\d\d)(?:\.\d{1,9})?)?")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday",
             "saturday", "sunday")
#: Graph's documented window: less than 42 days a call.
LIMIT = datetime.timedelta(days=42)
_WINDOWS_ZONES = {k.lower(): v for k, v in WINDOWS_TO_OLSON.items()}


class BadAnswer(ValueError):
    """A part of Graph's answer we cannot read: no data, never free."""


def _mailbox(value):
    value = value.strip()
    if value and (any(c.isspace() or c in "/\\?#" for c in value)):
        raise ValueError("a mailbox address or user id, without spaces, "
                         "slashes, ? or #")
    return value or None


def _interval(value):
    minutes = int(value)
    if not 5 <= minutes <= 1440:
        raise ValueError("must be 5 to 1440 (minutes)")
    return minutes


def _yes_no(value):
    value = value.strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0"):
        return False
    raise ValueError("must be yes or no")


def _graph_time(moment):
    """An aware datetime as Graph's UTC wall-clock dateTime."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000")


def zone(name):
    """tzinfo of a Graph time-zone name: UTC, Windows or IANA."""
    if not isinstance(name, str) or not name.strip():
        raise BadAnswer("no time zone")
    name = name.strip()
    if name.lower() in ("utc", "etc/utc", "z", "gmt", "coordinated "
                        "universal time", "tzone://microsoft/utc"):
        return UTC
    iana = _WINDOWS_ZONES.get(name.lower(), name)
    try:
        return zoneinfo.ZoneInfo(iana)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise BadAnswer("unknown time zone %r" % name[:80]) from None


def graph_datetime(value, round_up=False):
    """``{"dateTime": "2019-03-15T12:00:00.0000000", "timeZone": ...}``
    as an aware datetime.  Fractions finer than a microsecond are cut,
    or rounded up for an end (never shorter than Graph said)."""
    if not isinstance(value, dict):
        raise BadAnswer("not a dateTimeTimeZone: %r" % (value,))
    text = value.get("dateTime")
    match = _DATETIME.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise BadAnswer("unreadable dateTime %r" % (text,))
    year, month, day, hour, minute, second, fraction, offset = \
        match.groups()
    fraction = (fraction or "").ljust(9, "0")
    micro = int(fraction[:6])
    try:
        moment = datetime.datetime(int(year), int(month), int(day),
                                   int(hour), int(minute), int(second or 0),
                                   micro)
        if round_up and int(fraction[6:]):
            moment += datetime.timedelta(microseconds=1)
    except (ValueError, OverflowError) as e:
        raise BadAnswer("dateTime %r: %s" % (text, e)) from None
    if offset:
        if offset == "Z":
            return moment.replace(tzinfo=UTC)
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        return moment.replace(tzinfo=datetime.timezone(sign * (
            datetime.timedelta(hours=int(digits[:2]),
                               minutes=int(digits[2:])))))
    return moment.replace(tzinfo=zone(value.get("timeZone")))


def schedule_error(error):
    """A per-schedule ``freeBusyError`` as a failed LookupResult."""
    if not isinstance(error, dict):
        return LookupResult.failed(Reason.NO_DATA, "error %r" % (error,))
    code = str(error.get("responseCode", "")).strip()
    message = str(error.get("message", ""))
    detail = "Graph said %s: %.200s" % (code or "no code", message)
    if code.lower() in UNKNOWN_CODES:
        return LookupResult.failed(Reason.UNKNOWN_USER, detail)
    if code.lower() in DENIED_CODES:
        return LookupResult.failed(Reason.NO_AUTHORITY, detail)
    return failure_in_words(message, detail)


def item_periods(items):
    """Busy periods of ``scheduleItems`` and the spans of its ``unknown``
    items (no data)."""
    if not isinstance(items, list):
        raise BadAnswer("scheduleItems is not a list")
    periods, nodata = [], []
    for item in items:
        if not isinstance(item, dict):
            raise BadAnswer("scheduleItem %r" % (item,))
        status = str(item.get("status", "")).lower()
        if status not in STATUS and status != "unknown":
            raise BadAnswer("status %r from %s" % (
                item.get("status"), (item.get("start") or {}).get(
                    "dateTime") if isinstance(item.get("start"), dict)
                else "?"))
        start = graph_datetime(item.get("start"))
        end = graph_datetime(item.get("end"), round_up=True)
        if end < start:
            raise BadAnswer("item ends before it starts")
        if status == "unknown":
            nodata.append((start, end))
        elif STATUS[status] is not None:
            periods.append(Period(start, end, STATUS[status]))
    return periods, nodata


def view_periods(view, window, interval, items):
    """Busy slots of ``availabilityView`` where no busy item lies, and
    whether the view covers the whole window."""
    if not isinstance(view, str):
        raise BadAnswer("availabilityView is not a string")
    periods = []
    step = datetime.timedelta(minutes=interval)
    start = window.start
    for digit in view:
        if start >= window.end:
            break
        end = start + step
        if digit not in DIGITS:
            if not any(p.start < end and p.end > start for p in items):
                raise BadAnswer("availabilityView digit %r at %s" % (
                    digit, start.isoformat()))
        elif DIGITS[digit] is not None and not any(
                p.start < end and p.end > start for p in items):
            periods.append(Period(start, end, DIGITS[digit]))
        start = end
    return periods, start >= window.end


def _clock(text):
    match = _CLOCK.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise BadAnswer("unreadable time of day %r" % (text,))
    hour, minute, second = match.groups()
    if int(hour) == 24 and int(minute) == 0:
        return datetime.timedelta(days=1)
    return datetime.timedelta(hours=int(hour), minutes=int(minute),
                              seconds=int(second or 0))


def _working_zone(value):
    if not isinstance(value, dict):
        raise BadAnswer("workingHours without timeZone")
    if "bias" in value and "custom" in str(value.get("@odata.type", "")
                                           ).lower():
        # customTimeZone: local = UTC - bias minutes (480 is UTC-8); its
        # daylight rules are not applied (an hour off part of the year).
        return datetime.timezone(-datetime.timedelta(
            minutes=int(value["bias"])))
    return zone(value.get("name"))


def working_spans(hours, window) -> List[Span]:
    """The ``workingHours`` of a schedule as UTC spans around ``window``."""
    if not isinstance(hours, dict):
        raise BadAnswer("workingHours is not an object")
    tz = _working_zone(hours.get("timeZone"))
    days = hours.get("daysOfWeek")
    if not isinstance(days, list):
        raise BadAnswer("workingHours without daysOfWeek")
    weekdays = {_WEEKDAYS.index(d.lower()) for d in days
                if isinstance(d, str) and d.lower() in _WEEKDAYS}
    begin, finish = _clock(hours.get("startTime")), \
        _clock(hours.get("endTime"))
    working = []
    day = window.start.astimezone(tz).date() - datetime.timedelta(days=1)
    last = window.end.astimezone(tz).date() + datetime.timedelta(days=1)
    while day <= last:
        if day.weekday() in weekdays and finish > begin:
            midnight = datetime.datetime(day.year, day.month, day.day)
            working.append(((midnight + begin).replace(tzinfo=tz),
                            (midnight + finish).replace(tzinfo=tz)))
        day += datetime.timedelta(days=1)
    return [(s.astimezone(UTC), e.astimezone(UTC)) for s, e in working]


class Provider(BaseProvider):
    """One getSchedule POST per call; the gateway splits by the limits."""

    max_addresses = 20
    #: "less than 42 days" (whole slots of the interval, see __init__)
    max_window = LIMIT - datetime.timedelta(minutes=30)
    slot = datetime.timedelta(minutes=30)
    per_asker = False
    AUTH_KINDS = ("bearer", "oauth2")
    AUTH_SCOPES = {"oauth2": "https://graph.microsoft.com/.default"}
    OPTIONS = {
        "mailbox": Option(_mailbox, "", "Mailbox (address or user id) "
                          "whose calendar/getSchedule is called; empty: "
                          "/me (a delegated token). Required with auth = "
                          "oauth2."),
        "interval": Option(
            _interval, "30", "Minutes per availabilityView digit (5 to "
            "1440); windows are widened to whole intervals."),
        "working_hours": Option(_yes_no, "no", "yes: time outside each "
                                "schedule's workingHours is "
                                "BUSY-UNAVAILABLE."),
    }

    def __init__(self, name, options, extra, http):
        super().__init__(name, options, extra, http)
        kind = options.get("auth") or getattr(
            getattr(http, "authenticator", None), "kind", "")
        mailbox = extra["mailbox"]
        if kind == "oauth2" and not mailbox:
            raise ValueError("key 'mailbox': required with auth = oauth2 "
                             "(/me needs a signed-in user; name the "
                             "mailbox whose calendar/getSchedule is used)")
        base = options["url"].rstrip("/")
        self.endpoint = "%s/users/%s/calendar/getSchedule" % (
            base, urllib.parse.quote(mailbox, safe="@")) if mailbox \
            else "%s/me/calendar/getSchedule" % base
        self.interval = extra["interval"]
        self.slot = datetime.timedelta(minutes=self.interval)
        if not options.get("max_window_days"):
            # Whole slots, less than 42 days: the parts the fan-out cuts
            # then meet without overlapping.
            self.max_window = (LIMIT - datetime.timedelta(minutes=1)) \
                // self.slot * self.slot

    def lookup(self, addresses, window, context):
        response = self.http.post_json(self.endpoint, context, {
            "schedules": list(addresses),
            "startTime": {"dateTime": _graph_time(window.start),
                          "timeZone": "UTC"},
            "endTime": {"dateTime": _graph_time(window.end),
                        "timeZone": "UTC"},
            "availabilityViewInterval": self.interval},
            headers={"Prefer": 'outlook.timezone="UTC"'})
        answer = response.json()
        if response.status != 200:
            raise self._failure(response, answer)
        if not isinstance(answer, dict) or \
                not isinstance(answer.get("value"), list):
            raise ProviderError(Reason.NO_DATA, "POST %s: not a getSchedule "
                                "answer: %.200r" % (response.url,
                                                    response.text))
        results = no_data(addresses, "not in Graph's answer")
        for entry in answer["value"]:
            schedule = entry.get("scheduleId") \
                if isinstance(entry, dict) else None
            address = schedule.strip().lower() \
                if isinstance(schedule, str) else None
            if address in results:
                results[address] = self._result(entry, window)
        return results

    def _result(self, entry, window):
        if entry.get("error") is not None:
            return schedule_error(entry["error"])
        try:
            items = entry.get("scheduleItems")
            view = entry.get("availabilityView")
            periods, nodata = item_periods(items) if items is not None \
                else ([], [])
            if view:
                extra, covered = view_periods(
                    view, window, self.interval,
                    periods + [Period(s, e) for s, e in nodata])
                periods += extra
            else:
                covered = False
            if items is None and not covered:
                raise BadAnswer("no scheduleItems and an availabilityView "
                                "of %d slots for the window" % len(
                                    view or ""))
            working = self._working(entry.get("workingHours"), window)
            if working is not None and self.extra["working_hours"]:
                periods += [Period(s, e, BUSY_UNAVAILABLE)
                            for s, e in gaps(working, window)]
        except (BadAnswer, KeyError, TypeError, ValueError,
                AttributeError, OverflowError) as e:
            return LookupResult.failed(Reason.NO_DATA, "unreadable "
                                       "schedule: %s" % (e,))
        if nodata and not gaps(nodata, window):
            return LookupResult.failed(Reason.NO_DATA, "unknown for the "
                                       "whole window")
        return LookupResult.busy(periods, window, nodata, working)

    def _working(self, hours, window) -> Optional[List[Span]]:
        """The schedule's working hours; None when it has none.  Unreadable
        ones fail the schedule only where ``working_hours`` makes them
        count as busy; otherwise the finder uses the default instead."""
        if hours is None and not self.extra["working_hours"]:
            return None
        try:
            return working_spans(hours, window)
        except (BadAnswer, KeyError, TypeError, ValueError,
                AttributeError, OverflowError):
            if self.extra["working_hours"]:
                raise
            return None

    def _failure(self, response, answer):
        error = answer.get("error") if isinstance(answer, dict) else None
        code = message = ""
        if isinstance(error, dict):
            code = str(error.get("code", ""))
            message = str(error.get("message", ""))
        detail = "POST %s answered %d %s: %.200s" % (
            response.url, response.status, code,
            message or response.text)
        if response.status == 401:
            return ProviderError(Reason.NO_AUTHORITY, detail,
                                 "refused the credentials")
        if response.status == 403:
            return ProviderError(Reason.NO_AUTHORITY, detail)
        if code in TOO_BIG:
            return ProviderError(Reason.UNAVAILABLE, detail + " (lower %s "
                                 "for this tenant)" % TOO_BIG[code],
                                 "refused a request as too large")
        if response.status == 404:
            return ProviderError(Reason.UNAVAILABLE, detail + " (is the "
                                 "key 'mailbox' right?)",
                                 "answered HTTP 404")
        return ProviderError(Reason.UNAVAILABLE, detail,
                             "answered HTTP %d" % response.status)
