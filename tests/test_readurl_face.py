"""The free/busy read URL, ``GET /.freebusy/<address>``, through a gateway.

One gateway process for the module, with local users and a foreign
domain served by the ``ifb`` provider against tests/emulators/ifb_peer.py
(a CalConnect server that can hang, throttle or answer part of a window).
Answers are read with icalendar (fbcheck), never with the gateway's code.
"""

import base64
import datetime
import http.client

import pytest
import requests

from conftest import Gateway
from emulators.ifb_peer import IfbPeer, utc
from fbcheck import assert_same_periods, periods_of, vfreebusy_of
from icaldata import PRIVATE_WORDS, event

UTC = datetime.timezone.utc
WINDOW = "start=2026-01-05T00:00:00Z&end=2026-01-09T00:00:00Z"
ALICE = {"BUSY": [("20260105T090000Z", "20260105T100000Z")],
         "BUSY-TENTATIVE": [("20260106T130000Z", "20260106T140000Z")]}
DAVE = {"BUSY": [("20260105T120000Z", "20260105T130000Z")]}
MAX_DAYS = 100


@pytest.fixture(scope="module")
def peer():
    peer = IfbPeer("calconnect", {"dave@fb.example.net": [
        (utc("20260105T120000Z"), utc("20260105T130000Z"), "BUSY")]})
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def throttling_peer():
    """A second system, for the one test whose pause it remembers."""
    peer = IfbPeer("calconnect", {"frank@slow.example.net": []})
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, peer, throttling_peer):
    gateway = Gateway(
        tmp_path_factory.mktemp("readurl"),
        {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw",
         "viewer": "viewer-pw", "getschedule": "getschedule-pw"},
        "example.com",
        "max_window_days = %d\n[provider:fb]\ntype = ifb\n"
        "domains = fb.example.net\nurl = %s\nwindow_params = calconnect\n"
        "timeout = 1\ncache_ttl = 0\n"
        "[provider:slow]\ntype = ifb\ndomains = slow.example.net\n"
        "url = %s\nwindow_params = calconnect\ncache_ttl = 0\n" % (
            MAX_DAYS, peer.url_template(), throttling_peer.url_template()),
        None)
    gateway.start()
    try:
        work = gateway.mkcalendar("alice", "work")
        gateway.put(work + "1.ics", event(
            "a1", "20260105T090000Z", "20260105T100000Z"), "alice")
        gateway.put(work + "2.ics", event(
            "a2", "20260106T130000Z", "20260106T140000Z",
            "STATUS:TENTATIVE\r\n"), "alice")
        gateway.put(gateway.mkcalendar("carol", "work") + "1.ics", event(
            "c1", "20260105T090000Z", "20260105T100000Z"), "carol")
        for user in ("viewer", "getschedule"):
            gateway.request("PROPFIND", "/%s/" % user, user=user,
                            headers={"Depth": "0"})
        opted = gateway.proppatch(
            "/carol/", '<G:freebusy-opt-out xmlns:G="urn:freebusy-gateway">'
            'true</G:freebusy-opt-out>', "carol")
        assert opted.status_code == 207, opted.text
        yield gateway
    finally:
        gateway.stop()


def get(gateway, target, user="bob", **kwargs):
    return gateway.request("GET", "/.freebusy/" + target, user=user,
                           **kwargs)


def calendar_answer(response):
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/calendar")
    return response.text


def window_of(text):
    component = vfreebusy_of(text)
    return component["DTSTART"].dt, component["DTEND"].dt


def test_one_vfreebusy_published_for_the_window(gateway):
    text = calendar_answer(get(gateway, "alice@example.com?" + WINDOW))
    assert_same_periods(periods_of(text), ALICE)
    assert "METHOD:PUBLISH" in text.splitlines()
    component = vfreebusy_of(text)
    assert str(component["ORGANIZER"]) == "mailto:alice@example.com"
    assert component.get("UID") and component.get("DTSTAMP")
    assert window_of(text) == (datetime.datetime(2026, 1, 5, tzinfo=UTC),
                               datetime.datetime(2026, 1, 9, tzinfo=UTC))
    for word in PRIVATE_WORDS:
        assert word not in text


