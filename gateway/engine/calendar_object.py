"""Busy time of one calendar object resource (one iCalendar text).

A ``BusyObject`` is built once per object text (the local engine keys it by
the object's etag) and answers any window afterwards.  Recurrences are
expanded by recurring-ical-events on demand, one calendar month ("chunk")
at a time, and each chunk is kept, coalesced, so a repeated or overlapping
query never re-parses or re-expands.  A chunk is the same whatever was
asked before: the answer for a window never depends on query history.

What counts (RFC 4791 7.10, RFC 5545, RFC 7953):
- VEVENT occurrences, overrides included (RECURRENCE-ID, RANGE=THISANDFUTURE),
  except TRANSP:TRANSPARENT and STATUS:CANCELLED; STATUS:TENTATIVE is
  BUSY-TENTATIVE, everything else BUSY.  Occurrences an attendee declined
  (PARTSTAT=DECLINED) are kept apart with that attendee's address, so a
  lookup for that person can leave them out, as CalendarServer and
  sabre/dav do for scheduling.
- FREEBUSY periods of stored VFREEBUSY components, with their FBTYPE.
- VAVAILABILITY components are handed to gateway.engine.availability,
  because they combine across the whole calendar, not per object.

No data is never free.  Each series (the components sharing one UID) is
expanded under two bounds, an occurrence count and a time limit, per chunk:
- a chunk with more occurrences than the count is BUSY as a whole;
- a series that cannot be expanded at all (a rule recurring-ical-events or
  dateutil refuses, an overflow near year 9999, a rule that outruns the
  time limit) is BUSY from its first instance to the end of its rule
  (UNTIL, or for ever), see ``_fallback_periods``;
- an object icalendar cannot parse at all is read line by line for its
  DTSTART, DTEND/DURATION and RRULE, and counted the same way; with no
  readable DTSTART at all it is BUSY everywhere.
Each of these logs one warning naming the object.

dateutil iterates every instance from DTSTART, so a simple rule begun
long before the window (nothing but FREQ, INTERVAL and UNTIL) is expanded
from a copy whose DTSTART moved forward by whole steps (``query_for``);
the instances it yields in the window are the same.
"""

import bisect
import collections
import datetime
import logging
import re
import threading
import time
import zoneinfo
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import icalendar
import recurring_ical_events

from gateway import timezones
from gateway.vfreebusy import freebusy_component_periods
from gateway.model import (BUSY, BUSY_TENTATIVE, UTC, Period, Window,
                           coalesce)
from gateway.engine.watchdog import TimeLimitExceeded, time_limit

logger = logging.getLogger(__name__)

#: Floating times can sit up to 14 hours either side of UTC; the library is
#: asked for a margin this wide and the exact UTC clip happens afterwards.
_FLOATING_MARGIN = datetime.timedelta(days=1)
#: The earliest and latest instants the engine handles; anything that
#: reaches past them (year 1, year 9999) is clamped, never an overflow.
EARLIEST = datetime.datetime(1, 1, 3, tzinfo=UTC)
LATEST = datetime.datetime(9999, 12, 29, tzinfo=UTC)
#: Occurrences one series may have in one chunk when the admin set no
#: [reporting] max_freebusy_occurrence (0): memory stays bounded anyway.
HARD_MAX_OCCURRENCES = 100000
#: Chunks one object keeps (least recently used go first).
MAX_CHUNKS = 120
#: Periods one month of one object keeps; past it they are widened to
#: coarser slots (see ``coarsened``), so memory and answers stay bounded.
MAX_CHUNK_PERIODS = 1000
_COARSER_SLOTS = (datetime.timedelta(minutes=15), datetime.timedelta(hours=1),
                  datetime.timedelta(days=1))
#: What a kept object costs beyond its periods, in units of about 400
#: bytes per byte of its text: a parsed recurring object (icalendar tree,
#: recurring-ical-events query, dateutil rules) retains about 43 bytes
#: per byte of its text (tracemalloc, the benchmark's weekly events).
TEXT_COST = 1 / 9


class Limits(NamedTuple):
    """Bounds on expanding one series for one chunk."""

    #: occurrences; 0 means HARD_MAX_OCCURRENCES
    max_occurrences: int = 0
    #: seconds of expansion; 0 means none (tests only)
    seconds: float = 1.0


def event_fbtype(component: icalendar.cal.Component) -> Optional[str]:
    """RFC 4791 7.10 table for one VEVENT; None when it is not busy."""
    if str(component.get("TRANSP", "OPAQUE")).upper() == "TRANSPARENT":
        return None
    status = str(component.get("STATUS", "")).upper()
    if status == "CANCELLED":
        return None
    if status == "TENTATIVE":
        return BUSY_TENTATIVE
    return BUSY


