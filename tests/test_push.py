"""The push direction: local free/busy PUT to a WebDAV folder and to a
peer gateway when it changes, through a durable queue that survives
kill -9, retries with backoff, and coalesces changes.

Gateways are real processes; the WebDAV folder is
tests/emulators/webdav_freebusy.py; the peer is a second gateway whose
provider for the pushing gateway's domain points at a recorder, which
must never be asked while the push is fresh.
"""

import datetime
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from emulators.ifb_peer import IfbPeer
from emulators.webdav_freebusy import WebDavFolder
from fbcheck import periods_of, schedule_response
from icaldata import freebusy_request
from gateway.state import SqlitePushQueue

UTC = datetime.timezone.utc
TODAY = datetime.datetime.now(UTC).replace(hour=0, minute=0, second=0,
                                           microsecond=0)


def ical(moment: datetime.datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def event(uid: str, day: int, hour: int, summary="Secret board meeting"):
    start = TODAY + datetime.timedelta(days=day, hours=hour)
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
            "BEGIN:VEVENT\r\nUID:%s\r\nDTSTAMP:20260101T000000Z\r\n"
            "DTSTART:%s\r\nDTEND:%s\r\nSUMMARY:%s\r\nEND:VEVENT\r\n"
            "END:VCALENDAR\r\n" % (uid, ical(start), ical(
                start + datetime.timedelta(hours=1)), summary))


def publishing(folder, timeout=3):
    return ("timeout = %d\npush_window_days = 14\n\n"
            "[provider:dav]\ntype = ifb\ndomains = dav.example\n"
            "url = %s/fb/{address}.ifb\npublish_url = %s/fb/{address}.ifb\n"
            % (timeout, folder.base, folder.base))


def busy_lines(text: str):
    return sorted(line for line in text.splitlines()
                  if line.startswith("FREEBUSY"))


def test_a_change_is_pushed_within_seconds_without_details(
        gateway_factory, servers):
    folder = servers(WebDavFolder())
    gateway = gateway_factory(extra=publishing(folder))
    path = gateway.mkcalendar("alice", "cal")
    assert gateway.put(path + "a.ics", event("a", 1, 9), "alice"
                       ).status_code == 201
    puts = folder.wait_for_puts(1)
    put = [p for p in puts if "alice" in p.path][-1]
    assert put.path == "/fb/alice@example.com.ifb"
    assert put.headers["Content-Type"].startswith("text/calendar")
    text = put.text
    assert "METHOD:PUBLISH" in text and "DTSTAMP:" in text
    assert "ORGANIZER:mailto:alice@example.com" in text
    start = TODAY + datetime.timedelta(days=1, hours=9)
    assert "FREEBUSY;FBTYPE=BUSY:%s/%s" % (
        ical(start), ical(start + datetime.timedelta(hours=1))) in text
    assert "DTSTART:%s" % ical(TODAY) in text
    assert "DTEND:%s" % ical(TODAY + datetime.timedelta(days=14)) in text
    assert "Secret" not in text and "SUMMARY" not in text


def test_changes_coalesce_and_the_last_state_wins(gateway_factory, servers):
    folder = servers(WebDavFolder())
    folder.script.append(("hang",))     # holds the first push a while
    gateway = gateway_factory(extra=publishing(folder))
    path = gateway.mkcalendar("alice", "cal")
    gateway.put(path + "e0.ics", event("e0", 1, 8), "alice")
    deadline = time.monotonic() + 20
    while not folder.attempts and time.monotonic() < deadline:
        time.sleep(0.05)
    for i in range(1, 8):   # seven changes while the first push hangs
        gateway.put(path + "e%d.ics" % i, event("e%d" % i, 1, 8 + i),
                    "alice")
    folder.release.set()
    puts = folder.wait_for_puts(1)
    # Wait for the queue to drain: then every event is in the last push.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if len(busy_lines(folder.files.get("/fb/alice@example.com.ifb",
                                           b"").decode())) == 1 and \
                "T%02d" % 15 in folder.files[
                    "/fb/alice@example.com.ifb"].decode():
            break
        time.sleep(0.1)
    last = folder.files["/fb/alice@example.com.ifb"].decode()
    start = TODAY + datetime.timedelta(days=1, hours=8)
    assert busy_lines(last) == ["FREEBUSY;FBTYPE=BUSY:%s/%s" % (
        ical(start), ical(start + datetime.timedelta(hours=8)))]
    # The hung attempt plus at most two more: never one per change.
    assert len(folder.attempts) <= 3, [p.path for p in folder.attempts]
    assert puts


