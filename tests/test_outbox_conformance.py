"""RFC 6638 outbox POST of a VFREEBUSY request: conformance cases 07-13, 15.

The answers are parsed namespace-aware (prefixes are free) and the
periods compared by the cases' rule; the literal strings of CalDAVTester
and sabre/dav encode one server's serialisation and are not compared.
"""

from xml.sax.saxutils import escape

import pytest
from lxml import etree

from conftest import conformance_case
from fbcheck import (C, D, assert_same_periods, periods_of,
                     schedule_response, vfreebusy_of)
from icaldata import freebusy_request


def load(gateway, case, user, calendar, prefix, properties=""):
    files = sorted(case.glob("input-%s*.ics" % prefix))
    assert files
    return gateway.load(user, calendar, files, properties)


def assert_reply(data, request_file, attendee):
    """A METHOD:REPLY VFREEBUSY echoing UID, ORGANIZER, window, ATTENDEE."""
    import icalendar
    assert "METHOD:REPLY" in data
    request = vfreebusy_of(request_file.read_bytes())
    reply = vfreebusy_of(data)
    for name in ("DTSTART", "DTEND"):
        assert reply[name].to_ical() == request[name].to_ical()
    if "UID" in request:
        assert str(reply["UID"]) == str(request["UID"])
    assert str(reply["ORGANIZER"]).lower() == \
        str(request["ORGANIZER"]).lower()
    assert isinstance(reply["ATTENDEE"], icalendar.vCalAddress)
    assert str(reply["ATTENDEE"]).lower() == attendee.lower()


def test_07_rfc6638_example(gateway_factory):
    case = conformance_case("07-rfc6638-B.5-outbox-post")
    gateway = gateway_factory(
        users={"cyrus": "c", "wilfredo": "w", "bernard": "b"},
        domains="example.com example.net")
    load(gateway, case, "wilfredo", "cal", "wilfredo")
    load(gateway, case, "bernard", "cal", "bernard")
    request = case / "request.ics"
    answers = schedule_response(gateway.post(
        "/cyrus/.schedule-outbox/", request.read_bytes(), "cyrus"))
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:wilfredo@example.com", "2.0"),
        ("mailto:bernard@example.net", "2.0"),
        ("mailto:mike@example.org", "3.7")]
    assert_same_periods(periods_of(answers[0][2]), {"BUSY": [
        ("20090602T110000Z", "20090602T120000Z"),
        ("20090603T170000Z", "20090603T180000Z")]})
    assert_same_periods(periods_of(answers[1][2]), {"BUSY": [
        ("20090602T150000Z", "20090602T160000Z"),
        ("20090603T090000Z", "20090603T100000Z"),
        ("20090603T180000Z", "20090603T190000Z")]})
    assert_reply(answers[0][2], request, "mailto:wilfredo@example.com")
    assert_reply(answers[1][2], request, "mailto:bernard@example.net")
    assert answers[2][2] is None


def caldavtester_gateway(gateway_factory):
    return gateway_factory(users={"user01": "1", "user02": "2",
                                  "user03": "3"})


def caldavtester_post(gateway_factory, case):
    """CalDAVTester's schedulepost.xml set-up, then its POST as user01."""
    gateway = caldavtester_gateway(gateway_factory)
    load(gateway, case, "user02", "calendar", "user02")
    load(gateway, case, "user03", "calendar", "user03")
    return schedule_response(gateway.post(
        "/user01/.schedule-outbox/", (case / "request.ics").read_bytes(),
        "user01"))


def test_08_two_attendees(gateway_factory):
    case = conformance_case("08-caldavtester-schedulepost-fb1")
    answers = caldavtester_post(gateway_factory, case)
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:user02@example.com", "2.0"),
        ("mailto:user03@example.com", "2.0")]
    assert_same_periods(periods_of(answers[0][2]), {"BUSY": [
        ("20060101T170000Z", "20060101T180000Z"),
        ("20060101T190000Z", "20060101T200000Z"),
        ("20060101T220000Z", "20060101T230000Z")]})
    assert_same_periods(periods_of(answers[1][2]), {"BUSY": [
        ("20060101T190000Z", "20060101T210000Z"),
        ("20060101T220000Z", "20060101T230000Z")]})
    assert_reply(answers[0][2], case / "request.ics",
                 "mailto:user02@example.com")


