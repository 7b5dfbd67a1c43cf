"""The local engine never reports free where there is busy time or no data,
and no stored object can stall it: each class of failure the base issue
names, against a real gateway over HTTP."""

import os
import pathlib
import threading
import time

import requests


FB = ('<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">'
      '<C:time-range start="%s" end="%s"/></C:free-busy-query>')


def freebusy_lines(text: str):
    """The FREEBUSY lines of a VFREEBUSY answer, in order."""
    return [line for line in text.splitlines()
            if line.startswith("FREEBUSY")]


def calendar(*lines: str) -> str:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n" +
            "\r\n".join(lines) + "\r\nEND:VCALENDAR\r\n")


def event(uid: str, *lines: str) -> str:
    return calendar("BEGIN:VEVENT", "UID:" + uid,
                    "DTSTAMP:20260101T000000Z", *lines, "END:VEVENT")


def busy(gateway, path, start, end, user="alice"):
    response = gateway.report(path, FB % (start, end), user)
    assert response.status_code == 200, response.text
    return freebusy_lines(response.text)


def storage_folder(gateway, path: str) -> pathlib.Path:
    return (gateway.directory / "collections" / "collection-root" /
            path.strip("/"))


def test_this_and_future_override_moves_instances_past_the_master(gateway):
    path = gateway.mkcalendar("alice", "cal")
    gateway.put(path + "a.ics", calendar(
        "BEGIN:VEVENT", "UID:a", "DTSTAMP:20260101T000000Z",
        "DTSTART:20260101T100000Z", "DTEND:20260101T110000Z",
        "RRULE:FREQ=WEEKLY;COUNT=5", "END:VEVENT",
        "BEGIN:VEVENT", "UID:a", "DTSTAMP:20260101T000000Z",
        "RECURRENCE-ID;RANGE=THISANDFUTURE:20260115T100000Z",
        "DTSTART:20260125T100000Z", "DTEND:20260125T110000Z",
        "END:VEVENT"), "alice")
    assert busy(gateway, path, "20260201T000000Z", "20260301T000000Z") == [
        "FREEBUSY;FBTYPE=BUSY:20260201T100000Z/20260201T110000Z",
        "FREEBUSY;FBTYPE=BUSY:20260208T100000Z/20260208T110000Z"]


def test_answer_does_not_depend_on_earlier_windows(gateway_factory):
    extra = "\n[reporting]\nmax_freebusy_occurrence = 100\n"
    history = gateway_factory(extra=extra, name="history")
    fresh = gateway_factory(extra=extra, name="fresh")
    rule = event("hourly", "DTSTART:20260101T000000Z",
                 "DTEND:20260101T001500Z", "RRULE:FREQ=HOURLY")
    for gateway in (history, fresh):
        gateway.put(gateway.mkcalendar("alice", "cal") + "h.ics", rule,
                    "alice")
    busy(history, "/alice/cal/", "20260301T000000Z", "20260401T000000Z")
    later = busy(history, "/alice/cal/", "20290301T000000Z",
                 "20290302T000000Z")
    assert later == busy(fresh, "/alice/cal/", "20290301T000000Z",
                         "20290302T000000Z")
    # 24 occurrences a day stay within the bound: exact, not a day of BUSY.
    assert len(later) == 24
    assert later[0] == "FREEBUSY;FBTYPE=BUSY:20290301T000000Z/20290301T001500Z"


def test_expansion_overflow_is_busy_every_time(gateway):
    path = gateway.mkcalendar("alice", "cal")
    gateway.put(path + "long.ics", event(
        "long", "DTSTART:20260110T100000Z", "DTEND:99991231T110000Z"),
        "alice")
    for _ in range(2):
        assert busy(gateway, path, "20260101T000000Z",
                    "20260201T000000Z") == [
            "FREEBUSY;FBTYPE=BUSY:20260110T100000Z/20260201T000000Z"]


def test_object_no_parser_can_read_is_busy_and_logged(gateway):
    """A file written by another program with a rule nobody can expand
    (BYDAY=XX): what can be read of it is busy, from its start on."""
    path = gateway.mkcalendar("alice", "cal")
    gateway.put(path + "ok.ics", event(
        "ok", "DTSTART:20260105T080000Z", "DTEND:20260105T090000Z"), "alice")
    (storage_folder(gateway, path) / "broken.ics").write_text(event(
        "broken", "DTSTART:20260107T100000Z", "DTEND:20260107T110000Z",
        "RRULE:FREQ=WEEKLY;BYDAY=XX"))
    lines = busy(gateway, path, "20260101T000000Z", "20260201T000000Z")
    assert lines == [
        "FREEBUSY;FBTYPE=BUSY:20260105T080000Z/20260105T090000Z",
        "FREEBUSY;FBTYPE=BUSY:20260107T100000Z/20260201T000000Z"]
    (storage_folder(gateway, path) / "garbage.ics").write_bytes(
        b"\xff\xfe not iCalendar at all")
    assert busy(gateway, path, "20260101T000000Z", "20260201T000000Z") == [
        "FREEBUSY;FBTYPE=BUSY:20260101T000000Z/20260201T000000Z"]
    log = gateway.log()
    assert "/alice/cal/broken.ics" in log and "garbage.ics" in log


