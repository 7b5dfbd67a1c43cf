"""The busy index (gateway/engine/busy_index.py) against computations
that keep nothing.

The index keeps each calendar's busy time merged per month and updates
only what one changed object touches, so its risk is history: a part
left behind by an object that changed or went, a month merged before a
change, a declined period counted for its decliner.  Random sequences
of PUTs, overwrites, DELETEs, files written by another program, and
queries of random windows run against one calendar; after every step
each window's REPORT must equal the minute-grid reference
(tests/naive_expander.py), and a lookup that leaves out what the owner
declined must equal a computation from the stored texts with the
per-object engine alone (BusyObject.periods, no index, no cache).

Derandomized by default (the same examples every run); ``FBGW_LONG=1``
draws many more.
"""

import array
import datetime
import random

from hypothesis import given, strategies as st

from gateway import vfreebusy
from gateway.engine import busy_index
from gateway.engine.busy_index import Month
from gateway.engine.calendar_object import BusyObject
from gateway.model import (BUSY, BUSY_TENTATIVE, UTC, Period, Window,
                           normalize)
from inprocess import InProcessGateway
from test_engine_properties import (assert_matches,
                                    draw_windows, profile, series)

ALICE = "mailto:alice@example.com"




def declined_by_alice(text: str) -> str:
    """The same object with alice as an attendee who declined it."""
    return text.replace("BEGIN:VEVENT\r\n", "BEGIN:VEVENT\r\nATTENDEE;"
                        "PARTSTAT=DECLINED:%s\r\n" % ALICE)


def uncached(gateway, path, window, excluding):
    """Busy time from the stored texts, one fresh BusyObject each."""
    app = gateway.app
    with app._storage.acquire_lock("r"):
        collection = next(iter(app._storage.discover(path)))
        periods = []
        for item in collection.get_all():
            periods.extend(BusyObject(item.serialize(), UTC,
                                      app.local.limits).periods(
                                          Window(*window), excluding))
    return normalize(periods, Window(*window))


def indexed(gateway, path, window, excluding):
    app = gateway.app
    with app._storage.acquire_lock("r"):
        collection = next(iter(app._storage.discover(path)))
        return app.local.calendar_periods(collection, Window(*window),
                                          excluding)


@profile(60)
@given(st.lists(series(), min_size=1, max_size=4), st.data())
def test_index_follows_changes_like_an_uncached_computation(calendars,
                                                            initial, data):
    gateway = calendars.gateway
    path = calendars.new([])
    current = {}
    texts = {}

    def put(one, stored_by_other_program=False):
        text = one.ical()
        if data.draw(st.integers(0, 3), label="declined") == 0:
            text = declined_by_alice(text)
        if stored_by_other_program:
            gateway.store_file(path, one.uid + ".ics", text)
        else:
            gateway.put(path + one.uid + ".ics", text, "alice")
        current[one.uid] = one
        texts[one.uid] = text

    for one in initial:
        put(one)
    steps = data.draw(st.lists(st.sampled_from(
        ["new", "overwrite", "delete", "other program", "query"]),
        min_size=2, max_size=5), label="steps")
    asked = []
    for step in steps:
        if step in ("overwrite", "delete") and current:
            uid = data.draw(st.sampled_from(sorted(current)), label="uid")
            if step == "delete":
                gateway.delete(path + uid + ".ics", "alice")
                del current[uid]
                del texts[uid]
            else:
                put(data.draw(series(), label="replacement")._replace(
                    uid=uid))
        elif step in ("new", "other program"):
            put(data.draw(series(uid_prefix="n"), label="new"),
                stored_by_other_program=step == "other program")
        everything = list(current.values()) or initial
        # The windows asked before again: their months are kept, and
        # must have followed the change.
        asked = draw_windows(data, everything, 1, 2) + asked
        for window in asked:
            assert_matches(gateway, path, list(current.values()), window)
            assert indexed(gateway, path, window, frozenset([ALICE])) == \
                uncached(gateway, path, window, frozenset([ALICE])), (
                    window, texts)


