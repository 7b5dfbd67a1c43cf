"""RFC 7953 VAVAILABILITY: turn working hours into busy periods.

Inside a VAVAILABILITY's span, time is busy with its BUSYTYPE (default
BUSY-UNAVAILABLE) except during its AVAILABLE instances.  Several
components combine by PRIORITY (1 highest, 0 or none lowest): each is
painted over the lower ones within its span, as sabre/vobject and
CalendarServer do.  Events are laid over the result by the caller.

AVAILABLE recurs exactly like a VEVENT (DTSTART, DTEND/DURATION, RRULE,
RDATE, EXDATE, RECURRENCE-ID), so each one is expanded by
recurring-ical-events under the name VEVENT instead of by hand.
"""

import datetime
from typing import Iterable, List, Optional, Tuple

import icalendar
import recurring_ical_events

from gateway import timezones
from gateway.model import BUSY_UNAVAILABLE, Period, Window, normalize_fbtype

_FREE = None
_MARGIN = datetime.timedelta(days=1)


def _priority_rank(component: icalendar.cal.Component) -> int:
    """Sort key: lowest priority first, so higher ones paint over them."""
    try:
        priority = int(component.get("PRIORITY", 0))
    except (TypeError, ValueError):
        priority = 0
    return -(priority if 1 <= priority <= 9 else 10)


def _span(component, zone, window: Window) -> Optional[Window]:
    start, end = window.start, window.end
    if "DTSTART" in component:
        start = max(start, timezones.to_utc(component["DTSTART"].dt, zone))
        if "DTEND" in component:
            end = min(end, timezones.to_utc(component["DTEND"].dt, zone))
        elif "DURATION" in component:
            end = min(end, timezones.to_utc(component["DTSTART"].dt, zone)
                      + component["DURATION"].dt)
    elif "DTEND" in component:
        end = min(end, timezones.to_utc(component["DTEND"].dt, zone))
    return Window(start, end) if end > start else None


def _available_instances(component, zone, span: Window) -> List[Tuple]:
    calendar = icalendar.Calendar()
    for available in component.subcomponents:
        if available.name != "AVAILABLE":
            continue
        event = icalendar.Event()
        for name, value in available.items():
            event.add(name, value) if isinstance(value, list) is False \
                else [event.add(name, v) for v in value]
        if "UID" not in event:
            event.add("UID", "available-%d" % id(available))
        calendar.add_component(event)
    if not calendar.subcomponents:
        return []
    out = []
    for occurrence in recurring_ical_events.of(calendar).between(
            (span.start - _MARGIN).replace(tzinfo=None),
            (span.end + _MARGIN).replace(tzinfo=None)):
        start = timezones.to_utc(occurrence["DTSTART"].dt, zone)
        end = timezones.to_utc(occurrence["DTEND"].dt, zone) \
            if "DTEND" in occurrence else start + occurrence.duration
        if end > span.start and start < span.end:
            out.append((max(start, span.start), min(end, span.end)))
    return out


def _paint(canvas: List[Tuple], start, end, state) -> List[Tuple]:
    """Lay ``[start, end) = state`` over ``canvas``, a list of segments."""
    out = []
    for s, e, st in canvas:
        if e <= start or s >= end:
            out.append((s, e, st))
            continue
        if s < start:
            out.append((s, start, st))
        if e > end:
            out.append((end, e, st))
    out.append((start, end, state))
    return out


def availability_periods(components: Iterable[Tuple], window: Window
                         ) -> List[Period]:
    """Busy periods that VAVAILABILITY components give inside ``window``.

    ``components`` holds ``(VAVAILABILITY, floating_zone)`` pairs.
    """
    canvas: List[Tuple] = []
    for component, zone in sorted(components,
                                  key=lambda cz: _priority_rank(cz[0])):
        span = _span(component, zone, window)
        if span is None:
            continue
        busytype = normalize_fbtype(component.get("BUSYTYPE",
                                                  BUSY_UNAVAILABLE))
        canvas = _paint(canvas, span.start, span.end, busytype)
        for start, end in _available_instances(component, zone, span):
            canvas = _paint(canvas, start, end, _FREE)
    return [Period(s, e, st) for s, e, st in canvas if st is not _FREE]
