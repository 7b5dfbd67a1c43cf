"""RFC 4791 section 7.10 free-busy-query REPORT: conformance cases 01-06, 16.

The cases' data is PUT into a real gateway over HTTP and the REPORT is
sent as a client would; answers are compared by the cases' rule
(tests/fbcheck.py).  Case 05 and the Depth variants of case 04 come from
sabre/dav and CalDAVTester, see tests/data/conformance/README.md.
"""

from xml.sax.saxutils import escape

import caldav
import pytest

from conftest import conformance_case
from fbcheck import (assert_same_periods, assert_utc_never_free,
                     expected_periods, periods_of, vfreebusy_of)


def load_case(gateway, name, user="alice", calendar="cal", properties=""):
    case = conformance_case(name)
    path = gateway.load(user, calendar, sorted(case.glob("input-*.ics")),
                        properties)
    return case, path


def test_01_rfc4791_example(gateway):
    case, path = load_case(gateway, "01-rfc4791-7.10.1-report")
    response = gateway.report(path, (case / "request.xml").read_bytes(),
                              "alice")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/calendar")
    # The first block of normalised lines is the prose window's answer.
    expected = {"BUSY-TENTATIVE": [("20060104T150000Z", "20060104T160000Z")],
                "BUSY": [("20060104T190000Z", "20060104T200000Z")]}
    assert_same_periods(periods_of(response.content), expected)
    component = vfreebusy_of(response.content)
    assert component["DTSTART"].to_ical() == b"20060104T140000Z"
    assert component["DTEND"].to_ical() == b"20060104T220000Z"
    assert_utc_never_free(response.content)
    assert "METHOD:REPLY" not in response.text


def test_01_rfc4791_as_published_window(gateway):
    case, path = load_case(gateway, "01-rfc4791-7.10.1-report")
    response = gateway.report(
        path, (case / "request-as-published.xml").read_bytes(), "alice")
    assert response.status_code == 200, response.text
    expected = {
        "BUSY-TENTATIVE": [("20060104T150000Z", "20060104T160000Z")],
        "BUSY": [("20060104T190000Z", "20060104T200000Z"),
                 ("20060105T170000Z", "20060105T180000Z")],
        "BUSY-UNAVAILABLE": [("20060105T100000Z", "20060105T120000Z")]}
    assert_same_periods(periods_of(response.content), expected)


def test_02_empty_result(gateway):
    case, path = load_case(gateway, "02-rfc4791-empty-result")
    response = gateway.report(path, (case / "request.xml").read_bytes(),
                              "alice")
    assert response.status_code == 200, response.text
    component = vfreebusy_of(response.content)
    assert "FREEBUSY" not in component
    assert component["DTSTART"].to_ical() == b"20060201T000000Z"
    assert component["DTEND"].to_ical() == b"20060202T000000Z"


@pytest.mark.parametrize("name", ["03-caldavtester-reports-fb1",
                                  "04-caldavtester-reports-fb2"])
def test_03_04_caldavtester_reports(gateway, name):
    case, path = load_case(gateway, name)
    # CalDAVTester sends no Depth header.
    response = gateway.report(path, (case / "request.xml").read_bytes(),
                              "alice", depth=None)
    assert response.status_code == 200, response.text
    assert "METHOD:REPLY" not in response.text
    assert_utc_never_free(response.content)
    assert_same_periods(periods_of(response.content),
                        expected_periods(case / "expected.txt"))


@pytest.mark.parametrize("depth", [None, "0", "1", "infinity"])
def test_04_depth_on_calendar_is_the_same(gateway, depth):
    case, path = load_case(gateway, "04-caldavtester-reports-fb2")
    response = gateway.report(path, (case / "request.xml").read_bytes(),
                              "alice", depth=depth)
    assert response.status_code == 200, response.text
    assert_same_periods(periods_of(response.content),
                        expected_periods(case / "expected.txt"))


@pytest.mark.parametrize("depth,aggregated", [(None, False), ("0", False),
                                              ("1", True)])
