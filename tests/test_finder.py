"""The meeting-time finder's core (gateway.engine.finder), in-process.

Pure: LookupResults and working hours in, ranked slots out.  Hypothesis
draws attendees with any mix of busy types, no-data spans, failed
lookups and working hours, and every answer is checked against a
slot-by-slot reading of the same periods written out here: the states,
the confidence, the ranking, the threshold, that slots never overlap,
that the best slot on the grid is found, and that a slot with 100 %
confidence never lies across a required attendee's busy or no-data time.
"""

import datetime

import pytest
from hypothesis import given, settings, strategies as st

from gateway.engine import finder
from gateway.engine.finder import FinderAttendee, find_slots
from gateway.model import (BUSY, BUSY_TENTATIVE, BUSY_UNAVAILABLE, UTC,
                           LookupResult, Period, Reason, Window)

DAY = datetime.datetime(2026, 12, 7, tzinfo=UTC)     # a Monday
WINDOW = Window(DAY, DAY + datetime.timedelta(days=3))
HOUR = datetime.timedelta(hours=1)
QUARTER = datetime.timedelta(minutes=15)
SEVERITY = {s: i for i, s in enumerate(finder.STATES)}


def at(hours: float) -> datetime.datetime:
    return DAY + datetime.timedelta(hours=hours)


def overlaps(a_start, a_end, b_start, b_end) -> bool:
    return a_start < b_end and b_start < a_end


def naive_state(attendee: FinderAttendee, start, end) -> str:
    """The attendee's state in [start, end), read slot by slot."""
    result = attendee.result
    if not result.ok:
        touched = [finder.UNKNOWN]
    else:
        touched = [finder.UNKNOWN for s, e in result.nodata
                   if overlaps(s, e, start, end)]
        for period in result.periods:
            if not overlaps(period.start, period.end, start, end):
                continue
            if period.fbtype == BUSY_UNAVAILABLE:
                # Only the part that is not a no-data span is oof.
                moment = max(period.start, start)
                stop = min(period.end, end)
                covered = sorted((max(s, moment), min(e, stop))
                                 for s, e in result.nodata
                                 if overlaps(s, e, moment, stop))
                for s, e in covered:
                    if s > moment:
                        break
                    moment = max(moment, e)
                if moment < stop:
                    touched.append(finder.OOF)
            else:
                touched.append(finder.BUSY_STATE if period.fbtype == BUSY
                               else finder.TENTATIVE)
    if attendee.working is not None and not inside(attendee.working, start,
                                                   end):
        touched.append(finder.OOF)
    return max(touched, key=SEVERITY.get, default=finder.FREE)


def inside(spans, start, end) -> bool:
    """Is [start, end) covered by the union of ``spans``?"""
    moment = start
    for s, e in sorted(spans):
        if s > moment:
            break
        moment = max(moment, e)
    return moment >= end


def naive_key(attendees, start, end):
    states = [naive_state(a, start, end) for a in attendees]
    required = sum(finder.CHANCE[s] for a, s in zip(attendees, states)
                   if a.required)
    total = sum(finder.CHANCE[s] for s in states)
    return (-round(required, 6), -round(total, 6), start)


def allowed(attendees, start, end) -> bool:
    return all(inside(a.working, start, end) for a in attendees
               if a.required and a.working is not None)


# -- strategies ---------------------------------------------------------------

quarters = st.integers(min_value=0, max_value=3 * 24 * 4)


@st.composite
def spans(draw, max_size=6):
    out = []
    for _ in range(draw(st.integers(0, max_size))):
        start = draw(quarters)
        length = draw(st.integers(1, 24))
        out.append((DAY + start * QUARTER,
                    DAY + min(start + length, 3 * 24 * 4) * QUARTER))
    return [(s, e) for s, e in out if e > s]


