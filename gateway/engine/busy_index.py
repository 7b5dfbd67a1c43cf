"""A per-calendar busy index: a warm answer costs what the answer holds.

Expanding and merging the periods of every object on every query made
the warm cost grow with the calendar, not with the answer.  The index
keeps, per calendar collection and calendar month (UTC), the busy time of
all its objects already merged: per FBTYPE, sorted, coalesced start and
end arrays of POSIX seconds.  A query bisects the arrays of the months it
touches and copies; a calendar home merges a few such answers.

What one object adds to a month (its "part") is kept by href, so a change
to one object replaces that object's parts and re-merges only the months
it touches; nobody else is expanded again.  Each object also leaves a
``Record``: its etag and the periods that hold whatever the month (single
events, stored VFREEBUSY, conservative fallbacks), so an object without
recurrences never needs parsing again, even after a restart (the disk
cache holds records and parts).  Only recurring objects are expanded for
a month never asked before.

Declined occurrences (an attendee's PARTSTAT=DECLINED) stay apart with
their decliners: a calendar REPORT counts them, a lookup of the decliner
does not.  Periods are whole seconds: starts are rounded down and ends up,
so an index answer is never freer than its source.

This module knows nothing of Radicale or iCalendar; the local engine
feeds it (gateway/engine/local.py).
"""

import array
import bisect
import collections
import datetime
import math
from typing import (Dict, Iterable, List, Optional, Sequence, Set, Tuple)

from gateway.model import FBTYPES, UTC, Period, Window

#: FBTYPE -> code kept in the arrays (the output order of gateway.model).
CODES = {fbtype: code for code, fbtype in enumerate(FBTYPES)}
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
#: Radicale's time range of an object ignores floating times' zone; a
#: month takes objects whose range comes this close (seconds).
RANGE_SLACK = 86400
#: Months one calendar keeps (least recently used go first); at least
#: the months of the longest window ([gateway] max_window_days 1830).
MAX_MONTHS = 240

#: Busy time of one answer: per FBTYPE code, (starts, ends), sorted and
#: coalesced, in POSIX seconds.
Busy = List[Tuple[List[int], List[int]]]
#: A declined period: (start, end, code, lower-cased decliners).
Declined = Tuple[int, int, int, frozenset]


def seconds(moment: datetime.datetime) -> int:
    """POSIX seconds of an aware datetime, rounded down."""
    return math.floor((moment - EPOCH).total_seconds())


def seconds_up(moment: datetime.datetime) -> int:
    """POSIX seconds of an aware datetime, rounded up (ends: never
    freer)."""
    return math.ceil((moment - EPOCH).total_seconds())


def moment(value: int) -> datetime.datetime:
    try:
        return datetime.datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):  # the platform's range
        return EPOCH + datetime.timedelta(seconds=value)


def month_keys(window: Window) -> List[int]:
    """POSIX starts of the UTC months ``window`` touches."""
    out = []
    year, month = window.start.year, window.start.month
    while True:
        start = datetime.datetime(year, month, 1, tzinfo=UTC)
        if start >= window.end:
            return out
        out.append(seconds(start))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def month_end(key: int) -> int:
    start = moment(key)
    year, month = (start.year + 1, 1) if start.month == 12 else \
        (start.year, start.month + 1)
    return seconds(datetime.datetime(year, month, 1, tzinfo=UTC))


def pack(periods: Iterable[Period], low: Optional[int] = None,
         high: Optional[int] = None) -> array.array:
    """Periods as flat (start, end, code) triples, clipped to
    [low, high) when given; empty ones left out."""
    out = array.array("q")
    for p in periods:
        start, end = seconds(p.start), seconds_up(p.end)
        if low is not None:
            start, end = max(start, low), min(end, high)
        if end > start:
            out.extend((start, end, CODES.get(p.fbtype, 0)))
    return out


def pack_declined(declined: Iterable[Tuple[Period, frozenset]],
                  low: Optional[int] = None,
                  high: Optional[int] = None) -> List[Declined]:
    out = []
    for p, who in declined:
        start, end = seconds(p.start), seconds_up(p.end)
        if low is not None:
            start, end = max(start, low), min(end, high)
        if end > start:
            out.append((start, end, CODES.get(p.fbtype, 0), who))
    return out