def test_a_change_in_the_same_second_is_seen(gateway):
    """Racily clean files: a file rewritten in place with the same size and
    its old mtime put back (what a coarse clock shows) is still read again
    by the next query."""
    path = gateway.mkcalendar("alice", "cal")
    gateway.put(path + "a.ics", event(
        "a", "DTSTART:20260105T080000Z", "DTEND:20260105T090000Z"), "alice")
    window = ("20260101T000000Z", "20260201T000000Z")
    assert busy(gateway, path, *window) == [
        "FREEBUSY;FBTYPE=BUSY:20260105T080000Z/20260105T090000Z"]
    folder = storage_folder(gateway, path)
    item = folder / "a.ics"
    item_stat, folder_stat = item.stat(), folder.stat()
    with open(item, "r+") as f:  # in place: same inode, same size
        text = f.read().replace("20260105T08", "20260106T08").replace(
            "20260105T09", "20260106T09")
        f.seek(0)
        f.write(text)
    os.utime(item, ns=(item_stat.st_atime_ns, item_stat.st_mtime_ns))
    os.utime(folder, ns=(folder_stat.st_atime_ns, folder_stat.st_mtime_ns))
    assert busy(gateway, path, *window) == [
        "FREEBUSY;FBTYPE=BUSY:20260106T080000Z/20260106T090000Z"]
    # A new file through the API is in the very next answer.
    gateway.put(path + "b.ics", event(
        "b", "DTSTART:20260107T080000Z", "DTEND:20260107T090000Z"), "alice")
    assert len(busy(gateway, path, *window)) == 2


def test_valid_icalendar_radicale_refuses_is_stored_and_counted(gateway):
    path = gateway.mkcalendar("alice", "cal")
    gateway.put(path + "period.ics", event(
        "period", "DTSTART:20260101T100000Z", "DTEND:20260101T110000Z",
        "RDATE;VALUE=PERIOD:20260105T100000Z/20260105T120000Z,"
        "20260106T100000Z/PT3H"), "alice")
    gateway.put(path + "until.ics", event(
        "until", "DTSTART:20260110T100000Z", "DTEND:20260110T110000Z",
        "RRULE:FREQ=DAILY;UNTIL=20260101T000000Z"), "alice")
    for day in (20, 21):
        gateway.put(path + "fb%d.ics" % day, calendar(
            "BEGIN:VFREEBUSY", "DTSTAMP:20260101T000000Z",
            "FREEBUSY;FBTYPE=BUSY-UNAVAILABLE:202601%dT100000Z/PT1H" % day,
            "END:VFREEBUSY"), "alice")
    assert "RDATE;VALUE=PERIOD" in gateway.request(
        "GET", path + "period.ics", user="alice").text
    assert busy(gateway, path, "20260101T000000Z", "20260201T000000Z") == [
        "FREEBUSY;FBTYPE=BUSY:20260101T100000Z/20260101T110000Z",
        "FREEBUSY;FBTYPE=BUSY:20260105T100000Z/20260105T120000Z",
        "FREEBUSY;FBTYPE=BUSY:20260106T100000Z/20260106T130000Z",
        "FREEBUSY;FBTYPE=BUSY:20260110T100000Z/20260110T110000Z",
        "FREEBUSY;FBTYPE=BUSY-UNAVAILABLE:20260120T100000Z/20260120T110000Z",
        "FREEBUSY;FBTYPE=BUSY-UNAVAILABLE:20260121T100000Z/20260121T110000Z"]


def test_depth_infinity_reaches_nested_calendars(gateway_factory):
    gateway = gateway_factory(rights=(
        "[owner]\nuser: .+\ncollection: {user}(/.*)?\npermissions: RWrw\n"
        "[root]\nuser: .+\ncollection:\npermissions: R\n"))
    assert gateway.request("MKCOL", "/alice/team/",
                           user="alice").status_code == 201
    path = gateway.mkcalendar("alice", "team/cal")
    gateway.put(path + "a.ics", event(
        "a", "DTSTART:20260105T080000Z", "DTEND:20260105T090000Z"), "alice")
    body = FB % ("20260101T000000Z", "20260201T000000Z")
    deep = gateway.report("/alice/", body, "alice", depth="infinity")
    assert freebusy_lines(deep.text) == [
        "FREEBUSY;FBTYPE=BUSY:20260105T080000Z/20260105T090000Z"]
    shallow = gateway.report("/alice/", body, "alice", depth="1")
    assert freebusy_lines(shallow.text) == []


