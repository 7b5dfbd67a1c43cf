"""Federation with a real, independent RFC 6638 server: Xandikos.

Xandikos (installed from PyPI by the test extras) runs as its own process
with its defaults (one principal /user/, its calendar, inbox and outbox).
Its outbox answers free/busy for its principal's own calendar user
addresses only, and 3.8 (no authority) for anybody else; the gateway's
``caldav`` provider finds the outbox and the address by PROPFIND, as it
would at any CalDAV server.
"""

import pytest
import requests

from conftest import free_port
from fbcheck import assert_same_periods, periods_of, schedule_response
from icaldata import PRIVATE_WORDS, event, freebusy_request

ERIN = "erin@xandikos.example.org"


@pytest.fixture
def xandikos(xandikos_factory):
    """Xandikos with erin's calendar: busy, tentative, transparent."""
    url = xandikos_factory(email=ERIN)
    calendar = url + "/user/calendars/calendar/"
    for number, (start, end, extra) in enumerate([
            ("20260105T090000Z", "20260105T100000Z", ""),
            ("20260106T140000Z", "20260106T150000Z", "STATUS:TENTATIVE\r\n"),
            ("20260107T090000Z", "20260107T100000Z",
             "TRANSP:TRANSPARENT\r\n")]):
        response = requests.put(
            calendar + "e%d.ics" % number,
            event("x%d" % number, start, end, extra),
            headers={"Content-Type": "text/calendar"}, timeout=30)
        assert response.status_code in (201, 204), response.text
    return url


def gateway_for(gateway_factory, url):
    return gateway_factory(extra=(
        "[provider:xandikos]\ntype = caldav\ndomains = xandikos.example.org\n"
        "url = %s/\ntimeout = 5\ncache_ttl = 0\n" % url))


def ask(gateway, attendees):
    return schedule_response(gateway.post(
        "/alice/.schedule-outbox/",
        freebusy_request(attendees, "20260105T000000Z", "20260108T000000Z"),
        "alice"))


def test_free_busy_from_xandikos(gateway_factory, xandikos):
    gateway = gateway_for(gateway_factory, xandikos)
    answers = ask(gateway, [ERIN, "frank@xandikos.example.org",
                            "alice@example.com"])
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:" + ERIN, "2.0"),
        # Xandikos speaks only for its own principal: no authority.
        ("mailto:frank@xandikos.example.org", "3.8"),
        ("mailto:alice@example.com", "2.0")]
    periods = periods_of(answers[0][2])
    # Xandikos writes TENTATIVE as BUSY-TENTATIVE and skips TRANSPARENT.
    assert_same_periods(periods, {
        "BUSY": [("20260105T090000Z", "20260105T100000Z")],
        "BUSY-TENTATIVE": [("20260106T140000Z", "20260106T150000Z")]})
    for word in PRIVATE_WORDS:
        assert word not in answers[0][2]


def test_address_added_by_proppatch_at_xandikos(gateway_factory, xandikos):
    """calendar-user-address-set set by PROPPATCH at Xandikos: the new
    address is answered, and the gateway still finds an ORGANIZER."""
    response = requests.request(
        "PROPPATCH", xandikos + "/user/",
        data='<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" '
             'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>'
             '<C:calendar-user-address-set>'
             '<D:href>mailto:erin.b@xandikos.example.org</D:href>'
             '<D:href>mailto:%s</D:href>'
             '</C:calendar-user-address-set></D:prop></D:set>'
             '</D:propertyupdate>' % ERIN,
        headers={"Content-Type": "application/xml"}, timeout=30)
    assert response.status_code == 207, response.text
    assert "200" in response.text
    gateway = gateway_for(gateway_factory, xandikos)
    answers = ask(gateway, ["erin.b@xandikos.example.org", ERIN])
    assert [a[1] for a in answers] == ["2.0", "2.0"]
    assert periods_of(answers[0][2]) == periods_of(answers[1][2])


def test_xandikos_gone_is_unavailable(gateway_factory):
    gateway = gateway_for(gateway_factory,
                          "http://127.0.0.1:%d" % free_port())
    answers = ask(gateway, [ERIN])
    assert answers[0][1] == "5.1"
