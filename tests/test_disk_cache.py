"""The busy index on disk (gateway/engine/disk_cache.py).

A restart must answer exactly as before, and fast, whatever it finds on
disk: the file it wrote, a file damaged in any way (cut short, a flipped
byte, garbage, the right checksum over the wrong shapes), a file of
another engine version or another calendar, or a file that went stale
because objects changed while the server was down.  The in-process
tests restart the engine (a new LocalEngine over the same storage) and
compare with the minute-grid reference; the server tests stop and start
real ``fbgateway serve`` processes, one and two on one storage folder.
"""

import json
import os
import pathlib
import random
import time

import pytest
from hypothesis import given, strategies as st

from conftest import Gateway
from gateway.engine import disk_cache
from gateway.engine.local import LocalEngine
from gateway.model import Window
from naive_expander import raster
from test_engine_properties import (_parse, draw_windows,
                                    profile, reference, series)

FB = ('<?xml version="1.0" encoding="utf-8"?><C:free-busy-query '
      'xmlns:C="urn:ietf:params:xml:ns:caldav"><C:time-range start="%s" '
      'end="%s"/></C:free-busy-query>')




def restarted(gateway) -> LocalEngine:
    """A new engine over the gateway's storage: what a restarted process
    has, with its disk cache."""
    app = gateway.app
    return LocalEngine(app._storage, app._rights, limits=app.local.limits)


def answer(engine, gateway, path, window):
    with gateway.app._storage.acquire_lock("r"):
        collection = next(iter(gateway.app._storage.discover(path)))
        periods = engine.calendar_periods(collection, Window(*window))
    return raster([(p.start, p.end, p.fbtype) for p in periods], *window)


def index_file(gateway, path) -> pathlib.Path:
    return pathlib.Path(disk_cache.path_of(str(
        gateway.directory / "collections" / "collection-root" /
        path.strip("/"))))


def rewrite(file: pathlib.Path, head=None, body=None) -> None:
    """The file with another header or body, checksum made right."""
    old_head, _, old_body = file.read_bytes().partition(b"\n")
    head = json.loads(old_head) if head is None else head
    body = old_body if body is None else body
    head["sha256"] = disk_cache.hashlib.sha256(body).hexdigest()
    file.write_bytes(json.dumps(head).encode() + b"\n" + body)


DAMAGES = ["none", "cut short", "flipped byte", "garbage", "empty",
           "wrong shapes", "period outside its month", "other format",
           "other engine", "other limits", "other calendar",
           "stale: changed while down", "stale: deleted while down"]


@profile(40)
@given(st.lists(series(), min_size=1, max_size=4), st.data(),
       st.sampled_from(DAMAGES), st.randoms(use_true_random=False))
