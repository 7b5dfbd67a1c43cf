"""Busy time of one calendar object resource (one iCalendar text).

A ``BusyObject`` is built once per object text (the local engine keys it by
the object's etag) and answers any window afterwards: recurrences are
expanded by recurring-ical-events on demand, in month-aligned chunks, and
kept, so a repeated or overlapping query never re-parses or re-expands.

What counts (RFC 4791 7.10, RFC 5545, RFC 7953):
- VEVENT occurrences, overrides included (RECURRENCE-ID, RANGE=THISANDFUTURE),
  except TRANSP:TRANSPARENT and STATUS:CANCELLED; STATUS:TENTATIVE is
  BUSY-TENTATIVE, everything else BUSY.  Occurrences an attendee declined
  (PARTSTAT=DECLINED) are remembered with that attendee's address, so a
  lookup for that person can leave them out, as CalendarServer and
  sabre/dav do for scheduling.
- FREEBUSY periods of stored VFREEBUSY components, with their FBTYPE.
- VAVAILABILITY components are handed to gateway.availability, because they
  combine across the whole calendar, not per object.
"""

import bisect
import datetime
import logging
from typing import Dict, Iterator, List, Optional, Tuple

import icalendar
import recurring_ical_events

from gateway import timezones
from gateway.model import (BUSY, BUSY_TENTATIVE, Period, Window,
                           normalize_fbtype)

logger = logging.getLogger(__name__)

#: Floating times can sit up to 14 hours either side of UTC; the library is
#: asked for a margin this wide and the exact UTC clip happens afterwards.
_FLOATING_MARGIN = datetime.timedelta(days=1)
_RRULE_DENSITY = {"SECONDLY": 86400, "MINUTELY": 1440, "HOURLY": 24,
                  "DAILY": 1}


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
        if str(a.params.get("PARTSTAT", "")).upper() == "DECLINED")


def _month_floor(value: datetime.datetime) -> datetime.datetime:
    return value.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _month_ceil(value: datetime.datetime) -> datetime.datetime:
    floor = _month_floor(value)
    if floor == value:
        return value
    return (floor + datetime.timedelta(days=32)).replace(day=1)


def freebusy_component_periods(component: icalendar.cal.Component,
                               zone: datetime.tzinfo) -> List[Period]:
    """FREEBUSY periods of a VFREEBUSY, in start/end or start/duration form."""
    periods = []
    props = component.get("FREEBUSY", [])
    if not isinstance(props, list):
        props = [props]
    for prop in props:
        fbtype = normalize_fbtype(prop.params.get("FBTYPE"))
        if fbtype is None:
            continue
        values = prop.dts if hasattr(prop, "dts") else [prop]
        for value in values:
            start, end = value.dt[0], value.dt[1]
            start = timezones.to_utc(start, zone)
            end = (start + end if isinstance(end, datetime.timedelta)
                   else timezones.to_utc(end, zone))
            periods.append(Period(start, end, fbtype))
    return periods


