"""Two gateway instances behind one Redis and one storage folder, as an
organisation runs them behind a load balancer (docs/redis.md).

Everything is real: a redis-server on loopback (tests/redis_fixture.py),
two ``fbgateway serve`` processes whose storage folders are one folder,
a foreign free/busy URL server (tests/emulators/ifb_peer.py) that counts
its calls, and a WebDAV folder (tests/emulators/webdav_freebusy.py) that
takes pushes.
"""

import datetime
import json
import os
import signal
import threading
import time

import requests

from emulators.ifb_peer import IfbPeer
from emulators.webdav_freebusy import WebDavFolder
from fbcheck import periods_of
from redis_fixture import (redis_factory_fixture,  # noqa: F401
                           redis_server_fixture)
from test_push import busy_lines, event, publishing

UTC = datetime.timezone.utc
TODAY = datetime.datetime.now(UTC).replace(hour=0, minute=0, second=0,
                                           microsecond=0)
CORP_BUSY = [(TODAY + datetime.timedelta(days=1, hours=9),
              TODAY + datetime.timedelta(days=1, hours=10), "BUSY")]


def rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ical(moment: datetime.datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


class SlowIfbPeer(IfbPeer):
    """The CalConnect read URL server, answering after ``delay`` seconds
    (a slow foreign system), so that two instances ask at once;
    ``arrived`` is set when a call comes in; setting ``wake`` ends every
    wait."""

    delay = 0.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.arrived = threading.Event()
        self.wake = threading.Event()

    def _handle(self, handler) -> None:
        self.arrived.set()
        self.wake.wait(self.delay)
        try:
            super()._handle(handler)
        except (BrokenPipeError, ConnectionResetError):
            pass        # the asker was killed while this one waited


def corp_section(peer, ttl: int = 60) -> str:
    return ("\n[provider:corp]\ntype = ifb\ndomains = corp.example\n"
            "url = %s\nwindow_params = %s\ncache_ttl = %d\n" % (
                peer.url_template(), peer.window_params(), ttl))


def pair(gateway_factory, tmp_path, extra: str):
    """Gateways a and b: one Redis (in ``extra``), one storage folder."""
    a = gateway_factory(name="a", extra=extra)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "collections").symlink_to(tmp_path / "a" /
                                                "collections")
    b = gateway_factory(name="b", extra=extra)
    return a, b


def read_url(gateway, address: str, start: datetime.datetime,
             end: datetime.datetime, user: str = "alice"):
    return gateway.request("GET", "/.freebusy/%s?start=%s&end=%s" % (
        address, rfc3339(start), rfc3339(end)), user=user, timeout=30)


def corp_requests(peer, address: str) -> int:
    return sum(1 for r in peer.requests if address in r.path)


