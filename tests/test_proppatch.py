"""Property values are checked before anything is stored.

RFC 4918 9.2: a PROPPATCH is all or nothing; a property that cannot be
set gets its own status (403 with CALDAV:valid-calendar-data for a
calendar-timezone that is not one VTIMEZONE, RFC 4791 5.2.2; 409 for a
schedule-calendar-transp that is neither opaque nor transparent), every
other property of the request 424 Failed Dependency, and nothing changes.
The inbox's calendar-availability (RFC 7953) is checked the same way.
MKCALENDAR answers 207 and creates nothing (RFC 4791 5.3.1.1); an
extended MKCOL answers 403 with a DAV:mkcol-response (RFC 5689 3).
"""

from xml.sax.saxutils import escape

import pytest
from lxml import etree

from fbcheck import C, D

BERLIN_NO_RULES = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
                   "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nEND:VTIMEZONE\r\n"
                   "END:VCALENDAR\r\n")
OWN_RULES = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
             "BEGIN:VTIMEZONE\r\nTZID:Plus Three\r\nBEGIN:STANDARD\r\n"
             "DTSTART:19700101T000000\r\nTZOFFSETFROM:+0300\r\n"
             "TZOFFSETTO:+0300\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n"
             "END:VCALENDAR\r\n")
AVAILABILITY = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
                "BEGIN:VAVAILABILITY\r\nUID:av\r\nDTSTAMP:20260101T000000Z\r\n"
                "BEGIN:AVAILABLE\r\nUID:av1\r\nDTSTAMP:20260101T000000Z\r\n"
                "DTSTART:20260105T080000Z\r\nDTEND:20260105T160000Z\r\n"
                "END:AVAILABLE\r\nEND:VAVAILABILITY\r\nEND:VCALENDAR\r\n")
BAD_TIMEZONES = {
    "garbage": "not a calendar",
    "empty": "",
    "no-vtimezone": "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n",
    "two-vtimezones": BERLIN_NO_RULES.replace(
        "END:VCALENDAR", "BEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\n"
        "END:VTIMEZONE\r\nEND:VCALENDAR"),
    "vtimezone-and-vevent": BERLIN_NO_RULES.replace(
        "END:VCALENDAR", "BEGIN:VEVENT\r\nUID:x\r\nEND:VEVENT\r\n"
        "END:VCALENDAR"),
    "unknown-tzid-without-rules": BERLIN_NO_RULES.replace(
        "Europe/Berlin", "Nowhere/Special"),
    "no-tzid": BERLIN_NO_RULES.replace("TZID:Europe/Berlin\r\n", ""),
    "a-vevent-only": "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\n"
                     "END:VEVENT\r\nEND:VCALENDAR\r\n",
}
BAD_TRANSP = {
    "text": "maybe",
    "both": "<C:opaque/><C:transparent/>",
    "other-element": "<C:sometimes/>",
    "empty": "",
    "child-and-text": "x<C:opaque/>",
}
PROPS = ("<D:displayname/><C:calendar-timezone/>"
         "<C:schedule-calendar-transp/>")


def propfind(gateway, path, user, props=PROPS):
    response = gateway.request(
        "PROPFIND", path,
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:'
        'params:xml:ns:caldav"><D:prop>%s</D:prop></D:propfind>' % props,
        user=user, headers={"Depth": "0"})
    return response


def stored(gateway, path, user, props=PROPS):
    """{local name: text or child names} of the 200 propstat."""
    response = propfind(gateway, path, user, props)
    assert response.status_code == 207, response.text
    found = {}
    for propstat in etree.fromstring(response.content).iter(D + "propstat"):
        if " 200 " not in propstat.findtext(D + "status"):
            continue
        for prop in propstat.find(D + "prop"):
            children = [etree.QName(c).localname for c in prop]
            found[etree.QName(prop).localname] = \
                ",".join(children) if children else (prop.text or "")
    return found


def statuses(response):
    """{local name: (status code, precondition or None)} of a 207/403."""
    root = etree.fromstring(response.content)
    result = {}
    for propstat in root.iter(D + "propstat"):
        code = int(propstat.findtext(D + "status").split()[1])
        error = propstat.find(D + "error")
        precondition = None if error is None or len(error) == 0 else \
            etree.QName(error[0]).localname
        if code not in (200, 424):
            assert propstat.findtext(D + "responsedescription"), \
                "no reason given"
        for prop in propstat.find(D + "prop"):
            name = etree.QName(prop)
            key = name.localname if name.namespace in (
                "DAV:", C[1:-1]) else "CS:" + name.localname
            result[key] = (code, precondition)
    return result


