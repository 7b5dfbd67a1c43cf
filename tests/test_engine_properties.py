"""Property tests: the REPORT answer equals a brute-force minute grid.

For random event series (tests/naive_expander.py says which rule forms
and what they mean), random windows of up to 60 days and random orders of
queries, every free-busy-query REPORT on the calendar, through the real
application in-process, must cover exactly the minutes the naive
reference says, per FBTYPE.  The engine keeps expansions between queries,
so each window is compared with a fresh reference whatever was asked
before, and a PUT or DELETE between queries must show at once.  With
``[reporting] max_freebusy_occurrence`` set low the engine may report
more busy time past the limit, never less, and never an answer that
depends on the windows asked before.

The default run is derandomized (the same examples every time, about 20
seconds); ``FBGW_LONG=1`` draws many more random examples.
"""

import datetime
import itertools
import os
import pathlib
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from fbcheck import periods_of
from inprocess import InProcessGateway
from naive_expander import (Override, Rule, Series, UTC, describe, raster,
                            subtract, union)

LONG = os.environ.get("FBGW_LONG") == "1"


def profile(examples: int):
    return settings(max_examples=examples * 20 if LONG else examples,
                    derandomize=not LONG, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


#: Series start in this span, which has both 2026 Berlin DST changes
#: (29 March, 25 October).
BASE = datetime.datetime(2026, 2, 1)
SPAN_DAYS = 300
WINDOW_BASE = datetime.datetime(2026, 1, 15, tzinfo=UTC)
WINDOW_SPAN_MINUTES = 335 * 1440
MAX_WINDOW_MINUTES = 60 * 1440
#: Berlin wall times are drawn from 05:00 to 21:59 and last at most two
#: hours, so no instance touches a DST gap or fold (where RFC 5545 and
#: libraries may legitimately differ); the series still cross DST.
BERLIN_HOURS = (5, 21)
STATUSES = st.sampled_from([None, None, None, "CONFIRMED", "TENTATIVE",
                            "TENTATIVE", "CANCELLED"])
TRANSPS = st.sampled_from([None, None, None, "OPAQUE", "TRANSPARENT"])

_uids = itertools.count()


# -- strategies --------------------------------------------------------

@st.composite
def start_time(draw, frame: str, near=None, days_around: int = 0,
               odd_minutes: bool = False):
    """A start in ``frame``: anywhere in the base span, or within
    ``days_around`` days of ``near``.  ``odd_minutes`` gives minutes that
    are 2 mod 5 (never a drawn series' instance start)."""
    if near is None:
        day = BASE.date() + datetime.timedelta(
            days=draw(st.integers(0, SPAN_DAYS)))
    else:
        base = near if isinstance(near, datetime.date) and not isinstance(
            near, datetime.datetime) else near.date()
        day = base + datetime.timedelta(
            days=draw(st.integers(-days_around, days_around)))
    if frame == "DATE":
        return day
    if frame == "BERLIN":
        hour = draw(st.integers(*BERLIN_HOURS))
    else:
        hour = draw(st.integers(0, 23))
    minute = draw(st.integers(0, 11)) * 5 + (2 if odd_minutes else 0)
    return datetime.datetime.combine(day, datetime.time(hour, minute))


def duration(frame: str):
    if frame == "DATE":
        return st.integers(1, 3).map(lambda d: datetime.timedelta(days=d))
    longest = 24 if frame == "BERLIN" else 120      # in 5-minute steps
    return st.integers(1, longest).map(
        lambda n: datetime.timedelta(minutes=5 * n))


@st.composite
def rules(draw, frame: str, start, early_until: bool = False):
    """A rule; UNTIL is never before DTSTART unless ``early_until``."""
    freqs = ["DAILY", "WEEKLY", "MONTHLY"] + (
        ["HOURLY"] if frame == "UTC" else [])
    freq = draw(st.sampled_from(freqs))
    interval = draw(st.integers(1, 7 if freq == "HOURLY" else 3))
    byday = ()
    if freq == "WEEKLY":
        byday = tuple(sorted(set(draw(st.lists(st.integers(0, 6),
                                               max_size=3)))
                             | {start.weekday()}))
    end = draw(st.sampled_from(["count", "until", "until", "none"]))
    count = until = None
    if end == "count":
        count = draw(st.integers(1, 30))
    elif end == "until":
        if frame == "DATE":
            until = start + datetime.timedelta(days=draw(st.integers(
                -3 if early_until else 0, 90)))
        else:
            # Sometimes before DTSTART (DTSTART still counts), sometimes
            # exactly on an instance (that instance still counts).
            offset = draw(st.integers(-3 * 288 if early_until else 0,
                                      90 * 288)) * 5
            exact = Series("x", frame, start, datetime.timedelta(
                minutes=5)).to_utc(start)
            until = exact + datetime.timedelta(minutes=offset)
    return Rule(freq, interval, byday, count, until)


@st.composite
def series(draw, uid_prefix: str = "s", dense: bool = False,
           odd: bool = False):
    """A series; ``odd`` also draws what Radicale's PUT refuses:
    RDATE;VALUE=PERIOD and UNTIL before DTSTART."""
    frame = draw(st.sampled_from(["UTC", "UTC", "BERLIN", "DATE"]))
    start = draw(start_time(frame))
    uid = "%s%d" % (uid_prefix, next(_uids))
    plain = Series(uid, frame, start, draw(duration(frame)),
                   duration_property=draw(st.booleans()),
                   status=draw(STATUSES), transp=draw(TRANSPS))
    if dense:
        freq = draw(st.sampled_from(["HOURLY", "DAILY"])) \
            if frame == "UTC" else "DAILY"
        rule = Rule(freq, draw(st.integers(1, 3)))
        return plain._replace(rule=rule)
    if draw(st.integers(0, 9)) < 2:
        return plain                                 # a single event
    plain = plain._replace(rule=draw(rules(frame, start, odd)))
    horizon = start + datetime.timedelta(days=120)
    instances = [s for s, _, _ in plain.instances(horizon)]
    picks = st.integers(0, max(len(instances) - 1, 0))
    exdates = tuple(sorted({instances[i] for i in draw(
        st.lists(picks, max_size=3))} - {start}))
    rdates = tuple(sorted(set(draw(st.lists(
        start_time(frame, start, 60), max_size=2)))))
    ranged = frame != "DATE" and draw(st.integers(0, 3)) == 0 or \
        frame == "DATE" and draw(st.integers(0, 5)) == 0
    periods = ()
    if odd and frame != "DATE" and not ranged:
        starts = draw(st.lists(start_time(frame, start, 60, True),
                               max_size=2, unique=True))
        periods = tuple((s, s + draw(duration(frame))) for s in starts)
    plain = plain._replace(exdates=exdates, rdates=rdates,
                           rdate_periods=periods)
    remaining = [s for s, _, _ in plain.instances(horizon)
                 if s not in exdates]
    overrides = []
    limit = len(remaining)
    if ranged and remaining:
        index = draw(st.integers(0, len(remaining) - 1))
        rid = remaining[index]
        new_start = draw(start_time(frame, rid, 10))
        overrides.append(Override(rid, new_start, draw(duration(frame)),
                                  draw(STATUSES), draw(TRANSPS), True))
        limit = index
    if limit:
        for index in sorted(set(draw(st.lists(st.integers(0, limit - 1),
                                              max_size=2)))):
            rid = remaining[index]
            if draw(st.booleans()):
                overrides.append(Override(rid, rid, plain.duration,
                                          "CANCELLED"))
            else:
                overrides.append(Override(
                    rid, draw(start_time(frame, rid, 2)),
                    draw(duration(frame)), draw(STATUSES), draw(TRANSPS)))
    return plain._replace(overrides=tuple(overrides))


def _minute(value: datetime.datetime) -> datetime.datetime:
    return value.replace(second=0, microsecond=0)


@st.composite
def windows(draw, anchors=()):
    """A window of an hour to 60 days: anywhere in the year, near one of
    ``anchors`` (aware UTC datetimes, e.g. series starts), or starting
    close to the first of a month (the engine expands by month)."""
    kind = draw(st.sampled_from(["any", "anchor", "anchor", "month"]))
    if kind == "anchor" and anchors:
        start = draw(st.sampled_from(list(anchors))) + datetime.timedelta(
            minutes=draw(st.integers(-3 * 1440, 40 * 1440)))
    elif kind == "month":
        start = datetime.datetime(2026, draw(st.integers(2, 12)), 1,
                                  tzinfo=UTC) + datetime.timedelta(
            minutes=draw(st.integers(-1440, 1440)))
    else:
        start = WINDOW_BASE + datetime.timedelta(
            minutes=draw(st.integers(0, WINDOW_SPAN_MINUTES)))
    length = draw(st.one_of(st.integers(60, 3 * 1440),
                            st.integers(60, MAX_WINDOW_MINUTES)))
    start = _minute(start)
    return start, start + datetime.timedelta(minutes=length)


def anchors_of(all_series):
    found = []
    for one in all_series:
        found.append(one.to_utc(one.start))
        found += [one.to_utc(o.start) for o in one.overrides]
    return found


def draw_windows(data, all_series, least: int, most: int):
    return data.draw(st.lists(windows(anchors_of(all_series)),
                              min_size=least, max_size=most),
                     label="windows")


# -- reference and engine ---------------------------------------------

def reference(all_series, window):
    start, end = window
    margin = datetime.timedelta(days=15)        # shifts, durations, zones
    periods = []
    for one in all_series:
        periods.extend(one.busy_periods(end + margin))
    return raster(periods, start, end)


def _stamp(value: datetime.datetime) -> str:
    return value.strftime("%Y%m%dT%H%M%SZ")


def engine(gateway, path, window):
    answer = gateway.freebusy(path, _stamp(window[0]), _stamp(window[1]))
    assert answer.status == 200, (answer.status, answer.text)
    periods = []
    for kind, spans in periods_of(answer.body).items():
        for start, end in spans:
            periods.append((_parse(start), _parse(end), kind))
    return raster(periods, *window)


def _parse(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC)


def explain(all_series, window, got, want) -> str:
    lines = ["window %s/%s" % (_stamp(window[0]), _stamp(window[1]))]
    for kind in sorted(set(got) | set(want)):
        missing = subtract(want.get(kind, []), got.get(kind, []))
        extra = subtract(got.get(kind, []), want.get(kind, []))
        if missing:
            lines.append("%s missing (reported free): %s" % (
                kind, describe(missing, window[0])[:6]))
        if extra:
            lines.append("%s extra: %s" % (kind, describe(extra,
                                                          window[0])[:6]))
    lines.append("objects:")
    lines += [one.ical() for one in all_series]
    return "\n".join(lines)


class Calendars:
    """One in-process gateway per module; a new calendar per example."""

    def __init__(self, **kwargs) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="fbgw-props-")
        self.gateway = InProcessGateway(pathlib.Path(self.folder.name),
                                        **kwargs)
        self.count = itertools.count()

    def new(self, all_series, put: bool = True) -> str:
        """A new calendar holding ``all_series``: PUT, or written into
        its folder (as another program would) when ``put`` is false."""
        path = self.gateway.mkcalendar("alice", "p%d" % next(self.count))
        for one in all_series:
            if put:
                self.gateway.put(path + one.uid + ".ics", one.ical(),
                                 "alice")
            else:
                self.gateway.store_file(path, one.uid + ".ics", one.ical())
        return path


