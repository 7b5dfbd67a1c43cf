"""The meeting-time finder: attendees' lookups in, ranked slots out.

Pure (no HTTP, no storage): the findMeetingTimes face, the view and the
CLI hand it each attendee's ``LookupResult`` and working hours and render
what it returns.  In the spirit of Microsoft Graph's findMeetingTimes:

- an attendee's state in a slot is the worst thing inside it, in Graph's
  words: ``busy`` > ``oof`` > ``unknown`` > ``tentative`` > ``free``.
  BUSY is busy, BUSY-UNAVAILABLE and time outside the attendee's working
  hours are oof, BUSY-TENTATIVE is tentative, no data (a failed lookup,
  or a ``LookupResult.nodata`` span, which is also in the periods as
  BUSY-UNAVAILABLE and is taken out of them here) is unknown: no-data
  time is never counted as free;
- confidence is Graph's: the mean chance of attendance over all
  attendees, free 100 %, unknown 49 %, busy 0 % (tentative 50 % and oof
  0 %, which Graph leaves unsaid);
- with working hours (``FinderAttendee.working`` not None) a slot lies
  inside every required attendee's working hours; an optional attendee
  outside theirs is oof for it;
- slots start every ``step`` from the window's start and lie inside it;
  they are ranked by the required attendees' chance, then the confidence
  (everyone's), then time, and the suggestions do not overlap each other
  (the best slot of each stretch, not ten copies of it shifted by a step).

Cost: one pass per attendee over its spans and one over the slot grid
(difference arrays on the grid, never slot x period), then a sort of the
grid; 20 attendees over 4 weeks take milliseconds (bench/finder.py).
"""

import bisect
import datetime
import itertools
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence

from gateway.model import (BUSY, BUSY_TENTATIVE, BUSY_UNAVAILABLE,
                           LookupResult, Span, Window, gaps)

FREE = "free"
TENTATIVE = "tentative"
UNKNOWN = "unknown"
OOF = "oof"
BUSY_STATE = "busy"
#: Graph's availability names, from least to most severe: a slot shows an
#: attendee's most severe state inside it.
STATES = (FREE, TENTATIVE, UNKNOWN, OOF, BUSY_STATE)
#: Chance of attendance per state (Graph: free 1, unknown 0.49, busy 0).
CHANCE = {FREE: 1.0, TENTATIVE: 0.5, UNKNOWN: 0.49, OOF: 0.0,
          BUSY_STATE: 0.0}
#: The state of each FBTYPE.
STATE_OF_FBTYPE = {BUSY: BUSY_STATE, BUSY_TENTATIVE: TENTATIVE,
                   BUSY_UNAVAILABLE: OOF}
#: Slot length's default step when the caller names none: half an hour,
#: or the meeting's length if shorter.
DEFAULT_STEP = datetime.timedelta(minutes=30)
#: Most slot starts one call considers; past it the step is too fine for
#: the window (ValueError), so no request can make the grid unbounded.
MAX_STARTS = 20000

_LEVEL = {state: level for level, state in enumerate(STATES)}


class FinderAttendee(NamedTuple):
    """One attendee: their lookup and their working hours.

    ``working`` are the spans of working hours inside the window (None:
    unrestricted, any hour is theirs)."""

    address: str
    required: bool
    result: LookupResult
    working: Optional[Sequence[Span]] = None


class Suggestion(NamedTuple):
    """A candidate slot: Graph's confidence (0..100) and every
    attendee's state in it by address."""

    start: datetime.datetime
    end: datetime.datetime
    confidence: float
    states: Dict[str, str]


def state_spans(attendee: FinderAttendee, window: Window):
    """``(start, end, state)`` of everything not free for ``attendee``
    inside ``window``, unsorted; outside-working-hours spans are oof."""
    result = attendee.result
    if not result.ok:
        out = [(window.start, window.end, UNKNOWN)]
    else:
        out = [(s, e, UNKNOWN) for s, e in result.nodata]
        nodata = sorted(result.nodata)
        for period in result.periods:
            state = STATE_OF_FBTYPE.get(period.fbtype, BUSY_STATE)
            if state == OOF and nodata:
                # No-data spans are in the periods as BUSY-UNAVAILABLE:
                # only what is left of them is out of office.
                out.extend((s, e, OOF) for s, e in _subtract(
                    period.start, period.end, nodata))
            else:
                out.append((period.start, period.end, state))
    if attendee.working is not None:
        out.extend((s, e, OOF) for s, e in outside(attendee.working, window))
    return out


def outside(working: Iterable[Span], window: Window) -> List[Span]:
    """The parts of ``window`` not covered by ``working``."""
    return gaps(working, window)


def _subtract(start, end, sorted_spans: List[Span]) -> List[Span]:
    """``[start, end)`` minus the sorted, merged ``sorted_spans``."""
    out, cursor = [], start
    first = max(0, bisect.bisect_left(sorted_spans, (start,)) - 1)
    for s, e in sorted_spans[first:]:
        if s >= end:
            break
        if e <= cursor:
            continue
        if s > cursor:
            out.append((cursor, s))
        cursor = max(cursor, e)
    if cursor < end:
        out.append((cursor, end))
    return out


