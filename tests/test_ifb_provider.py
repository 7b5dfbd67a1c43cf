"""The ``ifb`` provider against emulated free/busy URL servers.

Through the real gateway's outbox: each dialect's parameters, errors,
throttling, hangs, garbage, size bounds, partial coverage, redirects,
hostile addresses and caching (tests/emulators/ifb_peer.py is the emulator).
"""

import subprocess
import sys

import pytest

from conftest import ROOT
from emulators.ifb_peer import IfbPeer, utc
from fbcheck import assert_same_periods, periods_of, schedule_response
from icaldata import freebusy_request

BUSY = {
    "carol@fb.example.net": [
        (utc("20260105T090000Z"), utc("20260105T100000Z"), "BUSY"),
        (utc("20260106T130000Z"), utc("20260106T143000Z"), "BUSY-TENTATIVE"),
        (utc("20260107T000000Z"), utc("20260108T000000Z"),
         "BUSY-UNAVAILABLE")],
    "dave@fb.example.net": [
        (utc("20260105T120000Z"), utc("20260105T130000Z"), "BUSY")],
}
CAROL = {"BUSY": [("20260105T090000Z", "20260105T100000Z")],
         "BUSY-TENTATIVE": [("20260106T130000Z", "20260106T143000Z")],
         "BUSY-UNAVAILABLE": [("20260107T000000Z", "20260108T000000Z")]}
WINDOW = ("20260105T000000Z", "20260109T000000Z")


def request(attendees, window=WINDOW):
    return freebusy_request(attendees, *window)


@pytest.fixture
def peers():
    started = []

    def start(style, busy=None, **kwargs):
        peer = IfbPeer(style, dict(BUSY if busy is None else busy), **kwargs)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.close()


def provider(peer, cache_ttl=0, timeout=3, extra=""):
    return ("[provider:fb]\ntype = ifb\ndomains = fb.example.net\n"
            "url = %s\nwindow_params = %s\ntimeout = %s\ncache_ttl = %s\n%s"
            % (peer.url_template(), peer.window_params(), timeout, cache_ttl,
               extra))


def ask(gateway, attendees, window=WINDOW):
    return schedule_response(gateway.post(
        "/alice/.schedule-outbox/", request(attendees, window), "alice",
        timeout=120))


@pytest.mark.parametrize("style", ["calconnect", "kolab", "zimbra"])
def test_each_dialect_sends_its_window_and_reads_the_answer(
        gateway_factory, peers, style):
    peer = peers(style)
    gateway = gateway_factory(extra=provider(peer))
    answers = ask(gateway, ["carol@fb.example.net"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), CAROL)
    sent = peer.requests[0]
    if style == "calconnect":
        assert sent.path == "/freebusy/carol@fb.example.net.ifb"
        assert sent.query == {"start": "2026-01-05T00:00:00Z",
                              "end": "2026-01-09T00:00:00Z"}
    elif style == "kolab":
        assert sent.query == {"dtstart": "20260105T000000Z",
                              "dtend": "20260109T000000Z"}
    else:
        assert sent.query == {"acct": "carol@fb.example.net",
                              "s": "1767571200000", "e": "1767916800000"}
    assert sent.headers.get("X-Freebusy-Gateway-Hops") == "1"


def test_zimbra_windows_longer_than_200_days_are_split(gateway_factory,
                                                       peers):
    peer = peers("zimbra")
    gateway = gateway_factory(extra=provider(peer))
    answers = ask(gateway, ["carol@fb.example.net"],
                  ("20260101T000000Z", "20261201T000000Z"))
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), CAROL)
    assert len(peer.requests) == 2
    for sent in peer.requests:
        assert int(sent.query["e"]) - int(sent.query["s"]) <= \
            200 * 86400 * 1000


def test_sogo_fixed_range_covers_or_is_no_data(gateway_factory, peers):
    """SOGo takes no parameters and answers 7 days either side of its
    "now": a window inside that is served, one beyond it is not free."""
    peer = peers("sogo")
    gateway = gateway_factory(extra=provider(peer))
    answers = ask(gateway, ["carol@fb.example.net"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), CAROL)
    assert peer.requests[0].query == {}
    answers = ask(gateway, ["carol@fb.example.net"],
                  ("20260110T000000Z", "20260201T000000Z"))
    assert answers[0][1] == "5.3"
    assert answers[0][2] is None


