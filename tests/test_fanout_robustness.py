"""A plugin cannot break the answer, and the shared state stays bounded.

Broken third-party plugins (tests/thirdparty/broken_providers.py, loaded
by dotted path) raise, return None, lists, strings, unreadable periods,
naive or FREE periods, failures that are no Reason, mappings that
explode, or hang in pure Python: each fails only its own addresses, the
local attendee and a working provider are answered, and the gateway goes
on serving.  A plugin that reads a throttling body reports it with
RateLimited, which the fan-out remembers like a Retry-After.  Cache
keys include the asker for providers that declare ``per_asker``.

The shared-state defaults (gateway.state) are checked in-process: the
answer cache is bounded, the push queue leases, expires and acks, and
keeps its items across a restart.
"""

import datetime
import json
import pathlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from emulators.ifb_peer import IfbPeer, utc
from fbcheck import periods_of, schedule_response
from icaldata import freebusy_request

THIRDPARTY = pathlib.Path(__file__).resolve().parent / "thirdparty"
WINDOW = ("20260105T000000Z", "20260109T000000Z")

#: class in broken_providers -> what its address must get
BROKEN = {
    "Raises": "5.1", "RaisesSystemExit": "5.1", "ReturnsNone": "5.3",
    "ReturnsList": "5.3", "ReturnsStrings": "5.3", "BadPeriods": "5.3",
    "NaivePeriods": "5.3", "FreePeriods": "5.3", "BadFailure": "5.3",
    "BadMapping": "5.3", "Hangs": "5.3",
}
#: provider section name -> class (names that give nothing away)
NAMES = {"brk%d" % n: cls for n, cls in enumerate(BROKEN)}


def section(name, type_name, extra=""):
    return ("[provider:%s]\ntype = %s\ndomains = %s.example\ncache_ttl = 0"
            "\n%s" % (name, type_name, name.lower(), extra))


def ask(gateway, attendees, user="alice", window=WINDOW):
    response = gateway.post("/%s/.schedule-outbox/" % user,
                            freebusy_request(
                                attendees, *window,
                                organizer="mailto:%s@example.com" % user),
                            user, timeout=120)
    assert response.status_code == 200, response.text
    return response, schedule_response(response)


def test_broken_plugins_fail_only_their_addresses(gateway_factory):
    peer = IfbPeer("kolab", {"carol@fb.example.net": [
        (utc("20260105T090000Z"), utc("20260105T100000Z"), "BUSY")]})
    try:
        gateway = gateway_factory(
            extra="timeout = 3\n" + "".join(
                section(name, "broken_providers:%s" % cls)
                for name, cls in NAMES.items()) +
            "[provider:fb]\ntype = ifb\ndomains = fb.example.net\nurl = %s\n"
            "window_params = kolab\ntimeout = 3\ncache_ttl = 0\n"
            % peer.url_template(),
            env={"PYTHONPATH": str(THIRDPARTY)})
        attendees = ["x@%s.example" % name for name in NAMES] + [
            "alice@example.com", "carol@fb.example.net"]
        for _ in range(2):          # and the gateway is fine afterwards
            response, answers = ask(gateway, attendees)
            statuses = {a[0][7:]: a[1] for a in answers}
            assert statuses.pop("alice@example.com") == "2.0"
            assert statuses.pop("carol@fb.example.net") == "2.0"
            assert statuses == {"x@%s.example" % name: BROKEN[cls]
                                for name, cls in NAMES.items()}
            # No broken answer reads as free time.
            for answer in answers:
                if answer[0].startswith("mailto:x@"):
                    assert answer[2] is None
            for leak in ("Traceback", "internal-detail", "KeyError",
                         "SystemExit", "boom"):
                assert leak not in response.text
        assert "brk0 failed with an internal error" in response.text
        assert "brk10 did not answer within 3 s" in response.text
    finally:
        peer.close()