@pytest.fixture
def calendar(gateway):
    path = gateway.mkcalendar("alice", "work",
                              "<D:displayname>Old</D:displayname>")
    return path


def patch_three(gateway, path, timezone, transp="<C:transparent/>"):
    return gateway.proppatch(
        path, "<D:displayname>New</D:displayname>"
        "<C:calendar-timezone>%s</C:calendar-timezone>"
        "<C:schedule-calendar-transp>%s</C:schedule-calendar-transp>"
        % (escape(timezone), transp), "alice")


@pytest.mark.parametrize("name", sorted(BAD_TIMEZONES))
def test_bad_calendar_timezone_fails_the_whole_proppatch(gateway, calendar,
                                                         name):
    before = stored(gateway, calendar, "alice")
    response = patch_three(gateway, calendar, BAD_TIMEZONES[name])
    assert response.status_code == 207, response.text
    assert statuses(response) == {
        "calendar-timezone": (403, "valid-calendar-data"),
        "displayname": (424, None),
        "schedule-calendar-transp": (424, None)}
    assert stored(gateway, calendar, "alice") == before
    assert before["displayname"] == "Old"


@pytest.mark.parametrize("name", sorted(BAD_TRANSP))
def test_bad_schedule_calendar_transp_is_409_and_nothing_changes(
        gateway, calendar, name):
    before = stored(gateway, calendar, "alice")
    response = patch_three(gateway, calendar, BERLIN_NO_RULES,
                           BAD_TRANSP[name])
    assert response.status_code == 207, response.text
    assert statuses(response) == {
        "schedule-calendar-transp": (409, None),
        "displayname": (424, None),
        "calendar-timezone": (424, None)}
    assert stored(gateway, calendar, "alice") == before


@pytest.mark.parametrize("timezone", [BERLIN_NO_RULES, OWN_RULES])
def test_good_values_are_all_applied(gateway, calendar, timezone):
    """An IANA TZID needs no rules (sabre's test data has none); another
    TZID needs its STANDARD/DAYLIGHT rules."""
    response = patch_three(gateway, calendar, timezone)
    assert response.status_code == 207, response.text
    assert {code for code, _ in statuses(response).values()} == {200}
    after = stored(gateway, calendar, "alice")
    assert after["displayname"] == "New"
    assert after["schedule-calendar-transp"] == "transparent"
    assert "BEGIN:VTIMEZONE" in after["calendar-timezone"]
    # And removing is always fine.
    response = gateway.proppatch(calendar, "<C:calendar-timezone/>",
                                 "alice", action="remove")
    assert response.status_code == 207
    assert "calendar-timezone" not in stored(gateway, calendar, "alice")


def test_someone_elses_calendar_gets_radicales_answer(gateway, calendar):
    """The value check comes after the rights check: bob learns nothing
    new (403 as always), anonymous callers get 401, a missing calendar 404.
    """
    response = patch_three(gateway, calendar, "garbage")
    assert response.status_code == 207
    response = gateway.request(
        "PROPPATCH", calendar, '<?xml version="1.0"?><D:propertyupdate '
        'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set>'
        '<D:prop><C:calendar-timezone>garbage</C:calendar-timezone>'
        '</D:prop></D:set></D:propertyupdate>', user="bob")
    assert response.status_code == 403
    anonymous = gateway.request("PROPPATCH", calendar, "<x/>")
    assert anonymous.status_code == 401
    missing = gateway.proppatch("/alice/nothing/", "<C:calendar-timezone>"
                                "garbage</C:calendar-timezone>", "alice")
    assert missing.status_code == 404


# -- the inbox's calendar-availability --------------------------------------

INBOX = "/alice/.schedule-inbox/"
AVAILABILITY_PROP = "<C:calendar-availability/>"