def test_restart_answers_as_before_whatever_is_on_disk(calendars,
                                                       all_series, data,
                                                       damage, rng):
    gateway = calendars.gateway
    path = calendars.new(all_series)
    asked = draw_windows(data, all_series, 1, 3)
    for window in asked:
        assert answer(gateway.app.local, gateway, path, window) == \
            reference(all_series, window)
    gateway.app.local.disk.flush()
    file = index_file(gateway, path)
    text = file.read_bytes()
    head = json.loads(text.partition(b"\n")[0])
    if damage == "cut short":
        file.write_bytes(text[:rng.randrange(len(text))])
    elif damage == "flipped byte":
        spot = rng.randrange(len(text))
        file.write_bytes(text[:spot] + bytes([text[spot] ^ (
            1 << rng.randrange(8))]) + text[spot + 1:])
    elif damage == "garbage":
        file.write_bytes(bytes(rng.randrange(256) for _ in range(300)))
    elif damage == "empty":
        file.write_bytes(b"")
    elif damage == "wrong shapes":
        rewrite(file, body=json.dumps({"files": [["x.ics", "1", 2, 3, "e",
                                                  0, 1]], "records": {},
                                       "months": 5}).encode())
    elif damage == "period outside its month":
        body = json.loads(text.partition(b"\n")[2])
        for month in body["months"]:
            for part in month[1]:
                part[1] = [month[0] - 7200, month[0] - 3600, 0]
        rewrite(file, body=json.dumps(body).encode())
    elif damage.startswith("other "):
        key = {"other format": "format", "other engine": "engine",
               "other limits": "limits", "other calendar": "path"}[damage]
        head[key] = {"format": 999, "engine": "0" * 32,
                     "limits": [3, 0.5], "path": "alice/other"}[key]
        rewrite(file, head=head)
    elif damage.startswith("stale"):
        victim = rng.choice(all_series)
        if damage.endswith("deleted while down"):
            (file.parent.parent.parent / (victim.uid + ".ics")).unlink()
            all_series = [s for s in all_series if s is not victim]
        else:
            new = data.draw(series(), label="changed")._replace(
                uid=victim.uid)
            gateway.store_file(path, victim.uid + ".ics", new.ical())
            all_series = [new if s is victim else s for s in all_series]
    engine = restarted(gateway)
    for window in asked + draw_windows(data, all_series or [victim], 0, 2):
        assert answer(engine, gateway, path, window) == \
            reference(all_series, window), (damage, window)


def _one_calendar(gateway, count=12):
    """A calendar of single events and weekly series, written an hour
    ago (files changed in the last two seconds are not trusted by their
    fingerprint, before a restart or after); its path."""
    path = gateway.mkcalendar("alice", "c%d" % random.randrange(10 ** 9))
    for n in range(count):
        rule = "RRULE:FREQ=WEEKLY\r\n" if n % 3 == 0 else ""
        gateway.put(path + "e%d.ics" % n, (
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
            "BEGIN:VEVENT\r\nUID:e%d\r\nDTSTAMP:20260101T000000Z\r\n"
            "DTSTART:202601%02dT%02d0000Z\r\nDTEND:202601%02dT%02d3000Z\r\n"
            "%sEND:VEVENT\r\nEND:VCALENDAR\r\n" % (
                n, n + 1, 8 + n % 9, n + 1, 8 + n % 9, rule)), "alice")
    backdate(gateway, path)
    return path


def backdate(gateway, path) -> None:
    """Item files as if written an hour ago."""
    folder = pathlib.Path(gateway.directory, "collections",
                          "collection-root", path.strip("/"))
    an_hour_ago = time.time() - 3600
    for item in folder.glob("*.ics"):
        os.utime(item, (an_hour_ago, an_hour_ago))


JANUARY = ("20260101T000000Z", "20260201T000000Z")
SPRING = ("20260301T000000Z", "20260601T000000Z")


def test_restart_reads_what_it_needs_from_disk(calendars):
    """Asked the windows of before, a restarted engine builds no object
    at all; asked a new window, only the recurring objects, for the new
    months; with the file damaged it rebuilds (so the first part can
    fail)."""
    gateway = calendars.gateway
    path = _one_calendar(gateway)
    windows = [gateway_window(JANUARY), gateway_window(SPRING)]
    before = [answer(gateway.app.local, gateway, path, w) for w in windows]
    gateway.app.local.disk.flush()
    engine = restarted(gateway)
    assert [answer(engine, gateway, path, w) for w in windows] == before
    assert len(engine._objects) == 0
    later = gateway_window(("20260901T000000Z", "20260915T000000Z"))
    answer(engine, gateway, path, later)
    assert len(engine._objects) == 4            # e0, e3, e6, e9 recur
    file = index_file(gateway, path)
    file.write_bytes(file.read_bytes()[:-10])
    engine = restarted(gateway)
    assert [answer(engine, gateway, path, w) for w in windows] == before
    assert len(engine._objects) == 4