def test_a_failed_push_is_retried_with_backoff(gateway_factory, servers):
    folder = servers(WebDavFolder())
    folder.script.append(("status", 500))
    gateway = gateway_factory(extra=publishing(folder))
    path = gateway.mkcalendar("alice", "cal")
    gateway.put(path + "a.ics", event("a", 2, 10), "alice")
    puts = folder.wait_for_puts(1, timeout=40)
    failed, delivered = folder.attempts[0], puts[0]
    # The first retry waits about five seconds, not a busy loop.
    assert delivered.time - failed.time >= 4
    assert len(folder.attempts) == 2
    assert "FREEBUSY;FBTYPE=BUSY" in delivered.text
    assert "failed (attempt 1" in gateway.log()


def test_kill_minus_9_mid_push_loses_nothing_and_repeats_the_stamp(
        gateway_factory, servers):
    folder = servers(WebDavFolder())
    folder.script.append(("hang",))
    gateway = gateway_factory(extra=publishing(folder, timeout=2))
    path = gateway.mkcalendar("alice", "cal")
    gateway.put(path + "a.ics", event("a", 3, 11), "alice")
    deadline = time.monotonic() + 20
    while not folder.attempts and time.monotonic() < deadline:
        time.sleep(0.05)
    assert folder.attempts, "no push started"
    os.kill(gateway.process.pid, signal.SIGKILL)
    gateway.process.wait(10)
    folder.release.set()
    first = folder.attempts[0]
    gateway.start()
    # The dead worker's lease (2 x timeout + 5 s) runs out; then it goes.
    puts = folder.wait_for_puts(1, timeout=40)
    stamp = [line for line in first.text.splitlines()
             if line.startswith("DTSTAMP")]
    assert stamp and stamp == [line for line in puts[0].text.splitlines()
                               if line.startswith("DTSTAMP")]
    assert busy_lines(puts[0].text) == busy_lines(first.text)


def test_an_acknowledged_push_is_not_repeated_after_a_restart(
        gateway_factory, servers):
    folder = servers(WebDavFolder())
    gateway = gateway_factory(extra=publishing(folder))
    path = gateway.mkcalendar("alice", "cal")
    gateway.put(path + "a.ics", event("a", 1, 9), "alice")
    folder.wait_for_puts(1)
    time.sleep(1.0)
    count = len(folder.attempts)
    gateway.stop()
    gateway.start()
    time.sleep(3.0)
    assert len(folder.attempts) == count
    queue = SqlitePushQueue(str(gateway.directory / "collections" /
                                ".freebusy-push-queue.sqlite"))
    assert queue.items() == []
    queue.close()


def test_opted_out_users_are_not_pushed(gateway_factory, servers):
    folder = servers(WebDavFolder())
    gateway = gateway_factory(extra=publishing(folder))
    response = gateway.request(
        "PROPPATCH", "/bob/", user="bob", body=(
            '<D:propertyupdate xmlns:D="DAV:" xmlns:G="urn:freebusy-gateway">'
            "<D:set><D:prop><G:freebusy-opt-out>true</G:freebusy-opt-out>"
            "</D:prop></D:set></D:propertyupdate>"),
        headers={"Content-Type": "application/xml"})
    assert response.status_code == 207, response.text
    path = gateway.mkcalendar("bob", "cal")
    gateway.put(path + "b.ics", event("b", 1, 9), "bob")
    gateway.mkcalendar("alice", "cal")
    gateway.put("/alice/cal/a.ics", event("a", 1, 9), "alice")
    folder.wait_for_puts(1)
    time.sleep(2)
    assert not any("bob" in p.path for p in folder.attempts)


