"""Deadlines and fairness, through the real gateway.

- A peer that trickles its status line (one byte every quarter second,
  so no single socket read ever times out) cannot hold the lookup, the
  worker thread or the socket past ``[gateway] timeout``.
- A provider that hangs for 60 attendees holds only its own
  ``max_parallel`` calls; a fast provider beside it is asked at once, and
  the calls still queued at the deadline are never sent.
- Retry-After: only a finite, non-negative number of seconds or an HTTP
  date counts, more than an hour is an hour, the pause is remembered.
- The same address and window asked by several requests at once is one
  foreign call.
"""

import threading
import time

import pytest

from emulators.caldav_outbox import ACCOUNT, CaldavPeer
from emulators.ifb_peer import IfbPeer, utc
from emulators.trickle import TricklingPeer
from fbcheck import schedule_response
from icaldata import freebusy_request

WINDOW = ("20260105T000000Z", "20260109T000000Z")
BUSY = {"carol@fast.example": [(utc("20260105T090000Z"),
                                utc("20260105T100000Z"), "BUSY")],
        "dave@fast.example": []}


def ask(gateway, attendees, window=WINDOW):
    response = gateway.post("/alice/.schedule-outbox/",
                            freebusy_request(attendees, *window), "alice",
                            timeout=120)
    assert response.status_code == 200, response.text
    return response, {a[0][7:]: a[1] for a in schedule_response(response)}


@pytest.fixture
def trickler():
    peer = TricklingPeer()
    yield peer
    peer.close()


def test_trickling_peer_is_cut_off_at_the_deadline(gateway_factory,
                                                   trickler):
    """The provider's own timeout (30 s) would never fire: every read
    gets a byte.  The gateway's 2 s deadline closes the sockets, and the
    provider's only worker (max_parallel = 1) is free for the next
    request at once."""
    gateway = gateway_factory(extra=(
        "timeout = 2\n[provider:tr]\ntype = ifb\ndomains = tr.example\n"
        "url = %s\ntimeout = 30\ncache_ttl = 0\nmax_parallel = 3\n"
        % trickler.url_template()))
    started = time.monotonic()
    response, statuses = ask(gateway, ["trickle1@tr.example",
                                       "trickle2@tr.example",
                                       "trickle3@tr.example",
                                       "alice@example.com"])
    assert statuses == {"trickle1@tr.example": "5.3",
                        "trickle2@tr.example": "5.3",
                        "trickle3@tr.example": "5.3",
                        "alice@example.com": "2.0"}
    assert time.monotonic() - started < 15     # generous; the peer: never
    # The gateway hung up on every trickling connection near its deadline
    # (the trickle alone would go on for hours).
    limit = time.monotonic() + 10
    while time.monotonic() < limit and (
            len(trickler.trickles) < 3 or
            any(t["closed"] is None for t in trickler.trickles)):
        time.sleep(0.1)
    assert len(trickler.trickles) == 3
    for record in trickler.trickles:
        assert record["closed"] is not None
        assert record["closed"] - record["opened"] < 8
    # All three workers are back: three more lookups are answered.
    response, statuses = ask(gateway, ["ok1@tr.example", "ok2@tr.example",
                                       "ok3@tr.example"])
    assert set(statuses.values()) == {"2.0"}, statuses
    assert "tr did not answer within 2 s" not in response.text