class ThrottlingAPI:
    """Answers 200 with an ErrorServerBusy body (EWS-like, as JSON)."""

    def __init__(self, backoff_ms):
        self.calls = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                api.calls += 1
                body = json.dumps({"ErrorServerBusy": {
                    "BackOffMilliseconds": backoff_ms}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/api/" % self.server.server_port
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("backoff_ms,remembered", [
    (60000, True), (1e300, True), (float("nan"), False), (-5, False)])
def test_throttling_read_from_a_body_is_remembered(gateway_factory,
                                                   backoff_ms, remembered):
    api = ThrottlingAPI(backoff_ms)
    try:
        gateway = gateway_factory(
            extra=section("busy", "broken_providers:ReadsThrottlingBody",
                          "url = %s\n" % api.url),
            env={"PYTHONPATH": str(THIRDPARTY)})
        response, answers = ask(gateway, ["x@busy.example"])
        assert answers[0][1] == "5.3"
        assert "busy is throttling requests" in response.text
        response, answers = ask(gateway, ["x@busy.example"])
        assert answers[0][1] == "5.3"
        if remembered:
            assert api.calls == 1
            assert "busy asked for a pause (retry after %d s)" % min(
                3600, backoff_ms / 1000) in response.text
        else:
            assert api.calls == 2
        assert "Traceback" not in gateway.log()
    finally:
        api.close()


def test_cache_keys_include_the_asker_only_for_per_asker_providers(
        gateway_factory):
    gateway = gateway_factory(
        extra=section("echo", "broken_providers:AskerEcho",
                      "cache_ttl = 300\n").replace("cache_ttl = 0\n", "") +
        section("shared", "broken_providers:AskerEchoShared",
                "cache_ttl = 300\n").replace("cache_ttl = 0\n", ""),
        env={"PYTHONPATH": str(THIRDPARTY)})
    people = ["x@echo.example", "x@shared.example"]
    _, alice = ask(gateway, people, "alice")
    _, bob = ask(gateway, people, "bob")
    nine = [("20260105T090000Z", "20260105T100000Z")]
    ten = [("20260105T100000Z", "20260105T110000Z")]
    assert periods_of(alice[0][2])["BUSY"] == nine
    assert periods_of(bob[0][2])["BUSY"] == ten      # asked again, as bob
    assert periods_of(alice[1][2])["BUSY"] == nine
    assert periods_of(bob[1][2])["BUSY"] == nine     # alice's cached answer


# -- shared state, in-process ------------------------------------------------


def test_answer_cache_is_bounded_and_serves_narrower_windows():
    from gateway.state import MemoryAnswerCache
    utc_ = datetime.timezone.utc
    start = datetime.datetime(2026, 1, 5, tzinfo=utc_)
    end = start + datetime.timedelta(days=4)
    cache = MemoryAnswerCache(max_cost=1000, windows_per_key=3)
    for n in range(5000):
        cache.put("k%d" % n, start, end, ("p",) * 9, 300, cost=10)
        assert cache.cost <= 1000
    assert len(cache) == 100
    assert cache.get("k0", start, end) is None            # evicted
    assert cache.get("k4999", start, end) == ("p",) * 9
    narrower = start + datetime.timedelta(days=1)
    assert cache.get("k4999", narrower, end) == ("p",) * 9
    assert cache.get("k4999", start, end + datetime.timedelta(1)) is None
    for n in range(10):        # windows per key are bounded too
        cache.put("w", start + datetime.timedelta(hours=n), end, n, 300)
    assert cache.get("w", start + datetime.timedelta(hours=6), end) is None
    assert cache.get("w", start + datetime.timedelta(hours=7), end) == 7
    assert cache.get("w", start + datetime.timedelta(hours=9), end) == 9
    cache.put("short", start, end, "x", 0.05)
    time.sleep(0.1)
    assert cache.get("short", start, end) is None
    cache.put("huge", start, end, "x", 300, cost=5000)    # never kept
    assert cache.get("huge", start, end) is None


def test_push_queue_leases_expire_and_survive_a_restart(tmp_path):
    from gateway.state import SqlitePushQueue
    path = str(tmp_path / "queue.sqlite")
    queue = SqlitePushQueue(path)
    queue.enqueue(b"alice v1", key="alice")
    queue.enqueue(b"alice v2", key="alice")    # replaces the pending one
    queue.enqueue(b"bob", key="bob")
    queue.close()
    queue = SqlitePushQueue(path)               # durable
    leased = queue.lease(0.3, limit=10)
    assert [payload for _, payload in leased] == [b"alice v2", b"bob"]
    assert queue.lease(0.3, limit=10) == []     # held
    assert queue.ack(leased[0][0]) is True
    time.sleep(0.4)                             # bob's lease runs out
    again = queue.lease(10, limit=10)
    assert [payload for _, payload in again] == [b"bob"]
    assert queue.ack(leased[1][0]) is False     # the old lease is stale
    assert queue.ack(again[0][0]) is True
    assert queue.lease(10, limit=10) == []
    queue.close()


def test_throttle_memory_keeps_the_later_pause():
    from gateway.state import MemoryThrottleMemory
    memory = MemoryThrottleMemory()
    now = time.time()
    memory.pause("p", now + 100)
    memory.pause("p", now + 10)
    assert memory.paused_until("p") == now + 100
    memory.pause("q", now - 1)
    assert memory.paused_until("q") == 0.0