def test_unknown_user_and_refused_access(gateway_factory, peers):
    peer = peers("calconnect")
    peer.script["dave@fb.example.net"] = ["401"]
    gateway = gateway_factory(extra=provider(peer))
    response = gateway.post("/alice/.schedule-outbox/", request(
        ["nobody@fb.example.net", "dave@fb.example.net",
         "carol@fb.example.net"]), "alice")
    answers = schedule_response(response)
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:nobody@fb.example.net", "3.7"),
        ("mailto:dave@fb.example.net", "3.8"),
        ("mailto:carol@fb.example.net", "2.0")]
    # The reasons name the provider, not the peer's host.
    assert "3.7;Invalid calendar user;fb does not know this user" in \
        response.text
    assert "3.8;No authority;fb refused access" in response.text
    assert "127.0.0.1" not in response.text


@pytest.mark.parametrize("retry_after", [
    "1", "0.5", "Tue, 01 Jan 2030 00:00:00 GMT"])
def test_throttling(gateway_factory, peers, retry_after):
    """429: retried after Retry-After when that fits the deadline (whole
    or fractional seconds); a date years ahead fails that address, and
    (the pause being remembered, at most an hour) what is asked of the
    same system after it, without a call."""
    peer = peers("kolab")
    peer.script["carol@fb.example.net"] = [("429", retry_after)]
    gateway = gateway_factory(extra=provider(peer))
    if retry_after.endswith("GMT"):
        answers = ask(gateway, ["carol@fb.example.net"])
        assert answers[0][1] == "5.3"
        assert len(peer.requests) == 1
        answers = ask(gateway, ["dave@fb.example.net",
                                "alice@example.com"])
        assert answers[0][1] == "5.3"
        assert answers[1][1] == "2.0"      # the rest of the POST stands
        assert len(peer.requests) == 1
        return
    answers = ask(gateway, ["carol@fb.example.net", "dave@fb.example.net"])
    carol = [r for r in peer.requests if "carol" in r.path]
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), CAROL)
    assert len(carol) == 2
    assert carol[1].time - carol[0].time >= float(retry_after) - 0.05
    assert answers[1][1] == "2.0"


def test_retry_after_is_remembered_across_requests(gateway_factory, peers):
    """After a Retry-After longer than the deadline, later POSTs do not
    call the throttled system again until the pause is over."""
    peer = peers("kolab")
    peer.script["carol@fb.example.net"] = [("429", "3600")]
    gateway = gateway_factory(extra=provider(peer))
    assert ask(gateway, ["carol@fb.example.net"])[0][1] == "5.3"
    answers = ask(gateway, ["carol@fb.example.net", "dave@fb.example.net"])
    assert [a[1] for a in answers] == ["5.3", "5.3"]
    assert len(peer.requests) == 1
    assert "fb asked for a pause" in gateway.post(
        "/alice/.schedule-outbox/", request(["dave@fb.example.net"]),
        "alice").text


def test_hanging_peer_times_out_and_others_still_answer(gateway_factory,
                                                        peers):
    peer = peers("calconnect")
    peer.script["carol@fb.example.net"] = ["hang"]
    gateway = gateway_factory(extra=provider(peer, timeout=1))
    gateway.put(gateway.mkcalendar("bob", "work") + "1.ics",
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
                "BEGIN:VEVENT\r\nUID:b\r\nDTSTAMP:20260101T000000Z\r\n"
                "DTSTART:20260105T080000Z\r\nDTEND:20260105T083000Z\r\n"
                "END:VEVENT\r\nEND:VCALENDAR\r\n", "bob")
    answers = ask(gateway, ["carol@fb.example.net", "bob@example.com",
                            "dave@fb.example.net"])
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:carol@fb.example.net", "5.3"),
        ("mailto:bob@example.com", "2.0"),
        ("mailto:dave@fb.example.net", "2.0")]


@pytest.mark.parametrize("behaviour", ["garbage", "html", "partial",
                                       "huge"])
def test_bad_answers_are_never_free(gateway_factory, peers, behaviour):
    peer = peers("calconnect")
    peer.script["carol@fb.example.net"] = [behaviour]
    gateway = gateway_factory(extra=provider(peer, timeout=10))
    answers = ask(gateway, ["carol@fb.example.net", "dave@fb.example.net"])
    assert answers[0][1].startswith("5."), answers[0]
    assert answers[0][2] is None
    assert answers[1][1] == "2.0"
    # The gateway is still fine afterwards.
    answers = ask(gateway, ["carol@fb.example.net"])
    assert answers[0][1] == "2.0"


