"""RFC 6638 discovery and free/busy from a real client: the caldav library.

The library finds the principal, the outbox and the user's addresses by
itself (DAV:current-user-principal, CALDAV:schedule-outbox-URL,
CALDAV:calendar-user-address-set) and POSTs the VFREEBUSY request, so
these tests check the whole discovery chain a client relies on.
"""

import datetime

import caldav
from lxml import etree

from fbcheck import C, D, assert_same_periods, periods_of
from icaldata import PRIVATE_WORDS, event

UTC = datetime.timezone.utc


def principal_for(gateway, user):
    client = caldav.DAVClient(gateway.url + "/", username=user,
                              password=gateway.users[user])
    return client.principal()


def test_principal_properties(gateway_factory):
    gateway = gateway_factory(domains="example.com example.org")
    response = gateway.request(
        "PROPFIND", "/alice/",
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:'
        'params:xml:ns:caldav"><D:prop><C:schedule-outbox-URL/>'
        '<C:schedule-inbox-URL/><C:calendar-user-address-set/>'
        '<C:calendar-user-type/></D:prop></D:propfind>',
        user="alice", headers={"Depth": "0"})
    assert response.status_code == 207, response.text
    root = etree.fromstring(response.content)
    ok = [p for p in root.iter(D + "propstat")
          if "200" in p.findtext(D + "status")][0]
    assert ok.find(".//%sschedule-outbox-URL/%shref" % (C, D)).text == \
        "/alice/.schedule-outbox/"
    assert ok.find(".//%sschedule-inbox-URL/%shref" % (C, D)).text == \
        "/alice/.schedule-inbox/"
    addresses = [h.text for h in ok.iterfind(
        ".//%scalendar-user-address-set/%shref" % (C, D))]
    assert "mailto:alice@example.com" in addresses
    assert "mailto:alice@example.org" in addresses
    options = gateway.request("OPTIONS", "/alice/", user="alice")
    assert "calendar-auto-schedule" in options.headers["DAV"]


def test_principal_freebusy_request(gateway):
    """Local attendees, one unknown one and one of a domain nobody serves,
    asked through Principal.freebusy_request as an app would."""
    gateway.put(gateway.mkcalendar("bob", "work") + "1.ics",
                event("b1", "20260105T090000Z", "20260105T100000Z"), "bob")
    alice_calendar = gateway.mkcalendar("alice", "work")
    gateway.put(alice_calendar + "1.ics",
                event("a1", "20260105T140000Z", "20260105T150000Z",
                      "STATUS:TENTATIVE\r\n"), "alice")
    principal = principal_for(gateway, "alice")
    answer = principal.freebusy_request(
        datetime.datetime(2026, 1, 5, tzinfo=UTC),
        datetime.datetime(2026, 1, 6, tzinfo=UTC),
        ["mailto:bob@example.com", "mailto:alice@example.com",
         "mailto:nobody@example.com", "mailto:x@unserved.example"])
    assert_same_periods(periods_of(answer["mailto:bob@example.com"].data),
                        {"BUSY": [("20260105T090000Z", "20260105T100000Z")]})
    assert_same_periods(periods_of(answer["mailto:alice@example.com"].data),
                        {"BUSY-TENTATIVE": [("20260105T140000Z",
                                             "20260105T150000Z")]})
    assert answer["errors"]["mailto:nobody@example.com"].startswith("3.7")
    assert answer["errors"]["mailto:x@unserved.example"].startswith("3.7")
    for data in (answer["mailto:bob@example.com"].data,
                 answer["mailto:alice@example.com"].data):
        for word in PRIVATE_WORDS:
            assert word not in data


def test_calendar_availability_through_inbox(gateway):
    """Working hours set on the inbox count for that user's free/busy."""
    principal = principal_for(gateway, "bob")
    inbox = gateway.url + "/bob/.schedule-inbox/"
    assert principal.schedule_inbox().url == inbox
    availability = (
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//t//EN\n"
        "BEGIN:VAVAILABILITY\nUID:av\nDTSTAMP:20260101T000000Z\n"
        "BEGIN:AVAILABLE\nUID:av1\nDTSTAMP:20260101T000000Z\n"
        "DTSTART:20260105T080000Z\nDTEND:20260105T160000Z\n"
        "RRULE:FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR\nEND:AVAILABLE\n"
        "END:VAVAILABILITY\nEND:VCALENDAR\n")
    response = gateway.proppatch(
        "/bob/.schedule-inbox/",
        "<C:calendar-availability>%s</C:calendar-availability>"
        % availability, "bob")
    assert response.status_code == 207, response.text
    answer = principal_for(gateway, "alice").freebusy_request(
        datetime.datetime(2026, 1, 9, tzinfo=UTC),      # Friday
        datetime.datetime(2026, 1, 11, tzinfo=UTC),     # to Sunday
        ["mailto:bob@example.com"])
    assert_same_periods(periods_of(answer["mailto:bob@example.com"].data), {
        "BUSY-UNAVAILABLE": [("20260109T000000Z", "20260109T080000Z"),
                             ("20260109T160000Z", "20260111T000000Z")]})
    # Removing the property removes the working hours.
    response = gateway.proppatch("/bob/.schedule-inbox/",
                                 "<C:calendar-availability/>", "bob",
                                 action="remove")
    assert response.status_code == 207, response.text
    answer = principal_for(gateway, "alice").freebusy_request(
        datetime.datetime(2026, 1, 9, tzinfo=UTC),
        datetime.datetime(2026, 1, 11, tzinfo=UTC),
        ["mailto:bob@example.com"])
    assert periods_of(answer["mailto:bob@example.com"].data) == {}