_plain = None
_limited = None
#: max_freebusy_occurrence of the limited gateway.
LIMIT = 8


def plain() -> Calendars:
    global _plain
    if _plain is None:
        _plain = Calendars()
    return _plain


def limited() -> Calendars:
    global _limited
    if _limited is None:
        _limited = Calendars(reporting="max_freebusy_occurrence = %d"
                             % LIMIT)
    return _limited


def teardown_module(module):
    for calendars in (_plain, _limited):
        if calendars is not None:
            calendars.folder.cleanup()


def assert_matches(gateway, path, all_series, window):
    got, want = engine(gateway, path, window), reference(all_series, window)
    assert got == want, explain(all_series, window, got, want)


# -- properties --------------------------------------------------------

@profile(60)
@given(st.lists(series(), min_size=1, max_size=4), st.data())
def test_report_equals_minute_grid_reference(all_series, data):
    asked = draw_windows(data, all_series, 1, 4)
    calendars = plain()
    path = calendars.new(all_series)
    for window in asked:
        assert_matches(calendars.gateway, path, all_series, window)
    # The first window again, after the others: the kept expansions of
    # other windows must not change it.
    assert_matches(calendars.gateway, path, all_series, asked[0])


@profile(30)
@given(st.lists(series(odd=True), min_size=1, max_size=3), st.data())
def test_objects_put_refuses_still_count(all_series, data):
    """RDATE;VALUE=PERIOD and UNTIL before DTSTART: Radicale 3.9's PUT
    refuses both (vobject cannot read PERIOD; its own UNTIL check), but
    calendars synced or edited by other programs hold them, and the
    engine must count them: a PERIOD instance has its own end, DTSTART
    is always an instance (RFC 5545 3.8.5.3)."""
    asked = draw_windows(data, all_series, 1, 3)
    calendars = plain()
    path = calendars.new(all_series, put=False)
    for window in asked:
        assert_matches(calendars.gateway, path, all_series, window)