def declined_by(component: icalendar.cal.Component) -> frozenset:
    """Lower-cased addresses of the ATTENDEEs who declined ``component``."""
    attendees = component.get("ATTENDEE", [])
    if not isinstance(attendees, list):
        attendees = [attendees]
    return frozenset(
        str(a).strip().lower() for a in attendees
        if str(getattr(a, "params", {}).get("PARTSTAT", "")).upper() ==
        "DECLINED")


def month_floor(value: datetime.datetime) -> datetime.datetime:
    return value.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(value: datetime.datetime) -> datetime.datetime:
    return (month_floor(value) + datetime.timedelta(days=32)).replace(day=1)


def months(window: Window) -> List[datetime.datetime]:
    """Starts of the calendar months (UTC) that ``window`` touches."""
    out, start = [], month_floor(window.start)
    while start < window.end:
        out.append(start)
        start = next_month(start)
    return out


def safe_utc(value, zone: datetime.tzinfo) -> datetime.datetime:
    """``timezones.to_utc`` clamped to [EARLIEST, LATEST]."""
    try:
        result = timezones.to_utc(value, zone)
    except (OverflowError, ValueError):
        year = getattr(value, "year", 9999)
        return EARLIEST if year < 5000 else LATEST
    return min(max(result, EARLIEST), LATEST)