def test_a_foreign_answer_fetched_by_one_instance_serves_the_other(
        gateway_factory, servers, redis_server, tmp_path):
    peer = servers(SlowIfbPeer("calconnect", {
        "x@corp.example": CORP_BUSY, "y@corp.example": CORP_BUSY}))
    a, b = pair(gateway_factory, tmp_path, "cache = %s\ntimeout = 8\n%s" % (
        redis_server.url, corp_section(peer)))
    start, end = TODAY, TODAY + datetime.timedelta(days=3)
    expected = {"BUSY": [(ical(CORP_BUSY[0][0]), ical(CORP_BUSY[0][1]))]}
    first = read_url(a, "x@corp.example", start, end)
    assert first.status_code == 200, first.text
    assert periods_of(first.content) == expected
    second = read_url(b, "x@corp.example", start, end)
    narrower = read_url(b, "x@corp.example", start + datetime.timedelta(
        days=1), end)
    assert second.status_code == narrower.status_code == 200
    assert periods_of(second.content) == periods_of(narrower.content) == \
        expected
    assert corp_requests(peer, "x@corp.example") == 1
    # Both asked at the same moment: one instance calls, the other waits
    # for its answer in the shared cache.
    peer.delay = 1.0
    answers = {}
    askers = [threading.Thread(target=lambda g=g: answers.__setitem__(
        g.url, read_url(g, "y@corp.example", start, end))) for g in (a, b)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join(30)
    assert [r.status_code for r in answers.values()] == [200, 200]
    assert all(periods_of(r.content) == expected for r in answers.values())
    assert corp_requests(peer, "y@corp.example") == 1
    # Nothing of the deployment lives outside its prefix, and everything
    # expires.
    client = redis_server.client()
    keys = client.keys("*")
    assert keys and all(k.startswith(b"fbgw:") for k in keys)
    assert all(client.pttl(k) > 0 for k in keys)


def test_one_instance_killed_mid_fetch_costs_the_round_robin_no_answer(
        gateway_factory, servers, redis_server, tmp_path):
    """a is killed while it fetches an answer b waits for (a's claim in
    Redis): b fetches it itself once a's claim lease runs out, well
    before its own deadline; then a round-robin client that moves on to
    b when a does not answer (as a load balancer does) gets every answer
    right, local and foreign."""
    peer = servers(SlowIfbPeer("calconnect", {"x@corp.example": CORP_BUSY}))
    a, b = pair(gateway_factory, tmp_path, "cache = %s\ntimeout = 30\n%s" % (
        redis_server.url, corp_section(peer)))
    path = a.mkcalendar("alice", "cal")
    a.put(path + "a.ics", event("a", 1, 14), "alice")
    start, end = TODAY, TODAY + datetime.timedelta(days=3)
    expected = {"BUSY": [(ical(CORP_BUSY[0][0]), ical(CORP_BUSY[0][1]))]}
    peer.delay = 60.0
    def doomed_read():
        try:
            read_url(a, "x@corp.example", start, end)
        except requests.ConnectionError:
            pass                      # a was killed: what this test does

    doomed = threading.Thread(target=doomed_read)
    doomed.daemon = True
    doomed.start()
    assert peer.arrived.wait(20), "a never asked the peer"
    peer.delay = 0.0
    answers = []
    waiter = threading.Thread(target=lambda: answers.append(
        (read_url(b, "x@corp.example", start, end), time.monotonic())))
    asked = time.monotonic()
    waiter.start()
    time.sleep(0.5)                   # b finds a's claim and waits on it
    os.kill(a.process.pid, signal.SIGKILL)
    a.process.wait(10)
    waiter.join(40)
    response, answered = answers[0]
    assert response.status_code == 200, response.text
    assert periods_of(response.content) == expected
    assert answered - asked < 15, "b waited for a dead instance's deadline"
    assert corp_requests(peer, "x@corp.example") == 1   # b's (a's hangs)

    instances = [a, b]
    for turn in range(8):
        first = instances[turn % 2]
        for gateway in (first, b if first is a else a):
            try:
                response = read_url(gateway, ("x@corp.example", "alice"
                                              "@example.com")[turn % 2],
                                    start, end)
                break
            except requests.ConnectionError:
                continue
        assert response.status_code == 200, response.text
        assert periods_of(response.content) == (expected if turn % 2 == 0
                                                else {"BUSY": [hour_span(
                                                    1, 14)]})
    assert corp_requests(peer, "x@corp.example") == 1   # from the cache
    peer.wake.set()


def test_a_push_queued_on_one_is_delivered_once_after_it_is_killed(
        gateway_factory, servers, redis_factory, tmp_path):
    redis = redis_factory(durable=True)
    folder = servers(WebDavFolder())
    folder.script.append(("hang",))
    extra = "queue = %s\n%s" % (redis.url, publishing(folder, timeout=1))
    a = gateway_factory(name="a", extra=extra)
    # The worker's first pass (republishing everyone, nobody yet) is
    # over before alice exists: her one change is the one push.
    deadline = time.monotonic() + 20
    while not redis.client().hget("fbgw:queue:meta", "last_republish"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    path = a.mkcalendar("alice", "cal")
    a.put(path + "a.ics", event("a", 3, 11), "alice")
    while not folder.attempts and time.monotonic() < deadline:
        time.sleep(0.05)
    assert folder.attempts, "no push started"
    # a's worker holds the push; b starts on the same folder and Redis.
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "collections").symlink_to(tmp_path / "a" /
                                                "collections")
    b = gateway_factory(name="b", extra=extra)
    os.kill(a.process.pid, signal.SIGKILL)
    a.process.wait(10)
    folder.release.set()
    # a's lease (2 x timeout + 5 s) runs out; then b pushes, once.
    puts = folder.wait_for_puts(1, timeout=40)
    time.sleep(2.5)        # b's worker polls every second: no second push
    assert [p.path for p in folder.puts] == ["/fb/alice@example.com.ifb"]
    assert len(folder.attempts) == 2
    stamp = [line for line in folder.attempts[0].text.splitlines()
             if line.startswith("DTSTAMP")]
    assert stamp == [line for line in puts[0].text.splitlines()
                     if line.startswith("DTSTAMP")]
    start = TODAY + datetime.timedelta(days=3, hours=11)
    assert busy_lines(puts[0].text) == ["FREEBUSY;FBTYPE=BUSY:%s/%s" % (
        ical(start), ical(start + datetime.timedelta(hours=1)))]
    assert b.request("GET", "/").status_code in (200, 302, 401)
    assert redis.client().zcard("fbgw:queue:due") == 0


def busy_of(gateway, user: str, day: int):
    start = TODAY + datetime.timedelta(days=day)
    response = read_url(gateway, "%s@example.com" % user, start,
                        start + datetime.timedelta(days=1), user=user)
    assert response.status_code == 200, response.text
    return periods_of(response.content).get("BUSY", [])


def hour_span(day: int, hour: int):
    start = TODAY + datetime.timedelta(days=day, hours=hour)
    return (ical(start), ical(start + datetime.timedelta(hours=1)))


def test_a_change_written_through_one_is_in_the_others_next_answer(
        gateway_factory, redis_server, tmp_path):
    a, b = pair(gateway_factory, tmp_path, "cache = %s\n" % redis_server.url)
    path = a.mkcalendar("alice", "cal")
    listener = redis_server.client().pubsub()
    listener.subscribe("fbgw:changes")
    # Alternating writers, each answer asked at once after the write
    # (within the same second as the last look: timestamps alone cannot
    # tell).
    for round, (writer, reader) in enumerate([(a, b), (b, a)] * 3):
        hour = 8 + round
        writer.put(path + "e.ics", event("e", 1, hour), "alice")
        assert busy_of(reader, "alice", 1) == [hour_span(1, hour)], round
        assert busy_of(writer, "alice", 1) == [hour_span(1, hour)], round
    # Each write was told to the other instances.
    heard = []
    deadline = time.monotonic() + 5
    while len(heard) < 6 and time.monotonic() < deadline:
        message = listener.get_message(timeout=0.5)
        if message and message["type"] == "message":
            heard.append(json.loads(message["data"]))
    listener.close()
    assert [m["path"] for m in heard] == ["alice/cal/e.ics"] * 6
    assert len({m["origin"] for m in heard}) == 2


def test_a_change_signal_shows_what_timestamps_hide(gateway_factory,
                                                    redis_server, tmp_path):
    """On NFS a client's cached attributes can hide a change: here the
    file is edited in place with its size, inode and mtime kept, which no
    stat check sees; the writer's change signal must."""
    a, b = pair(gateway_factory, tmp_path, "cache = %s\n" % redis_server.url)
    path = a.mkcalendar("alice", "cal")
    a.put(path + "e.ics", event("e", 1, 9), "alice")
    time.sleep(2.1)        # past the "racily clean" window
    for _ in range(2):
        assert busy_of(b, "alice", 1) == [hour_span(1, 9)]
    item = tmp_path / "a" / "collections" / "collection-root" / "alice" / \
        "cal" / "e.ics"
    before = item.stat()
    text = item.read_bytes()
    nine, eleven = ("T%s" % hour_span(1, 9)[0][9:]).encode(), \
        ("T%s" % hour_span(1, 11)[0][9:]).encode()
    assert nine in text
    item.write_bytes(text.replace(nine, eleven).replace(
        ("T%s" % hour_span(1, 9)[1][9:]).encode(),
        ("T%s" % hour_span(1, 11)[1][9:]).encode()))
    os.utime(item, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (item.stat().st_ino, item.stat().st_size) == (before.st_ino,
                                                         before.st_size)
    assert busy_of(b, "alice", 1) == [hour_span(1, 9)]     # stat sees none
    redis_server.client().publish("fbgw:changes", json.dumps(
        {"origin": "the-writer", "path": "alice/cal/e.ics"}))
    deadline = time.monotonic() + 3
    while busy_of(b, "alice", 1) != [hour_span(1, 11)] and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert busy_of(b, "alice", 1) == [hour_span(1, 11)]


def test_redis_stopped_mid_run_costs_no_answer_and_no_push(
        gateway_factory, servers, redis_factory, tmp_path):
    redis = redis_factory(durable=True)
    peer = servers(IfbPeer("calconnect", {"x@corp.example": CORP_BUSY}))
    folder = servers(WebDavFolder())
    extra = "cache = %s\nqueue = %s\nrequests_per_minute = 0\n%s%s" % (
        redis.url, redis.url, publishing(folder), corp_section(peer, ttl=1))
    a, b = pair(gateway_factory, tmp_path, extra)
    path = a.mkcalendar("alice", "cal")
    a.put(path + "first.ics", event("first", 1, 9), "alice")
    folder.wait_for_puts(1)
    failures, answered = [], []
    stopping = threading.Event()
    start, end = TODAY, TODAY + datetime.timedelta(days=3)

    def load(gateway):
        """Foreign and local lookups on one instance, without pause."""
        while not stopping.is_set():
            for address, user in (("x@corp.example", "alice"),
                                  ("alice@example.com", "alice")):
                response = read_url(gateway, address, start, end, user)
                if response.status_code != 200 or not periods_of(
                        response.content).get("BUSY"):
                    failures.append((gateway.url, address,
                                     response.status_code, response.text))
                answered.append(address)
            stopping.wait(0.02)

    workers = [threading.Thread(target=load, args=(g,)) for g in (a, b)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)
        redis.stop()
        time.sleep(1.0)
        # Written while Redis is down: the push waits in the spool.
        a.put(path + "second.ics", event("second", 2, 14), "alice")
        time.sleep(1.5)
        assert not any("T14" in p.text for p in folder.puts)
        during = len(answered)
        redis.start()
        second = TODAY + datetime.timedelta(days=2, hours=14)
        line = "FREEBUSY;FBTYPE=BUSY:%s/%s" % (
            ical(second), ical(second + datetime.timedelta(hours=1)))
        deadline = time.monotonic() + 30
        while not any(line in p.text for p in folder.puts) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stopping.set()
        for worker in workers:
            worker.join(30)
    assert failures == []
    assert during > 10 and len(answered) > during
    pushed = [p for p in folder.puts if line in p.text]
    assert len(pushed) == 1, [p.text for p in folder.puts]
    logs = a.log() + b.log()
    # Moved by whichever instance of this host (one spool file) was first.
    assert "moved to Redis" in logs
    for gateway in (a, b):
        assert gateway.log().count("failed (") == 1, gateway.log()
        assert gateway.log().count("is back after") == 1
    assert "Traceback" not in logs