def test_bad_calendar_availability_is_refused(gateway):
    before = gateway.request(
        "PROPFIND", "/bob/.schedule-inbox/",
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:'
        'params:xml:ns:caldav"><D:prop><C:calendar-availability/></D:prop>'
        '</D:propfind>', user="bob", headers={"Depth": "0"}).text
    for value in ("not a calendar", "BEGIN:VCALENDAR\nVERSION:2.0\n"
                  "BEGIN:VEVENT\nUID:x\nEND:VEVENT\nEND:VCALENDAR\n"):
        response = gateway.proppatch(
            "/bob/.schedule-inbox/",
            "<C:calendar-availability>%s</C:calendar-availability>" % value,
            "bob")
        # RFC 4918 9.2 / RFC 7953: 207, the property 403 with
        # CALDAV:valid-calendar-data, nothing stored.
        assert response.status_code == 207, response.text
        assert "200 OK" not in response.text
        root = etree.fromstring(response.content)
        propstat = root.find(".//%spropstat" % D)
        assert "403" in propstat.findtext(D + "status")
        assert propstat.find("%serror/%svalid-calendar-data" % (D, C)) \
            is not None
    after = gateway.request(
        "PROPFIND", "/bob/.schedule-inbox/",
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:'
        'params:xml:ns:caldav"><D:prop><C:calendar-availability/></D:prop>'
        '</D:propfind>', user="bob", headers={"Depth": "0"}).text
    assert before == after
    # Someone else may not set it at all.
    response = gateway.proppatch(
        "/bob/.schedule-inbox/",
        '<C:calendar-availability>x</C:calendar-availability>',
        "alice")
    assert response.status_code in (403, 404)


def test_no_authority_when_calendars_are_private(gateway_factory):
    """With ``freebusy_access = rights``, bob's calendars exist but alice
    may not see even their free/busy: 3.8, not an empty (free) answer."""
    rights = ("[root]\nuser: .+\ncollection:\npermissions: R\n"
              "[owner]\nuser: .+\ncollection: {user}(/.*)?\n"
              "permissions: RWrw\n")
    gateway = gateway_factory(rights=rights,
                              extra="freebusy_access = rights\n")
    gateway.put(gateway.mkcalendar("bob", "work") + "1.ics",
                event("b1", "20260105T090000Z", "20260105T100000Z"), "bob")
    answer = principal_for(gateway, "alice").freebusy_request(
        datetime.datetime(2026, 1, 5, tzinfo=UTC),
        datetime.datetime(2026, 1, 6, tzinfo=UTC),
        ["mailto:bob@example.com"])
    assert answer["errors"]["mailto:bob@example.com"].startswith("3.8")


def test_declined_meetings_do_not_make_the_attendee_busy(gateway):
    """bob declined one instance of a weekly meeting and all of another
    meeting: in his free/busy (outbox) they are free time; the organizer
    alice stays busy for all of them."""
    meeting = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
        "BEGIN:VEVENT\r\nUID:weekly\r\nDTSTAMP:20260101T000000Z\r\n"
        "DTSTART:20260105T100000Z\r\nDTEND:20260105T110000Z\r\n"
        "RRULE:FREQ=DAILY;COUNT=3\r\n"
        "ORGANIZER:mailto:alice@example.com\r\n"
        "ATTENDEE;PARTSTAT=ACCEPTED:mailto:bob@example.com\r\n"
        "END:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:weekly\r\nDTSTAMP:20260101T000000Z\r\n"
        "RECURRENCE-ID:20260106T100000Z\r\n"
        "DTSTART:20260106T100000Z\r\nDTEND:20260106T110000Z\r\n"
        "ORGANIZER:mailto:alice@example.com\r\n"
        "ATTENDEE;PARTSTAT=DECLINED:mailto:Bob@Example.com\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n")
    other = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
        "BEGIN:VEVENT\r\nUID:other\r\nDTSTAMP:20260101T000000Z\r\n"
        "DTSTART:20260105T140000Z\r\nDTEND:20260105T150000Z\r\n"
        "ORGANIZER:mailto:alice@example.com\r\n"
        "ATTENDEE;PARTSTAT=DECLINED:mailto:bob@example.com\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n")
    bob = gateway.mkcalendar("bob", "work")
    gateway.put(bob + "weekly.ics", meeting, "bob")
    gateway.put(bob + "other.ics", other, "bob")
    alice = gateway.mkcalendar("alice", "work")
    gateway.put(alice + "weekly.ics", meeting.replace("DECLINED", "ACCEPTED"),
                "alice")
    answer = principal_for(gateway, "alice").freebusy_request(
        datetime.datetime(2026, 1, 5, tzinfo=UTC),
        datetime.datetime(2026, 1, 8, tzinfo=UTC),
        ["mailto:bob@example.com", "mailto:alice@example.com"])
    assert_same_periods(periods_of(answer["mailto:bob@example.com"].data), {
        "BUSY": [("20260105T100000Z", "20260105T110000Z"),
                 ("20260107T100000Z", "20260107T110000Z")]})
    assert_same_periods(periods_of(answer["mailto:alice@example.com"].data), {
        "BUSY": [("20260105T100000Z", "20260105T110000Z"),
                 ("20260106T100000Z", "20260106T110000Z"),
                 ("20260107T100000Z", "20260107T110000Z")]})
