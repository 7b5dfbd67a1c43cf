"""Fast tier: stitching the pieces a long window was split into."""

import datetime

from gateway.engine.fanout import _stitched
from gateway.model import (BUSY, BUSY_UNAVAILABLE, UTC, LookupResult, Period,
                           Reason, Window)


def T(day):
    return datetime.datetime(2026, 1, day, tzinfo=UTC)


WINDOW = Window(T(1), T(31))
FIRST, SECOND, THIRD = (Window(T(1), T(11)), Window(T(11), T(21)),
                        Window(T(21), T(31)))


def ok(*periods):
    return LookupResult(tuple(periods))


def test_pieces_are_merged():
    result = _stitched([(FIRST, ok(Period(T(10), T(12)))),
                        (SECOND, ok(Period(T(11), T(13))))],
                       Window(T(1), T(21)))
    assert result.periods == (Period(T(10), T(13), BUSY),)


def test_a_piece_without_data_is_unavailable_never_free():
    result = _stitched([(FIRST, ok(Period(T(2), T(3)))),
                        (SECOND, LookupResult.failed(Reason.NO_DATA)),
                        (THIRD, ok())], WINDOW)
    assert result.ok
    assert result.periods == (Period(T(2), T(3), BUSY),
                              Period(T(11), T(21), BUSY_UNAVAILABLE))
    # ... and a face that can say "no data" knows which part it was.
    assert result.nodata == ((T(11), T(21)),)


def test_no_data_spans_of_pieces_are_kept_and_clipped():
    first = LookupResult.busy([Period(T(2), T(3))], FIRST,
                              [(T(5), T(12))])
    assert first.nodata == ((T(5), T(11)),)
    assert Period(T(5), T(11), BUSY_UNAVAILABLE) in first.periods
    result = _stitched([(FIRST, first),
                        (SECOND, LookupResult.busy((), SECOND,
                                                   [(T(11), T(12))]))],
                       Window(T(1), T(21)))
    assert result.nodata == ((T(5), T(12)),)
    assert result.periods == (Period(T(2), T(3), BUSY),
                              Period(T(5), T(12), BUSY_UNAVAILABLE))


def test_no_data_everywhere_is_no_data():
    result = _stitched([(FIRST, LookupResult.failed(Reason.NO_DATA)),
                        (SECOND, LookupResult.failed(Reason.NO_DATA))],
                       Window(T(1), T(21)))
    assert result.failure is Reason.NO_DATA


def test_any_other_failure_fails_the_address():
    for reason in (Reason.TIMED_OUT, Reason.UNKNOWN_USER,
                   Reason.NO_AUTHORITY, Reason.RATE_LIMITED):
        result = _stitched([(FIRST, ok()),
                            (SECOND, LookupResult.failed(Reason.NO_DATA)),
                            (THIRD, LookupResult.failed(reason))], WINDOW)
        assert result.failure is reason