class _Grid:
    """Slot starts ``window.start + i * step`` for i in range(count)."""

    def __init__(self, window: Window, duration: datetime.timedelta,
                 step: datetime.timedelta) -> None:
        self.origin = window.start
        self.step = step
        self.duration = duration
        room = window.end - window.start - duration
        self.count = 0 if room < datetime.timedelta(0) else \
            room // step + 1
        if self.count > MAX_STARTS:
            raise ValueError(
                "a step of %s over %s gives %d slot starts, more than %d"
                % (step, window.end - window.start, self.count, MAX_STARTS))

    def touching(self, start, end):
        """Index range [lo, hi) of slots that overlap ``[start, end)``:
        slot i overlaps it iff start - duration < s_i < end."""
        lo = (start - self.duration - self.origin) // self.step + 1
        hi = -((self.origin - end) // self.step)
        return max(0, lo), min(self.count, hi)

    def start(self, index: int) -> datetime.datetime:
        return self.origin + index * self.step


def _levels(grid: _Grid, spans) -> List[int]:
    """Per slot, the most severe state level of the spans touching it."""
    n = grid.count
    diffs: Dict[int, List[int]] = {}
    for start, end, state in spans:
        lo, hi = grid.touching(start, end)
        if lo < hi:
            diff = diffs.get(_LEVEL[state])
            if diff is None:
                diff = diffs[_LEVEL[state]] = [0] * (n + 1)
            diff[lo] += 1
            diff[hi] -= 1
    levels = [0] * n
    for level in sorted(diffs):     # more severe levels paint over
        counts = itertools.accumulate(diffs[level])
        levels = [level if c else old for c, old in zip(counts, levels)]
    return levels


def _blocked(grid: _Grid, spans: Iterable[Span]) -> List[bool]:
    """Per slot, whether it overlaps any of ``spans``."""
    diff = [0] * (grid.count + 1)
    for start, end in spans:
        lo, hi = grid.touching(start, end)
        if lo < hi:
            diff[lo] += 1
            diff[hi] -= 1
    return [bool(c) for c in itertools.accumulate(diff[:-1])]


def find_slots(attendees: Sequence[FinderAttendee],
               duration: datetime.timedelta, window: Window,
               step: Optional[datetime.timedelta] = None,
               max_candidates: int = 10,
               minimum_percentage: float = 0.0) -> List[Suggestion]:
    """The best ``max_candidates`` non-overlapping slots of ``duration``
    inside ``window``, best first, each with at least
    ``minimum_percentage`` confidence.  See the module doc for the rules.
    """
    if duration <= datetime.timedelta(0):
        raise ValueError("the meeting must last longer than 0")
    step = step or min(DEFAULT_STEP, duration)
    if step <= datetime.timedelta(0):
        raise ValueError("the step must be longer than 0")
    grid = _Grid(window, duration, step)
    if grid.count == 0 or max_candidates <= 0:
        return []
    n = grid.count
    chances = [CHANCE[s] for s in STATES]
    required_sum = [0.0] * n
    total_sum = [0.0] * n
    excluded = [False] * n
    all_levels = []
    for attendee in attendees:
        levels = _levels(grid, state_spans(attendee, window))
        all_levels.append(levels)
        chance = [chances[level] for level in levels]
        total_sum = [a + b for a, b in zip(total_sum, chance)]
        if attendee.required:
            required_sum = [a + b for a, b in zip(required_sum, chance)]
            if attendee.working is not None:
                blocked = _blocked(grid, outside(attendee.working, window))
                excluded = [a or b for a, b in zip(excluded, blocked)]
    count = len(attendees)
    # A hair below the threshold still passes: 100 * 0.49 and friends are
    # not exact in binary.
    threshold = minimum_percentage - 1e-9
    ranked = sorted(
        (i for i in range(n) if not excluded[i] and (
            100.0 * total_sum[i] / count if count else 100.0) >= threshold),
        key=lambda i: (-round(required_sum[i], 6), -round(total_sum[i], 6),
                       i))
    # Two slots of one length overlap iff their starts are less than a
    # duration apart, i.e. fewer than ``gap`` grid steps apart.
    gap = -(-duration // step)
    out = []
    for i in _apart(ranked, gap, max_candidates):
        start = grid.start(i)
        confidence = round(100.0 * total_sum[i] / count, 2) if count \
            else 100.0
        out.append(Suggestion(start, start + duration, confidence, {
            a.address: STATES[levels[i]]
            for a, levels in zip(attendees, all_levels)}))
    return out


def _apart(ranked: Iterable, gap, limit: int) -> List:
    """The first ``limit`` of ``ranked`` (orderable positions) that lie
    at least ``gap`` from every one taken before them."""
    chosen: List = []
    taken: List = []                # chosen positions, sorted
    for position in ranked:
        at = bisect.bisect_left(taken, position)
        if (at < len(taken) and taken[at] - position < gap) or \
                (at > 0 and position - taken[at - 1] < gap):
            continue
        taken.insert(at, position)
        chosen.append(position)
        if len(chosen) == limit:
            break
    return chosen


def rank_key(suggestion: Suggestion, required: Iterable[str]):
    """The order find_slots ranks in: the required attendees' chance of
    attendance, then everyone's, then time."""
    return (-round(sum(CHANCE[suggestion.states[a]] for a in required), 6),
            -round(sum(CHANCE[s] for s in suggestion.states.values()), 6),
            suggestion.start)


def merge(lists: Iterable[Sequence[Suggestion]], required: Iterable[str],
          max_candidates: int) -> List[Suggestion]:
    """Several find_slots answers (one per timeslot) as one: ranked
    alike, no two overlapping, at most ``max_candidates``."""
    required = list(required)
    everything = sorted((s for found in lists for s in found),
                        key=lambda s: rank_key(s, required))
    if not everything:
        return []
    duration = everything[0].end - everything[0].start
    by_start = {s.start: s for s in reversed(everything)}
    ranked = sorted(by_start.values(), key=lambda s: rank_key(s, required))
    starts = _apart((s.start for s in ranked), duration, max_candidates)
    return [by_start[start] for start in starts]
