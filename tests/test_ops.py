"""Operations: ``GET /.freebusy/health`` and ``GET /.freebusy/metrics``.

A real gateway on loopback, an emulated free/busy URL server (the ifb
peer) for foreign lookups and an emulated WebDAV folder for pushes, so
the push queue is in use.  Health: ok and nothing secret in it; failing
(503 with the reason) when the storage folder cannot be written, while
Radicale's lock is held elsewhere and when the queue file is corrupt;
degraded while Redis is down or a provider asked for a pause; never a
foreign call.
Metrics: Prometheus text that parses, counts that move with a REPORT, an
outbox POST with a foreign attendee, a read URL GET, cache hits, a
throttled call; no user or address in it; ``metrics = no`` and
``metrics_users``; counters added up over two worker processes.
"""

import fcntl
import os
import re
import subprocess
import sys
import time
from typing import Dict, Tuple

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, Gateway, wait_for_port
from emulators.ifb_peer import IfbPeer, utc
from emulators.webdav_freebusy import WebDavFolder
from fbcheck import schedule_response
from icaldata import event, freebusy_request
from redis_fixture import redis_server_fixture  # noqa: F401

WINDOW = ("20260105T000000Z", "20260109T000000Z")
CAROL = "carol@fb.example.net"
BUSY = {CAROL: [(utc("20260105T090000Z"), utc("20260105T100000Z"),
                 "BUSY")]}
FREE_BUSY_QUERY = (
    '<?xml version="1.0" encoding="utf-8"?><C:free-busy-query '
    'xmlns:C="urn:ietf:params:xml:ns:caldav"><C:time-range '
    'start="%s" end="%s"/></C:free-busy-query>' % WINDOW)
#: The WebDAV folder's account: it must never show in the health answer.
DAV_USER, DAV_PASSWORD = "pusher", "dav-secret-pw"
SERVE = [sys.executable, "-m", "gateway"]


@pytest.fixture
def peer(servers):
    return servers(IfbPeer("calconnect", dict(BUSY)))


@pytest.fixture
def folder(servers):
    return servers(WebDavFolder(DAV_USER, DAV_PASSWORD))


def providers(peer, folder=None, cache_ttl=300) -> str:
    text = ("timeout = 5\n\n[provider:fb]\ntype = ifb\n"
            "domains = fb.example.net\nurl = %s\nwindow_params = %s\n"
            "timeout = 3\ncache_ttl = %s\n" % (
                peer.url_template(), peer.window_params(), cache_ttl))
    if folder is not None:
        text += ("\n[provider:dav]\ntype = ifb\ndomains = dav.example\n"
                 "url = %s/fb/{address}.ifb\npublish_url = %s/fb/{address}"
                 ".ifb\nusername = %s\npassword = %s\n" % (
                     folder.base, folder.base, DAV_USER, DAV_PASSWORD))
    return text


def health(gateway) -> Tuple[int, dict]:
    response = requests.get(gateway.url + "/.freebusy/health", timeout=30)
    assert response.headers["Content-Type"].startswith("application/json")
    return response.status_code, response.json()


def health_until(gateway, wanted: str, seconds: float = 20) -> dict:
    """Poll as a load balancer does until the status is ``wanted``."""
    deadline = time.monotonic() + seconds
    while True:
        code, answer = health(gateway)
        if answer["status"] == wanted:
            assert code == (503 if wanted == "failing" else 200), answer
            return answer
        assert time.monotonic() < deadline, answer
        time.sleep(0.2)


def scrape(gateway, user=None) -> str:
    response = gateway.request("GET", "/.freebusy/metrics", user=user)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.text


def samples(text: str) -> Dict[Tuple[str, Tuple], float]:
    """{(sample name, sorted labels): value} of a Prometheus text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples}


def value(found, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def ask(gateway, attendees):
    return schedule_response(gateway.post(
        "/alice/.schedule-outbox/", freebusy_request(attendees, *WINDOW),
        "alice"))


def storage(gateway):
    return gateway.directory / "collections"


# -- health -------------------------------------------------------------------


def test_health_is_ok_without_login_and_tells_nothing_secret(
        gateway_factory, peer, folder):
    gateway = gateway_factory(extra=providers(peer, folder))
    code, answer = health(gateway)
    assert code == 200, answer
    assert answer["status"] == "ok"
    checks = answer["checks"]
    assert checks["storage"] == {"status": "ok"}
    assert checks["queue"]["status"] == "ok" and checks["queue"]["used"]
    assert isinstance(checks["queue"]["depth"], int)
    assert checks["providers"] == {"status": "ok", "providers": {
        "fb": {"type": "ifb", "paused_seconds": 0},
        "dav": {"type": "ifb", "paused_seconds": 0}}}
    text = requests.get(gateway.url + "/.freebusy/health", timeout=30).text
    for secret in ("alice", "bob", DAV_USER, DAV_PASSWORD, "127.0.0.1",
                   str(peer.port), str(folder.port), str(gateway.directory),
                   "collections", "sqlite"):
        assert secret not in text
    head = requests.head(gateway.url + "/.freebusy/health", timeout=30)
    assert head.status_code == 200 and head.content == b""
    # A load balancer's polls never reach a foreign system.
    for _ in range(5):
        health(gateway)
    assert peer.requests == [] and folder.attempts == []


def _unwritable(path):
    """Make a folder unwritable even for root (the immutable attribute);
    returns how to undo it."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        return lambda: subprocess.run(["chattr", "-i", str(path)],
                                      check=True)
    path.chmod(0o555)
    return lambda: path.chmod(0o755)