# -- the index's own pieces ---------------------------------------------------

def _spans(busy):
    return [list(zip(starts, ends)) for starts, ends in busy]


@profile(200)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(1, 60),
                          st.integers(0, 2)), max_size=40),
       st.integers(0, 450), st.integers(1, 450))
def test_months_answer_as_a_merge_of_everything(periods, low, length):
    """Months of 100 seconds: periods split into them and put as parts
    of random objects; any window's answer equals merging the periods
    clipped to it (second by second)."""
    high = low + length
    months = [Month(0) for _ in range(5)]
    for number, month in enumerate(months):
        month.key, month.end = number * 100, number * 100 + 100
    rng = random.Random(len(periods))
    for number, (start, size, code) in enumerate(periods):
        for month in months:
            part = array.array("q")
            busy_index.clip_triples(array.array(
                "q", [start, start + size, code]), month.key, month.end,
                part)
            if part:
                href = "o%d" % rng.randrange(8)
                old = month.parts.get(href, array.array("q"))
                month.put(href, old + part, [])
    out = busy_index.empty()
    for month in months:
        busy_index.window_slice(month.busy(frozenset()), low, high, out)
    want = [set(), set(), set()]
    for start, size, code in periods:
        want[code].update(range(max(start, low), min(start + size, high)))
    for code, spans in enumerate(_spans(out)):
        got = set()
        for start, end in spans:
            assert start < end
            got.update(range(start, end))
        assert got == want[code]
        # coalesced: no two spans touch or overlap
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))


def test_declined_counts_except_for_its_decliner():
    month = Month(0)
    month.key, month.end = 0, 1000
    month.put("a", array.array("q", [10, 20, 0]),
              [(15, 30, 0, frozenset(["mailto:bob@x"]))])
    month.put("b", array.array("q", []),
              [(40, 50, 1, frozenset(["mailto:carol@x"]))])
    assert _spans(month.busy(frozenset())) == [[(10, 30)], [(40, 50)], []]
    assert _spans(month.busy(frozenset(["mailto:bob@x"]))) == \
        [[(10, 20)], [(40, 50)], []]
    assert _spans(month.busy(frozenset(["mailto:carol@x"]))) == \
        [[(10, 30)], [], []]
    month.drop("a")
    assert _spans(month.busy(frozenset())) == [[], [(40, 50)], []]


def test_periods_across_month_ends_are_one_line(calendars):
    """A three-day event over a month end is one FREEBUSY line, kept in
    two months."""
    gateway = calendars.gateway
    path = calendars.new([])
    gateway.put(path + "x.ics", (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
        "BEGIN:VEVENT\r\nUID:x\r\nDTSTAMP:20260101T000000Z\r\n"
        "DTSTART:20260130T120000Z\r\nDTEND:20260202T120000Z\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"), "alice")
    answer = gateway.freebusy(path, "20260101T000000Z", "20260301T000000Z")
    assert answer.status == 200
    assert [line for line in answer.text.splitlines()
            if line.startswith("FREEBUSY")] == [
        "FREEBUSY;FBTYPE=BUSY:20260130T120000Z/20260202T120000Z"]


def test_whole_seconds_never_freer():
    """Sub-second ends are rounded up and starts down, as the VFREEBUSY
    text would round them."""
    start = datetime.datetime(2026, 1, 1, 10, 0, 0, 500000, tzinfo=UTC)
    end = datetime.datetime(2026, 1, 1, 11, 0, 0, 1, tzinfo=UTC)
    busy = busy_index.busy_of_periods(
        [Period(start, end, BUSY_TENTATIVE)],
        Window(datetime.datetime(2026, 1, 1, tzinfo=UTC),
               datetime.datetime(2026, 1, 2, tzinfo=UTC)))
    assert busy_index.periods_of(busy) == [Period(
        start.replace(microsecond=0),
        datetime.datetime(2026, 1, 1, 11, 0, 1, tzinfo=UTC),
        BUSY_TENTATIVE)]
    assert busy_index.periods_of(busy_index.merge([
        busy, busy_index.busy_of_periods([Period(
            start, end, BUSY)], Window(start, end))]))[0].fbtype == BUSY