def test_files_written_just_before_keep_their_records_by_etag(calendars):
    """Files changed within two seconds of the write have no trusted
    fingerprint in the file; after a restart they are read again, and
    where the etag is the one the record was made from, the record is
    taken as it is (single events are not parsed again)."""
    gateway = calendars.gateway
    path = gateway.mkcalendar("alice", "fresh%d" % random.randrange(10 ** 9))
    for n in range(6):
        gateway.put(path + "s%d.ics" % n, (
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
            "BEGIN:VEVENT\r\nUID:s%d\r\nDTSTAMP:20260101T000000Z\r\n"
            "DTSTART:202601%02dT100000Z\r\nDURATION:PT1H\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n" % (n, n + 2)), "alice")
    window = gateway_window(JANUARY)
    before = answer(gateway.app.local, gateway, path, window)
    gateway.app.local.disk.flush()
    body = json.loads(index_file(gateway, path).read_bytes().partition(
        b"\n")[2])
    assert body["files"] == [] and len(body["records"]) == 6
    # s0 changed meanwhile: its old record must not come back.
    gateway.put(path + "s0.ics", (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
        "BEGIN:VEVENT\r\nUID:s0\r\nDTSTAMP:20260101T000000Z\r\n"
        "DTSTART:20260120T100000Z\r\nDURATION:PT1H\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"), "alice")
    fresh = restarted(gateway)
    fresh.disk = None
    want = answer(fresh, gateway, path, window)
    assert want != before
    engine = restarted(gateway)
    assert answer(engine, gateway, path, window) == want
    records = engine._listings[path.strip("/")].index.records
    assert sorted(h for h, r in records.items() if r.version == -1) == [
        "s%d.ics" % n for n in range(1, 6)]


def test_workers_keep_each_others_months(calendars):
    """Two engines (worker processes) on one storage, each asked other
    months: the file written last holds both, so a restart asked either
    window builds no object; what went stale meanwhile is left out."""
    gateway = calendars.gateway
    path = _one_calendar(gateway)
    january, spring = gateway_window(JANUARY), gateway_window(SPRING)
    first, second = restarted(gateway), restarted(gateway)
    want = [answer(first, gateway, path, january),
            answer(second, gateway, path, spring)]
    first.disk.flush()
    second.disk.flush()
    third = restarted(gateway)
    assert [answer(third, gateway, path, w) for w in (january, spring)] \
        == want
    assert len(third._objects) == 0
    before = want
    # Again from no file: the second writes spring, then e3 (weekly)
    # changes, then the first writes January and takes the second's
    # spring months over, which must leave e3 to be expanded again.
    index_file(gateway, path).unlink()
    first, second = restarted(gateway), restarted(gateway)
    answer(first, gateway, path, january)
    answer(second, gateway, path, spring)
    second.disk.flush()
    gateway.store_file(path, "e3.ics", (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
        "BEGIN:VEVENT\r\nUID:e3\r\nDTSTAMP:20260101T000000Z\r\n"
        "DTSTART:20260104T200000Z\r\nDURATION:PT1H\r\n"
        "RRULE:FREQ=WEEKLY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"))
    backdate(gateway, path)
    answer(first, gateway, path, january)
    first.disk.flush()
    fresh = restarted(gateway)
    fresh.disk = None
    want = [answer(fresh, gateway, path, w) for w in (january, spring)]
    assert want != before
    assert [answer(restarted(gateway), gateway, path, w)
            for w in (january, spring)] == want


def gateway_window(pair):
    return (_parse(pair[0]), _parse(pair[1]))