def test_04_depth_on_calendar_home(gateway, depth, aggregated):
    case, _ = load_case(gateway, "04-caldavtester-reports-fb2")
    response = gateway.report("/alice/", (case / "request.xml").read_bytes(),
                              "alice", depth=depth)
    assert response.status_code == 200, response.text
    expected = expected_periods(case / "expected.txt") if aggregated else {}
    assert_same_periods(periods_of(response.content), expected)


def test_04_home_aggregates_several_calendars(gateway):
    """Split over two calendars, the home answer is the same as one."""
    case = conformance_case("04-caldavtester-reports-fb2")
    files = sorted(case.glob("input-*.ics"))
    gateway.load("alice", "first", files[::2])
    gateway.load("alice", "second", files[1::2])
    response = gateway.report("/alice/", (case / "request.xml").read_bytes(),
                              "alice", depth="1")
    assert response.status_code == 200, response.text
    assert_same_periods(periods_of(response.content),
                        expected_periods(case / "expected.txt"))


def test_05_floating_time_uses_calendar_timezone(gateway):
    case = conformance_case("05-sabre-floating-calendar-timezone")
    timezone = "\r\n".join(
        line for line in (case / "calendar-timezone.txt").read_text()
        .splitlines() if not line.startswith("#")) + "\r\n"
    path = gateway.load(
        "alice", "cal", sorted(case.glob("input-*.ics")),
        "<C:calendar-timezone>%s</C:calendar-timezone>" % escape(timezone))
    response = gateway.report(path, (case / "request.xml").read_bytes(),
                              "alice")
    assert response.status_code == 200, response.text
    assert_same_periods(periods_of(response.content), {"BUSY": [
        ("20111005T120000Z", "20111005T130000Z"),
        ("20111006T100000Z", "20111006T110000Z")]})


def test_05_calendar_timezone_set_by_proppatch(gateway):
    """The zone can also arrive later, by PROPPATCH, with full rules."""
    case = conformance_case("05-sabre-floating-calendar-timezone")
    path = gateway.load("alice", "cal", sorted(case.glob("input-*.ics")))
    timezone = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
        "BEGIN:VTIMEZONE\r\nTZID:America/New_York\r\n"
        "BEGIN:DAYLIGHT\r\nTZOFFSETFROM:-0500\r\nTZOFFSETTO:-0400\r\n"
        "DTSTART:20070311T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU\r\n"
        "TZNAME:EDT\r\nEND:DAYLIGHT\r\n"
        "BEGIN:STANDARD\r\nTZOFFSETFROM:-0400\r\nTZOFFSETTO:-0500\r\n"
        "DTSTART:20071104T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU\r\n"
        "TZNAME:EST\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\nEND:VCALENDAR\r\n")
    response = gateway.proppatch(
        path,
        '<C:calendar-timezone>%s</C:calendar-timezone>' % escape(timezone),
        "alice")
    assert response.status_code == 207, response.text
    response = gateway.report(path, (case / "request.xml").read_bytes(),
                              "alice")
    assert response.status_code == 200, response.text
    # 12:00 floating in New York (EDT, UTC-4) is 16:00Z.
    assert_same_periods(periods_of(response.content), {"BUSY": [
        ("20111005T120000Z", "20111005T130000Z"),
        ("20111006T160000Z", "20111006T170000Z")]})


def test_06_missing_time_range_is_400(gateway):
    case = conformance_case("06-sabre-missing-time-range")
    path = gateway.mkcalendar("alice", "cal")
    response = gateway.report(path, (case / "request.xml").read_bytes(),
                              "alice")
    assert response.status_code == 400
    assert "time-range" in response.text


@pytest.mark.parametrize("request_file", ["request-date-only.xml",
                                          "request-floating.xml"])
def test_16_invalid_time_range_is_400(gateway, request_file):
    case = conformance_case("16-caldavtester-invalid-time-range")
    path = gateway.mkcalendar("alice", "cal")
    response = gateway.report(path, (case / request_file).read_bytes(),
                              "alice")
    assert response.status_code == 400, response.text