@st.composite
def attendees(draw):
    out = []
    for index in range(draw(st.integers(0, 5))):
        if draw(st.integers(0, 6)) == 0:
            result = LookupResult.failed(draw(st.sampled_from(list(Reason))))
        else:
            periods = [Period(s, e, draw(st.sampled_from(
                (BUSY, BUSY_TENTATIVE, BUSY_UNAVAILABLE))))
                for s, e in draw(spans())]
            result = LookupResult.busy(periods, WINDOW, draw(spans(3)))
        working = draw(st.one_of(st.none(), spans(4), st.just(list(
            finder.outside([], WINDOW)))))
        out.append(FinderAttendee("a%d@example.com" % index,
                                  draw(st.booleans()), result, working))
    return out


durations = st.sampled_from([QUARTER, 2 * QUARTER, HOUR, 90 * QUARTER / 15,
                             3 * HOUR])
steps = st.sampled_from([None, QUARTER, 2 * QUARTER, HOUR])


@settings(max_examples=150, deadline=None)
@given(attendees(), durations, steps, st.integers(1, 8),
       st.sampled_from([0.0, 49.0, 50.0, 75.0, 100.0]))
def test_suggestions_agree_with_the_periods(people, duration, step, limit,
                                            minimum):
    found = find_slots(people, duration, WINDOW, step, limit, minimum)
    step = step or min(finder.DEFAULT_STEP, duration)
    assert len(found) <= limit
    for slot in found:
        assert slot.end - slot.start == duration
        assert WINDOW.start <= slot.start and slot.end <= WINDOW.end
        assert (slot.start - WINDOW.start) % step == datetime.timedelta(0)
        assert allowed(people, slot.start, slot.end)
        states = {a.address: naive_state(a, slot.start, slot.end)
                  for a in people}
        assert slot.states == states
        expected = round(100 * sum(finder.CHANCE[s] for s in states.values())
                         / len(people), 2) if people else 100.0
        assert slot.confidence == pytest.approx(expected, abs=0.006)
        assert slot.confidence >= minimum - 0.006
        if slot.confidence == 100.0:
            for person in people:
                result = person.result
                assert result.ok
                assert not any(overlaps(s, e, slot.start, slot.end)
                               for s, e in result.nodata)
                if person.required:
                    assert not any(overlaps(p.start, p.end, slot.start,
                                            slot.end)
                                   for p in result.periods)
    # Best first, and never two overlapping.
    keys = [naive_key(people, s.start, s.end) for s in found]
    assert keys == sorted(keys)
    for i, a in enumerate(found):
        for b in found[i + 1:]:
            assert not overlaps(a.start, a.end, b.start, b.end)
    # Every slot of the grid that qualifies was either taken or lost to
    # a better overlapping one; the best of them all comes first.
    qualifying = []
    start = WINDOW.start
    while start + duration <= WINDOW.end:
        end = start + duration
        if allowed(people, start, end):
            states = [naive_state(a, start, end) for a in people]
            confidence = 100 * sum(finder.CHANCE[s] for s in states) / \
                len(people) if people else 100.0
            if confidence >= minimum - 1e-9:
                qualifying.append((naive_key(people, start, end), start))
        start += step
    if qualifying:
        assert found, "no suggestion though %d slots qualify" % len(
            qualifying)
        assert naive_key(people, found[0].start, found[0].end) == \
            min(qualifying)[0]
    else:
        assert not found
    if len(found) < limit:
        for key, start in qualifying:
            assert any(overlaps(start, start + duration, s.start, s.end)
                       for s in found), start


def test_no_data_is_unknown_never_free_nor_oof():
    """A no-data span is BUSY-UNAVAILABLE in the periods too; the finder
    calls it unknown (49 %), and a real BUSY-UNAVAILABLE beside it oof."""
    result = LookupResult.busy([Period(at(14), at(15), BUSY_UNAVAILABLE)],
                               WINDOW, [(at(10), at(11))])
    carol = FinderAttendee("carol@x", True, result, None)
    found = find_slots([carol], HOUR, Window(at(9), at(16)), HOUR, 10)
    states = {s.start: (s.states["carol@x"], s.confidence) for s in found}
    assert states[at(10)] == (finder.UNKNOWN, 49.0)
    assert states[at(14)] == (finder.OOF, 0.0)
    assert states[at(9)] == (finder.FREE, 100.0)
    # A free slot ranks above the no-data one, which ranks above oof.
    order = [s.start for s in found]
    assert order.index(at(9)) < order.index(at(10)) < order.index(at(14))