@profile(30)
@given(st.lists(series(), min_size=1, max_size=3), st.data(),
       st.integers(0, 2), st.booleans(), series(uid_prefix="n"))
def test_put_and_delete_between_queries(all_series, data, which, delete,
                                        replacement):
    asked = draw_windows(data, all_series + [replacement], 1, 3)
    calendars = plain()
    gateway = calendars.gateway
    path = calendars.new(all_series)
    for window in asked:
        assert_matches(gateway, path, all_series, window)
    index = which % len(all_series)
    old = all_series[index]
    after = list(all_series)
    if delete:
        gateway.delete(path + old.uid + ".ics", "alice")
        del after[index]
    else:
        # Same href, same UID, new content.
        new = replacement._replace(uid=old.uid)
        gateway.put(path + old.uid + ".ics", new.ical(), "alice")
        after[index] = new
    for window in reversed(asked):
        assert_matches(gateway, path, after, window)


@profile(30)
@given(st.lists(st.one_of(series(dense=True), series()), min_size=1,
                max_size=3), st.data())
def test_occurrence_limit_never_reports_free_time(all_series, data):
    """Past max_freebusy_occurrence the engine may say busy where the
    reference is free, never the reverse, and the answer for a window is
    the same whatever was asked before (compared with a copy of the
    calendar, under other UIDs so nothing is shared in the cache, asked
    for that window first)."""
    asked = draw_windows(data, all_series, 2, 4)
    calendars = limited()
    gateway = calendars.gateway
    path = calendars.new(all_series)
    seen = {}
    for window in asked:
        got = engine(gateway, path, window)
        want = reference(all_series, window)
        for kind, spans in want.items():
            cover = union(got.get(kind, []) + got.get("BUSY", []))
            assert not subtract(spans, cover), explain(
                all_series, window, got, want)
        seen[window] = got
    for window in asked[1:]:
        copy = [one._replace(uid=one.uid + "-copy") for one in all_series]
        fresh_path = calendars.new(copy)
        fresh = engine(gateway, fresh_path, window)
        assert seen[window] == fresh, (
            "answer depends on earlier windows: %s after %s\n%s" % (
                window, asked[:asked.index(window)],
                explain(all_series, window, seen[window], fresh)))