@pytest.mark.parametrize("target", [
    "alice@example.com.ifb", "alice@example.com.vfb",
    "alice@EXAMPLE.com.IFB",
    "alice%40example.com.vfb", "alice@example.com/"])
def test_address_forms(gateway, target):
    text = calendar_answer(get(gateway, target + "?" + WINDOW))
    assert_same_periods(periods_of(text), ALICE)


@pytest.mark.parametrize("query,start,end", [
    # Offsets are read and the window given back in UTC.
    ("start=2026-01-05T01:00:00%2B01:00&end=2026-01-08T19:00:00-05:00",
     "20260105T000000Z", "20260109T000000Z"),
    # A "+" the client did not encode arrives as a space: still an offset.
    ("start=2026-01-05T01:00:00+01:00&end=2026-01-09T00:00:00Z",
     "20260105T000000Z", "20260109T000000Z"),
    ("start=2026-01-05T00:00:00z&end=2026-01-05t12:00:00.5Z",
     "20260105T000000Z", "20260105T120000Z"),
    ("start=2026-01-05T00:00:00Z&period=P1D",
     "20260105T000000Z", "20260106T000000Z"),
    ("start=2026-01-05T00:00:00Z&period=PT12H",
     "20260105T000000Z", "20260105T120000Z"),
    ("start=2026-01-05T00:00:00Z&period=P1W",
     "20260105T000000Z", "20260112T000000Z"),
    ("start=2026-01-05T00:00:00Z&period=P1DT12H",
     "20260105T000000Z", "20260106T120000Z"),
    ("start=2026-01-05T00:00:00Z",
     "20260105T000000Z", "20260216T000000Z"),          # 42 days
    # Kolab's parameters.
    ("dtstart=20260105T000000Z&dtend=20260109T000000Z",
     "20260105T000000Z", "20260109T000000Z"),
    ("dtstart=20260105T000000Z&period=P1D",
     "20260105T000000Z", "20260106T000000Z"),
    ("start=2026-01-05T00:00:00Z&period=P%dD" % MAX_DAYS,
     "20260105T000000Z", "20260415T000000Z"),
])
def test_window_parameters(gateway, query, start, end):
    text = calendar_answer(get(gateway, "alice@example.com?" + query))
    assert window_of(text) == (utc(start), utc(end))
    # Periods are clipped to the window asked for.
    expected = {fbtype: [(max(s, start), min(e, end)) for s, e in spans
                         if s < end and e > start]
                for fbtype, spans in ALICE.items()}
    assert_same_periods(periods_of(text), {
        k: v for k, v in expected.items() if v})


def test_default_window_is_42_days_from_today(gateway):
    before = datetime.datetime.now(UTC).date()
    text = calendar_answer(get(gateway, "alice@example.com"))
    after = datetime.datetime.now(UTC).date()
    start, end = window_of(text)
    assert start.date() in (before, after)
    assert (start.hour, start.minute, start.second) == (0, 0, 0)
    assert end - start == datetime.timedelta(days=42)


def test_outlook_style_request_without_accept(gateway):
    """What Outlook's Internet free/busy sends: a bare GET with Basic
    credentials and no Accept header, no query."""
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port,
                                            timeout=30)
    try:
        connection.putrequest("GET", "/.freebusy/alice@example.com.vfb",
                              skip_accept_encoding=True)
        connection.putheader("Authorization", "Basic " + base64.b64encode(
            b"bob:bob-pw").decode("ascii"))
        connection.endheaders()
        response = connection.getresponse()
        body = response.read().decode("utf-8")
    finally:
        connection.close()
    assert response.status == 200, body
    assert response.getheader("Content-Type").startswith("text/calendar")
    start, end = window_of(body)
    assert end - start == datetime.timedelta(days=42)