def test_16_report_on_calendar_object_is_403(gateway):
    case, path = load_case(gateway, "03-caldavtester-reports-fb1")
    response = gateway.report(path + "input-1.ics",
                              (case / "request.xml").read_bytes(), "alice")
    assert response.status_code == 403, response.text


def test_caldav_library_freebusy_request(gateway):
    """The caldav library's Calendar.freebusy_request, unchanged."""
    import datetime
    case, path = load_case(gateway, "04-caldavtester-reports-fb2")
    client = caldav.DAVClient(gateway.url + path, username="alice",
                              password=gateway.users["alice"])
    calendar = client.calendar(url=gateway.url + path)
    utc = datetime.timezone.utc
    answer = calendar.freebusy_request(
        datetime.datetime(2006, 1, 7, tzinfo=utc),
        datetime.datetime(2006, 1, 9, tzinfo=utc))
    assert_same_periods(periods_of(answer.data),
                        expected_periods(case / "expected.txt"))


def test_free_busy_rights_only(gateway):
    """bob has free/busy rights only on alice's calendar (config/rights):
    he gets the periods by REPORT, but not the events."""
    case, path = load_case(gateway, "04-caldavtester-reports-fb2")
    response = gateway.report(path, (case / "request.xml").read_bytes(),
                              "bob")
    assert response.status_code == 200, response.text
    assert_same_periods(periods_of(response.content),
                        expected_periods(case / "expected.txt"))
    assert "SUMMARY" not in response.text
    response = gateway.report("/alice/", (case / "request.xml").read_bytes(),
                              "bob", depth="1")
    assert response.status_code == 200, response.text
    assert_same_periods(periods_of(response.content),
                        expected_periods(case / "expected.txt"))
    assert gateway.request("GET", path + "input-1.ics",
                           user="bob").status_code in (403, 404)
    assert gateway.request(
        "REPORT", path, '<?xml version="1.0"?><C:calendar-query '
        'xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:D="DAV:">'
        '<D:prop><C:calendar-data/></D:prop><C:filter>'
        '<C:comp-filter name="VCALENDAR"/></C:filter></C:calendar-query>',
        user="bob", headers={"Depth": "1"}).status_code == 403


OWNER_ONLY_RIGHTS = ("[owner]\nuser: .+\ncollection: {user}(/.*)?\n"
                     "permissions: RWrw\n"
                     "[root]\nuser: .+\ncollection:\npermissions: R\n")


def test_no_rights_no_free_busy(gateway_factory):
    """With freebusy_access = rights, a REPORT without Radicale's free/busy
    permission is refused."""
    gateway = gateway_factory(rights=OWNER_ONLY_RIGHTS,
                              extra="freebusy_access = rights\n")
    case, path = load_case(gateway, "04-caldavtester-reports-fb2")
    response = gateway.report(path, (case / "request.xml").read_bytes(),
                              "bob")
    assert response.status_code in (403, 404)
    response = gateway.report(path, (case / "request.xml").read_bytes(),
                              None)
    assert response.status_code == 401


def test_authenticated_policy_sees_colleagues_without_rights(
        gateway_factory):
    """The default freebusy_access = authenticated: any authenticated user
    sees a colleague's busy time on a calendar and on the home, whatever
    Radicale's rights say; anonymous callers still do not."""
    gateway = gateway_factory(rights=OWNER_ONLY_RIGHTS)
    case, path = load_case(gateway, "04-caldavtester-reports-fb2")
    body = (case / "request.xml").read_bytes()
    owner = gateway.report(path, body, "alice")
    colleague = gateway.report(path, body, "bob")
    assert colleague.status_code == 200
    assert "FREEBUSY" in colleague.text
    assert _periods(colleague.text) == _periods(owner.text)
    home = gateway.report("/alice/", body, "bob", depth="1")
    assert home.status_code == 200
    assert _periods(home.text) == _periods(owner.text)
    assert gateway.report(path, body, None).status_code == 401


def _periods(text):
    return sorted(line for line in text.splitlines()
                  if line.startswith("FREEBUSY"))