# -- named cases the properties found or must keep finding --------------

JAN = (datetime.datetime(2026, 1, 1, tzinfo=UTC),
       datetime.datetime(2026, 2, 1, tzinfo=UTC))


def _check_named(all_series, window, put: bool = True):
    calendars = plain()
    path = calendars.new(all_series, put)
    assert_matches(calendars.gateway, path, all_series, window)


def test_this_and_future_moves_instances_past_the_master_end():
    """A RANGE=THISANDFUTURE override that shifts the last instances
    beyond the master's last instance: the moved ones are busy."""
    master = Series("tf-past-end%d" % next(_uids), "UTC",
                    datetime.datetime(2026, 1, 10, 9, 0),
                    datetime.timedelta(hours=1),
                    rule=Rule("DAILY", count=5))
    moved = master._replace(overrides=(Override(
        datetime.datetime(2026, 1, 12, 9, 0),
        datetime.datetime(2026, 1, 22, 9, 0), datetime.timedelta(hours=1),
        this_and_future=True),))
    # Instances 12, 13, 14 Jan move to 22, 23, 24 Jan.
    _check_named([moved], (datetime.datetime(2026, 1, 20, tzinfo=UTC),
                           datetime.datetime(2026, 1, 26, tzinfo=UTC)))
    _check_named([moved], JAN)
    # Instances 12, 13, 14 Jan move to 1, 2, 3 Feb: asked for 2-4 Feb,
    # after the override's own instance and a month after the master.
    later = master._replace(uid=master.uid + "-feb", overrides=(Override(
        datetime.datetime(2026, 1, 12, 9, 0),
        datetime.datetime(2026, 2, 1, 9, 0), datetime.timedelta(hours=1),
        this_and_future=True),))
    _check_named([later], (datetime.datetime(2026, 2, 2, tzinfo=UTC),
                           datetime.datetime(2026, 2, 4, tzinfo=UTC)))