@pytest.mark.parametrize("user", ["viewer", "getschedule"])
def test_users_named_like_other_routes_are_served(gateway, user):
    """/.freebusy/view and /.freebusy/getSchedule are other faces; a user
    whose name merely starts with one of those words is still a user."""
    text = calendar_answer(get(gateway, "%s@example.com?%s" % (user,
                                                             WINDOW)))
    assert periods_of(text) == {}


def test_head_answers_like_get_without_a_body(gateway):
    response = gateway.request("HEAD", "/.freebusy/alice@example.com?" +
                               WINDOW, user="bob")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/calendar")
    assert response.content == b""


@pytest.mark.parametrize("query,name", [
    ("start=tomorrow", "start"),
    ("start=2026-01-05", "start"),                         # date only
    ("start=2026-01-05T00:00:00", "start"),                # no offset
    ("start=20260105T000000Z", "start"),                   # not RFC 3339
    ("start=2026-13-01T00:00:00Z", "start"),
    ("start=2026-01-05T25:00:00Z", "start"),
    ("start=2026-01-05T00:00:00%2B25:00", "start"),
    ("start=", "start"),
    ("start=1700-01-01T00:00:00Z&period=P1D", "start"),
    ("start=2026-01-05T00:00:00Z&end=3001-01-01T00:00:00Z", "end"),
    ("start=2026-01-05T00:00:00Z&end=2026-01-04T00:00:00Z", "end"),
    ("start=2026-01-05T00:00:00Z&end=2026-01-05T00:00:00Z", "end"),
    ("end=2000-01-01T00:00:00Z", "end"),                   # before today
    ("start=2026-01-05T00:00:00Z&end=nope", "end"),
    ("start=2026-01-05T00:00:00Z&period=P0D", "period"),
    ("start=2026-01-05T00:00:00Z&period=-P1D", "period"),
    ("start=2026-01-05T00:00:00Z&period=1D", "period"),
    ("start=2026-01-05T00:00:00Z&period=P", "period"),
    ("start=2026-01-05T00:00:00Z&period=PT", "period"),
    ("start=2026-01-05T00:00:00Z&period=P1Y", "period"),
    ("start=2026-01-05T00:00:00Z&period=P99999999999D", "period"),
    ("start=2026-01-05T00:00:00Z&period=P%dD" % (MAX_DAYS + 1), "period"),
    ("start=2026-01-05T00:00:00Z&end=2026-04-16T00:00:00Z", "end"),
    ("start=2026-01-05T00:00:00Z&end=2026-01-06T00:00:00Z&period=P1D",
     "period"),
    ("start=2026-01-05T00:00:00Z&start=2026-01-06T00:00:00Z", "start"),
    ("start=%ff", "query"),
    ("dtstart=2026-01-05T00:00:00Z", "dtstart"),
    ("dtstart=20260105T000000Z&dtend=20260105", "dtend"),
    ("start=2026-01-05T00:00:00Z&dtstart=20260105T000000Z", "dtstart"),
    ("dtstart=20260105T000000Z&dtend=20260104T000000Z", "dtend"),
    ("dtstart=17000105T000000Z&period=P1D", "dtstart"),
    ("x=" + "y" * 3000, "query"),
])
def test_bad_parameters_are_400_naming_them(gateway, query, name):
    response = get(gateway, "alice@example.com?" + query)
    assert response.status_code == 400, (query, response.status_code,
                                         response.text)
    assert response.text.startswith("bad parameter %s:" % name), \
        response.text


@pytest.mark.parametrize("target", [
    "", "alice", "alice.ifb", "@example.com", "alice@", "a@b@",
    "alice@example.com/extra", "alice%20x@example.com", "getSchedule"])
def test_bad_addresses_are_400(gateway, target):
    response = get(gateway, target + "?" + WINDOW)
    assert response.status_code == 400, (target, response.text)
    assert "address" in response.text