def test_every_user_is_republished_when_due(gateway_factory, servers):
    folder = servers(WebDavFolder())
    gateway = gateway_factory(
        extra=publishing(folder).replace(
            "push_window_days", "push_republish_hours = 0.0005\n"
            "push_window_days"))
    gateway.mkcalendar("alice", "cal")
    gateway.mkcalendar("bob", "cal")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        paths = {p.path for p in folder.puts}
        if {"/fb/alice@example.com.ifb", "/fb/bob@example.com.ifb"} <= paths:
            break
        time.sleep(0.1)
    assert {"/fb/alice@example.com.ifb", "/fb/bob@example.com.ifb"} <= {
        p.path for p in folder.puts}


# -- a peer gateway takes the push ------------------------------------------


@pytest.fixture
def peers(gateway_factory, servers):
    """Gateway A (example.com) pushes to gateway B (b.example), whose
    provider for example.com is a read URL server that must not be
    asked while the push is fresh."""
    origin = servers(IfbPeer("calconnect", {}))
    b = gateway_factory(
        users={"bob": "bob-pw", "apush": "push-pw", "other": "other-pw"},
        domains="b.example", name="b", extra=(
            "\n[provider:a]\ntype = ifb\ndomains = example.com\n"
            "url = %s/freebusy/{address}.ifb\npush_accounts = apush\n"
            "cache_ttl = 600\n" % origin.base))
    a = gateway_factory(name="a", extra=(
        "push_window_days = 14\n\n[provider:b]\ntype = ifb\n"
        "domains = b.example\nurl = %s/.freebusy/{address}.ifb\n"
        "publish_url = %s/.freebusy/{address}.ifb\n"
        "username = apush\npassword = push-pw\n" % (b.url, b.url)))
    return a, b, origin


def ask_b(b, attendee, start, end):
    body = freebusy_request([attendee], start, end,
                            organizer="mailto:bob@b.example")
    return schedule_response(b.request(
        "POST", "/bob/.schedule-outbox/", body, user="bob",
        headers={"Content-Type": "text/calendar"}))


def test_a_peer_answers_from_the_push_without_asking(peers):
    a, b, origin = peers
    a.mkcalendar("alice", "cal")
    a.put("/alice/cal/x.ics", event("x", 2, 14), "alice")
    start = TODAY + datetime.timedelta(days=2, hours=14)
    window = ("alice@example.com", ical(TODAY + datetime.timedelta(days=1)),
              ical(TODAY + datetime.timedelta(days=5)))
    deadline = time.monotonic() + 30
    while True:
        answers = ask_b(b, *window)
        if answers[0][1] == "2.0" and periods_of(answers[0][2]).get("BUSY"):
            break
        assert time.monotonic() < deadline, answers
        time.sleep(0.3)
    assert periods_of(answers[0][2])["BUSY"] == [
        (ical(start), ical(start + datetime.timedelta(hours=1)))]
    # Only the push has alice's busy time (the origin knows nobody);
    # from now on the origin is not asked at all.
    asked_before = len(origin.requests)
    for _ in range(3):
        again = ask_b(b, *window)
        assert periods_of(again[0][2]) == periods_of(answers[0][2])
    assert len(origin.requests) == asked_before


