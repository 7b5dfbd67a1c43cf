"""Two organisations, two real gateways, federated by the caldav provider.

Gateway A (example.com) asks gateway B (partner.example.org) through B's
own outbox, with an account that has free/busy rights only at B.  Also a
peer that is down, one that hangs, wrong credentials, two gateways that
point at each other (hop limit), and privacy: no event detail crosses.
"""

import time

import pytest
from lxml import etree

from conftest import free_port
from emulators import RawServer
from fbcheck import assert_same_periods, periods_of, schedule_response
from icaldata import PRIVATE_WORDS, event, freebusy_request

WINDOW = ("20260105T000000Z", "20260107T000000Z")


def request_text(attendees, organizer="mailto:alice@example.com",
                 window=WINDOW):
    return freebusy_request(attendees, *window, organizer=organizer)


def request_statuses(response):
    """{recipient: full request-status text} of a schedule-response."""
    root = etree.fromstring(response.content)
    caldav = "{urn:ietf:params:xml:ns:caldav}"
    return {item.findtext("%srecipient/{DAV:}href" % caldav):
            item.findtext(caldav + "request-status")
            for item in root.iter(caldav + "response")}


def assert_no_internals(text, port):
    """What the asker reads names no host, port or exception class."""
    for leak in ("127.0.0.1", str(port), "Error", "Exception",
                 "Traceback", "http://"):
        assert leak not in text, (leak, text)


def provider_section(name, domains, url, username, password, extra=""):
    return ("[provider:%s]\ntype = caldav\ndomains = %s\nurl = %s\n"
            "username = %s\npassword = %s\ntimeout = 3\ncache_ttl = 0\n%s"
            % (name, domains, url, username, password, extra))


@pytest.fixture
def partner(gateway_factory):
    """Gateway B with carol's and dave's calendars and an account for A."""
    gateway = gateway_factory(
        users={"carol": "carol-pw", "dave": "dave-pw",
               "example-com": "fed-pw"},
        domains="partner.example.org", name="partner")
    calendar = gateway.mkcalendar("carol", "work")
    gateway.put(calendar + "1.ics", event("c1", "20260105T090000Z",
                                          "20260105T100000Z"), "carol")
    gateway.put(calendar + "2.ics", event("c2", "20260106T130000Z",
                                          "20260106T140000Z",
                                          "STATUS:TENTATIVE\r\n"), "carol")
    gateway.put(gateway.mkcalendar("dave", "work") + "1.ics",
                event("d1", "20260105T150000Z", "20260105T160000Z"), "dave")
    # The federation account must have logged in once to have addresses.
    gateway.request("PROPFIND", "/example-com/", user="example-com",
                    headers={"Depth": "0"})
    return gateway


def home(gateway_factory, partner_url, password="fed-pw", extra=""):
    """Gateway A, whose alice and bob ask about partner.example.org."""
    gateway = gateway_factory(
        extra="timeout = 8\n" + provider_section(
            "partner", "partner.example.org", partner_url, "example-com",
            password, extra), name="home")
    gateway.put(gateway.mkcalendar("bob", "work") + "1.ics",
                event("b1", "20260105T110000Z", "20260105T120000Z"), "bob")
    return gateway


def test_federated_free_busy(gateway_factory, partner):
    gateway = home(gateway_factory, partner.url)
    response = gateway.post("/alice/.schedule-outbox/", request_text(
        ["carol@partner.example.org", "bob@example.com",
         "nobody@partner.example.org", "dave@partner.example.org"]), "alice")
    answers = schedule_response(response)
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:carol@partner.example.org", "2.0"),
        ("mailto:bob@example.com", "2.0"),
        ("mailto:nobody@partner.example.org", "3.7"),
        ("mailto:dave@partner.example.org", "2.0")]
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260105T090000Z", "20260105T100000Z")],
        "BUSY-TENTATIVE": [("20260106T130000Z", "20260106T140000Z")]})
    assert_same_periods(periods_of(answers[3][2]), {
        "BUSY": [("20260105T150000Z", "20260105T160000Z")]})
    # The reply speaks for the attendee asked about, to the organizer.
    assert "ATTENDEE:mailto:carol@partner.example.org" in answers[0][2]
    assert "ORGANIZER:mailto:alice@example.com" in answers[0][2]
    # Free/busy only: nothing of the events crosses.
    for word in PRIVATE_WORDS + ("SUMMARY", "LOCATION"):
        assert word not in response.text