def clip_triples(triples: array.array, low: int, high: int,
                 out: array.array) -> None:
    """Append the parts of flat ``triples`` inside [low, high) to
    ``out``."""
    for i in range(0, len(triples), 3):
        start, end = triples[i], triples[i + 1]
        if start < high and end > low:
            out.extend((max(start, low), min(end, high), triples[i + 2]))


def _coalesce(pairs: List[Tuple[int, int]]) -> Tuple[List[int], List[int]]:
    pairs.sort()
    starts: List[int] = []
    ends: List[int] = []
    for start, end in pairs:
        if end <= start:
            continue
        if ends and start <= ends[-1]:
            if end > ends[-1]:
                ends[-1] = end
        else:
            starts.append(start)
            ends.append(end)
    return starts, ends


def empty() -> Busy:
    return [([], []) for _ in FBTYPES]


def busy_of(triples: Iterable[Tuple[int, int, int]]) -> Busy:
    """Busy from (start, end, code) triples in any order."""
    by_code: List[List[Tuple[int, int]]] = [[] for _ in FBTYPES]
    for start, end, code in triples:
        by_code[code].append((start, end))
    return [_coalesce(pairs) for pairs in by_code]


def busy_of_periods(periods: Iterable[Period], window: Window) -> Busy:
    """Periods clipped to ``window``, as Busy."""
    low, high = seconds(window.start), seconds_up(window.end)
    flat = pack(periods, low, high)
    return busy_of(zip(flat[0::3], flat[1::3], flat[2::3]))


def merge(answers: Sequence[Busy]) -> Busy:
    """One Busy covering all ``answers``."""
    answers = [a for a in answers if any(starts for starts, _ in a)]
    if not answers:
        return empty()
    if len(answers) == 1:
        return answers[0]
    out = []
    for code in range(len(FBTYPES)):
        pairs: List[Tuple[int, int]] = []
        for answer in answers:
            starts, ends = answer[code]
            pairs.extend(zip(starts, ends))
        out.append(_coalesce(pairs))
    return out


def lines(busy: Busy) -> List[Tuple[int, int, int]]:
    """(start, end, code) sorted by start, then end, then type: the
    order of every answer (gateway.model.coalesce)."""
    out = []
    for code, (starts, ends) in enumerate(busy):
        out.extend(zip(starts, ends, [code] * len(starts)))
    out.sort()
    return out


def periods_of(busy: Busy) -> List[Period]:
    """Busy as Period values, in answer order (the faces' form; one
    answer may hold tens of thousands, so the loop is kept tight)."""
    make = datetime.datetime.fromtimestamp
    try:
        return [Period(make(s, UTC), make(e, UTC), FBTYPES[c])
                for s, e, c in lines(busy)]
    except (OverflowError, OSError, ValueError):  # the platform's range
        return [Period(moment(s), moment(e), FBTYPES[c])
                for s, e, c in lines(busy)]


def size(busy: Busy) -> int:
    return sum(len(starts) for starts, _ in busy)


class Record:
    """What the index keeps of one object whatever the month."""

    __slots__ = ("etag", "fixed", "declined", "recurring", "availability",
                 "version", "persist")

    def __init__(self, etag: str, fixed: array.array,
                 declined: List[Declined], recurring: bool,
                 availability: bool, version: int = 0,
                 persist: bool = True) -> None:
        self.etag = etag
        #: flat (start, end, code) of periods that hold in every month
        self.fixed = fixed
        self.declined = declined
        #: has series that are expanded month by month
        self.recurring = recurring
        #: has VAVAILABILITY components (computed per query)
        self.availability = availability
        #: the source object's fixed_version when ``fixed`` was taken
        self.version = version
        #: may go to the disk cache (nothing in it came from a time limit)
        self.persist = persist

    def fixed_part(self, low: int, high: int
                   ) -> Tuple[array.array, List[Declined]]:
        part = array.array("q")
        clip_triples(self.fixed, low, high, part)
        declined = [(max(s, low), min(e, high), c, who)
                    for s, e, c, who in self.declined
                    if s < high and e > low]
        return part, declined

    @property
    def cost(self) -> int:
        return 1 + len(self.fixed) // 3 + len(self.declined)