def test_redirects_stay_on_the_configured_host(gateway_factory, peers):
    peer = peers("calconnect")
    elsewhere = peers("calconnect")
    peer.script["carol@fb.example.net"] = [
        ("redirect", elsewhere.base + "/freebusy/carol@fb.example.net.ifb")]
    peer.script["dave@fb.example.net"] = [
        ("redirect", "/freebusy/dave@fb.example.net.ifb"
         "?start=2026-01-05T00:00:00Z&end=2026-01-09T00:00:00Z")]
    gateway = gateway_factory(extra=provider(peer))
    answers = ask(gateway, ["carol@fb.example.net", "dave@fb.example.net"])
    assert answers[0][1] == "5.1"
    assert elsewhere.requests == []
    assert answers[1][1] == "2.0"          # same-origin redirect followed
    assert [r.path for r in peer.requests].count(
        "/freebusy/dave@fb.example.net.ifb") == 2


@pytest.mark.parametrize("address", [
    "../../etc/passwd@fb.example.net",
    "a%2F..%2F..@fb.example.net",
    "x?start=1@fb.example.net",
    "evil.example/@fb.example.net",
    "carol#frag@fb.example.net",
    "127.0.0.1:1/x@fb.example.net",
])
def test_hostile_addresses_cannot_steer_requests(gateway_factory, peers,
                                                 address):
    peer = peers("calconnect")
    gateway = gateway_factory(extra=provider(peer))
    answers = ask(gateway, [address, "carol@fb.example.net"])
    assert answers[0][1] != "2.0"
    assert answers[1][1] == "2.0"
    for sent in peer.requests:
        # One path segment under /freebusy/, the window untouched.
        assert sent.path.startswith("/freebusy/")
        assert "/" not in sent.path[len("/freebusy/"):]
        assert set(sent.query) == {"start", "end"}


def test_domains_nobody_serves_are_never_contacted(gateway_factory, peers):
    peer = peers("calconnect")
    gateway = gateway_factory(extra=provider(peer))
    answers = ask(gateway, ["carol@elsewhere.example",
                            "carol@fb.example.net.evil.example"])
    assert [a[1] for a in answers] == ["3.7", "3.7"]
    assert peer.requests == []


@pytest.mark.parametrize("cache_ttl,calls", [(0, 2), (300, 1)])
def test_cache_ttl(gateway_factory, peers, cache_ttl, calls):
    peer = peers("kolab")
    gateway = gateway_factory(extra=provider(peer, cache_ttl=cache_ttl))
    for _ in range(2):
        answers = ask(gateway, ["carol@fb.example.net"])
        assert_same_periods(periods_of(answers[0][2]), CAROL)
    assert len(peer.requests) == calls


def test_failures_are_not_cached(gateway_factory, peers):
    peer = peers("kolab")
    peer.script["carol@fb.example.net"] = ["garbage"]
    gateway = gateway_factory(extra=provider(peer, cache_ttl=300))
    assert ask(gateway, ["carol@fb.example.net"])[0][1] == "5.3"
    assert ask(gateway, ["carol@fb.example.net"])[0][1] == "2.0"


@pytest.mark.parametrize("section,words", [
    ("url = http://127.0.0.1:1/fb.ifb\n", ["{address}"]),
    ("url = http://{address}/fb.ifb\n", ["{address}", "host"]),
    ("url = http://127.0.0.1:1/{address}.ifb\nwindow_params = outlook\n",
     ["window_params", "outlook"]),
])
def test_provider_config_errors(tmp_path, section, words):
    config = tmp_path / "gateway.ini"
    config.write_text("[server]\nhosts = 127.0.0.1:1\n[auth]\ntype = none\n"
                      "[gateway]\ndomains = example.com\n[provider:fb]\n"
                      "type = ifb\ndomains = fb.example.net\n" + section)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config",
         str(config)], cwd=str(ROOT), capture_output=True, text=True)
    assert result.returncode == 2
    assert "[provider:fb]" in result.stderr
    for word in words:
        assert word in result.stderr