def test_wrong_credentials_are_no_authority(gateway_factory, partner):
    gateway = home(gateway_factory, partner.url, password="wrong")
    response = gateway.post(
        "/alice/.schedule-outbox/",
        request_text(["carol@partner.example.org", "bob@example.com"]),
        "alice")
    answers = schedule_response(response)
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:carol@partner.example.org", "3.8"),
        ("mailto:bob@example.com", "2.0")]
    assert request_statuses(response)[
        "mailto:carol@partner.example.org"] == \
        "3.8;No authority;partner refused the credentials"
    assert_no_internals(response.text, partner.port)


def test_partner_down_is_unavailable(gateway_factory):
    port = free_port()
    gateway = home(gateway_factory, "http://127.0.0.1:%d/" % port)
    response = gateway.post(
        "/alice/.schedule-outbox/",
        request_text(["carol@partner.example.org", "bob@example.com"]),
        "alice")
    answers = schedule_response(response)
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:carol@partner.example.org", "5.1"),
        ("mailto:bob@example.com", "2.0")]
    assert answers[0][2] is None
    # The asker reads the provider's name and the reason; the log has the
    # details, once for the failed call, with the provider's name.
    assert request_statuses(response)[
        "mailto:carol@partner.example.org"] == \
        "5.1;Could not deliver;partner is unreachable"
    assert_no_internals(response.text, port)
    log = gateway.log()
    assert log.count("Provider partner failed") == 1, log
    failure = [line for line in log.splitlines()
               if "Provider partner failed" in line][0]
    assert "127.0.0.1:%d" % port in failure
    assert "[Errno 111] Connection refused" in failure


class HangingPeer(RawServer):
    """Accepts connections and reads, but never answers."""

    def __init__(self) -> None:
        self.connections = []
        super().__init__()

    def serve(self, connection) -> None:
        self.connections.append(connection)

    def close(self) -> None:
        super().close()
        for connection in self.connections:
            connection.close()


def test_hanging_partner_times_out(gateway_factory):
    peer = HangingPeer()
    try:
        gateway = home(gateway_factory, "http://127.0.0.1:%d/" % peer.port)
        started = time.monotonic()
        response = gateway.post(
            "/alice/.schedule-outbox/",
            request_text(["carol@partner.example.org", "bob@example.com"]),
            "alice")
        answers = schedule_response(response)
        elapsed = time.monotonic() - started
        assert [(a[0], a[1]) for a in answers] == [
            ("mailto:carol@partner.example.org", "5.3"),
            ("mailto:bob@example.com", "2.0")]
        assert request_statuses(response)[
            "mailto:carol@partner.example.org"] == \
            "5.3;No scheduling support for user;partner did not answer " \
            "within 3 s"
        assert_no_internals(response.text, peer.port)
        # Functional bound, not a speed check: the POST ends by the overall
        # deadline ([gateway] timeout = 8) instead of waiting for the peer.
        assert elapsed < 30
        assert peer.connections
    finally:
        peer.close()


def test_two_gateways_pointing_at_each_other_stop(gateway_factory):
    """A sends loop.example.net to B, B sends it back to A: the hop header
    ends the ping-pong with a failure, never an endless loop."""
    port_a = free_port()
    b = gateway_factory(
        users={"fed-a": "a-pw"}, domains="partner.example.org",
        extra=provider_section("back", "loop.example.net",
                               "http://127.0.0.1:%d/" % port_a, "fed-b",
                               "b-pw"), name="b")
    b.request("PROPFIND", "/fed-a/", user="fed-a", headers={"Depth": "0"})
    a = gateway_factory(
        users={"alice": "alice-pw", "fed-b": "b-pw"}, port=port_a,
        extra=provider_section("loop", "loop.example.net", b.url, "fed-a",
                               "a-pw"), name="a")
    a.request("PROPFIND", "/fed-b/", user="fed-b", headers={"Depth": "0"})
    answers = schedule_response(a.post(
        "/alice/.schedule-outbox/",
        request_text(["x@loop.example.net", "alice@example.com"]),
        "alice", timeout=60))
    assert answers[0][1].startswith("5.")
    assert answers[1][1] == "2.0"
    # Both logs show the refusal at the hop limit, not a crash.
    assert "Traceback" not in a.log() + b.log()


