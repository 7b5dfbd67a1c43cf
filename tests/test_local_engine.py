"""The local engine on the calendar data the conformance cases do not
cover: recurrence rules and exceptions, all-day and floating times, time
zones, DURATION, stored VFREEBUSY and VAVAILABILITY, coalescing."""

from xml.sax.saxutils import escape

import pytest

from fbcheck import assert_same_periods, periods_of

REPORT = ('<?xml version="1.0" encoding="utf-8"?>'
          '<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">'
          '<C:time-range start="%s" end="%s"/></C:free-busy-query>')

NEW_YORK = """BEGIN:VTIMEZONE
TZID:America/New_York
BEGIN:DAYLIGHT
TZOFFSETFROM:-0500
TZOFFSETTO:-0400
DTSTART:20070311T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU
TZNAME:EDT
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:-0400
TZOFFSETTO:-0500
DTSTART:20071104T020000
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU
TZNAME:EST
END:STANDARD
END:VTIMEZONE
"""


def calendar_text(*components: str) -> str:
    body = "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//t//EN\n%sEND:VCALENDAR\n" \
        % "".join(components)
    return body.replace("\n", "\r\n")


def vevent(uid: str, lines: str) -> str:
    return "BEGIN:VEVENT\nUID:%s\nDTSTAMP:20260101T000000Z\n%sEND:VEVENT\n" \
        % (uid, lines)


def answer(gateway, objects, start, end, properties=""):
    path = gateway.mkcalendar("alice", "cal", properties)
    for number, text in enumerate(objects):
        gateway.put(path + "o%d.ics" % number, text, "alice")
    response = gateway.report(path, REPORT % (start, end), "alice")
    assert response.status_code == 200, response.text
    return periods_of(response.content)


def test_weekly_rule_with_exdate_rdate_and_override(gateway):
    series = calendar_text(
        NEW_YORK,
        vevent("w", "DTSTART;TZID=America/New_York:20260302T090000\n"
               "DTEND;TZID=America/New_York:20260302T100000\n"
               "RRULE:FREQ=WEEKLY;BYDAY=MO\n"
               "EXDATE;TZID=America/New_York:20260316T090000\n"
               "RDATE;TZID=America/New_York:20260318T150000\n"),
        vevent("w", "RECURRENCE-ID;TZID=America/New_York:20260323T090000\n"
               "DTSTART;TZID=America/New_York:20260324T110000\n"
               "DTEND;TZID=America/New_York:20260324T113000\n"))
    periods = answer(gateway, [series], "20260301T000000Z",
                     "20260331T000000Z")
    # New York changes to EDT on 8 March 2026: 14:00Z before, 13:00Z after.
    assert_same_periods(periods, {"BUSY": [
        ("20260302T140000Z", "20260302T150000Z"),
        ("20260309T130000Z", "20260309T140000Z"),
        ("20260318T190000Z", "20260318T200000Z"),   # RDATE, 1 hour
        ("20260324T150000Z", "20260324T153000Z"),   # moved 23rd
        ("20260330T130000Z", "20260330T140000Z"),
    ]})


def test_endless_rule_far_in_the_future(gateway):
    series = calendar_text(vevent(
        "daily", "DTSTART:20200101T080000Z\nDURATION:PT30M\n"
        "RRULE:FREQ=DAILY\n"))
    periods = answer(gateway, [series], "20450601T000000Z",
                     "20450603T000000Z")
    assert_same_periods(periods, {"BUSY": [
        ("20450601T080000Z", "20450601T083000Z"),
        ("20450602T080000Z", "20450602T083000Z")]})


def test_count_and_until_end_the_series(gateway):
    counted = calendar_text(vevent(
        "c", "DTSTART:20260105T100000Z\nDTEND:20260105T110000Z\n"
        "RRULE:FREQ=DAILY;COUNT=3\n"))
    until = calendar_text(vevent(
        "u", "DTSTART:20260105T120000Z\nDTEND:20260105T130000Z\n"
        "RRULE:FREQ=DAILY;UNTIL=20260106T120000Z\n"))
    periods = answer(gateway, [counted, until], "20260101T000000Z",
                     "20260201T000000Z")
    assert_same_periods(periods, {"BUSY": [
        ("20260105T100000Z", "20260105T110000Z"),
        ("20260105T120000Z", "20260105T130000Z"),
        ("20260106T100000Z", "20260106T110000Z"),
        ("20260106T120000Z", "20260106T130000Z"),
        ("20260107T100000Z", "20260107T110000Z")]})