def test_hanging_provider_does_not_starve_a_fast_one(gateway_factory):
    hanging = IfbPeer("calconnect", {})
    fast = IfbPeer("kolab", dict(BUSY))
    try:
        slow_people = ["p%02d@hang.example" % n for n in range(60)]
        for address in slow_people:
            hanging.script[address] = ["hang"]
        gateway = gateway_factory(extra=(
            "timeout = 5\n"
            "[provider:hang]\ntype = ifb\ndomains = hang.example\nurl = %s\n"
            "window_params = calconnect\ntimeout = 30\ncache_ttl = 0\n"
            "[provider:fast]\ntype = ifb\ndomains = fast.example\nurl = %s\n"
            "window_params = kolab\ntimeout = 30\ncache_ttl = 0\n" % (
                hanging.url_template(), fast.url_template())))
        started = time.monotonic()
        response, statuses = ask(gateway, slow_people + [
            "carol@fast.example", "dave@fast.example", "alice@example.com"])
        assert statuses.pop("carol@fast.example") == "2.0"
        assert statuses.pop("dave@fast.example") == "2.0"
        assert statuses.pop("alice@example.com") == "2.0"
        assert set(statuses.values()) == {"5.3"}
        assert "hang did not answer within 5 s" in response.text
        # The fast provider was asked at once, not after the hanging
        # provider's calls (the deadline is 5 s).
        assert len(fast.requests) == 2
        for sent in fast.requests:
            assert sent.time - started < 2.5
        # At most max_parallel (8) hanging calls ever went out; the 52
        # queued behind them were not sent after the deadline either.
        time.sleep(1.5)
        assert 1 <= len(hanging.requests) <= 8, len(hanging.requests)
    finally:
        hanging.close()
        fast.close()


@pytest.mark.parametrize("value,first,calls", [
    ("inf", "5.3", 2), ("nan", "5.3", 2), ("-1", "5.3", 2),
    ("garbage", "5.3", 2), ("", "5.3", 2), ("1e12", "5.3", 1),
    ("99999999999999999999", "5.3", 1),
    ("Tue, 01 Jan 2030 00:00:00 GMT", "5.3", 1),
    ("Mon, 01 Jan 2001 00:00:00 GMT", "2.0", 3),
    ("0.3", "2.0", 3),
])
def test_odd_retry_after_values(gateway_factory, value, first, calls):
    """Ignored values (inf, nan, negative, text) fail that call only and
    are not remembered; huge ones are held to an hour and remembered
    (later calls fail fast, naming the hour); a past date is no wait."""
    peer = IfbPeer("kolab", dict(BUSY))
    try:
        peer.script["carol@fast.example"] = [("429", value)]
        gateway = gateway_factory(extra=(
            "[provider:fb]\ntype = ifb\ndomains = fast.example\nurl = %s\n"
            "window_params = kolab\ntimeout = 5\ncache_ttl = 0\n"
            % peer.url_template()))
        _, statuses = ask(gateway, ["carol@fast.example"])
        assert statuses["carol@fast.example"] == first
        response, statuses = ask(gateway, ["carol@fast.example"])
        carol = [r for r in peer.requests if "carol" in r.path]
        assert len(carol) == calls
        if calls == 1:
            assert statuses["carol@fast.example"] == "5.3"
            assert "fb asked for a pause (retry after 3600 s)" in \
                response.text
        else:
            assert statuses["carol@fast.example"] == "2.0"
        assert "Traceback" not in gateway.log()
    finally:
        peer.close()


def test_simultaneous_identical_lookups_make_one_call(gateway_factory):
    peer = CaldavPeer({"carol@peer.example": [("20260105T090000Z",
                                               "20260105T100000Z")]})
    peer.principal_hrefs["/"] = ACCOUNT
    peer.delay = 1.5
    try:
        gateway = gateway_factory(extra=(
            "[provider:peer]\ntype = caldav\ndomains = peer.example\n"
            "url = %s/\nusername = fed\npassword = fed-pw\ntimeout = 10\n"
            "cache_ttl = 0\n" % peer.base))
        barrier = threading.Barrier(8)
        answers = []

        def one():
            barrier.wait()
            answers.append(ask(gateway, ["carol@peer.example"])[1])

        threads = [threading.Thread(target=one) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert answers == [{"carol@peer.example": "2.0"}] * 8
        assert len(peer.posts) == 1
        # Not a cache: the next request asks again.
        ask(gateway, ["carol@peer.example"])
        assert len(peer.posts) == 2
    finally:
        peer.close()