def test_until_before_dtstart_still_counts_dtstart():
    one = Series("until-before%d" % next(_uids), "UTC",
                 datetime.datetime(2026, 1, 10, 9, 0),
                 datetime.timedelta(hours=1), rule=Rule(
                     "DAILY", until=datetime.datetime(2026, 1, 9, 9, 0,
                                                      tzinfo=UTC)))
    _check_named([one], JAN, put=False)


def test_rdate_period_has_its_own_end():
    one = Series("rdate-period%d" % next(_uids), "UTC",
                 datetime.datetime(2026, 1, 10, 9, 0),
                 datetime.timedelta(hours=1), rule=Rule("DAILY", count=2),
                 rdate_periods=((datetime.datetime(2026, 1, 15, 13, 2),
                                 datetime.datetime(2026, 1, 15, 16, 2)),))
    _check_named([one], JAN, put=False)


def test_berlin_weekly_series_across_dst():
    one = Series("berlin-dst%d" % next(_uids), "BERLIN",
                 datetime.datetime(2026, 3, 20, 9, 30),
                 datetime.timedelta(minutes=45), duration_property=True,
                 rule=Rule("WEEKLY", byday=(0, 4)), overrides=(Override(
                     datetime.datetime(2026, 4, 3, 9, 30),
                     datetime.datetime(2026, 4, 3, 10, 30),
                     datetime.timedelta(hours=1), "TENTATIVE"),))
    _check_named([one], (datetime.datetime(2026, 3, 16, tzinfo=UTC),
                         datetime.datetime(2026, 4, 10, tzinfo=UTC)))