def test_degenerate_rule_is_bounded_and_stalls_nobody_else(gateway):
    """INTERVAL=0 in alice's calendar: her REPORT answers busy within a
    bounded time while bob's REPORTs go on answering meanwhile."""
    alice = gateway.mkcalendar("alice", "cal")
    bob = gateway.mkcalendar("bob", "cal")
    gateway.put(bob + "b.ics", event(
        "b", "DTSTART:20260105T080000Z", "DTEND:20260105T090000Z"), "bob")
    for uid, rule in (("zero", "RRULE:FREQ=DAILY;INTERVAL=0"),
                      ("sparse", "RRULE:FREQ=SECONDLY;BYMONTH=2;"
                       "BYMONTHDAY=30"),
                      ("dense", "RRULE:FREQ=SECONDLY")):
        gateway.put(alice + uid + ".ics", event(
            uid, "DTSTART:20260110T100000Z", "DTEND:20260110T100001Z",
            rule), "alice")
    answers = {}

    def alice_asks():
        answers["alice"] = busy(gateway, alice, "20260101T000000Z",
                                "20260201T000000Z")

    worker = threading.Thread(target=alice_asks)
    worker.start()
    bob_times = []
    while worker.is_alive() and len(bob_times) < 50:
        began = time.monotonic()
        assert busy(gateway, bob, "20260101T000000Z", "20260201T000000Z",
                    user="bob") == [
            "FREEBUSY;FBTYPE=BUSY:20260105T080000Z/20260105T090000Z"]
        bob_times.append(time.monotonic() - began)
    worker.join(60)
    assert not worker.is_alive()
    assert answers["alice"] == [
        "FREEBUSY;FBTYPE=BUSY:20260109T100000Z/20260201T000000Z"]
    assert max(bob_times, default=0) < 5


def test_memory_stays_bounded_across_centuries(gateway):
    path = gateway.mkcalendar("alice", "cal")
    gateway.put(path + "s.ics", event(
        "s", "DTSTART:18000101T100000Z", "DTEND:18000101T100001Z",
        "RRULE:FREQ=SECONDLY"), "alice")
    gateway.put(path + "w.ics", event(
        "w", "DTSTART:18000101T100000Z", "DTEND:18000101T110000Z",
        "RRULE:FREQ=DAILY"), "alice")

    def rss_mb():
        status = pathlib.Path("/proc/%d/status" % gateway.process.pid)
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    busy(gateway, path, "20260101T000000Z", "20260201T000000Z")
    before = rss_mb()
    # Thirty five-year windows spread over the centuries (the daily rule
    # is fast-forwarded, the secondly one busy by the day).
    for year in range(1800, 2990, 40):
        lines = busy(gateway, path, "%d0101T000000Z" % year,
                     "%d0101T000000Z" % (year + 5))
        assert lines  # busy, never free
    assert rss_mb() - before < 200


def test_odd_windows_are_refused_cleanly(gateway):
    path = gateway.mkcalendar("alice", "cal")
    for start, end in (("00010101T000000Z", "00010201T000000Z"),
                       ("99991201T000000Z", "99991231T000000Z"),
                       ("100000101T000000Z", "100000201T000000Z"),
                       ("20260101T000000Z", "99990101T000000Z")):
        response = gateway.report(path, FB % (start, end), "alice")
        assert response.status_code == 400, (start, response.status_code)
    assert busy(gateway, path, "20260101T000000Z", "20260201T000000Z") == []


def test_server_keeps_answering_during_parallel_writes_and_reads(gateway):
    path = gateway.mkcalendar("alice", "cal")
    errors = []

    def writer(n):
        for i in range(10):
            try:
                gateway.put(path + "w%d-%d.ics" % (n, i), event(
                    "w%d-%d" % (n, i), "DTSTART:202601%02dT080000Z" % (i + 1),
                    "DTEND:202601%02dT090000Z" % (i + 1)), "alice")
            except (AssertionError, requests.RequestException) as e:
                errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for _ in range(10):
        busy(gateway, path, "20260101T000000Z", "20260201T000000Z")
    for t in threads:
        t.join(60)
    assert not errors
    assert len(busy(gateway, path, "20260101T000000Z",
                    "20260201T000000Z")) == 10