@pytest.mark.parametrize("query,headers,status", [
    ("&format=text/calendar", {}, 200),
    ("&format=text%2Fcalendar%3B%20charset%3Dutf-8", {}, 200),
    ("&format=TEXT/CALENDAR", {}, 200),
    ("&format=text/html", {}, 406),
    ("&format=application/json", {}, 406),
    ("&format=", {}, 406),
    ("", {"Accept": "text/calendar"}, 200),
    ("", {"Accept": "text/*;q=0.5, application/json"}, 200),
    ("", {"Accept": "*/*"}, 200),
    ("", {"Accept": "application/json"}, 406),
    ("", {"Accept": "text/calendar;q=0, text/html"}, 406),
])
def test_format_and_accept(gateway, query, headers, status):
    response = get(gateway, "alice@example.com?" + WINDOW + query,
                   headers=headers)
    assert response.status_code == status, response.text
    if status == 406:
        assert "text/calendar" in response.text


def test_unknown_addresses_are_404_to_authenticated_callers(gateway):
    for target in ("nobody@example.com", "alice@nowhere.example"):
        response = get(gateway, target + "?" + WINDOW)
        assert response.status_code == 404, (target, response.text)
        assert "unknown user" in response.text


def test_opted_out_user_is_403_to_others_and_served_to_herself(gateway):
    response = get(gateway, "carol@example.com?" + WINDOW)
    assert response.status_code == 403, response.text
    assert "BUSY" not in response.text
    # The answer does not tell an opt-out from a missing right.
    assert "opted" not in response.text
    text = calendar_answer(get(gateway, "carol@example.com?" + WINDOW,
                               user="carol"))
    assert_same_periods(periods_of(text), {
        "BUSY": [("20260105T090000Z", "20260105T100000Z")]})


def test_foreign_address_through_its_provider(gateway, peer):
    text = calendar_answer(get(gateway, "dave@fb.example.net.ifb?" +
                               WINDOW))
    assert_same_periods(periods_of(text), DAVE)
    assert window_of(text) == (utc("20260105T000000Z"),
                               utc("20260109T000000Z"))
    # The peer was asked for exactly that window.
    assert peer.requests[-1].query == {"start": "2026-01-05T00:00:00Z",
                                       "end": "2026-01-09T00:00:00Z"}
    response = get(gateway, "erin@fb.example.net?" + WINDOW)
    assert response.status_code == 404, response.text


@pytest.mark.parametrize("name,behaviour,words", [
    ("hanging", "hang", "timed out"),
    ("partial", "partial", "no data"),
    ("garbled", "garbage", "no data"),
])
def test_failed_foreign_lookups_are_503_never_free(gateway, peer, name,
                                                   behaviour, words):
    address = name + "@fb.example.net"
    peer.busy[address] = []
    peer.script[address] = [behaviour]
    response = get(gateway, address + "?" + WINDOW, timeout=30)
    assert response.status_code == 503, response.text
    assert response.text.startswith(address + ": " + words), response.text
    assert "BEGIN:VCALENDAR" not in response.text
    # The peer's host and port are never shown.
    assert str(peer.port) not in response.text


def test_throttled_lookup_is_503_and_remembered(gateway, throttling_peer):
    throttling_peer.script["frank@slow.example.net"] = [("429", "3600")]
    for _ in range(2):
        response = get(gateway, "frank@slow.example.net?" + WINDOW)
        assert response.status_code == 503, response.text
        assert response.text.startswith(
            "frank@slow.example.net: rate limited: slow "), response.text
    # The second request did not ask the throttled system again.
    assert len(throttling_peer.requests) == 1


def test_hops_stop_a_federation_loop(gateway, peer):
    asked = len(peer.requests)
    response = get(gateway, "dave@fb.example.net?" + WINDOW,
                   headers={"X-Freebusy-Gateway-Hops": "5"})
    assert response.status_code == 503, response.text
    assert len(peer.requests) == asked


def test_credentials_are_checked(gateway):
    response = gateway.request("GET", "/.freebusy/alice@example.com")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    response = requests.get(gateway.url + "/.freebusy/alice@example.com",
                            auth=("bob", "wrong"), timeout=30)
    assert response.status_code == 401