def test_occurrence_limit_answer_does_not_depend_on_history():
    """Low max_freebusy_occurrence: a window asked after another window
    answers as it does when asked first.  The engine expands by month
    and counts from the start of what it expands, so asking March first
    must not turn early April into "busy past the limit" when early
    April asked first is exact."""
    calendars = limited()
    gateway = calendars.gateway
    hourly = Series("limit-history%d" % next(_uids), "UTC",
                    datetime.datetime(2026, 3, 1, 9, 0),
                    datetime.timedelta(hours=1), rule=Rule("DAILY"))
    spanning = (datetime.datetime(2026, 3, 25, tzinfo=UTC),
                datetime.datetime(2026, 4, 2, tzinfo=UTC))
    april = (datetime.datetime(2026, 4, 2, tzinfo=UTC),
             datetime.datetime(2026, 4, 5, tzinfo=UTC))
    path = calendars.new([hourly])
    engine(gateway, path, spanning)
    after = engine(gateway, path, april)
    fresh_path = calendars.new([hourly._replace(uid=hourly.uid + "-b")])
    first = engine(gateway, fresh_path, april)
    assert after == first, (after, first)
    want = reference([hourly], april)
    assert not subtract(want["BUSY"], first.get("BUSY", []))


# -- rules begun years before the window (fast-forwarding) -------------

@st.composite
def old_series(draw):
    """A rule the engine may fast-forward (no COUNT, no BYxxx, no
    overrides or RDATE; steps under a day only in UTC), begun two to
    five years before the windows, sometimes with an UNTIL before or in
    them and EXDATEs among the instances the windows see."""
    frame = draw(st.sampled_from(["UTC", "UTC", "BERLIN", "DATE"]))
    years = draw(st.integers(2, 5))
    start = draw(start_time(frame))
    start = start - datetime.timedelta(days=364 * years)   # same weekday
    freq = draw(st.sampled_from(["DAILY", "WEEKLY"] + (
        ["HOURLY"] if frame == "UTC" else [])))
    interval = draw(st.integers(1, 7 if freq == "HOURLY" else 3))
    until = None
    if draw(st.booleans()):
        day = BASE.date() + datetime.timedelta(days=draw(st.integers(
            -400, SPAN_DAYS)))
        until = day if frame == "DATE" else datetime.datetime.combine(
            day, datetime.time(12), tzinfo=UTC)
    uid = "f%d" % next(_uids)
    one = Series(uid, frame, start, draw(duration(frame)),
                 duration_property=draw(st.booleans()),
                 status=draw(STATUSES), transp=draw(TRANSPS),
                 rule=Rule(freq, interval, (), None, until))
    near = [s for s, _, _ in one.instances(
        datetime.datetime(2026, 3, 1) if frame != "DATE"
        else datetime.date(2026, 3, 1)) if s >= start.__class__(
            2026, 1, 1)][:40]
    if near and draw(st.booleans()):
        exdates = tuple(sorted({near[i] for i in draw(st.lists(
            st.integers(0, len(near) - 1), max_size=3))}))
        one = one._replace(exdates=exdates)
    return one


@profile(40)
@given(st.lists(old_series(), min_size=1, max_size=3), st.data())
def test_rules_begun_long_before_the_window_are_fast_forwarded_exactly(
        all_series, data):
    """With the fast-forward threshold at two steps, every window of
    these series is answered from a copy whose DTSTART moved to just
    before the window's year; the answer must equal the reference that
    counts every instance from the real DTSTART."""
    from gateway.engine import calendar_object
    threshold = calendar_object.FAST_FORWARD_AFTER
    calendar_object.FAST_FORWARD_AFTER = 2
    try:
        asked = draw_windows(data, all_series, 1, 3)
        calendars = plain()
        # Written as files: Radicale's PUT refuses rules with more than
        # 10,000 instances before UNTIL; synced calendars hold them.
        path = calendars.new(all_series, put=False)
        for window in asked:
            assert_matches(calendars.gateway, path, all_series, window)
    finally:
        calendar_object.FAST_FORWARD_AFTER = threshold