def test_file_over_its_bound_keeps_records_or_nothing(calendars):
    """Past MAX_BYTES the months go first (records still spare every
    single event's parsing), then the whole file; answers stay right."""
    gateway = calendars.gateway
    path = _one_calendar(gateway, 30)
    window = gateway_window(SPRING)
    disk = gateway.app.local.disk
    file = index_file(gateway, path)
    full = None
    try:
        for step in ("whole", "without months", "nothing"):
            disk.flush()
            disk.max_bytes = {"whole": 1 << 20,
                              "without months": (full or 0) - 1,
                              "nothing": 4096 + 100}[step]
            if file.exists():
                file.unlink()
            gateway.put(path + "extra.ics", (
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
                "BEGIN:VEVENT\r\nUID:extra\r\nDTSTAMP:20260101T000000Z\r\n"
                "DTSTART:20260401T%02d0000Z\r\nDURATION:PT1H\r\n"
                "END:VEVENT\r\nEND:VCALENDAR\r\n" % len(step)), "alice")
            before = answer(gateway.app.local, gateway, path, window)
            disk.flush()
            if step == "whole":
                full = len(file.read_bytes())
                assert json.loads(file.read_bytes().partition(b"\n")[2])[
                    "months"]
            elif step == "without months":
                assert len(file.read_bytes()) < full
                assert json.loads(file.read_bytes().partition(b"\n")[2])[
                    "months"] == []
            else:
                assert not file.exists()
            engine = restarted(gateway)
            assert answer(engine, gateway, path, window) == before
    finally:
        disk.max_bytes = disk_cache.MAX_BYTES


# -- real servers ------------------------------------------------------------

def freebusy_lines(gateway, path, window) -> list:
    response = gateway.report(path, FB % window, "alice")
    assert response.status_code == 200, response.text
    return [line for line in response.text.splitlines()
            if line.startswith("FREEBUSY")]


def test_server_restart_answers_from_its_file(gateway):
    path = _one_calendar(gateway)
    before = [freebusy_lines(gateway, path, w) for w in (JANUARY, SPRING)]
    assert before[0] and before[1]
    gateway.stop()                              # SIGTERM: written at exit
    file = pathlib.Path(disk_cache.path_of(str(
        gateway.directory / "collections" / "collection-root" /
        path.strip("/"))))
    head = json.loads(file.read_bytes().partition(b"\n")[0])
    assert head["path"] == path.strip("/") and head["format"] == \
        disk_cache.FORMAT
    gateway.start()
    assert [freebusy_lines(gateway, path, w) for w in (JANUARY, SPRING)] \
        == before
    gateway.stop()
    file.write_bytes(b"\x00garbage" * 100)
    gateway.start()
    assert [freebusy_lines(gateway, path, w) for w in (JANUARY, SPRING)] \
        == before
    assert "Ignoring the busy index cache" in gateway.log()


def test_two_servers_on_one_storage_share_the_file(gateway):
    """Two processes write the same file (the last rename wins, each a
    whole view); a third started afterwards answers as they did, after
    changes made through either."""
    path = _one_calendar(gateway)
    other = Gateway(gateway.directory, gateway.users, "example.com", "",
                    None)
    try:
        other.start()
        for n in range(6):
            writer = (gateway, other)[n % 2]
            writer.put(path + "w%d.ics" % n, (
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
                "BEGIN:VEVENT\r\nUID:w%d\r\nDTSTAMP:20260101T000000Z\r\n"
                "DTSTART:202603%02dT120000Z\r\nDURATION:PT2H\r\n"
                "RRULE:FREQ=DAILY;COUNT=%d\r\nEND:VEVENT\r\n"
                "END:VCALENDAR\r\n" % (n, n + 2, n + 1)), "alice")
            if n == 3:
                writer.request("DELETE", path + "e3.ics", user="alice")
            answers = [freebusy_lines(g, path, w) for g in (gateway, other)
                       for w in (JANUARY, SPRING)]
            assert answers[:2] == answers[2:]
    finally:
        other.stop()
    gateway.stop()
    third = Gateway(gateway.directory, gateway.users, "example.com", "",
                    None)
    try:
        third.start()
        assert [freebusy_lines(third, path, w) for w in (JANUARY, SPRING)] \
            == answers[:2]
    finally:
        third.stop()


@pytest.fixture(autouse=True)
def _no_stray_writers(calendars):
    """Each test's pending writes are done before the next begins."""
    yield
    calendars.gateway.app.local.disk.flush()