def test_09_one_bad_recipient_does_not_fail_the_post(gateway_factory):
    case = conformance_case("09-caldavtester-schedulepost-fb2")
    answers = caldavtester_post(gateway_factory, case)
    assert [(a[0], a[1]) for a in answers] == [
        ("urn:uuid:1234-56789", "3.7"),
        ("mailto:user03@example.com", "2.0")]
    assert answers[0][2] is None
    assert_same_periods(periods_of(answers[1][2]), {"BUSY": [
        ("20060101T190000Z", "20060101T210000Z"),
        ("20060101T220000Z", "20060101T230000Z")]})


def test_10_mixed_all_day_and_timed_twice(gateway_factory):
    """Coalesced into one day; the repeated request (CalDAVTester's "again
    from cache") gives the same answer."""
    case = conformance_case("10-caldavtester-freebusy-mixed-allday")
    gateway = caldavtester_gateway(gateway_factory)
    gateway.load("user01", "calendar", sorted(case.glob("input-*.ics")))
    for _ in range(2):
        answers = schedule_response(gateway.post(
            "/user01/.schedule-outbox/", (case / "request.ics").read_bytes(),
            "user01"))
        assert [(a[0], a[1]) for a in answers] == [
            ("mailto:user01@example.com", "2.0")]
        assert_same_periods(periods_of(answers[0][2]), {"BUSY": [
            ("20060110T000000Z", "20060111T000000Z")]})


def sabre_gateway(gateway_factory, case):
    gateway = gateway_factory(users={"user1.sabredav": "1",
                                     "user2.sabredav": "2"},
                              domains="sabredav.org")
    berlin = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
              "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nEND:VTIMEZONE\r\n"
              "END:VCALENDAR\r\n")
    gateway.load("user2.sabredav", "calendar1",
                 sorted(case.glob("input-user2-calendar1-*.ics")),
                 "<C:calendar-timezone>%s</C:calendar-timezone>"
                 % escape(berlin))
    gateway.load("user2.sabredav", "calendar2",
                 sorted(case.glob("input-user2-calendar2-*.ics")),
                 "<C:schedule-calendar-transp><C:transparent/>"
                 "</C:schedule-calendar-transp>")
    return gateway


def test_11_transparent_calendar_and_unknown_user(gateway_factory):
    """sabre's request has no UID or DTSTAMP; like sabre we accept it
    (RFC 5546 asks for them, but refusing costs the client its answer)."""
    case = conformance_case("11-sabre-outbox-transp-unknown")
    gateway = sabre_gateway(gateway_factory, case)
    answers = schedule_response(gateway.post(
        "/user1.sabredav/.schedule-outbox/",
        (case / "request.ics").read_bytes(), "user1.sabredav"))
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:user2.sabredav@sabredav.org", "2.0"),
        ("mailto:user3.sabredav@sabredav.org", "3.7")]
    assert_same_periods(periods_of(answers[0][2]), {"BUSY": [
        ("20110101T120000Z", "20110101T130000Z")]})


def test_12_calendar_availability_on_inbox(gateway_factory):
    case = conformance_case("12-sabre-outbox-vavailability")
    gateway = sabre_gateway(gateway_factory, case)
    availability = (case / "calendar-availability.ics").read_text()
    response = gateway.proppatch(
        "/user2.sabredav/.schedule-inbox/",
        "<C:calendar-availability>%s</C:calendar-availability>"
        % escape(availability), "user2.sabredav")
    assert response.status_code == 207, response.text
    answers = schedule_response(gateway.post(
        "/user1.sabredav/.schedule-outbox/",
        (case / "request.ics").read_bytes(), "user1.sabredav"))
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20110101T120000Z", "20110101T130000Z")],
        "BUSY-UNAVAILABLE": [("20110101T080000Z", "20110101T090000Z"),
                             ("20110101T170000Z", "20110101T180000Z")]})
    # Only the owner may read or change the inbox property.
    response = gateway.request(
        "PROPFIND", "/user2.sabredav/.schedule-inbox/",
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:'
        'params:xml:ns:caldav"><D:prop><C:calendar-availability/></D:prop>'
        '</D:propfind>', user="user2.sabredav", headers={"Depth": "0"})
    assert response.status_code == 207
    assert "BEGIN:VAVAILABILITY" in response.text
    assert gateway.request(
        "PROPFIND", "/user2.sabredav/.schedule-inbox/",
        user="user1.sabredav",
        headers={"Depth": "0"}).status_code in (403, 404)