def test_peer_answers_are_cached(gateway_factory, partner):
    gateway = gateway_factory(
        extra=provider_section("partner", "partner.example.org", partner.url,
                               "example-com", "fed-pw").replace(
                                   "cache_ttl = 0", "cache_ttl = 300"),
        name="cached")
    body = request_text(["carol@partner.example.org"])
    first = schedule_response(gateway.post("/alice/.schedule-outbox/", body,
                                           "alice"))
    # carol's new event does not show while the cached answer is fresh...
    partner.put("/carol/work/3.ics", event(
        "c3", "20260105T200000Z", "20260105T210000Z"), "carol")
    second = schedule_response(gateway.post("/alice/.schedule-outbox/", body,
                                            "alice"))
    assert periods_of(first[0][2]) == periods_of(second[0][2])
    # ...and a narrower window is served from the same entry.
    narrow = schedule_response(gateway.post(
        "/alice/.schedule-outbox/",
        request_text(["carol@partner.example.org"],
                     window=("20260105T000000Z", "20260106T000000Z")),
        "alice"))
    assert_same_periods(periods_of(narrow[0][2]), {
        "BUSY": [("20260105T090000Z", "20260105T100000Z")]})
    # The partner itself has it at once (no cache between B and its data).
    direct = schedule_response(partner.post(
        "/carol/.schedule-outbox/",
        request_text(["carol@partner.example.org"],
                     organizer="mailto:carol@partner.example.org"), "carol"))
    assert ("20260105T200000Z", "20260105T210000Z") in \
        periods_of(direct[0][2])["BUSY"]


def test_outbox_discovery_answer_cannot_steer_to_other_hosts(
        gateway_factory, partner):
    """The only host contacted is the configured one, whatever addresses
    the caller sends."""
    gateway = home(gateway_factory, partner.url)
    hostile = ["carol@partner.example.org/../../dave",
               "carol%2F..%2Fdave@partner.example.org",
               "x@127.0.0.1:1@partner.example.org",
               "carol@partner.example.org?url=http://127.0.0.1:1/"]
    answers = schedule_response(gateway.post(
        "/alice/.schedule-outbox/", request_text(hostile), "alice"))
    assert len(answers) == len(hostile)
    for answer in answers:
        assert answer[1] != "2.0" or answer[0].endswith(
            "@partner.example.org")
    # None of them was answered with someone else's busy time.
    for answer in answers:
        if answer[2]:
            assert periods_of(answer[2]).get("BUSY") != [
                ("20260105T150000Z", "20260105T160000Z")]


@pytest.mark.parametrize("cover,status", [("full", "2.0"), ("half", "5.3"),
                                          ("none", "5.3")])
def test_peer_reply_must_cover_the_window(gateway_factory, cover, status):
    """A CalDAV peer whose VFREEBUSY reply covers less of the window than
    asked (or does not say what it covers) is no data, never free."""
    from emulators.caldav_outbox import ACCOUNT, CaldavPeer
    peer = CaldavPeer({"carol@peer.example": [("20260105T090000Z",
                                               "20260105T100000Z")]})
    peer.principal_hrefs["/"] = ACCOUNT
    peer.cover = cover
    try:
        gateway = gateway_factory(extra=provider_section(
            "peer", "peer.example", peer.base + "/", "fed", "fed-pw"))
        response = gateway.post("/alice/.schedule-outbox/", request_text(
            ["carol@peer.example", "alice@example.com"]), "alice")
        answers = schedule_response(response)
        assert [(a[0], a[1]) for a in answers] == [
            ("mailto:carol@peer.example", status),
            ("mailto:alice@example.com", "2.0")]
        if status == "2.0":
            assert_same_periods(periods_of(answers[0][2]), {
                "BUSY": [("20260105T090000Z", "20260105T100000Z")]})
        else:
            assert answers[0][2] is None
            assert "peer gave no usable answer" in response.text
    finally:
        peer.close()