def test_health_fails_while_the_storage_folder_cannot_be_written(
        gateway_factory):
    gateway = gateway_factory()
    health_until(gateway, "ok")
    undo = _unwritable(storage(gateway))
    try:
        answer = health_until(gateway, "failing")
    finally:
        undo()
    reason = answer["checks"]["storage"]["reason"]
    assert reason.startswith("storage folder not writable: "), reason
    assert reason.split(": ", 1)[1] in ("Operation not permitted",
                                        "Permission denied"), reason
    assert answer["checks"]["providers"]["status"] == "ok"
    health_until(gateway, "ok")
    assert not [p for p in os.listdir(storage(gateway))
                if p.startswith(".freebusy-health-")]


def test_health_fails_while_the_storage_lock_is_held_and_recovers(
        gateway_factory):
    gateway = gateway_factory()
    health_until(gateway, "ok")
    # Another process (a stuck writer) holds Radicale's storage lock.
    with open(storage(gateway) / ".Radicale.lock", "w+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        started = time.monotonic()
        answer = health_until(gateway, "failing")
        assert time.monotonic() - started < 10    # bounded, not stuck
        reason = answer["checks"]["storage"]["reason"]
        assert re.fullmatch(r"storage lock did not answer within \d+ s",
                            reason), answer
        # Later polls report the same stuck check, older.
        time.sleep(2.5)
        again = health_until(gateway, "failing")
        assert again["checks"]["storage"]["reason"] != reason
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    health_until(gateway, "ok")


def test_health_fails_when_the_queue_file_is_corrupt(gateway_factory, peer,
                                                     folder):
    gateway = gateway_factory(extra=providers(peer, folder))
    health_until(gateway, "ok")
    queue_file = storage(gateway) / ".freebusy-push-queue.sqlite"
    assert queue_file.exists()
    # A bad restore puts a broken file in its place (without the WAL
    # files a backup leaves out): the running connection still reads its
    # own pages, but a restart would not start.
    broken = queue_file.with_name("restored")
    broken.write_bytes(b"this is not a database " * 200)
    os.replace(broken, queue_file)
    for suffix in ("-wal", "-shm"):
        queue_file.with_name(queue_file.name + suffix).unlink()
    answer = health_until(gateway, "failing")
    assert answer["checks"]["queue"] == {
        "status": "failing",
        "reason": "push queue unreadable: file is not a database"}
    assert answer["checks"]["storage"]["status"] == "ok"


def test_health_pings_redis_and_is_degraded_while_it_is_down(
        gateway_factory, redis_server):
    redis_server.password = "redis-secret"
    redis_server.stop()
    redis_server.start()
    gateway = gateway_factory(extra="cache = %s\n" % redis_server.url)
    answer = health_until(gateway, "ok")
    assert answer["checks"]["redis"] == {"status": "ok", "used": True,
                                         "cache": {"up": True}}
    redis_server.stop()
    answer = health_until(gateway, "degraded")
    redis = answer["checks"]["redis"]
    assert redis["status"] == "degraded" and not redis["cache"]["up"]
    assert redis["cache"]["down_seconds"] >= 0
    text = requests.get(gateway.url + "/.freebusy/health", timeout=30).text
    assert "redis-secret" not in text and str(redis_server.port) not in text
    redis_server.start()
    health_until(gateway, "ok")


def test_a_throttled_provider_makes_health_degraded_and_is_counted(
        gateway_factory, peer):
    gateway = gateway_factory(extra=providers(peer, cache_ttl=0))
    peer.script[CAROL] = [("429", "120")]
    answers = ask(gateway, [CAROL])
    assert answers[0][1] == "5.3", answers
    answer = health_until(gateway, "degraded")
    paused = answer["checks"]["providers"]["providers"]["fb"][
        "paused_seconds"]
    assert 60 < paused <= 120, answer
    found = samples(scrape(gateway))
    assert 60 < value(found, "fbgateway_provider_paused_seconds",
                      provider="fb") <= 120
    assert value(found, "fbgateway_provider_calls_total", provider="fb",
                 outcome="rate_limited") == 1
    assert value(found, "fbgateway_lookups_total", face="outbox",
                 result="rate_limited") == 1
    assert len(peer.requests) == 1


# -- metrics ------------------------------------------------------------------


def test_metrics_count_lookups_by_face_provider_calls_and_cache_hits(
        gateway_factory, peer, folder):
    gateway = gateway_factory(extra=providers(peer, folder))
    gateway.mkcalendar("alice", "work")
    gateway.put("/alice/work/one.ics", event(
        "one", "20260106T100000Z", "20260106T110000Z"), "alice")
    before = samples(scrape(gateway))
    assert value(before, "fbgateway_lookups_total", face="report",
                 result="ok") == 0

    response = gateway.report("/alice/work/", FREE_BUSY_QUERY, "alice")
    assert response.status_code == 200
    answers = ask(gateway, [CAROL, "alice@example.com"])
    assert [a[1] for a in answers] == ["2.0", "2.0"]
    again = ask(gateway, [CAROL])              # from the answer cache
    assert again[0][1] == "2.0" and len(peer.requests) == 1
    assert gateway.request(
        "GET", "/.freebusy/alice@example.com?start=2026-01-05T00:00:00Z"
        "&end=2026-01-09T00:00:00Z", user="alice").status_code == 200
    assert gateway.request("GET", "/.freebusy/nobody@example.com",
                           user="alice").status_code == 404

    text = scrape(gateway)
    found = samples(text)
    lookups = {(face, result): value(found, "fbgateway_lookups_total",
                                     face=face, result=result)
               for face in ("report", "outbox", "readurl")
               for result in ("ok", "unknown")}
    assert lookups == {("report", "ok"): 1, ("report", "unknown"): 0,
                       ("outbox", "ok"): 3, ("outbox", "unknown"): 0,
                       ("readurl", "ok"): 1, ("readurl", "unknown"): 1}
    assert value(found, "fbgateway_provider_calls_total", provider="fb",
                 outcome="ok") == 1
    assert value(found, "fbgateway_provider_call_seconds_count",
                 provider="fb") == 1
    assert 0 < value(found, "fbgateway_provider_call_seconds_sum",
                     provider="fb") < 3
    assert value(found, "fbgateway_cache_lookups_total", cache="answer",
                 result="miss") == 1
    assert value(found, "fbgateway_cache_lookups_total", cache="answer",
                 result="hit") == 1
    assert value(found, "fbgateway_cache_lookups_total", cache="pushed",
                 result="miss") == 2
    assert value(found, "fbgateway_local_cache_cost") > 0
    assert value(found, "fbgateway_push_queue_depth") >= 0
    assert ("fbgateway_push_queue_oldest_age_seconds", ()) in found
    # Names of people and systems stay out; provider sections are in.
    for private in ("alice", "bob", "carol", "nobody", "example.com",
                    "fb.example.net", "127.0.0.1", DAV_USER):
        assert private not in text, private


class ServedGateway(Gateway):
    """A conftest gateway started through SERVE (see there)."""

    def start(self) -> "ServedGateway":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                SERVE + ["serve", "--config", str(self.config_path)],
                cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
                env=self.env)
        wait_for_port(self.port, self.process, self.log_path)
        return self