def test_13_caldavtester_availability_in_apple_namespace(gateway_factory):
    case = conformance_case("13-caldavtester-availability-post")
    gateway = gateway_factory(users={"user01": "1"})
    gateway.load("user01", "calendar", sorted(case.glob("input-*.ics")))
    response = gateway.request(
        "PROPPATCH", "/user01/.schedule-inbox/",
        (case / "proppatch-inbox.xml").read_bytes(), user="user01")
    assert response.status_code == 207, response.text
    answers = schedule_response(gateway.post(
        "/user01/.schedule-outbox/", (case / "request.ics").read_bytes(),
        "user01"))
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20060104T170000Z", "20060104T180000Z")],
        "BUSY-UNAVAILABLE": [("20060104T000000Z", "20060104T140000Z"),
                             ("20060104T220000Z", "20060105T000000Z")]})


ERRORS = conformance_case("15-outbox-post-errors")


@pytest.mark.parametrize("request_file,status,precondition", [
    # sabre answers 400 (and 501 for the VEVENT); RFC 4791 1.3 makes every
    # failed precondition a 403 with its element, as CalDAVTester checks,
    # and RFC 6638 5 takes only VFREEBUSY requests (see expected.txt).
    ("request-no-method.ics", 403, "valid-scheduling-message"),
    ("request-vevent.ics", 403, "valid-scheduling-message"),
    ("request-wrong-organizer.ics", 403, "valid-organizer"),
    ("request-no-attendees.ics", 403, "valid-scheduling-message"),
    ("request-no-dtstart.ics", 403, "valid-scheduling-message"),
])
def test_15_errors(gateway_factory, request_file, status, precondition):
    gateway = gateway_factory(users={"user1.sabredav": "1"},
                              domains="sabredav.org")
    response = gateway.post("/user1.sabredav/.schedule-outbox/",
                            (ERRORS / request_file).read_bytes(),
                            "user1.sabredav")
    assert response.status_code == status, response.text
    assert_precondition(response, precondition)


def assert_precondition(response, precondition):
    """A DAV:error naming the precondition, and a reason for people."""
    root = etree.fromstring(response.content)
    assert root.tag == D + "error"
    assert root.find(C + precondition) is not None, response.text
    assert root.findtext("{urn:x-freebusy-gateway}message")


def request_text(organizer="mailto:user01@example.com",
                 attendees=("mailto:user02@example.com",),
                 start="20060101T000000Z", end="20060102T000000Z"):
    return freebusy_request(attendees, start, end, organizer)


def test_15_wrong_content_type(gateway_factory):
    gateway = gateway_factory(users={"user01": "1", "user02": "2"})
    response = gateway.post("/user01/.schedule-outbox/", request_text(),
                            "user01", content_type="text/plain")
    assert response.status_code == 403
    assert_precondition(response, "supported-calendar-data")


@pytest.mark.parametrize("body,precondition", [
    ("BEGIN:VCALENDAR\r\nthis is not icalendar", "valid-calendar-data"),
    ("\x00\x01\x02", "valid-calendar-data"),
    (request_text(start="20060102T000000Z", end="20060101T000000Z"),
     "valid-scheduling-message"),
    (request_text(start="20060101T000000Z", end="20460101T000000Z"),
     "valid-scheduling-message"),
])
def test_15_malformed_requests_are_403(gateway_factory, body, precondition):
    gateway = gateway_factory(users={"user01": "1", "user02": "2"})
    response = gateway.post("/user01/.schedule-outbox/", body, "user01")
    assert response.status_code == 403, response.text
    assert_precondition(response, precondition)


