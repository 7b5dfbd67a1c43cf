"""Fast tier: one calendar object's busy time, in-process, no server.

The classes of the base issue at the smallest scale: every path that
cannot compute busy time answers busy, within bounded time and memory."""

import datetime
import threading
import time

import pytest

from gateway.engine.calendar_object import (BusyObject, Limits,
                                            lenient_periods, months)
from gateway.model import UTC, Period, Window, normalize
from gateway.engine.watchdog import TimeLimitExceeded, time_limit


def W(a, b):
    return Window(datetime.datetime(*a, tzinfo=UTC),
                  datetime.datetime(*b, tzinfo=UTC))


def T(*a):
    return datetime.datetime(*a, tzinfo=UTC)


def ev(*lines, uid="x"):
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
            "BEGIN:VEVENT\r\nUID:%s\r\nDTSTAMP:20260101T000000Z\r\n" % uid +
            "\r\n".join(lines) + "\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")


def answer(obj, window, excluding=frozenset()):
    return normalize(obj.periods(window, excluding), window)


JAN = W((2026, 1, 1), (2026, 2, 1))


@pytest.mark.parametrize("lines,window,expected", [
    # Every five hours from 1900-01-01 09:00 UTC: 2026-03-02 00:00 is
    # 1,105,935 hours (221,187 steps) later, so the day's instances start
    # at 00:00, 05:00 ... 20:00.
    (("DTSTART:19000101T090000Z", "DURATION:PT1H",
      "RRULE:FREQ=HOURLY;INTERVAL=5"), W((2026, 3, 2), (2026, 3, 3)),
     [Period(T(2026, 3, 2, h), T(2026, 3, 2, h + 1)) for h in
      (0, 5, 10, 15, 20)]),
    # Ten minutes every 45 since 1970 (29 million minutes before the
    # window: far too many instances to iterate within the time limit).
    (("DTSTART:19700101T000000Z", "DTEND:19700101T001000Z",
      "RRULE:FREQ=MINUTELY;INTERVAL=45"), W((2026, 7, 1, 9), (2026, 7, 1, 11)),
     [Period(T(2026, 7, 1, h, m), T(2026, 7, 1, h, m + 10)) for h, m in
      ((9, 0), (9, 45), (10, 30))]),
    # Daily in Berlin's wall time since 1850, across 2026's DST change,
    # and after an EXDATE in the window.
    (("DTSTART;TZID=Europe/Berlin:18500101T090000", "DURATION:PT1H",
      "RRULE:FREQ=DAILY", "EXDATE;TZID=Europe/Berlin:20260330T090000"),
     W((2026, 3, 28), (2026, 4, 1)),
     [Period(T(2026, 3, 28, 8), T(2026, 3, 28, 9)),
      Period(T(2026, 3, 29, 7), T(2026, 3, 29, 8)),
      Period(T(2026, 3, 31, 7), T(2026, 3, 31, 8))]),
    # Ended years before the window: nothing, and nothing iterated.
    (("DTSTART:18000101T000000Z", "DURATION:PT1M",
      "RRULE:FREQ=MINUTELY;UNTIL=20200101T000000Z"),
     W((2026, 1, 1), (2026, 2, 1)), []),
])
def test_rules_begun_long_ago_are_exact_in_todays_windows(lines, window,
                                                          expected):
    """Fast-forwarded (gateway.engine.calendar_object.FAST_FORWARD_AFTER):
    the answer is exact, not the conservative busy span a rule gets when
    it cannot be expanded within the time limit."""
    obj = BusyObject(ev(*lines), UTC, Limits(seconds=1.0))
    assert answer(obj, window) == expected
    assert not obj.timed_out


def test_months_cover_the_window():
    assert months(W((2026, 1, 31), (2026, 3, 1, 0, 0, 1))) == [
        T(2026, 1, 1), T(2026, 2, 1), T(2026, 3, 1)]


def test_single_event_and_declined_by_asker():
    obj = BusyObject(ev("DTSTART:20260105T100000Z", "DTEND:20260105T110000Z",
                        "ATTENDEE;PARTSTAT=DECLINED:mailto:bob@example.com"),
                     UTC)
    assert answer(obj, JAN) == [Period(T(2026, 1, 5, 10), T(2026, 1, 5, 11))]
    assert answer(obj, JAN, frozenset(["mailto:bob@example.com"])) == []


def test_same_answer_whatever_was_asked_before():
    text = ev("DTSTART:20260101T000000Z", "DTEND:20260101T001500Z",
              "RRULE:FREQ=HOURLY")
    late = W((2029, 3, 1), (2029, 3, 2))
    fresh = answer(BusyObject(text, UTC, Limits(100)), late)
    used = BusyObject(text, UTC, Limits(100))
    answer(used, W((2026, 3, 1), (2026, 4, 1)))
    answer(used, W((2028, 11, 1), (2029, 4, 1)))
    assert answer(used, late) == fresh
    assert len(fresh) == 24


def test_limit_past_a_day_is_busy_never_free():
    obj = BusyObject(ev("DTSTART:20260101T000000Z", "DTEND:20260101T000100Z",
                        "RRULE:FREQ=MINUTELY;INTERVAL=2"), UTC, Limits(100))
    assert answer(obj, W((2026, 1, 2), (2026, 1, 3))) == [
        Period(T(2026, 1, 2), T(2026, 1, 3))]


