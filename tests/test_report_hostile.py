"""Hostile and odd REPORT bodies: a clear 4xx, no harm, server still fine.

Also the engine's cache: an answer must follow every change of the
calendar (PUT, overwrite, DELETE, MOVE, calendar-timezone, transparency),
because the per-object cache is keyed by etag and file fingerprints.
"""

import pytest

from fbcheck import assert_same_periods, periods_of
from icaldata import event

REPORT = ('<?xml version="1.0" encoding="utf-8"?>'
          '<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">'
          '<C:time-range start="%s" end="%s"/></C:free-busy-query>')
JAN = REPORT % ("20260105T000000Z", "20260110T000000Z")


@pytest.fixture
def calendar(gateway):
    path = gateway.mkcalendar("alice", "cal")
    gateway.put(path + "a.ics", event("a", "20260106T100000Z",
                                      "20260106T110000Z"), "alice")
    return path


def assert_alive(gateway, path):
    response = gateway.report(path, JAN, "alice")
    assert response.status_code == 200
    assert_same_periods(periods_of(response.content), {
        "BUSY": [("20260106T100000Z", "20260106T110000Z")]})


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">
<C:time-range start="&lol9;" end="20260110T000000Z"/></C:free-busy-query>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE q [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">
<C:time-range start="&xxe;" end="20260110T000000Z"/></C:free-busy-query>"""

PARAMETER_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE q [<!ENTITY % ext SYSTEM "http://127.0.0.1:9/evil.dtd"> %ext;]>
<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">
<C:time-range start="20260105T000000Z" end="20260110T000000Z"/>
</C:free-busy-query>"""

QUADRATIC_BLOWUP = ('<?xml version="1.0"?><!DOCTYPE q [<!ENTITY a "%s">]>'
                    '<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:'
                    'caldav">%s</C:free-busy-query>'
                    % ("x" * 50000, "&a;" * 5000))


@pytest.mark.parametrize("body", [
    BILLION_LAUGHS, EXTERNAL_ENTITY, PARAMETER_ENTITY, QUADRATIC_BLOWUP,
    "<C:free-busy-query xmlns:C='urn:ietf:params:xml:ns:caldav'>",
    "not xml at all",
    "<?xml version='1.0'?><C:free-busy-query xmlns:C='urn:ietf:params:xml:"
    "ns:caldav'><C:time-range start='20260105T000000Z' "
    "end='20260110T000000Z'/><C:time-range start='20260105T000000Z' "
    "end='20260110T000000Z'/></C:free-busy-query>",
], ids=["billion-laughs", "external-entity", "parameter-entity",
        "quadratic-blowup", "unclosed", "not-xml", "two-time-ranges"])
def test_hostile_body_is_400(gateway, calendar, body):
    response = gateway.report(calendar, body, "alice")
    assert response.status_code == 400, response.text
    assert "root:" not in response.text      # nothing of /etc/passwd
    assert_alive(gateway, calendar)


def test_oversized_body_is_refused(gateway, calendar):
    body = ('<?xml version="1.0"?><C:free-busy-query xmlns:C="urn:ietf:'
            'params:xml:ns:caldav"><!--%s--><C:time-range start="20260105T'
            '000000Z" end="20260110T000000Z"/></C:free-busy-query>'
            % ("x" * (2 << 20)))
    response = gateway.report(calendar, body, "alice")
    assert response.status_code in (400, 413), response.status_code
    assert_alive(gateway, calendar)


@pytest.mark.parametrize("start,end", [
    ("20260110T000000Z", "20260105T000000Z"),      # reversed
    ("20260105T000000Z", "20260105T000000Z"),      # empty
    ("00010101T000000Z", "99991231T000000Z"),      # absurdly long
    ("20260105T000000Z", "20360105T000000Z"),      # over max_window_days
    ("2026-01-05T00:00:00Z", "20260110T000000Z"),  # not iCalendar form
    ("20260105T000000+0100", "20260110T000000Z"),  # offset, not UTC
    ("20261305T000000Z", "20261310T000000Z"),      # month 13
    ("", "20260110T000000Z"),
])
def test_bad_window_is_400(gateway, calendar, start, end):
    response = gateway.report(calendar, REPORT % (start, end), "alice")
    assert response.status_code == 400, response.text


def test_open_ended_window_is_400(gateway, calendar):
    body = ('<?xml version="1.0"?><C:free-busy-query xmlns:C="urn:ietf:'
            'params:xml:ns:caldav"><C:time-range start="20260105T000000Z"/>'
            '</C:free-busy-query>')
    assert gateway.report(calendar, body, "alice").status_code == 400


def test_max_window_days_is_configurable(gateway_factory):
    gateway = gateway_factory(extra="max_window_days = 7\n")
    path = gateway.mkcalendar("alice", "cal")
    assert gateway.report(path, REPORT % ("20260101T000000Z",
                                          "20260108T000000Z"),
                          "alice").status_code == 200
    assert gateway.report(path, REPORT % ("20260101T000000Z",
                                          "20260108T000001Z"),
                          "alice").status_code == 400


def test_unknown_collection_is_404(gateway, calendar):
    assert gateway.report("/alice/nothing/", JAN, "alice").status_code == 404


def test_unauthenticated_is_401(gateway, calendar):
    assert gateway.report(calendar, JAN, None).status_code == 401


def test_answers_follow_changes(gateway, calendar):
    """Overwrite, add, delete, move: every change shows at once."""
    def busy():
        response = gateway.report(calendar, JAN, "alice")
        assert response.status_code == 200
        return periods_of(response.content).get("BUSY", [])

    assert busy() == [("20260106T100000Z", "20260106T110000Z")]
    gateway.put(calendar + "a.ics", event("a", "20260107T100000Z",
                                          "20260107T120000Z"), "alice")
    assert busy() == [("20260107T100000Z", "20260107T120000Z")]
    gateway.put(calendar + "b.ics", event("b", "20260108T100000Z",
                                          "20260108T110000Z"), "alice")
    assert busy() == [("20260107T100000Z", "20260107T120000Z"),
                      ("20260108T100000Z", "20260108T110000Z")]
    gateway.put(calendar + "b.ics", event(
        "b", "20260108T100000Z", "20260108T110000Z",
        "STATUS:CANCELLED\r\n"), "alice")
    assert busy() == [("20260107T100000Z", "20260107T120000Z")]
    assert gateway.request("DELETE", calendar + "a.ics",
                           user="alice").status_code in (200, 204)
    assert busy() == []
    other = gateway.mkcalendar("alice", "other")
    gateway.put(other + "c.ics", event("c", "20260109T100000Z",
                                       "20260109T110000Z"), "alice")
    response = gateway.request(
        "MOVE", other + "c.ics", user="alice",
        headers={"Destination": gateway.url + calendar + "c.ics"})
    assert response.status_code in (201, 204), response.text
    assert busy() == [("20260109T100000Z", "20260109T110000Z")]


def test_transparent_calendar_left_out_of_home(gateway, calendar):
    """schedule-calendar-transp=transparent: Zimbra's "exclude from
    free/busy" in standard form; set and unset by PROPPATCH."""
    holidays = gateway.mkcalendar("alice", "holidays")
    gateway.put(holidays + "h.ics", event("h", "20260108T000000Z",
                                          "20260109T000000Z"), "alice")

    def home_busy():
        response = gateway.report("/alice/", JAN, "alice", depth="1")
        assert response.status_code == 200
        return periods_of(response.content).get("BUSY", [])

    def set_transp(value):
        response = gateway.proppatch(
            holidays, "<C:schedule-calendar-transp><C:%s/>"
            "</C:schedule-calendar-transp>" % value, "alice")
        assert response.status_code == 207, response.text

    both = [("20260106T100000Z", "20260106T110000Z"),
            ("20260108T000000Z", "20260109T000000Z")]
    assert home_busy() == both
    set_transp("transparent")
    assert home_busy() == both[:1]
    response = gateway.request(
        "PROPFIND", holidays,
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:'
        'params:xml:ns:caldav"><D:prop><C:schedule-calendar-transp/>'
        '</D:prop></D:propfind>', user="alice", headers={"Depth": "0"})
    assert "transparent" in response.text
    set_transp("opaque")
    assert home_busy() == both


def test_occurrence_limit_reports_busy_not_free(gateway_factory):
    """Past Radicale's max_freebusy_occurrence the rest counts as busy:
    no data is never reported as free."""
    gateway = gateway_factory(
        extra="[reporting]\nmax_freebusy_occurrence = 10\n")
    path = gateway.mkcalendar("alice", "cal")
    gateway.put(path + "r.ics", event(
        "r", "20260101T100000Z", "20260101T101000Z",
        "RRULE:FREQ=HOURLY\r\n"), "alice")
    response = gateway.report(path, REPORT % ("20260101T000000Z",
                                              "20260103T000000Z"), "alice")
    assert response.status_code == 200, response.text
    busy = periods_of(response.content)["BUSY"]
    # Never a gap after the last occurrence computed: the answer ends busy.
    assert busy[-1][1] == "20260103T000000Z"


def test_item_edited_in_place_outside_radicale_is_noticed(gateway, calendar):
    """An admin's script rewriting an item file in place (no rename, so
    the folder's mtime stays) is seen by the next full scan."""
    import time
    folder = gateway.directory / "collections" / "collection-root" / \
        "alice" / "cal"
    assert gateway.report(calendar, JAN, "alice").status_code == 200
    item = folder / "a.ics"
    data = item.read_bytes()
    with open(item, "r+b") as f:                   # same inode, in place
        f.write(data.replace(b"20260106T10", b"20260107T10").replace(
            b"20260106T11", b"20260107T11"))
    time.sleep(5.5)     # FULL_SCAN_SECONDS in gateway/local.py, plus slack
    response = gateway.report(calendar, JAN, "alice")
    assert_same_periods(periods_of(response.content), {
        "BUSY": [("20260107T100000Z", "20260107T110000Z")]})


def test_concurrent_reports_and_writes(gateway, calendar):
    """Readers in parallel with a writer: every answer is well formed, and
    the last one has every event written."""
    import concurrent.futures
    home = gateway.mkcalendar("alice", "more")

    def write(n):
        gateway.put(home + "w%d.ics" % n, event(
            "w%d" % n, "20260108T%02d0000Z" % (n % 20),
            "20260108T%02d3000Z" % (n % 20)), "alice")
        return None

    def read(_):
        response = gateway.report("/alice/", JAN, "alice", depth="1")
        assert response.status_code == 200
        return periods_of(response.content)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(write, n) for n in range(20)] + \
            [pool.submit(read, n) for n in range(40)]
        for job in jobs:
            job.result()
    busy = read(None)["BUSY"]
    assert ("20260106T100000Z", "20260106T110000Z") in busy
    assert len([p for p in busy if p[0].startswith("20260108")]) == 20