def test_15_someone_elses_outbox_and_inbox(gateway_factory):
    gateway = gateway_factory(users={"user01": "1", "user02": "2"})
    response = gateway.post("/user02/.schedule-outbox/", request_text(
        organizer="mailto:user01@example.com"), "user01")
    assert response.status_code == 403
    response = gateway.post("/user01/.schedule-inbox/", request_text(),
                            "user01")
    assert response.status_code == 405
    assert gateway.post("/user01/.schedule-outbox/", request_text(),
                        None).status_code == 401


def test_15_post_to_a_calendar_is_not_scheduling(gateway_factory):
    gateway = gateway_factory(users={"user01": "1", "user02": "2"})
    path = gateway.mkcalendar("user01", "calendar")
    response = gateway.post(path, request_text(), "user01")
    assert response.status_code in (403, 405), response.text


@pytest.mark.parametrize("box", [".schedule-inbox", ".schedule-outbox"])
def test_15_report_on_boxes_is_403_supported_report(gateway_factory, box):
    gateway = gateway_factory(users={"user01": "1"})
    response = gateway.report(
        "/user01/%s/" % box,
        '<?xml version="1.0"?><C:free-busy-query xmlns:C="urn:ietf:params:'
        'xml:ns:caldav"><C:time-range start="20060101T000000Z" '
        'end="20060102T000000Z"/></C:free-busy-query>', "user01")
    assert response.status_code == 403
    assert etree.fromstring(response.content).find(
        D + "supported-report") is not None


def test_attendee_limit_and_duplicates(gateway_factory):
    """A repeated attendee is answered once; past [gateway] max_attendees
    the rest get 5.1, still in request order."""
    gateway = gateway_factory(users={"user01": "1", "user02": "2"},
                              extra="max_attendees = 2\n")
    login(gateway, "user02")
    attendees = ("mailto:user02@example.com", "mailto:user01@Example.com",
                 "mailto:nobody@example.com", "mailto:user02@example.com")
    answers = schedule_response(gateway.post(
        "/user01/.schedule-outbox/", request_text(attendees=attendees),
        "user01"))
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:user02@example.com", "2.0"),
        ("mailto:user01@Example.com", "2.0"),
        ("mailto:nobody@example.com", "5.1")]


def login(gateway, user):
    """Radicale creates a user's principal at the first login."""
    assert gateway.request("PROPFIND", "/%s/" % user, user=user,
                           headers={"Depth": "0"}).status_code == 207


def test_unknown_local_user_is_3_7(gateway_factory):
    """An address of a local domain without a Radicale principal (never
    logged in, or no such account) is 3.7: Radicale's auth backends
    cannot list their users, and no data is never reported as free."""
    gateway = gateway_factory(users={"user01": "1", "user02": "2"})
    answers = schedule_response(gateway.post(
        "/user01/.schedule-outbox/",
        request_text(attendees=("mailto:ghost@example.com",
                                "mailto:user02@example.com",
                                "mailto:user01@example.com")), "user01"))
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:ghost@example.com", "3.7"),
        ("mailto:user02@example.com", "3.7"),
        ("mailto:user01@example.com", "2.0")]


@pytest.mark.parametrize("lc_username,status", [("False", "3.7"),
                                                ("True", "2.0")])
def test_local_part_case_follows_radicale_auth(gateway_factory, lc_username,
                                               status):
    """Domains never matter by case; the local part is the user name as
    Radicale's [auth] lc_username makes it at login."""
    gateway = gateway_factory(
        users={"user01": "1", "user02": "2"},
        auth="lc_username = %s" % lc_username)
    login(gateway, "user02")
    answers = schedule_response(gateway.post(
        "/user01/.schedule-outbox/",
        request_text(attendees=("mailto:USER02@EXAMPLE.COM",)), "user01"))
    assert answers[0][1] == status