class BusyObject:
    """Busy periods of one calendar object, expanded lazily and kept."""

    def __init__(self, text: str, floating_zone: datetime.tzinfo,
                 max_occurrences: int = 0) -> None:
        calendar = icalendar.Calendar.from_ical(text)
        self.zone = floating_zone
        self.max_occurrences = max_occurrences
        self.availability = [c for c in calendar.subcomponents
                             if c.name == "VAVAILABILITY"]
        self._fixed: List[Period] = []
        for component in calendar.subcomponents:
            if component.name == "VFREEBUSY":
                self._fixed.extend(
                    freebusy_component_periods(component, floating_zone))
        events = [c for c in calendar.subcomponents if c.name == "VEVENT"]
        self._query = None
        self._density = 1
        if events:
            self._query = recurring_ical_events.of(calendar)
            for event in events:
                for rule in event.get("RRULE", []) if isinstance(
                        event.get("RRULE"), list) else [event.get("RRULE")]:
                    if rule:
                        freq = (rule.get("FREQ") or [""])[0]
                        interval = int((rule.get("INTERVAL") or [1])[0])
                        self._density = max(self._density, _RRULE_DENSITY.get(
                            freq, 1) // max(interval, 1))
        self._covered: Optional[Window] = None
        self._expanded: set = set()
        self._sorted: List[Period] = []
        self._starts: List[datetime.datetime] = []
        self._longest = datetime.timedelta(0)
        #: Period -> addresses that declined it (only where someone did).
        self._declined: Dict[Period, frozenset] = {}
        self._declined_of: Dict[int, frozenset] = {}
        self._index(self._fixed)

    def _index(self, periods: List[Period]) -> None:
        new = [p for p in periods if p not in self._expanded]
        if not new and self._sorted:
            return
        self._expanded.update(new)
        self._sorted = sorted(self._expanded)
        self._starts = [p.start for p in self._sorted]
        for p in new:
            self._longest = max(self._longest, p.end - p.start)

    def periods(self, window: Window,
                excluding: frozenset = frozenset()) -> List[Period]:
        """Busy periods overlapping ``window`` (not clipped, not merged),
        without those declined by any address in ``excluding``."""
        if self._query is not None:
            self._cover(window)
        # Periods are sorted by start; none can start before
        # window.start - longest and still reach into the window.
        lo = bisect.bisect_left(self._starts, window.start - self._longest)
        hi = bisect.bisect_left(self._starts, window.end)
        found = [p for p in self._sorted[lo:hi] if p.end > window.start]
        if excluding and self._declined:
            found = [p for p in found
                     if not self._declined.get(p, frozenset()) & excluding]
        return found

    def _cover(self, window: Window) -> None:
        """Expand recurrences so that ``window`` is inside the covered span."""
        start, end = _month_floor(window.start), _month_ceil(window.end)
        if self._covered is None:
            gaps = [Window(start, end)]
            self._covered = Window(start, end)
        else:
            gaps = []
            if start < self._covered.start:
                gaps.append(Window(start, self._covered.start))
            if end > self._covered.end:
                gaps.append(Window(self._covered.end, end))
            self._covered = Window(min(start, self._covered.start),
                                   max(end, self._covered.end))
        for gap in gaps:
            self._index(list(self._expand(gap)))

    def _expand(self, gap: Window) -> Iterator[Period]:
        """Occurrences in ``gap``, bounded by ``max_occurrences``.

        Dense rules (MINUTELY and the like) are walked in steps small enough
        to keep memory flat.  Past the limit the rest of the gap is reported
        busy: unexpanded time must never look free.
        """
        step_days = 31
        if self.max_occurrences:
            step_days = max(1, min(31, self.max_occurrences //
                                   max(self._density, 1)))
        step = datetime.timedelta(days=step_days)
        count = 0
        for part in gap.split(step):
            occurrences = self._query._occurrences_between(
                (part.start - _FLOATING_MARGIN).replace(tzinfo=None),
                (part.end + _FLOATING_MARGIN).replace(tzinfo=None))
            for occurrence in occurrences:
                period = self._occurrence_period(occurrence)
                if period is not None and part.overlaps(period.start,
                                                        period.end):
                    count += 1
                    yield period
            if self.max_occurrences and count > self.max_occurrences:
                logger.warning("Recurrence expansion stopped after %d "
                               "occurrences; reporting the rest of %s..%s "
                               "as busy", count, part.start, gap.end)
                yield Period(part.start, gap.end, BUSY)
                return

    def _occurrence_period(self, occurrence) -> Optional[Period]:
        # The library keeps the source component (master or override) on
        # the occurrence's adapter; reading it avoids copying a component
        # per occurrence, which dominated the cost of expansion.
        component = occurrence._adapter._component
        fbtype = event_fbtype(component)
        if fbtype is None:
            return None
        start = timezones.to_utc(occurrence.start, self.zone)
        end = timezones.to_utc(occurrence.end, self.zone)
        if end <= start:
            # RFC 4791 9.9: a zero-length event still blocks its instant
            # for matching, but it adds no busy time.
            return None
        period = Period(start, end, fbtype)
        declined = self._declined_of.get(id(component))
        if declined is None:
            declined = self._declined_of[id(component)] = \
                declined_by(component)
        if declined:
            self._declined[period] = declined
        return period


def availability_components(objects) -> List[Tuple[icalendar.cal.Component,
                                                   datetime.tzinfo]]:
    """All VAVAILABILITY components of ``objects`` with their zones."""
    return [(c, o.zone) for o in objects for c in o.availability]