def coarsened(periods: List[Period]) -> List[Period]:
    """At most MAX_CHUNK_PERIODS periods covering at least ``periods``:
    each widened to whole 15-minute slots, then hours, then days, until
    few enough remain.  Busier, never freer."""
    periods = coalesce(periods)
    for slot in _COARSER_SLOTS:
        if len(periods) <= MAX_CHUNK_PERIODS:
            break
        epoch = datetime.datetime(1970, 1, 1, tzinfo=UTC)
        periods = coalesce(
            Period(epoch + (p.start - epoch) // slot * slot,
                   epoch - (epoch - p.end) // slot * slot, p.fbtype)
            for p in periods)
    return periods


class _Chunk:
    """One month of one object: coalesced periods plus declined ones."""

    __slots__ = ("periods", "starts", "longest", "declined")

    def __init__(self, periods: List[Period],
                 declined: List[Tuple[Period, frozenset]]) -> None:
        self.periods = coarsened(periods)
        if len(declined) > MAX_CHUNK_PERIODS:
            # Too many to keep apart: they count for everyone.
            self.periods = coarsened(self.periods + [p for p, _ in declined])
            declined = []
        self.starts = [p.start for p in self.periods]
        self.longest = max((p.end - p.start for p in self.periods),
                           default=datetime.timedelta(0))
        self.declined = declined

    @property
    def cost(self) -> int:
        return len(self.periods) + len(self.declined) + 1

    def overlapping(self, window: Window, excluding: frozenset,
                    out: List[Period]) -> None:
        lo = 0 if window.start - EARLIEST <= self.longest else \
            bisect.bisect_left(self.starts, window.start - self.longest)
        hi = bisect.bisect_left(self.starts, window.end)
        for p in self.periods[lo:hi]:
            if p.end > window.start:
                out.append(p)
        for p, who in self.declined:
            if p.start < window.end and p.end > window.start and \
                    not who & excluding:
                out.append(p)


_FREQ_SECONDS = {"SECONDLY": 1, "MINUTELY": 60, "HOURLY": 3600,
                 "DAILY": 86400, "WEEKLY": 7 * 86400}


def _rule_density(component) -> float:
    """Occurrences per second an RRULE can reach at most, when nothing but
    FREQ and INTERVAL limit it (BYxxx parts only ever thin it out, except
    those that multiply instances within one period, which are counted
    as not limiting: 0 means "cannot tell, expand and count")."""
    rule = component.get("RRULE")
    if rule is None or isinstance(rule, list):
        return 0.0
    if any(key.startswith("BY") for key in rule):
        return 0.0
    seconds = _FREQ_SECONDS.get(str((rule.get("FREQ") or [""])[0]).upper())
    try:
        interval = int((rule.get("INTERVAL") or [1])[0])
    except (TypeError, ValueError):
        return 0.0
    if not seconds or interval < 1:
        return 0.0
    return 1.0 / (seconds * interval)


#: Instances a dateutil rule may keep in its cache between expansions;
#: what it keeps counts in its object's cost, so thousands of objects
#: cannot hold millions of datetimes.
MAX_RULE_CACHE = 2000


def _rule_caches(query) -> List:
    """The dateutil rules (and rule sets) of a recurring-ical-events query.

    recurring-ical-events builds them with cache=True, which keeps every
    instance ever iterated, from DTSTART on, for the life of the object:
    it makes month after month cheap (dateutil always iterates from
    DTSTART), but a dense rule asked about a far window would hold
    millions of datetimes.  The engine trims them (``_trim``)."""
    rules = []
    for series in query.series:
        recurrence = getattr(series, "recurrence", None)
        for rule in getattr(recurrence, "rrules", ()):
            rules.append(rule)
            rules.extend(getattr(rule, "_rrule", ()))
    return [r for r in rules if hasattr(r, "_invalidate_cache")]


def _trim(rules: List) -> int:
    """Empty caches over MAX_RULE_CACHE; the instances still kept."""
    kept = 0
    for rule in rules:
        cache = getattr(rule, "_cache", None)
        if cache is not None and len(cache) > MAX_RULE_CACHE:
            rule._invalidate_cache()
        else:
            kept += len(cache or ())
    return kept


#: A rule is fast-forwarded once a window starts this many of its steps
#: after DTSTART: dateutil iterates every instance from DTSTART, so a
#: half-hourly rule begun in 1970 would otherwise take seconds to reach
#: today and end as a conservative busy span.
FAST_FORWARD_AFTER = 5000
_SUB_DAILY = {"SECONDLY": 1, "MINUTELY": 60, "HOURLY": 3600}
_DAYS = {"DAILY": 1, "WEEKLY": 7}
_NO_OCCURRENCES = object()


def _forward_step(components: List) -> Optional[datetime.timedelta]:
    """The step of a rule that may be fast-forwarded exactly, else None.

    Exact when every step is an instance and nothing but the step decides
    them: one component (no overrides), one RRULE without COUNT (it counts
    from DTSTART) or BYxxx parts (DTSTART need not match them), no RDATE.
    Steps of days or weeks move the wall clock, which dateutil keeps
    across DST; steps shorter than a day only from a UTC DTSTART."""
    if len(components) != 1:
        return None
    component = components[0]
    rule = component.get("RRULE")
    if rule is None or isinstance(rule, list) or "RDATE" in component or \
            "RECURRENCE-ID" in component or "COUNT" in rule or \
            any(key.startswith("BY") for key in rule):
        return None
    try:
        interval = int((rule.get("INTERVAL") or [1])[0])
        freq = str((rule.get("FREQ") or [""])[0]).upper()
    except (TypeError, ValueError):
        return None
    if interval < 1:
        return None
    start = component["DTSTART"]
    zone = start.params.get("TZID")
    end = component.get("DTEND")
    if end is not None and (end.params.get("TZID") != zone or
                            type(end.dt) is not type(start.dt)):
        return None
    if freq in _DAYS:
        return datetime.timedelta(days=_DAYS[freq] * interval)
    if freq in _SUB_DAILY and isinstance(start.dt, datetime.datetime) and \
            zone is None and start.dt.tzinfo is not None:
        return datetime.timedelta(seconds=_SUB_DAILY[freq] * interval)
    return None


class _Series:
    """The components of one UID, expanded by recurring-ical-events."""

    __slots__ = ("uid", "components", "query", "broken", "density",
                 "earliest", "warned", "rules", "kept", "timezones",
                 "step", "forwarded")

    def __init__(self, uid: str, components: List, timezones_: List) -> None:
        self.uid = uid
        self.components = components
        self.timezones = timezones_
        calendar = icalendar.Calendar()
        for vtimezone in timezones_:
            calendar.add_component(vtimezone)
        for component in components:
            calendar.add_component(component)
        self.query = None
        #: (year, query) of the last fast-forwarded copy
        self.forwarded: Optional[Tuple[int, object]] = None
        self.rules: List = []
        #: instances its dateutil rules keep cached (part of the cost)
        self.kept = 0
        self.broken = False
        self.warned = False
        self.earliest = EARLIEST
        for component in components:
            rule_errors = [name for name, _ in getattr(component, "errors",
                                                       ()) if name in (
                "RRULE", "RDATE", "EXDATE", "DTSTART", "DTEND", "DURATION",
                "RECURRENCE-ID")]
            if rule_errors:
                raise ValueError("unreadable %s" % ", ".join(rule_errors))
            if "DTSTART" not in component:
                raise ValueError("VEVENT without DTSTART")
            _drop_rule_ending_before_start(component)
        self.query = recurring_ical_events.of(calendar)
        self.rules = _rule_caches(self.query)
        self.earliest = max(EARLIEST, min(
            safe_utc(c["DTSTART"].dt, UTC) for c in components) -
            _FLOATING_MARGIN)
        self.density = max((_rule_density(c) for c in components),
                           default=0.0)
        self.step = _forward_step(components)

    def query_for(self, low: datetime.datetime, zone: datetime.tzinfo):
        """The query to expand from ``low`` (UTC): the series' own, or a
        copy whose DTSTART moved forward by whole steps to before the
        start of ``low``'s year, less a margin longer than one instance
        and one step (so every instance that reaches ``low`` is in it and
        all months of a year share it); _NO_OCCURRENCES when the rule
        ended before that."""
        if self.step is None:
            return self.query
        component = self.components[0]
        first = safe_utc(component["DTSTART"].dt, zone)
        step = self.step.total_seconds()
        if (low - first).total_seconds() < FAST_FORWARD_AFTER * step:
            return self.query
        if self.forwarded is not None and self.forwarded[0] == low.year:
            return self.forwarded[1]
        start = component["DTSTART"].dt
        if "DTEND" in component:
            length = component["DTEND"].dt - start
        elif "DURATION" in component:
            length = component["DURATION"].dt
        else:
            length = datetime.timedelta(days=1)
        margin = abs(length) + self.step + 2 * _FLOATING_MARGIN
        anchor = datetime.datetime(low.year, 1, 1, tzinfo=UTC) - margin
        until = component["RRULE"].get("UNTIL")
        if until and safe_utc(until[0], zone) < anchor:
            query = _NO_OCCURRENCES
        else:
            # One step fewer: day steps move the wall clock, whose UTC
            # instant may differ by a DST hour from this arithmetic.
            steps = int((anchor - first).total_seconds() // step) - 1
            if steps <= 0:
                return self.query
            query = self._moved(component, self.step * steps)
        self.forwarded = (low.year, query)
        self.rules = _rule_caches(self.query) + (
            [] if query is _NO_OCCURRENCES else _rule_caches(query))
        return query

    def _moved(self, component, by: datetime.timedelta):
        moved = icalendar.Event()
        for name, value in component.property_items(recursive=False):
            if name not in ("BEGIN", "END", "DTSTART", "DTEND"):
                moved.add(name, value, encode=False)
        for name in ("DTSTART", "DTEND"):
            if name in component:
                value = icalendar.prop.vDDDTypes(component[name].dt + by)
                value.params.update(component[name].params)
                moved[name] = value
        calendar = icalendar.Calendar()
        for vtimezone in self.timezones:
            calendar.add_component(vtimezone)
        calendar.add_component(moved)
        return recurring_ical_events.of(calendar)


def _drop_rule_ending_before_start(component) -> None:
    """RFC 5545 3.8.5.3: DTSTART always counts as the first instance, so
    a rule whose UNTIL lies before DTSTART leaves DTSTART alone (the
    library would yield nothing at all)."""
    rule = component.get("RRULE")
    if rule is None or isinstance(rule, list):
        return
    until = rule.get("UNTIL")
    if not until:
        return
    start = component["DTSTART"].dt
    until = until[0]
    try:
        if isinstance(start, datetime.datetime) != isinstance(
                until, datetime.datetime):
            ends_before = until < (start.date() if isinstance(
                start, datetime.datetime) else start)
        elif isinstance(start, datetime.datetime) and \
                (start.tzinfo is None) != (until.tzinfo is None):
            ends_before = until.replace(tzinfo=None) < \
                start.replace(tzinfo=None)
        else:
            ends_before = until < start
    except TypeError:
        return
    if ends_before:
        del component["RRULE"]


class BusyObject:
    """Busy periods of one calendar object, expanded lazily and kept."""

    def __init__(self, text: str, floating_zone: datetime.tzinfo,
                 limits: Limits = Limits(), origin: str = "") -> None:
        self.zone = floating_zone
        self.limits = limits
        #: where the object lives, for log lines
        self.origin = origin
        self.availability: List = []
        #: periods that hold whatever the window: VFREEBUSY, and the
        #: conservative spans of series that cannot be expanded
        self._fixed: List[Period] = []
        self._fixed_declined: List[Tuple[Period, frozenset]] = []
        self._fixed_changed = False
        self._series: List[_Series] = []
        self._chunks: "collections.OrderedDict[datetime.datetime, _Chunk]" \
            = collections.OrderedDict()
        self._chunks_cost = 0
        self._rules_cost = 0
        #: grows whenever the periods that hold in every month change (a
        #: series that cannot be expanded joins them), so the busy index
        #: knows to take them again
        self.fixed_version = 0
        #: some series gave up on the time limit: what it counts depends
        #: on the machine's load, so it is not kept across restarts
        self.timed_out = False
        self._lock = threading.Lock()
        self._text_cost = int(len(text) * TEXT_COST) + 1
        try:
            calendar = icalendar.Calendar.from_ical(text)
            if getattr(calendar, "name", None) != "VCALENDAR":
                raise ValueError("not a VCALENDAR")
        except Exception as e:  # icalendar raises many kinds on bad text
            self._warn("cannot be parsed (%s); counting what can be read of "
                       "it as busy" % _short(e))
            self._fixed = lenient_periods(text, floating_zone)
            self._fixed_index()
            return
        try:
            self._load(calendar, floating_zone)
        except Exception as e:  # last resort: never free, never a 500
            logger.exception("Calendar object %s could not be loaded",
                             origin)
            self._warn("cannot be read (%s); counting it as busy at all "
                       "times" % _short(e))
            self._series = []
            self._fixed = [Period(EARLIEST, LATEST, BUSY)]
        self._fixed_index()

    def _load(self, calendar, floating_zone: datetime.tzinfo) -> None:
        vtimezones = []
        groups: Dict[str, List] = {}
        for component in calendar.subcomponents:
            if component.name == "VTIMEZONE":
                vtimezones.append(component)
            elif component.name == "VAVAILABILITY":
                self.availability.append(component)
            elif component.name == "VFREEBUSY":
                try:
                    self._fixed.extend(freebusy_component_periods(
                        component, floating_zone))
                except Exception as e:
                    self._warn("has an unreadable VFREEBUSY (%s); counting "
                               "it as busy" % _short(e))
                    self._fixed.extend(_fallback_periods([component],
                                                         floating_zone))
            elif component.name == "VEVENT":
                groups.setdefault(str(component.get("UID", "")),
                                  []).append(component)
        for uid, components in groups.items():
            try:
                series = _Series(uid, components, vtimezones)
            except (Exception, TimeLimitExceeded) as e:
                self._give_up(components, e)
                continue
            if not any(("RRULE" in c or "RDATE" in c) for c in components):
                # A single event (maybe with overrides): expand it once.
                self._expand_single(series)
            else:
                self._series.append(series)

    # -- answering --------------------------------------------------------

    @property
    def cost(self) -> int:
        """Roughly how much memory this object holds, in periods."""
        return (self._text_cost + len(self._fixed) + self._chunks_cost +
                self._rules_cost // 4)

    def periods(self, window: Window,
                excluding: frozenset = frozenset(),
                month_starts: Optional[List[datetime.datetime]] = None,
                deadline: Optional[float] = None) -> List[Period]:
        """Busy periods overlapping ``window`` (not clipped, not merged),
        without those declined by any address in ``excluding``.
        ``month_starts`` is ``months(window)``, when the caller has it.

        Months not yet expanded when ``deadline`` (time.monotonic()) has
        passed count as BUSY for this answer and are not kept, so a later
        query goes on where this one stopped: a long window over a dense
        rule costs each request a bounded time and is never free."""
        try:
            return self._periods(window, excluding, month_starts, deadline)
        except Exception as e:  # last resort: never free, never a 500
            logger.exception("Calendar object %s failed for %s..%s",
                             self.origin, window.start, window.end)
            self._warn("cannot be answered (%s); counting the window as "
                       "busy" % _short(e))
            return [Period(window.start, window.end, BUSY)]

    def _periods(self, window: Window, excluding: frozenset,
                 month_starts: Optional[List[datetime.datetime]],
                 deadline: Optional[float]) -> List[Period]:
        found: List[Period] = []
        if self._series:
            starts = month_starts or months(window)
            wait = -1 if deadline is None else max(
                0.0, deadline - time.monotonic())
            if not self._lock.acquire(timeout=wait):
                # Another request is expanding this object: answer from
                # what is kept, busy for the rest.
                self._answer_kept(starts, window, excluding, found)
            else:
                try:
                    self._answer_expanding(starts, window, excluding, found,
                                           deadline)
                finally:
                    self._lock.release()
        self._fixed_chunk.overlapping(window, excluding, found)
        return found

    def _answer_kept(self, starts, window: Window, excluding: frozenset,
                     found: List[Period]) -> None:
        for start in starts:
            chunk = self._chunks.get(start)
            if chunk is None:
                found.append(self._unexpanded(start))
            else:
                chunk.overlapping(window, excluding, found)

    def _answer_expanding(self, starts, window: Window, excluding: frozenset,
                          found: List[Period],
                          deadline: Optional[float]) -> None:
        for start in starts:
            chunk = self._chunks.get(start)
            if chunk is None:
                if deadline is not None and time.monotonic() > deadline:
                    found.append(self._unexpanded(start))
                    continue
                chunk = self._expand_chunk(start)
                self._chunks[start] = chunk
                self._chunks_cost += chunk.cost
                while len(self._chunks) > MAX_CHUNKS:
                    _, old = self._chunks.popitem(last=False)
                    self._chunks_cost -= old.cost
            else:
                self._chunks.move_to_end(start)
            chunk.overlapping(window, excluding, found)
        if self._fixed_changed:
            self._fixed_index()

    # -- for the busy index ------------------------------------------------

    @property
    def recurring(self) -> bool:
        """Has series expanded month by month (``month_busy``)."""
        return bool(self._series)

    def fixed_busy(self) -> Tuple[List[Period],
                                  List[Tuple[Period, frozenset]]]:
        """The periods that hold whatever the month (single events,
        VFREEBUSY, fallbacks), coalesced, and the declined ones."""
        return self._fixed_chunk.periods, self._fixed_chunk.declined

    def month_busy(self, start: datetime.datetime,
                   deadline: Optional[float] = None
                   ) -> Tuple[List[Period], List[Tuple[Period, frozenset]],
                              bool]:
        """The series' busy time in the UTC month from ``start``, clipped
        to it (``fixed_busy`` not included), and whether it is complete.

        Incomplete (False) when the month could not be expanded before
        ``deadline`` or another request is expanding this object: then the
        month is BUSY from the series' first instance on, for this answer
        only.  The month is not kept here: the busy index keeps it."""
        if not self._series:
            return [], [], True
        wait = -1 if deadline is None else max(0.0,
                                               deadline - time.monotonic())
        if not self._lock.acquire(timeout=wait):
            return [self._unexpanded(start)], [], False
        try:
            chunk = self._chunks.get(start)
            if chunk is None:
                if deadline is not None and time.monotonic() > deadline:
                    return [self._unexpanded(start)], [], False
                chunk = self._expand_chunk(start)
            if self._fixed_changed:
                self._fixed_index()
            return chunk.periods, chunk.declined, True
        except Exception as e:  # last resort: never free, never a 500
            logger.exception("Calendar object %s failed for the month of "
                             "%s", self.origin, start)
            self._warn("cannot be answered (%s); counting the month as "
                       "busy" % _short(e))
            return [Period(start, next_month(start), BUSY)], [], False
        finally:
            self._lock.release()

    def _unexpanded(self, start: datetime.datetime) -> Period:
        earliest = min(s.earliest for s in self._series)
        return Period(max(start, earliest), max(next_month(start),
                                                earliest), BUSY)

    # -- expanding --------------------------------------------------------

    def _fixed_index(self) -> None:
        self._fixed_chunk = _Chunk(self._fixed, self._fixed_declined)
        self._fixed_changed = False
        self.fixed_version += 1

    def _expand_single(self, series: _Series) -> None:
        """A series without rules (maybe with overrides): its occurrences
        are its components, found by one expansion over all time."""
        starts = [safe_utc(c["DTSTART"].dt, self.zone)
                  for c in series.components]
        span = Window(max(EARLIEST, min(starts) - _FLOATING_MARGIN),
                      LATEST)
        try:
            periods, declined = self._occurrences(series, span)
        except (Exception, TimeLimitExceeded) as e:
            self._give_up(series.components, e)
            return
        self._fixed.extend(periods)
        self._fixed_declined.extend(declined)

    def _expand_chunk(self, start: datetime.datetime) -> _Chunk:
        chunk = Window(start, next_month(start))
        periods: List[Period] = []
        declined: List[Tuple[Period, frozenset]] = []
        for series in self._series:
            if series.broken:
                continue
            try:
                try:
                    found, found_declined = self._occurrences(series, chunk)
                except _TooMany:
                    # Too many for a month: each day on its own, so a
                    # frequent rule stays exact where a day is within the
                    # bound and only the days past it count as busy.
                    found, found_declined = [], []
                    for day in chunk.split(datetime.timedelta(days=1)):
                        try:
                            more, more_declined = self._occurrences(series,
                                                                    day)
                        except _TooMany as e:
                            self._too_many(series, day, e.args[0])
                            if series.earliest < day.end:
                                more = [Period(max(day.start,
                                                   series.earliest),
                                               day.end, BUSY)]
                            else:
                                more = []
                            more_declined = []
                        found.extend(more)
                        found_declined.extend(more_declined)
            except (Exception, TimeLimitExceeded) as e:
                series.broken = True
                self._give_up(series.components, e)
                self._fixed_changed = True
                continue
            periods.extend(found)
            declined.extend(found_declined)
        return _Chunk(periods, declined)

    def _too_many(self, series: _Series, day: Window, limit: int) -> None:
        if not series.warned:
            series.warned = True
            self._warn("has more than %d occurrences in a day (first on %s);"
                       " counting such days as busy" % (
                           limit, day.start.strftime("%Y-%m-%d")))

    def _occurrences(self, series: _Series, part: Window
                     ) -> Tuple[List[Period], List[Tuple[Period, frozenset]]]:
        """Occurrences of ``series`` overlapping ``part``, clipped to it."""
        limit = self.limits.max_occurrences or HARD_MAX_OCCURRENCES
        low = max(EARLIEST, part.start - _FLOATING_MARGIN)
        high = min(LATEST, part.end + _FLOATING_MARGIN)
        periods: List[Period] = []
        declined: List[Tuple[Period, frozenset]] = []
        if series.density * (part.end - part.start).total_seconds() > \
                limit * 1.5:
            # Far more instances than allowed: do not even start.
            raise _TooMany(limit)
        try:
            self._expand_into(series, part, low, high, limit, periods,
                              declined)
        finally:
            kept = _trim(series.rules)
            self._rules_cost += kept - series.kept
            series.kept = kept
        return periods, declined

    def _expand_into(self, series: _Series, part: Window, low, high,
                     limit: int, periods: List[Period],
                     declined: List[Tuple[Period, frozenset]]) -> None:
        declined_of: Dict[int, frozenset] = {}
        count = 0
        query = series.query_for(low, self.zone)
        if query is _NO_OCCURRENCES:
            return
        with time_limit(self.limits.seconds):
            for one in query.series:
                for occurrence in one.between(low.replace(tzinfo=None),
                                              high.replace(tzinfo=None)):
                    # The library keeps the source component (master or
                    # override) on the occurrence's adapter; reading it
                    # avoids copying a component per occurrence.
                    component = occurrence._adapter._component
                    fbtype = event_fbtype(component)
                    if fbtype is None:
                        continue
                    start = safe_utc(occurrence.start, self.zone)
                    end = safe_utc(occurrence.end, self.zone)
                    # RFC 4791 9.9: a zero-length event adds no busy time.
                    if end <= start or not part.overlaps(start, end):
                        continue
                    count += 1
                    if count > limit:
                        raise _TooMany(limit)
                    period = Period(max(start, part.start),
                                    min(end, part.end), fbtype)
                    who = declined_of.get(id(component))
                    if who is None:
                        who = declined_of[id(component)] = \
                            declined_by(component)
                    if who:
                        declined.append((period, who))
                    else:
                        periods.append(period)

    def _give_up(self, components: List, error: BaseException) -> None:
        """A series that cannot be expanded counts as busy over its span."""
        if isinstance(error, TimeLimitExceeded):
            self.timed_out = True
        reason = ("expansion took longer than %g s" % self.limits.seconds
                  if isinstance(error, TimeLimitExceeded) else _short(error))
        self._warn("has a recurrence that cannot be expanded (%s); counting "
                   "it as busy from its first instance to the end of its "
                   "rule" % reason)
        self._fixed.extend(_fallback_periods(components, self.zone))

    def _warn(self, text: str) -> None:
        logger.warning("Calendar object %s %s", self.origin or "(unnamed)",
                       text)


class _TooMany(Exception):
    """A series has more occurrences in one chunk than allowed."""


def _short(error: BaseException) -> str:
    text = str(error).replace("\n", " ")[:160]
    return "%s: %s" % (type(error).__name__, text) if text else \
        type(error).__name__


# -- what is left when expansion fails ----------------------------------------

def _component_time(component, name: str):
    prop = component.get(name)
    if isinstance(prop, list):
        prop = prop[0] if prop else None
    value = getattr(prop, "dt", None)
    return value if isinstance(value, (datetime.date, datetime.timedelta)) \
        else None


def _fallback_periods(components: Iterable, zone: datetime.tzinfo
                      ) -> List[Period]:
    """Conservative busy spans of components whose rules cannot be used.

    Each component's first instance is busy; a component with an RRULE is
    busy from DTSTART to its UNTIL, or for ever when it has none or it
    cannot be read (COUNT cannot be honoured without expanding).  A
    component that is transparent or cancelled adds nothing.
    """
    out = []
    for component in components:
        try:
            fbtype = event_fbtype(component) if component.name == "VEVENT" \
                else BUSY
        except Exception:
            fbtype = BUSY
        if fbtype is None:
            continue
        try:
            out.extend(_component_fallback(component, zone, fbtype))
        except (OverflowError, ValueError, TypeError, AttributeError):
            out.append(Period(EARLIEST, LATEST, fbtype))
    return out


def _component_fallback(component, zone: datetime.tzinfo,
                        fbtype: str) -> List[Period]:
    start = _component_time(component, "DTSTART")
    if not isinstance(start, datetime.date):
        return [Period(EARLIEST, LATEST, BUSY)]
    start_utc = safe_utc(start, zone)
    end_value = _component_time(component, "DTEND")
    duration = _component_time(component, "DURATION")
    if isinstance(end_value, datetime.date):
        end_utc = safe_utc(end_value, zone)
    elif isinstance(duration, datetime.timedelta):
        end_utc = start_utc + duration \
            if EARLIEST + abs(duration) < start_utc < LATEST - abs(duration) \
            else LATEST
    elif not isinstance(start, datetime.datetime):
        end_utc = min(LATEST, start_utc + datetime.timedelta(days=1))
    else:
        end_utc = start_utc
    if "RRULE" in component or "RDATE" in component:
        end_utc = max(end_utc, _rule_until(component, zone))
    return [Period(start_utc, end_utc, fbtype)] if end_utc > start_utc \
        else []


_UNTIL_RE = re.compile(r"UNTIL=(\d{8}(?:T\d{6}Z?)?)", re.I)


def _rule_until(component, zone: datetime.tzinfo) -> datetime.datetime:
    """The UNTIL of a component's RRULE, LATEST when none can be read."""
    rule = component.get("RRULE")
    if rule is None:
        return LATEST
    text = rule.to_ical().decode("utf-8", "replace") \
        if hasattr(rule, "to_ical") else str(rule)
    match = _UNTIL_RE.search(text)
    if not match:
        return LATEST
    value = _parse_ical_time(match.group(1), None)
    return LATEST if value is None else min(LATEST, max(
        safe_utc(value, zone) + datetime.timedelta(days=1), EARLIEST))


_LINE_RE = re.compile(r"^([A-Za-z-]+)((?:;[^:]*)?):(.*)$")
_TZID_RE = re.compile(r";TZID=\"?([^;:\"]+)", re.I)
_DURATION_RE = re.compile(
    r"^([+-]?)P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def _parse_ical_time(value: str, tzid: Optional[str]):
    value = value.strip()
    try:
        if len(value) == 8:
            return datetime.date(int(value[:4]), int(value[4:6]),
                                 int(value[6:8]))
        moment = datetime.datetime.strptime(value[:15], "%Y%m%dT%H%M%S")
    except ValueError:
        return None
    if value.endswith("Z"):
        return moment.replace(tzinfo=UTC)
    if tzid:
        try:
            return moment.replace(tzinfo=zoneinfo.ZoneInfo(tzid))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return moment


def _parse_duration(value: str) -> Optional[datetime.timedelta]:
    match = _DURATION_RE.match(value.strip())
    if not match or not any(match.groups()[1:]):
        return None
    weeks, days, hours, minutes, seconds = (int(g or 0)
                                            for g in match.groups()[1:])
    delta = datetime.timedelta(weeks=weeks, days=days, hours=hours,
                               minutes=minutes, seconds=seconds)
    return -delta if match.group(1) == "-" else delta


def lenient_periods(text: str, zone: datetime.tzinfo) -> List[Period]:
    """Busy spans of an object icalendar cannot parse, read line by line.

    Every VEVENT (or VFREEBUSY) block with a readable DTSTART counts as in
    ``_fallback_periods``; when no block gives a DTSTART, the object is
    busy everywhere, since nothing says when it is not.
    """
    lines = re.sub(r"\r?\n[ \t]", "", text).splitlines()
    blocks: List[Dict[str, object]] = []
    current: Optional[Dict[str, object]] = None
    for line in lines:
        match = _LINE_RE.match(line.strip())
        if not match:
            continue
        name, params, value = match.group(1).upper(), match.group(2), \
            match.group(3)
        if name == "BEGIN" and value.strip().upper() in ("VEVENT",
                                                          "VFREEBUSY"):
            current = {}
            blocks.append(current)
        elif name == "END" and value.strip().upper() in ("VEVENT",
                                                        "VFREEBUSY"):
            current = None
        elif current is not None and name not in current:
            tzid_match = _TZID_RE.search(params or "")
            current[name] = (value, tzid_match.group(1) if tzid_match
                             else None)
    out = []
    for block in blocks:
        if str(block.get("TRANSP", ("",))[0]).strip().upper() == \
                "TRANSPARENT" or str(block.get("STATUS", ("",))[0]).strip() \
                .upper() == "CANCELLED":
            continue
        raw_start = block.get("DTSTART")
        start = _parse_ical_time(*raw_start) if raw_start else None
        if start is None:
            continue
        start_utc = safe_utc(start, zone)
        end_utc = start_utc
        raw_end = block.get("DTEND")
        end = _parse_ical_time(*raw_end) if raw_end else None
        duration = _parse_duration(block["DURATION"][0]) \
            if "DURATION" in block else None
        if end is not None:
            end_utc = safe_utc(end, zone)
        elif duration is not None and start_utc < LATEST - abs(duration):
            end_utc = start_utc + duration
        elif not isinstance(start, datetime.datetime):
            end_utc = start_utc + datetime.timedelta(days=1)
        if "RRULE" in block or "RDATE" in block:
            until = _UNTIL_RE.search(str(block.get("RRULE", ("",))[0]))
            until_value = _parse_ical_time(until.group(1), None) \
                if until else None
            end_utc = max(end_utc, LATEST if until_value is None else
                          safe_utc(until_value, zone) +
                          datetime.timedelta(days=1))
        if end_utc > start_utc:
            out.append(Period(start_utc, min(end_utc, LATEST), BUSY))
    if not out:
        out.append(Period(EARLIEST, LATEST, BUSY))
    return out


def availability_components(objects) -> List[Tuple[icalendar.cal.Component,
                                                   datetime.tzinfo]]:
    """All VAVAILABILITY components of ``objects`` with their zones."""
    return [(c, o.zone) for o in objects for c in o.availability]