class Month:
    """Merged busy time of one calendar in one UTC month."""

    __slots__ = ("key", "end", "parts", "declined", "pending", "_all",
                 "_base", "cost")

    def __init__(self, key: int) -> None:
        self.key = key
        self.end = month_end(key)
        #: href -> flat (start, end, code) triples clipped to the month;
        #: objects that add nothing have no entry
        self.parts: Dict[str, array.array] = {}
        self.declined: Dict[str, List[Declined]] = {}
        #: hrefs whose part is not known yet
        self.pending: Set[str] = set()
        self._all: Optional[Busy] = None
        self._base: Optional[Busy] = None
        self.cost = 1

    def put(self, href: str, part: array.array,
            declined: List[Declined]) -> None:
        self.drop(href)
        if part:
            self.parts[href] = part
        if declined:
            self.declined[href] = declined
        if part or declined:
            self.cost += len(part) // 3 + len(declined) + 1

    def drop(self, href: str) -> None:
        part = self.parts.pop(href, None)
        declined = self.declined.pop(href, None)
        if part is not None or declined is not None:
            self.cost -= len(part or ()) // 3 + len(declined or ()) + 1
        self._all = self._base = None

    def busy(self, excluding: frozenset) -> Busy:
        """The month's merged busy time without what an address in
        ``excluding`` declined."""
        if self._base is None:
            by_code: List[List[Tuple[int, int]]] = [[] for _ in FBTYPES]
            for part in self.parts.values():
                for start, end, code in zip(part[0::3], part[1::3],
                                            part[2::3]):
                    by_code[code].append((start, end))
            self._base = [_coalesce(list(pairs)) for pairs in by_code]
            if self.declined:
                for periods in self.declined.values():
                    for start, end, code, _ in periods:
                        by_code[code].append((start, end))
                self._all = [_coalesce(pairs) for pairs in by_code]
            else:
                self._all = self._base
        if not self.declined:
            return self._all
        if not excluding:
            return self._all
        kept = [(s, e, c) for periods in self.declined.values()
                for s, e, c, who in periods if not who & excluding]
        if not kept:
            return self._base
        base = self._base
        return merge([base, busy_of(kept)])


def window_slice(busy: Busy, low: int, high: int, out: Busy) -> None:
    """Append the parts of ``busy`` inside [low, high) to ``out``,
    coalescing with what ``out`` already ends with (months touch)."""
    for code, (starts, ends) in enumerate(busy):
        if not starts:
            continue
        first = bisect.bisect_right(ends, low)
        last = bisect.bisect_left(starts, high)
        if first >= last:
            continue
        out_starts, out_ends = out[code]
        new_starts = starts[first:last]
        new_ends = ends[first:last]
        if new_starts[0] < low:
            new_starts[0] = low
        if new_ends[-1] > high:
            new_ends[-1] = high
        if out_ends and new_starts[0] <= out_ends[-1]:
            out_ends[-1] = max(out_ends[-1], new_ends[0])
            del new_starts[0]
            del new_ends[0]
        out_starts.extend(new_starts)
        out_ends.extend(new_ends)


