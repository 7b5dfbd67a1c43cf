"""HCL Domino: busy time from Domino Access Services (DAS).

``GET {url}/busytime?name=&since=&before=`` (``url`` ends in
``/api/freebusy``; one name a call; ``before``, not ``until``, which
Domino ignores; times as ``2017-09-01T13:00:00Z``, since Domino rejects
milliseconds with "Unparseable date") with HTTP Basic answers
``{"start": T, "end": T, "busyTimes": [{"start": T, "end": T}]}``, each
``T`` a ``{"date": "2017-09-01", "time": "13:00:00", "utc": true}``.
Every busy time is BUSY (Domino has no other status).  ``start`` and
``end`` say what the answer covers: time of the window outside them is
no data (BUSY-UNAVAILABLE), an answer covering none of it fails.

``"utc": false`` is a wall-clock time of the server's zone, which the
answer does not name.  With the own key ``server_timezone`` it is read
in that zone; without it the time could lie anywhere from 14 hours
before to 12 hours after its reading (UTC+14 to UTC-12), so a busy time
becomes BUSY-UNAVAILABLE over that whole span and the covered range
shrinks by as much: no data where we cannot know, never free.

Errors: 400 "Name not found" is 3.7; 401 is refused credentials (3.8);
every other error, "Unparseable date" included, is no data (5.3).
Credentials: ``username``/``password`` (Basic), or none where the
server allows anonymous access.
"""

import datetime
import re
import zoneinfo

from gateway.provider import (BUSY, BUSY_UNAVAILABLE, LookupResult, Option,
                              Period, ProviderError, Reason)
from gateway.provider import Provider as BaseProvider
from gateway.timezones import UTC

#: The UTC offsets in use run from -12:00 to +14:00.
EARLIEST_OFFSET = datetime.timedelta(hours=14)
LATEST_OFFSET = datetime.timedelta(hours=12)
NAME_NOT_FOUND = re.compile(r"name not found", re.I)
_DATE = re.compile(r"(\d{4})-(\d\d)-(\d\d)")
_TIME = re.compile(r"(\d\d):(\d\d)(?::(\d\d)(?:[.,](\d{1,6})\d*)?)?")


def _zone(value: str):
    value = value.strip()
    if not value:
        return None
    try:
        return zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError("an IANA time zone name, e.g. Europe/Berlin") \
            from None


def domino_time(moment: datetime.datetime) -> str:
    """UTC without milliseconds: the one form Domino parses."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _wall_clock(value) -> datetime.datetime:
    """The naive date and time of a DAS ``{"date", "time"}``."""
    date = _DATE.fullmatch(value.get("date") or "")
    clock = _TIME.fullmatch(value.get("time") or "")
    if date is None or clock is None:
        raise ValueError("unreadable date/time %.80r" % (value,))
    hour, minute, second, fraction = clock.groups()
    return datetime.datetime(
        *(int(x) for x in date.groups()), int(hour), int(minute),
        int(second or 0), int((fraction or "0").ljust(6, "0")))


class Provider(BaseProvider):
    """One GET per name; the fan-out runs them in parallel, at most
    ``max_parallel`` at once."""

    max_addresses = 1
    slot = datetime.timedelta(seconds=1)    # Domino takes whole seconds
    per_asker = False
    AUTH_KINDS = ("basic",)
    OPTIONS = {
        "server_timezone": Option(
            _zone, "", "IANA zone of the Domino server, to read busy times "
            "it sends with \"utc\": false; empty: such a time is no data "
            "over every moment it could mean."),
    }

    def __init__(self, name, options, extra, http):
        super().__init__(name, options, extra, http)
        self.endpoint = options["url"].rstrip("/") + "/busytime"
        self.server_zone = extra["server_timezone"]

    def lookup(self, addresses, window, context):
        address = addresses[0]
        response = self.http.request(
            "GET", self.endpoint, context,
            headers={"Accept": "application/json"},
            params={"name": address, "since": domino_time(window.start),
                    "before": domino_time(window.end)})
        answer = response.json()
        message = answer.get("message") if isinstance(answer, dict) else None
        detail = "GET %s answered %d: %.200s" % (
            response.url, response.status,
            message if isinstance(message, str) else response.text)
        if response.status == 401:
            raise ProviderError(Reason.NO_AUTHORITY, detail,
                                "refused the credentials")
        if response.status == 400 and isinstance(message, str) and \
                NAME_NOT_FOUND.search(message):
            return {address: LookupResult.failed(Reason.UNKNOWN_USER,
                                                 detail)}
        if response.status != 200:
            raise ProviderError(Reason.NO_DATA, detail,
                                "answered HTTP %d" % response.status)
        try:
            return {address: self._result(answer, window)}
        except (ValueError, TypeError, AttributeError, OverflowError) as e:
            return {address: LookupResult.failed(
                Reason.NO_DATA, "GET %s: unreadable answer (%s): %.200s" % (
                    response.url, e, response.text))}

    def _instants(self, value):
        """The earliest and latest UTC moment a DAS time can mean."""
        if not isinstance(value, dict) or not isinstance(value.get("utc"),
                                                         bool):
            raise ValueError("not a date/time/utc object: %.80r" % (value,))
        moment = _wall_clock(value)
        if value["utc"]:
            moment = moment.replace(tzinfo=UTC)
        elif self.server_zone is not None:
            moment = moment.replace(tzinfo=self.server_zone).astimezone(UTC)
        else:
            moment = moment.replace(tzinfo=UTC)
            return moment - EARLIEST_OFFSET, moment + LATEST_OFFSET
        return moment, moment

    def _result(self, answer, window) -> LookupResult:
        if not isinstance(answer, dict) or \
                not isinstance(answer.get("busyTimes"), list):
            raise ValueError("no busyTimes list")
        periods = []
        for entry in answer["busyTimes"]:
            if not isinstance(entry, dict):
                raise ValueError("busy time %.80r" % (entry,))
            start, end = self._instants(entry.get("start")), \
                self._instants(entry.get("end"))
            if end[1] < start[0]:
                raise ValueError("busy time ends before it starts")
            if start[0] == start[1] and end[0] == end[1]:
                periods.append(Period(start[0], end[0], BUSY))
            else:
                periods.append(Period(start[0], end[1], BUSY_UNAVAILABLE))
        # What the answer is sure to cover; absent: the range we asked for.
        covered_start = self._instants(answer["start"])[1] \
            if "start" in answer else window.start
        covered_end = self._instants(answer["end"])[0] \
            if "end" in answer else window.end
        if covered_start >= window.end or covered_end <= window.start or \
                covered_end <= covered_start:
            return LookupResult.failed(Reason.NO_DATA, "Domino answered for "
                                       "%s..%s only" % (
                                           covered_start.isoformat(),
                                           covered_end.isoformat()))
        if covered_start > window.start:
            periods.append(Period(window.start, covered_start,
                                  BUSY_UNAVAILABLE))
        if covered_end < window.end:
            periods.append(Period(covered_end, window.end, BUSY_UNAVAILABLE))
        return LookupResult.busy(periods, window)