def test_indexes_stay_within_their_half_of_the_cache(tmp_path):
    """``[gateway] local_cache_size`` bounds the indexes too: asked
    about many calendars and months, their cost stays within half of
    it (calendars used least recently go), and answers stay exact."""
    gateway = InProcessGateway(tmp_path, extra="local_cache_size = 40\n")
    engine = gateway.app.local
    paths = []
    for number in range(5):
        path = gateway.mkcalendar("alice", "c%d" % number)
        for hour in range(8, 14):
            gateway.put(path + "w%d.ics" % hour, (
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
                "BEGIN:VEVENT\r\nUID:w%d\r\nDTSTAMP:20260101T000000Z\r\n"
                "DTSTART:2026010%dT%02d0000Z\r\nDURATION:PT30M\r\n"
                "RRULE:FREQ=WEEKLY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
                % (hour, number + 1, hour)), "alice")
        paths.append(path)
    evicted = False
    for month in range(1, 13):
        for number, path in enumerate(paths):
            answer = gateway.freebusy(path, "2026%02d01T000000Z" % month,
                                      "2026%02d08T000000Z" % month)
            lines = [line for line in answer.text.splitlines()
                     if line.startswith("FREEBUSY")]
            assert len(lines) == 6, (month, number, lines)
            assert sum(engine._index_costs.values()) <= 20
            evicted |= len(engine._listings) < number + 1
    assert evicted


def test_render_writes_whole_seconds_outward_either_way():
    """The VFREEBUSY text from periods (outbox, read URL) and from the
    index's seconds (REPORT) is the same, ends rounded up."""
    window = Window(datetime.datetime(2026, 1, 1, tzinfo=UTC),
                    datetime.datetime(2026, 1, 2, tzinfo=UTC))
    start = datetime.datetime(2026, 1, 1, 10, 0, 0, 500000, tzinfo=UTC)
    end = datetime.datetime(2026, 1, 1, 11, 0, 0, 1, tzinfo=UTC)
    stamp = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    text = vfreebusy.render([Period(start, end, BUSY)], window,
                            dtstamp=stamp)
    assert "FREEBUSY;FBTYPE=BUSY:20260101T100000Z/20260101T110001Z\r\n" \
        in text
    busy = busy_index.busy_of_periods([Period(start, end, BUSY)], window)
    assert vfreebusy.render_seconds(
        ((s, e, "BUSY") for s, e, _ in busy_index.lines(busy)), window,
        dtstamp=stamp) == text


@profile(100)
@given(st.integers(0, 253_400_000_000), st.integers(1, 10 ** 9),
       st.integers(0, 10 ** 12))
def test_a_reports_header_is_what_icalendar_writes(start, length, stamp):
    """The REPORT's VFREEBUSY header is written by hand (fast); with the
    same window and DTSTAMP it is byte for byte icalendar's."""
    epoch = datetime.datetime(1970, 1, 1, tzinfo=UTC)
    last = datetime.datetime(9999, 12, 31, tzinfo=UTC)
    window = Window(epoch + datetime.timedelta(seconds=start),
                    epoch + datetime.timedelta(seconds=min(
                        start + length, (last - epoch).total_seconds())))
    dtstamp = datetime.datetime(2026, 12, 6, tzinfo=UTC) + \
        datetime.timedelta(microseconds=stamp)
    text = vfreebusy.render_seconds([], window, dtstamp=dtstamp)
    assert vfreebusy._icalendar_head(window, None, None, None, dtstamp,
                                     ()) in text
