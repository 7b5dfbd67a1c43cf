"""Checks of free/busy answers, by the conformance cases' comparison rule.

Parse the answer, require exactly one VFREEBUSY, turn every FREEBUSY value
into a UTC start/end pair, compare per FBTYPE as multisets (so duplicates
fail) and fail on any FBTYPE other than BUSY, BUSY-TENTATIVE or
BUSY-UNAVAILABLE.  The parsing uses icalendar, not the gateway's code, so
the tests do not check the gateway with itself.
"""

import datetime
import json
import pathlib
import re
from collections import Counter
from typing import Dict, List, Tuple

import icalendar
from lxml import etree

Periods = Dict[str, List[Tuple[str, str]]]
C = "{urn:ietf:params:xml:ns:caldav}"
D = "{DAV:}"
ALLOWED = {"BUSY", "BUSY-TENTATIVE", "BUSY-UNAVAILABLE"}
_EXPECTED_LINE = re.compile(
    r"^(BUSY(?:-TENTATIVE|-UNAVAILABLE)?)\s+(\d{8}T\d{6}Z)/(\d{8}T\d{6}Z)\s*$")


def _utc(value: datetime.datetime) -> str:
    assert value.tzinfo is not None, "FREEBUSY time is not UTC: %r" % value
    return value.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def vfreebusy_of(data) -> icalendar.cal.Component:
    """The one VFREEBUSY of an iCalendar text (asserted to be one)."""
    calendar = icalendar.Calendar.from_ical(data)
    found = [c for c in calendar.walk() if c.name == "VFREEBUSY"]
    assert len(found) == 1, "expected one VFREEBUSY, got %d" % len(found)
    return found[0]


def periods_of(data) -> Periods:
    """{FBTYPE: sorted [(start, end)]} of the one VFREEBUSY in ``data``."""
    component = vfreebusy_of(data)
    result: Periods = {}
    values = component.get("FREEBUSY", [])
    if not isinstance(values, list):
        values = [values]
    for prop in values:
        fbtype = str(prop.params.get("FBTYPE", "BUSY")).upper()
        assert fbtype in ALLOWED, "FBTYPE=%s in answer" % fbtype
        periods = prop.dt if isinstance(prop.dt, list) else [prop.dt]
        for start, end in periods:
            if isinstance(end, datetime.timedelta):
                end = start + end
            result.setdefault(fbtype, []).append((_utc(start), _utc(end)))
    for fbtype in result:
        result[fbtype].sort()
    return result


def expected_periods(expected_file: pathlib.Path) -> Periods:
    """The normalised period list of a conformance case's expected.txt."""
    result: Periods = {}
    for line in expected_file.read_text().splitlines():
        match = _EXPECTED_LINE.match(line.strip())
        if match:
            result.setdefault(match.group(1), []).append(
                (match.group(2), match.group(3)))
    for fbtype in result:
        result[fbtype].sort()
    return result


def assert_same_periods(actual: Periods, expected: Periods) -> None:
    """Per-FBTYPE multiset equality (counts matter: duplicates fail)."""
    assert set(actual) == set(expected), (actual, expected)
    for fbtype in expected:
        assert Counter(actual[fbtype]) == Counter(expected[fbtype]), (
            fbtype, actual[fbtype], expected[fbtype])


def assert_utc_never_free(data) -> None:
    """Every FREEBUSY value is in UTC; FBTYPE=FREE is never written."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    lines = re.findall(r"^FREEBUSY[^:]*:(.*)$", text.replace("\r\n ", ""),
                       re.M)
    for line in lines:
        for period in line.strip().split(","):
            start, _, end = period.partition("/")
            assert start.endswith("Z"), period
            assert end.endswith("Z") or end.startswith("P"), period
    assert "FBTYPE=FREE" not in text.replace("\r\n ", "")


def assert_windows_tile(calls, names, start: str, end: str) -> None:
    """The windows a provider was asked for each of ``names`` join
    without gap or overlap from ``start`` to ``end`` (RFC 3339 UTC).
    ``calls`` are ``(addresses asked, (window start, window end))``."""
    covered = {}
    for addresses, window in calls:
        for name in addresses:
            covered.setdefault(name, []).append(window)
    for name in names:
        parts = sorted(covered[name])
        assert parts[0][0].isoformat() == start, parts
        assert parts[-1][1].isoformat() == end, parts
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:])), parts


def schedule_response(response):
    """[(recipient, status code, calendar-data or None)] in answer order."""
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/xml")
    root = etree.fromstring(response.content)
    assert root.tag == C + "schedule-response"
    answers = []
    for item in root.findall(C + "response"):
        recipient = item.find(C + "recipient/" + D + "href").text
        status = item.find(C + "request-status").text
        data = item.find(C + "calendar-data")
        answers.append((recipient, status.split(";")[0],
                        None if data is None else data.text))
    return answers


def suggested_hours(gateway, attendees, start: str, end: str,
                    user: str = "alice") -> List[str]:
    """The starts ("HH:MM", UTC) of the slots findMeetingTimes suggests
    to ``user`` for a one-hour meeting of required ``attendees`` within
    their working hours between ``start`` and ``end`` (RFC 3339, UTC),
    in time order."""
    response = gateway.request(
        "POST", "/.freebusy/findMeetingTimes", json.dumps({
            "attendees": [{"type": "required",
                           "emailAddress": {"address": a}}
                          for a in attendees],
            "timeConstraint": {"activityDomain": "work", "timeslots": [{
                "start": {"dateTime": start, "timeZone": "UTC"},
                "end": {"dateTime": end, "timeZone": "UTC"}}]},
            "meetingDuration": "PT1H", "maxCandidates": 50}),
        user=user, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    return sorted(s["meetingTimeSlot"]["start"]["dateTime"][11:16]
                  for s in response.json()["meetingTimeSuggestions"])