def test_cancelled_override_removes_one_instance(gateway):
    series = calendar_text(
        vevent("s", "DTSTART:20260105T100000Z\nDTEND:20260105T110000Z\n"
               "RRULE:FREQ=DAILY;COUNT=3\n"),
        vevent("s", "RECURRENCE-ID:20260106T100000Z\n"
               "DTSTART:20260106T100000Z\nDTEND:20260106T110000Z\n"
               "STATUS:CANCELLED\n"))
    periods = answer(gateway, [series], "20260101T000000Z",
                     "20260201T000000Z")
    assert_same_periods(periods, {"BUSY": [
        ("20260105T100000Z", "20260105T110000Z"),
        ("20260107T100000Z", "20260107T110000Z")]})


def test_all_day_and_floating_follow_calendar_timezone(gateway):
    zone = calendar_text(NEW_YORK)
    objects = [
        calendar_text(vevent("allday", "DTSTART;VALUE=DATE:20260601\n"
                             "DTEND;VALUE=DATE:20260603\n")),
        calendar_text(vevent("oneday", "DTSTART;VALUE=DATE:20260610\n")),
        calendar_text(vevent("floating", "DTSTART:20260605T090000\n"
                             "DTEND:20260605T093000\n")),
    ]
    periods = answer(
        gateway, objects, "20260501T000000Z", "20260701T000000Z",
        "<C:calendar-timezone>%s</C:calendar-timezone>" % escape(zone))
    assert_same_periods(periods, {"BUSY": [
        ("20260601T040000Z", "20260603T040000Z"),    # two New York days
        ("20260605T130000Z", "20260605T133000Z"),
        ("20260610T040000Z", "20260611T040000Z"),    # DATE, no DTEND: 1 day
    ]})


def test_all_day_without_calendar_timezone_is_utc_days(gateway):
    periods = answer(gateway, [calendar_text(vevent(
        "allday", "DTSTART;VALUE=DATE:20260601\nDTEND;VALUE=DATE:20260602\n"
    ))], "20260501T000000Z", "20260701T000000Z")
    assert_same_periods(periods, {"BUSY": [("20260601T000000Z",
                                            "20260602T000000Z")]})


def test_status_transp_and_coalescing(gateway):
    objects = [
        calendar_text(vevent("a", "DTSTART:20260105T100000Z\n"
                             "DTEND:20260105T110000Z\n")),
        calendar_text(vevent("b", "DTSTART:20260105T103000Z\n"
                             "DTEND:20260105T120000Z\n")),
        calendar_text(vevent("c", "DTSTART:20260105T120000Z\n"
                             "DTEND:20260105T123000Z\n")),
        calendar_text(vevent("t", "DTSTART:20260105T140000Z\n"
                             "DTEND:20260105T150000Z\nSTATUS:TENTATIVE\n")),
        calendar_text(vevent("x", "DTSTART:20260105T160000Z\n"
                             "DTEND:20260105T170000Z\nTRANSP:TRANSPARENT\n")),
        calendar_text(vevent("z", "DTSTART:20260105T180000Z\n"
                             "DTEND:20260105T190000Z\nSTATUS:CANCELLED\n")),
        # A task is never busy time.
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VTODO\r\n"
        "UID:todo\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260105T200000Z\r\n"
        "DUE:20260105T210000Z\r\nEND:VTODO\r\nEND:VCALENDAR\r\n",
    ]
    periods = answer(gateway, objects, "20260105T000000Z",
                     "20260106T000000Z")
    assert_same_periods(periods, {
        "BUSY": [("20260105T100000Z", "20260105T123000Z")],
        "BUSY-TENTATIVE": [("20260105T140000Z", "20260105T150000Z")]})