def test_pushes_must_come_from_a_listed_account(peers):
    a, b, origin = peers
    window_body = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nMETHOD:PUBLISH"
        "\r\nBEGIN:VFREEBUSY\r\nDTSTAMP:%s\r\nDTSTART:%s\r\nDTEND:%s\r\n"
        "FREEBUSY:%s/%s\r\nEND:VFREEBUSY\r\nEND:VCALENDAR\r\n")
    start = TODAY + datetime.timedelta(days=1)
    body = window_body % (ical(TODAY), ical(TODAY), ical(
        TODAY + datetime.timedelta(days=7)), ical(start), ical(
        start + datetime.timedelta(hours=2)))
    headers = {"Content-Type": "text/calendar"}
    path = "/.freebusy/carol@example.com.ifb"
    assert b.request("PUT", path, body, headers=headers).status_code == 401
    assert b.request("PUT", path, body, user="other",
                     headers=headers).status_code == 403
    # Not a peer's address: b's own users cannot be pushed.
    assert b.request("PUT", "/.freebusy/bob@b.example", body, user="apush",
                     headers=headers).status_code == 403
    for bad in ("garbage", body.replace("DTSTART", "X-NO-START"),
                "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"):
        response = b.request("PUT", path, bad, user="apush", headers=headers)
        assert response.status_code == 400, (bad[:40], response.text)
    assert b.request("PUT", "/.freebusy/not-an-address", body, user="apush",
                     headers=headers).status_code == 400
    assert b.request("PUT", path, body, user="apush",
                     headers=headers).status_code == 204
    # An older push (a repeat from before a crash) does not replace it.
    older = window_body % ("20200101T000000Z", ical(TODAY), ical(
        TODAY + datetime.timedelta(days=7)), ical(start), ical(
        start + datetime.timedelta(hours=5)))
    assert b.request("PUT", path, older, user="apush",
                     headers=headers).status_code == 204
    answers = ask_b(b, "carol@example.com", ical(TODAY),
                    ical(TODAY + datetime.timedelta(days=7)))
    assert periods_of(answers[0][2])["BUSY"] == [
        (ical(start), ical(start + datetime.timedelta(hours=2)))]
    assert origin.requests == []


# -- the queue itself ---------------------------------------------------------


def test_queue_retry_purge_and_coalescing_in_backoff(tmp_path):
    path = str(tmp_path / "q.sqlite")
    queue = SqlitePushQueue(path)
    queue.enqueue(b"a1", key="p/alice")
    (lease, payload), = queue.lease(30)
    assert payload == b"a1"
    assert queue.release(lease, 100, "HTTP 500") is True
    assert queue.lease(30) == []                 # waiting for its retry
    queue.enqueue(b"a2", key="p/alice")          # replaces, keeps the wait
    items = queue.items()
    assert [(i.payload, i.attempts, i.last_error) for i in items] == [
        (b"a2", 1, "HTTP 500")]
    assert items[0].not_before > time.time() + 50
    assert queue.retry(items[0].id) == 1
    (lease, payload), = queue.lease(30)
    assert payload == b"a2"
    queue.enqueue(b"b1", key="p/bob")
    assert queue.purge() == 2
    assert queue.items() == []
    queue.set_meta("last_republish", "12.5")
    queue.close()
    queue = SqlitePushQueue(path)
    assert queue.get_meta("last_republish") == "12.5"
    assert queue.ack(lease) is False             # purged meanwhile
    queue.close()
    # A second process sees the same queue (the file, not memory).
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM push_items").fetchone() == (
            0,)
    assert json.dumps([])


def fbgateway(*args):
    return subprocess.run([sys.executable, "-m", "gateway", *args],
                          cwd=str(ROOT), capture_output=True, text=True,
                          timeout=60)


def test_the_admin_lists_retries_and_purges_the_queue(gateway_factory,
                                                      servers):
    folder = servers(WebDavFolder())
    folder.script.extend([("status", 503)] * 3)
    gateway = gateway_factory(extra=publishing(folder))
    path = gateway.mkcalendar("alice", "cal")
    gateway.put(path + "a.ics", event("a", 1, 9), "alice")
    deadline = time.monotonic() + 20
    while not folder.attempts and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    config = str(gateway.config_path)
    listed = fbgateway("queue", "list", "--config", config)
    assert listed.returncode == 0, listed.stderr
    line, = [x for x in listed.stdout.splitlines() if "alice" in x]
    assert "alice -> dav" in line and "attempts=1" in line
    assert "503" in line and "due in" in line
    item = line.split()[0]
    retried = fbgateway("queue", "retry", item, "--config", config)
    assert retried.returncode == 0 and "1 item" in retried.stdout
    assert fbgateway("queue", "retry", "x1", "--config", config
                     ).returncode == 2
    gateway.stop()
    purged = fbgateway("queue", "purge", "--config", config)
    assert purged.returncode == 0 and "purged" in purged.stdout
    assert "0 waiting" in fbgateway("queue", "list", "--config",
                                    config).stderr