@pytest.mark.parametrize("rule", [
    "RRULE:FREQ=DAILY;INTERVAL=0",
    "RRULE:FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=30",
    "RRULE:FREQ=WEEKLY;BYDAY=XX",
    "RRULE:FREQ=SOMETIMES",
])
def test_unexpandable_rule_is_busy_from_its_start(rule):
    began = time.monotonic()
    obj = BusyObject(ev("DTSTART:20260110T100000Z", "DTEND:20260110T110000Z",
                        rule), UTC, Limits(10000, 0.5))
    assert answer(obj, JAN) == [Period(T(2026, 1, 10, 10), T(2026, 2, 1))]
    assert answer(obj, W((2027, 1, 1), (2027, 2, 1))) == [
        Period(T(2027, 1, 1), T(2027, 2, 1))]
    assert time.monotonic() - began < 10


def test_unexpandable_rule_with_until_is_busy_until_then():
    obj = BusyObject(ev("DTSTART:20260110T100000Z", "DTEND:20260110T110000Z",
                        "RRULE:FREQ=WEEKLY;BYDAY=XX;UNTIL=20260120T000000Z"),
                     UTC)
    assert answer(obj, JAN) == [Period(T(2026, 1, 10, 10), T(2026, 1, 21))]


def test_transparent_broken_rule_adds_nothing():
    obj = BusyObject(ev("DTSTART:20260110T100000Z", "DTEND:20260110T110000Z",
                        "TRANSP:TRANSPARENT", "RRULE:FREQ=WEEKLY;BYDAY=XX"),
                     UTC)
    assert answer(obj, JAN) == []


def test_overflow_near_year_9999_is_busy():
    obj = BusyObject(ev("DTSTART:20260110T100000Z", "DTEND:99991231T110000Z"),
                     UTC)
    assert answer(obj, JAN) == [Period(T(2026, 1, 10, 10), T(2026, 2, 1))]


def test_until_before_dtstart_keeps_dtstart():
    obj = BusyObject(ev("DTSTART:20260110T100000Z", "DTEND:20260110T110000Z",
                        "RRULE:FREQ=DAILY;UNTIL=20260101T000000Z"), UTC)
    assert answer(obj, JAN) == [Period(T(2026, 1, 10, 10),
                                       T(2026, 1, 10, 11))]


def test_unparsable_text_counts_what_can_be_read():
    text = ("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n"
            "DTSTART;TZID=Europe/Berlin:20260105T100000\r\n"
            "DURATION:PT2H\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\n"
            "DTSTART:20260107T100000Z\r\nDTEND:20260107T110000Z\r\n"
            "RRULE:FREQ=WEEKLY;UNTIL=20260115T000000Z\r\nEND:VEVENT\r\n"
            "not even a line\r\n")
    assert normalize(lenient_periods(text, UTC), JAN) == [
        Period(T(2026, 1, 5, 9), T(2026, 1, 5, 11)),
        Period(T(2026, 1, 7, 10), T(2026, 1, 16))]
    obj = BusyObject("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:2026\r\n",
                     UTC)
    assert answer(obj, JAN) == [Period(JAN.start, JAN.end)]


def test_memory_of_one_object_is_bounded():
    obj = BusyObject(ev("DTSTART:18000101T000000Z", "DTEND:18000101T000001Z",
                        "RRULE:FREQ=SECONDLY"), UTC, Limits(10000))
    for year in range(1800, 2990, 10):
        assert answer(obj, W((year, 1, 1), (year + 5, 1, 1)))
    assert obj.cost < 50000


def test_time_limit_stops_a_loop_and_leaves_no_stray_exception():
    with pytest.raises(TimeLimitExceeded):
        with time_limit(0.2):
            while True:
                pass
    with time_limit(0.2):
        pass
    time.sleep(0.4)  # a stray exception would surface here
    results = []

    def spin(seconds):
        try:
            with time_limit(seconds):
                while True:
                    pass
        except TimeLimitExceeded:
            results.append(seconds)

    threads = [threading.Thread(target=spin, args=(0.1 * n,))
               for n in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 4


def test_deadline_answers_busy_and_keeps_going_next_time():
    """Months still unexpanded at the deadline are busy for that answer,
    not kept: the next query goes on and becomes exact."""
    obj = BusyObject(ev("DTSTART:20260101T000000Z", "DTEND:20260101T000100Z",
                        "RRULE:FREQ=HOURLY;INTERVAL=2"), UTC)
    first = answer(obj, W((2026, 1, 1), (2026, 7, 1)))
    rushed = normalize(obj.periods(W((2027, 1, 1), (2027, 3, 1)),
                                   deadline=time.monotonic() - 1),
                       W((2027, 1, 1), (2027, 3, 1)))
    assert rushed == [Period(T(2027, 1, 1), T(2027, 3, 1))]
    exact = answer(obj, W((2027, 1, 1), (2027, 1, 2)))
    assert len(exact) == 12
    assert len(first) == 12 * 181


def test_dense_month_is_kept_coarser_never_freer():
    """A month with more busy periods than an object may keep is widened
    to 15-minute slots: bounded, and busy wherever an occurrence is."""
    obj = BusyObject(ev("DTSTART:20260101T000000Z", "DTEND:20260101T000100Z",
                        "RRULE:FREQ=MINUTELY;INTERVAL=20"), UTC)
    month = answer(obj, JAN)
    assert len(month) <= 1000
    assert month == [Period(JAN.start, JAN.end)] or all(
        p.start.minute % 15 == 0 for p in month)
    for minute in range(0, 24 * 60, 20):
        moment = JAN.start + datetime.timedelta(days=3, minutes=minute)
        assert any(p.start <= moment < p.end for p in month)