def test_a_failed_lookup_is_unknown_everywhere():
    dave = FinderAttendee("dave@x", True,
                          LookupResult.failed(Reason.TIMED_OUT), None)
    erin = FinderAttendee("erin@x", True, LookupResult.busy(
        [Period(at(9), at(10), BUSY)], WINDOW), None)
    found = find_slots([dave, erin], HOUR, Window(at(9), at(12)), HOUR)
    assert [(s.start, s.states["dave@x"], s.states["erin@x"], s.confidence)
            for s in found] == [
        (at(10), "unknown", "free", 74.5), (at(11), "unknown", "free", 74.5),
        (at(9), "unknown", "busy", 24.5)]


def test_working_hours_bind_required_attendees_only():
    """Slots lie inside the required attendees' working hours; an
    optional attendee outside theirs is oof for the slot."""
    free = LookupResult.busy([], WINDOW)
    organizer = FinderAttendee("o@x", True, free, [(at(9), at(17))])
    tokyo = FinderAttendee("t@x", False, free, [(at(0), at(8))])
    found = find_slots([organizer, tokyo], HOUR, WINDOW, HOUR, 20)
    assert {s.start for s in found} == {at(h) for h in range(9, 17)}
    assert all(s.states == {"o@x": "free", "t@x": "oof"} for s in found)
    assert all(s.confidence == 50.0 for s in found)
    # With both required there is no common hour at all.
    both = find_slots([organizer, tokyo._replace(required=True)], HOUR,
                      WINDOW, HOUR, 20)
    assert both == []


def test_required_attendees_rank_before_optional_ones():
    window = Window(at(9), at(11))
    required = FinderAttendee("r@x", True, LookupResult.busy(
        [Period(at(9), at(10), BUSY)], window), None)
    optional = FinderAttendee("o@x", False, LookupResult.busy(
        [Period(at(10), at(11), BUSY)], window), None)
    found = find_slots([required, optional], HOUR, window, HOUR)
    assert [s.start for s in found] == [at(10), at(9)]
    assert [s.confidence for s in found] == [50.0, 50.0]


def test_minimum_percentage_and_max_candidates():
    window = Window(at(9), at(17))
    busy = LookupResult.busy([Period(at(9), at(13), BUSY)], window)
    people = [FinderAttendee("a@x", True, busy, None),
              FinderAttendee("b@x", True, LookupResult.busy([], window),
                             None)]
    assert [s.start for s in find_slots(people, HOUR, window, HOUR, 10,
                                        100.0)] == [at(h) for h in
                                                    range(13, 17)]
    assert len(find_slots(people, HOUR, window, HOUR, 2)) == 2
    assert len(find_slots(people, HOUR, window, HOUR, 10, 50.0)) == 8


def test_degenerate_inputs():
    window = Window(at(9), at(10))
    assert find_slots([], HOUR, window)[0].confidence == 100.0
    assert find_slots([], 2 * HOUR, window) == []
    with pytest.raises(ValueError):
        find_slots([], datetime.timedelta(0), window)
    with pytest.raises(ValueError):
        find_slots([], HOUR, WINDOW, datetime.timedelta(seconds=1))


def test_merge_ranks_several_windows_as_one():
    free = LookupResult.busy([], WINDOW)
    busy_morning = LookupResult.busy([Period(at(9), at(12), BUSY)], WINDOW)
    people = [FinderAttendee("a@x", True, free, None),
              FinderAttendee("b@x", True, busy_morning, None)]
    morning = find_slots(people, HOUR, Window(at(9), at(12)), HOUR)
    afternoon = find_slots(people, HOUR, Window(at(13), at(15)), HOUR)
    merged = finder.merge([morning, afternoon, afternoon], ["a@x", "b@x"],
                          4)
    assert [s.start for s in merged] == [at(13), at(14), at(9), at(10)]