class CollectionIndex:
    """Records and months of one calendar collection.

    The caller (the local engine) holds the collection's lock around
    every call and feeds records and parts; the index only keeps and
    merges them."""

    def __init__(self) -> None:
        self.records: Dict[str, Record] = {}
        #: hrefs of objects with VAVAILABILITY
        self.available: Set[str] = set()
        #: records read from disk for files whose fingerprint the file
        #: could not vouch for (changed just before it was written): taken
        #: when the object, read again, has the same etag
        self.candidates: Dict[str, Record] = {}
        self.months: "collections.OrderedDict[int, Month]" = \
            collections.OrderedDict()
        #: what changed since the disk cache was last written
        self.dirty = False
        #: grows with every change (the engine recounts the cost then)
        self.changes = 0

    # -- changes ------------------------------------------------------------

    def invalidate(self, hrefs: Iterable[str],
                   ranges: Dict[str, Tuple[int, int]]) -> None:
        """Objects ``hrefs`` changed (or went): forget what they added;
        months they now reach wait for their new parts."""
        for href in hrefs:
            self.records.pop(href, None)
            self.available.discard(href)
            rng = ranges.get(href)
            for month in self.months.values():
                month.drop(href)
                month.pending.discard(href)
                if rng is not None and _reaches(rng, month.key, month.end):
                    month.pending.add(href)
            self.dirty = True
            self.changes += 1

    def adopt(self, hrefs: Iterable[str], etags: Dict[str, str]) -> None:
        """Take the candidate records of ``hrefs`` whose etag is the
        current one (no parsing), and fill the months with them."""
        taken = False
        for href in hrefs:
            candidate = self.candidates.pop(href, None)
            if candidate is not None and href not in self.records and \
                    candidate.etag == etags.get(href):
                self.add_record(href, candidate)
                taken = True
        if taken:
            for month in self.months.values():
                self.settle(month)

    def add_record(self, href: str, record: Record) -> None:
        self.records[href] = record
        if record.availability:
            self.available.add(href)
        self.dirty = True
        self.changes += 1

    def refresh_fixed(self, href: str, record: Record,
                      ranges: Dict[str, Tuple[int, int]]) -> None:
        """An object's month-independent periods grew (a series could not
        be expanded and now counts as busy over its span): every month
        takes its part again."""
        self.invalidate([href], ranges)
        self.add_record(href, record)

    # -- months -------------------------------------------------------------

    def month(self, key: int, ranges: Dict[str, Tuple[int, int]]) -> Month:
        """Month ``key``, built from the records where they suffice."""
        month = self.months.get(key)
        if month is None:
            month = Month(key)
            month.pending = {href for href, rng in ranges.items()
                             if _reaches(rng, key, month.end)}
            self.months[key] = month
            self.settle(month)
            self.dirty = True
            self.changes += 1
        else:
            self.months.move_to_end(key)
        return month

    def settle(self, month: Month) -> None:
        """Fill the pending parts that a record alone gives (objects
        without recurrences)."""
        for href in list(month.pending):
            record = self.records.get(href)
            if record is not None and not record.recurring:
                month.put(href, *record.fixed_part(month.key, month.end))
                month.pending.discard(href)

    def install(self, month: Month, href: str, part: array.array,
                declined: List[Declined]) -> bool:
        """A recurring object's expanded month (its fixed part added
        here); False when the month or object moved on meanwhile."""
        record = self.records.get(href)
        if record is None or self.months.get(month.key) is not month or \
                href not in month.pending:
            return False
        fixed, fixed_declined = record.fixed_part(month.key, month.end)
        fixed.extend(part)
        month.put(href, fixed, fixed_declined + declined)
        month.pending.discard(href)
        self.dirty = True
        self.changes += 1
        return True

    def answer(self, keys: List[int], low: int, high: int,
               excluding: frozenset) -> Busy:
        out = empty()
        for key in keys:
            window_slice(self.months[key].busy(excluding), low, high, out)
        return out

    # -- bounds -------------------------------------------------------------

    @property
    def cost(self) -> int:
        """Roughly what the index holds, in the object cache's units
        (about 400 bytes: four kept periods of 100 bytes)."""
        periods = sum(r.cost for r in self.records.values()) + \
            sum(m.cost for m in self.months.values())
        return periods // 4 + 1

    def trim(self, keep: Iterable[int], most: int = MAX_MONTHS) -> None:
        """Drop least recently used months past ``most``, never those in
        ``keep``."""
        keep = set(keep)
        for key in list(self.months):
            if len(self.months) <= most:
                break
            if key not in keep:
                del self.months[key]
                self.changes += 1


def _reaches(rng: Tuple[int, int], low: int, high: int) -> bool:
    return not (rng[1] < low - RANGE_SLACK or rng[0] > high + RANGE_SLACK)
