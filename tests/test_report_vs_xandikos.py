"""The gateway's REPORT against an independent CalDAV server's, same events.

A seeded mix of events (single and weekly with COUNT, UNTIL or no end,
EXDATE, overrides, TZID zones with DST, all-day, TENTATIVE, CANCELLED,
TRANSPARENT) goes into a gateway calendar and into a real Xandikos
calendar; both answer the same free-busy-query REPORTs. Xandikos does not
coalesce and repeats overlapping periods, so the answers are compared as
the union of busy time per FBTYPE, which RFC 4791 7.10 makes the same for
every correct server.

Where Xandikos 0.4 is known to differ from the RFCs (floating times with a
calendar time zone, stored VFREEBUSY, RANGE=THISANDFUTURE; see
test_report_conformance.py, which checks the gateway on exactly those),
the data stays clear of it.
"""

import datetime
import random

import pytest
import requests

from fbcheck import vfreebusy_of

UTC = datetime.timezone.utc
BERLIN = ("BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:DAYLIGHT\r\n"
          "TZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nTZNAME:CEST\r\n"
          "DTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU"
          "\r\nEND:DAYLIGHT\r\nBEGIN:STANDARD\r\nTZOFFSETFROM:+0200\r\n"
          "TZOFFSETTO:+0100\r\nTZNAME:CET\r\nDTSTART:19701025T030000\r\n"
          "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nEND:STANDARD\r\n"
          "END:VTIMEZONE\r\n")


def make_objects(seed: int, count: int):
    """{name: iCalendar text}, deterministic for ``seed``."""
    rng = random.Random(seed)
    objects = {}
    for n in range(count):
        day = datetime.datetime(2026, 1, 1) + datetime.timedelta(
            days=rng.randrange(150))
        start = day.replace(hour=rng.randrange(6, 20),
                            minute=rng.choice((0, 15, 30, 45)))
        end = start + datetime.timedelta(minutes=rng.choice((30, 60, 90)))
        berlin = rng.random() < 0.4
        fmt = "%Y%m%dT%H%M%S" + ("" if berlin else "Z")
        prop = ";TZID=Europe/Berlin" if berlin else ""
        lines = ["BEGIN:VEVENT", "UID:e%d" % n, "DTSTAMP:20260101T000000Z"]
        all_day = rng.random() < 0.05
        if all_day:
            lines += ["DTSTART;VALUE=DATE:" + day.strftime("%Y%m%d"),
                      "DTEND;VALUE=DATE:" + (day + datetime.timedelta(
                          days=1)).strftime("%Y%m%d")]
        else:
            lines += ["DTSTART%s:%s" % (prop, start.strftime(fmt)),
                      "DTEND%s:%s" % (prop, end.strftime(fmt))]
        override = None
        if not all_day and rng.random() < 0.3:
            kind = rng.random()
            rule = "FREQ=WEEKLY"
            if kind < 0.3:
                rule += ";COUNT=%d" % rng.randrange(3, 20)
            elif kind < 0.6:
                rule += ";UNTIL=%s" % (start + datetime.timedelta(
                    weeks=rng.randrange(2, 12))).strftime("%Y%m%dT235959Z")
            lines.append("RRULE:" + rule)
            if rng.random() < 0.3:
                skipped = start + datetime.timedelta(weeks=1)
                lines.append("EXDATE%s:%s" % (prop, skipped.strftime(fmt)))
            if rng.random() < 0.3:
                moved = start + datetime.timedelta(weeks=2)
                override = [
                    "BEGIN:VEVENT", "UID:e%d" % n,
                    "DTSTAMP:20260101T000000Z",
                    "RECURRENCE-ID%s:%s" % (prop, moved.strftime(fmt)),
                    "DTSTART%s:%s" % (prop, (moved + datetime.timedelta(
                        hours=2)).strftime(fmt)),
                    "DTEND%s:%s" % (prop, (moved + datetime.timedelta(
                        hours=3)).strftime(fmt))]
                if rng.random() < 0.3:
                    override.append("STATUS:CANCELLED")
                override.append("END:VEVENT")
        status = rng.random()
        if status < 0.1:
            lines.append("STATUS:TENTATIVE")
        elif status < 0.15:
            lines.append("STATUS:CANCELLED")
        if rng.random() < 0.05:
            lines.append("TRANSP:TRANSPARENT")
        lines.append("END:VEVENT")
        body = "\r\n".join(lines + (override or [])) + "\r\n"
        objects["e%d.ics" % n] = (
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n" +
            (BERLIN if berlin else "") + body + "END:VCALENDAR\r\n")
    return objects


def busy_by_type(data):
    """{FBTYPE: merged UTC intervals} of one VFREEBUSY answer."""
    component = vfreebusy_of(data)
    values = component.get("FREEBUSY", [])
    values = values if isinstance(values, list) else [values]
    by_type = {}
    for prop in values:
        fbtype = str(prop.params.get("FBTYPE", "BUSY")).upper()
        assert fbtype != "FREE" or b"Xandikos" in data
        for start, end in (prop.dt if isinstance(prop.dt, list)
                           else [prop.dt]):
            if isinstance(end, datetime.timedelta):
                end = start + end
            by_type.setdefault(fbtype, []).append(
                (start.astimezone(UTC), end.astimezone(UTC)))
    merged = {}
    for fbtype, spans in by_type.items():
        spans.sort()
        out = [list(spans[0])]
        for start, end in spans[1:]:
            if start <= out[-1][1]:
                out[-1][1] = max(out[-1][1], end)
            else:
                out.append([start, end])
        merged[fbtype] = [tuple(span) for span in out]
    return merged


REPORT = ('<?xml version="1.0" encoding="utf-8"?>'
          '<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">'
          '<C:time-range start="%s" end="%s"/></C:free-busy-query>')


@pytest.mark.parametrize("seed", [1, 2])
def test_same_busy_time_as_xandikos(gateway, xandikos_factory, seed):
    objects = make_objects(seed, 120)
    xandikos = xandikos_factory() + "/user/calendars/calendar/"
    path = gateway.mkcalendar("alice", "cal")
    for name, text in objects.items():
        gateway.put(path + name, text, "alice")
        response = requests.put(xandikos + name, text.encode(), timeout=30,
                                headers={"Content-Type": "text/calendar"})
        assert response.status_code in (201, 204), response.text
    for start, end in [("20260101T000000Z", "20260212T000000Z"),
                       ("20260301T000000Z", "20260601T000000Z")]:
        body = REPORT % (start, end)
        ours = gateway.report(path, body, "alice")
        theirs = requests.request(
            "REPORT", xandikos, data=body, timeout=60,
            headers={"Depth": "1", "Content-Type": "application/xml"})
        assert ours.status_code == theirs.status_code == 200
        expected = busy_by_type(theirs.content)
        actual = busy_by_type(ours.content)
        assert sum(len(v) for v in actual.values()) > 10   # not vacuous
        assert actual == expected