def test_periods_clipped_to_window(gateway):
    periods = answer(gateway, [calendar_text(vevent(
        "long", "DTSTART:20260101T000000Z\nDTEND:20260301T000000Z\n"))],
        "20260105T000000Z", "20260106T000000Z")
    assert_same_periods(periods, {"BUSY": [("20260105T000000Z",
                                            "20260106T000000Z")]})


def test_stored_vfreebusy_counts(gateway):
    stored = calendar_text(
        "BEGIN:VFREEBUSY\nUID:fb\nDTSTAMP:20260101T000000Z\n"
        "DTSTART:20260105T000000Z\nDTEND:20260107T000000Z\n"
        "FREEBUSY;FBTYPE=BUSY-UNAVAILABLE:20260105T080000Z/PT2H\n"
        "FREEBUSY;FBTYPE=FREE:20260105T120000Z/20260105T130000Z\n"
        "FREEBUSY:20260106T080000Z/20260106T090000Z,"
        "20260106T100000Z/20260106T110000Z\n"
        "END:VFREEBUSY\n")
    periods = answer(gateway, [stored], "20260105T000000Z",
                     "20260107T000000Z")
    assert_same_periods(periods, {
        "BUSY-UNAVAILABLE": [("20260105T080000Z", "20260105T100000Z")],
        "BUSY": [("20260106T080000Z", "20260106T090000Z"),
                 ("20260106T100000Z", "20260106T110000Z")]})


def test_stored_vavailability_counts(gateway):
    """RFC 7953 in a calendar: outside working hours is BUSY-UNAVAILABLE,
    events inside the hours are BUSY as usual."""
    availability = calendar_text(
        "BEGIN:VAVAILABILITY\nUID:av\nDTSTAMP:20260101T000000Z\n"
        "DTSTART:20260105T000000Z\nDTEND:20260107T000000Z\n"
        "BEGIN:AVAILABLE\nUID:av-1\nDTSTAMP:20260101T000000Z\n"
        "DTSTART:20260105T090000Z\nDTEND:20260105T170000Z\n"
        "RRULE:FREQ=DAILY\nEND:AVAILABLE\nEND:VAVAILABILITY\n")
    meeting = calendar_text(vevent("m", "DTSTART:20260105T100000Z\n"
                                   "DTEND:20260105T110000Z\n"))
    periods = answer(gateway, [availability, meeting], "20260105T000000Z",
                     "20260107T000000Z")
    assert_same_periods(periods, {
        "BUSY": [("20260105T100000Z", "20260105T110000Z")],
        "BUSY-UNAVAILABLE": [("20260105T000000Z", "20260105T090000Z"),
                             ("20260105T170000Z", "20260106T090000Z"),
                             ("20260106T170000Z", "20260107T000000Z")]})


@pytest.mark.parametrize("bad", [
    "BEGIN:VCALENDAR\r\nthis is not icalendar\r\n",
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:x\r\n"
    "DTSTART:garbage\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
])
def test_malformed_icalendar_put_is_refused_and_changes_nothing(gateway, bad):
    path = gateway.mkcalendar("alice", "cal")
    response = gateway.request("PUT", path + "bad.ics", bad, user="alice",
                               headers={"Content-Type": "text/calendar"})
    assert response.status_code == 400, response.text
    response = gateway.report(path, REPORT % ("20260101T000000Z",
                                              "20260201T000000Z"), "alice")
    assert response.status_code == 200
    assert periods_of(response.content) == {}


def test_object_moved_into_the_window_shows(gateway):
    """Objects far from a window are skipped by their stored time range;
    a changed object is judged by its new range."""
    path = gateway.mkcalendar("alice", "cal")
    far = calendar_text(vevent("m", "DTSTART:20270105T100000Z\n"
                               "DTEND:20270105T110000Z\n"))
    gateway.put(path + "m.ics", far, "alice")
    window = REPORT % ("20260105T000000Z", "20260106T000000Z")
    response = gateway.report(path, window, "alice")
    assert periods_of(response.content) == {}
    gateway.put(path + "m.ics", far.replace("2027", "2026"), "alice")
    response = gateway.report(path, window, "alice")
    assert_same_periods(periods_of(response.content), {"BUSY": [
        ("20260105T100000Z", "20260105T110000Z")]})