@pytest.fixture
def served(tmp_path):
    started = []

    def start(extra: str, env=None) -> ServedGateway:
        gateway = ServedGateway(
            tmp_path / ("served%d" % len(started)),
            {"alice": "alice-pw", "prometheus": "scrape-pw"}, "example.com",
            extra, None, env=env)
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        gateway.stop()


def test_metrics_can_be_turned_off_or_kept_to_listed_accounts(served):
    off = served("metrics = no\n")
    response = off.request("GET", "/.freebusy/metrics", user="alice")
    assert response.status_code == 404
    assert "metrics = no" in response.text
    assert health(off)[0] == 200        # health stays for load balancers

    listed = served("metrics_users = prometheus\n")
    anonymous = requests.get(listed.url + "/.freebusy/metrics", timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert listed.request("GET", "/.freebusy/metrics",
                          user="alice").status_code == 403
    assert ("fbgateway_local_cache_cost", ()) in samples(
        scrape(listed, user="prometheus"))


def test_counters_add_up_over_worker_processes(served, tmp_path):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    gateway = served("workers = 2\n", env={"PROMETHEUS_MULTIPROC_DIR":
                                           str(folder)})
    asked = 0
    # Fresh connections until both workers have counted some.
    while asked < 60 and (asked < 10 or len({
            f.split("_")[-1] for f in os.listdir(folder)
            if f.startswith("counter_")}) < 2):
        response = requests.get(
            gateway.url + "/.freebusy/alice@example.com", timeout=30,
            auth=("alice", "alice-pw"))
        assert response.status_code == 200
        asked += 1
    writers = {f.split("_")[-1] for f in os.listdir(folder)
               if f.startswith("counter_")}
    assert len(writers) == 2, (asked, writers)
    # Whichever worker answers the scrape, it adds both up.
    for _ in range(6):
        found = samples(scrape(gateway, user="alice"))
        assert value(found, "fbgateway_lookups_total", face="readurl",
                     result="ok") == asked