@pytest.mark.parametrize("value,words", [
    ("not a calendar", "not iCalendar"),
    ("", "empty"),
    (BERLIN_NO_RULES, "no VAVAILABILITY"),
    (AVAILABILITY.replace("END:VCALENDAR", "BEGIN:VEVENT\r\nUID:e\r\n"
                          "END:VEVENT\r\nEND:VCALENDAR"), "not VEVENT"),
])
def test_bad_calendar_availability_changes_nothing(gateway, value, words):
    assert gateway.proppatch(INBOX, "<C:calendar-availability>%s"
                             "</C:calendar-availability>"
                             % escape(AVAILABILITY), "alice"
                             ).status_code == 207
    before = stored(gateway, INBOX, "alice", AVAILABILITY_PROP)
    response = gateway.request(
        "PROPPATCH", INBOX, '<?xml version="1.0"?><D:propertyupdate '
        'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" '
        'xmlns:CS="http://calendarserver.org/ns/"><D:remove><D:prop>'
        '<CS:calendar-availability/></D:prop></D:remove><D:set><D:prop>'
        '<C:calendar-availability>%s</C:calendar-availability></D:prop>'
        '</D:set></D:propertyupdate>' % escape(value), user="alice")
    assert response.status_code == 207, response.text
    assert statuses(response) == {
        "calendar-availability": (403, "valid-calendar-data"),
        "CS:calendar-availability": (424, None)}
    assert words in response.text
    assert stored(gateway, INBOX, "alice", AVAILABILITY_PROP) == before
    assert "VAVAILABILITY" in before["calendar-availability"]


def test_other_properties_on_the_inbox_are_403_and_block_the_rest(gateway):
    response = gateway.proppatch(
        INBOX, "<C:calendar-availability>%s</C:calendar-availability>"
        "<D:displayname>mine</D:displayname>" % escape(AVAILABILITY),
        "alice")
    assert response.status_code == 207, response.text
    assert statuses(response) == {
        "displayname": (403, None),
        "calendar-availability": (424, None)}
    assert "calendar-availability" not in stored(gateway, INBOX, "alice",
                                                 AVAILABILITY_PROP)


# -- MKCALENDAR and extended MKCOL ------------------------------------------

def mkcalendar_body(props):
    return ('<?xml version="1.0"?><C:mkcalendar xmlns:D="DAV:" '
            'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>%s'
            '</D:prop></D:set></C:mkcalendar>' % props)


def mkcol_body(props):
    return ('<?xml version="1.0"?><D:mkcol xmlns:D="DAV:" '
            'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>'
            '<D:resourcetype><D:collection/><C:calendar/></D:resourcetype>%s'
            '</D:prop></D:set></D:mkcol>' % props)


@pytest.mark.parametrize("props,failed", [
    ("<D:displayname>X</D:displayname><C:calendar-timezone>garbage"
     "</C:calendar-timezone>", ("calendar-timezone", 403,
                                "valid-calendar-data")),
    ("<D:displayname>X</D:displayname><C:schedule-calendar-transp>maybe"
     "</C:schedule-calendar-transp>", ("schedule-calendar-transp", 409,
                                       None)),
])
def test_mkcalendar_with_a_bad_property_creates_nothing(gateway, props,
                                                         failed):
    response = gateway.request("MKCALENDAR", "/alice/new/",
                               mkcalendar_body(props), user="alice")
    assert response.status_code == 207, response.text
    assert etree.fromstring(response.content).tag == D + "multistatus"
    assert statuses(response) == {failed[0]: failed[1:],
                                  "displayname": (424, None)}
    assert propfind(gateway, "/alice/new/", "alice").status_code == 404
    response = gateway.request("MKCALENDAR", "/alice/new/", mkcalendar_body(
        "<C:calendar-timezone>%s</C:calendar-timezone>"
        % escape(BERLIN_NO_RULES)), user="alice")
    assert response.status_code == 201, response.text


def test_extended_mkcol_with_a_bad_property_is_403_mkcol_response(gateway):
    response = gateway.request("MKCOL", "/alice/new/", mkcol_body(
        "<C:calendar-timezone>%s</C:calendar-timezone>"
        % escape(BAD_TIMEZONES["two-vtimezones"])), user="alice")
    assert response.status_code == 403, response.text
    assert etree.fromstring(response.content).tag == D + "mkcol-response"
    assert statuses(response) == {
        "calendar-timezone": (403, "valid-calendar-data"),
        "resourcetype": (424, None)}
    assert propfind(gateway, "/alice/new/", "alice").status_code == 404
    response = gateway.request("MKCOL", "/alice/new/", mkcol_body(
        "<C:schedule-calendar-transp><C:transparent/>"
        "</C:schedule-calendar-transp>"), user="alice")
    assert response.status_code == 201, response.text
    assert stored(gateway, "/alice/new/", "alice")[
        "schedule-calendar-transp"] == "transparent"


def test_mkcalendar_where_one_may_not_create_is_radicales_answer(gateway):
    response = gateway.request("MKCALENDAR", "/alice/new/", mkcalendar_body(
        "<C:calendar-timezone>garbage</C:calendar-timezone>"), user="bob")
    assert response.status_code == 403
    assert propfind(gateway, "/alice/new/", "alice").status_code == 404
