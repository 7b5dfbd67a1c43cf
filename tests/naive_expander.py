"""A brute-force reference for busy time, independent of the engine.

The property tests draw event series as ``Series`` values, write them as
iCalendar with ``Series.ical()`` and compare the gateway's answer with
``busy_periods()`` computed here.  The recurrence arithmetic is written
out by hand for exactly the rule forms the tests draw (no dateutil, which
recurring-ical-events uses, and no icalendar); only the time zone
arithmetic comes from ``zoneinfo``.

Rule forms and their meaning (RFC 5545 3.3.10, 3.8.4.4, 3.8.5):

- FREQ=HOURLY (UTC series only), DAILY, WEEKLY (BYDAY, WKST=MO), MONTHLY
  (the day of the month of DTSTART; months without that day are skipped),
  each with INTERVAL and COUNT or UNTIL or neither.  DTSTART is always the
  first instance, even when UNTIL is before it; COUNT counts it.
- EXDATE removes instances, RDATE adds instances with the master's
  duration, RDATE;VALUE=PERIOD adds instances with their own end.
- A RECURRENCE-ID override replaces one instance (or cancels it with
  STATUS:CANCELLED); a RANGE=THISANDFUTURE override moves every instance
  from its RECURRENCE-ID on by the same wall-clock shift and gives them
  its duration, status and transparency.
- TRANSP:TRANSPARENT and STATUS:CANCELLED are free, STATUS:TENTATIVE is
  BUSY-TENTATIVE, anything else BUSY (RFC 4791 7.10).
- Frames: "UTC" (DTSTART:...Z), "BERLIN" (TZID=Europe/Berlin local wall
  time, converted with zoneinfo), "DATE" (all-day, UTC days: the tests
  set no calendar-timezone).

Times are naive datetimes (or dates) in the series' frame.  ``raster``
turns period lists into per-FBTYPE minute intervals, the minute grid the
tests compare.
"""

import calendar
import datetime
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple
from zoneinfo import ZoneInfo

UTC = datetime.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
FREQS = ("HOURLY", "DAILY", "WEEKLY", "MONTHLY")
DAY_NAMES = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
MINUTE = datetime.timedelta(minutes=1)


class Rule(NamedTuple):
    freq: str
    interval: int = 1
    #: Weekdays (0 = Monday) for WEEKLY; DTSTART's weekday is among them.
    byday: Tuple[int, ...] = ()
    count: Optional[int] = None
    #: Aware UTC datetime for timed series, a date for DATE series.
    until: Optional[object] = None


class Override(NamedTuple):
    rid: object                 # original start of the instance replaced
    start: object               # its new start
    duration: datetime.timedelta
    status: Optional[str] = None
    transp: Optional[str] = None
    this_and_future: bool = False


class Series(NamedTuple):
    uid: str
    frame: str                  # "UTC", "BERLIN" or "DATE"
    start: object               # naive datetime, or date for "DATE"
    duration: datetime.timedelta
    duration_property: bool = False   # DURATION instead of DTEND
    status: Optional[str] = None
    transp: Optional[str] = None
    rule: Optional[Rule] = None
    exdates: Tuple = ()
    rdates: Tuple = ()
    #: (start, end) pairs written as RDATE;VALUE=PERIOD.
    rdate_periods: Tuple = ()
    overrides: Tuple[Override, ...] = ()

    # -- iCalendar ----------------------------------------------------

    def ical(self, extra_lines: str = "") -> str:
        """The series as one calendar object (master and overrides)."""
        lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//naive//EN"]
        master = ["DTSTART%s" % self._value(self.start)]
        if self.duration_property:
            master.append("DURATION:%s" % _duration_text(self.duration))
        else:
            master.append("DTEND%s" % self._value(self.start +
                                                  self.duration))
        if self.rule is not None:
            master.append("RRULE:%s" % self._rule_text())
        for value in self.exdates:
            master.append("EXDATE%s" % self._value(value))
        for value in self.rdates:
            master.append("RDATE%s" % self._value(value))
        for start, end in self.rdate_periods:
            master.append(self._period_line(start, end))
        lines += self._component(master, self.status, self.transp,
                                 extra_lines)
        for override in self.overrides:
            body = ["RECURRENCE-ID%s%s" % (
                ";RANGE=THISANDFUTURE" if override.this_and_future else "",
                self._value(override.rid)),
                "DTSTART%s" % self._value(override.start),
                "DTEND%s" % self._value(override.start + override.duration)]
            lines += self._component(body, override.status,
                                     override.transp, extra_lines)
        lines.append("END:VCALENDAR")
        return "\r\n".join(lines) + "\r\n"

    def _component(self, body: List[str], status, transp,
                   extra_lines: str) -> List[str]:
        lines = ["BEGIN:VEVENT", "UID:%s" % self.uid,
                 "DTSTAMP:20260101T000000Z"] + body
        if status:
            lines.append("STATUS:%s" % status)
        if transp:
            lines.append("TRANSP:%s" % transp)
        lines.append("SUMMARY:naive %s" % self.uid)
        if extra_lines:
            lines += extra_lines.strip("\r\n").split("\r\n")
        lines.append("END:VEVENT")
        return lines

    def _value(self, value) -> str:
        """``;params:value`` of a DTSTART-like property."""
        if self.frame == "DATE":
            return ";VALUE=DATE:%s" % value.strftime("%Y%m%d")
        if self.frame == "BERLIN":
            return ";TZID=Europe/Berlin:%s" % value.strftime("%Y%m%dT%H%M%S")
        return ":%s" % value.strftime("%Y%m%dT%H%M%SZ")

    def _period_line(self, start, end) -> str:
        if self.frame == "BERLIN":
            return "RDATE;VALUE=PERIOD;TZID=Europe/Berlin:%s/%s" % (
                start.strftime("%Y%m%dT%H%M%S"),
                end.strftime("%Y%m%dT%H%M%S"))
        return "RDATE;VALUE=PERIOD:%s/%s" % (
            start.strftime("%Y%m%dT%H%M%SZ"), end.strftime("%Y%m%dT%H%M%SZ"))

    def _rule_text(self) -> str:
        rule = self.rule
        parts = ["FREQ=%s" % rule.freq]
        if rule.interval != 1:
            parts.append("INTERVAL=%d" % rule.interval)
        if rule.byday:
            parts.append("BYDAY=%s" % ",".join(DAY_NAMES[d]
                                               for d in rule.byday))
        if rule.count is not None:
            parts.append("COUNT=%d" % rule.count)
        if rule.until is not None:
            if self.frame == "DATE":
                parts.append("UNTIL=%s" % rule.until.strftime("%Y%m%d"))
            else:
                parts.append("UNTIL=%s" % rule.until.strftime(
                    "%Y%m%dT%H%M%SZ"))
        return ";".join(parts)

    # -- arithmetic ---------------------------------------------------

    def to_utc(self, value) -> datetime.datetime:
        if self.frame == "DATE":
            return datetime.datetime.combine(value, datetime.time(0),
                                             tzinfo=UTC)
        if self.frame == "BERLIN":
            # fold=0: a wall time in a spring gap uses the offset before
            # it (RFC 5545 3.3.5); the tests draw no such times.
            return value.replace(tzinfo=BERLIN).astimezone(UTC)
        return value.replace(tzinfo=UTC)

    def rule_starts(self, horizon) -> Iterator:
        """Instance starts the RRULE makes, up to ``horizon`` (frame)."""
        rule, start = self.rule, self.start
        produced = 0
        for candidate in _candidates(rule, start, horizon):
            if rule.until is not None:
                if self.frame == "DATE":
                    if candidate > rule.until:
                        return
                elif self.to_utc(candidate) > rule.until:
                    return
            produced += 1
            if rule.count is not None and produced > rule.count:
                return
            yield candidate

    def instances(self, horizon) -> List[Tuple[object, object, object]]:
        """(original start, start, end) of every instance whose original
        start is at most ``horizon``, overrides applied, cancelled ones
        and free ones included (fbtype decides later): sorted."""
        starts = {self.start} if self.start <= horizon else set()
        if self.rule is not None:
            starts.update(self.rule_starts(horizon))
        starts.update(r for r in self.rdates if r <= horizon)
        ends = {s: s + self.duration for s in starts}
        for start, end in self.rdate_periods:
            if start <= horizon:
                starts.add(start)
                ends[start] = end
        for value in self.exdates:
            starts.discard(value)
        return [(s, s, ends[s]) for s in sorted(starts)]

    def busy_periods(self, horizon_utc: datetime.datetime
                     ) -> List[Tuple[datetime.datetime, datetime.datetime,
                                     str]]:
        """(start, end, fbtype) in UTC of every busy instance whose
        original start is before ``horizon_utc`` (give a margin of the
        largest shift plus a few days)."""
        horizon = horizon_utc.replace(tzinfo=None)
        if self.frame == "DATE":
            horizon = horizon.date()
        base_type = fbtype(self.status, self.transp)
        single = {o.rid: o for o in self.overrides if not o.this_and_future}
        ranged = [o for o in self.overrides if o.this_and_future]
        out = []
        for original, start, end in self.instances(horizon):
            kind = base_type
            if original in single:
                override = single[original]
                start = override.start
                end = start + override.duration
                kind = fbtype(override.status, override.transp)
            else:
                for override in ranged:
                    if original >= override.rid:
                        shift = override.start - override.rid
                        start = original + shift
                        end = start + override.duration
                        kind = fbtype(override.status, override.transp)
            if kind is None:
                continue
            start_utc, end_utc = self.to_utc(start), self.to_utc(end)
            if end_utc > start_utc:
                out.append((start_utc, end_utc, kind))
        return out


def fbtype(status: Optional[str], transp: Optional[str]) -> Optional[str]:
    if (transp or "").upper() == "TRANSPARENT":
        return None
    status = (status or "").upper()
    if status == "CANCELLED":
        return None
    if status == "TENTATIVE":
        return "BUSY-TENTATIVE"
    return "BUSY"


def _candidates(rule: Rule, start, horizon) -> Iterator:
    """Every start the rule's FREQ/INTERVAL/BYDAY make, in order, from
    ``start`` on, until past ``horizon``; COUNT/UNTIL are the caller's."""
    if rule.freq in ("HOURLY", "DAILY"):
        step = datetime.timedelta(hours=rule.interval) \
            if rule.freq == "HOURLY" else datetime.timedelta(
                days=rule.interval)
        value = start
        while value <= horizon:
            yield value
            value += step
    elif rule.freq == "WEEKLY":
        days = sorted(set(rule.byday)) or [start.weekday()]
        day = start if isinstance(start, datetime.date) and not isinstance(
            start, datetime.datetime) else start.date()
        week = day - datetime.timedelta(days=day.weekday())
        while True:
            for weekday in days:
                date = week + datetime.timedelta(days=weekday)
                value = _at(start, date)
                if value < start:
                    continue
                if value > horizon:
                    return
                yield value
            week += datetime.timedelta(days=7 * rule.interval)
    elif rule.freq == "MONTHLY":
        year, month = start.year, start.month
        while True:
            first = _at(start, datetime.date(year, month, 1))
            if first > horizon:
                return
            if start.day <= calendar.monthrange(year, month)[1]:
                value = _at(start, datetime.date(year, month, start.day))
                if value > horizon:
                    return
                yield value
            month += rule.interval
            year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    else:
        raise ValueError("rule form not drawn: %s" % rule.freq)


def _at(start, date: datetime.date):
    """``date`` at the time of day of ``start`` (a date stays a date)."""
    if isinstance(start, datetime.datetime):
        return datetime.datetime.combine(date, start.time())
    return date


def _duration_text(value: datetime.timedelta) -> str:
    if value.seconds == 0 and value.days:
        return "P%dD" % value.days
    hours, rest = divmod(value.seconds, 3600)
    text = "P%dDT" % value.days if value.days else "PT"
    if hours:
        text += "%dH" % hours
    if rest // 60 or not hours:
        text += "%dM" % (rest // 60)
    return text


# -- the minute grid --------------------------------------------------

Grid = Dict[str, List[Tuple[int, int]]]


def raster(periods, window_start: datetime.datetime,
           window_end: datetime.datetime) -> Grid:
    """{FBTYPE: coalesced [(first minute, last minute + 1)]}: the minutes
    of ``[window_start, window_end)`` each type covers, counted from
    ``window_start``.  A period covers every minute it touches."""
    total = int((window_end - window_start) // MINUTE)
    spans: Dict[str, List[Tuple[int, int]]] = {}
    for start, end, kind in periods:
        a = (start - window_start) // MINUTE
        b = -((window_start - end) // MINUTE)      # ceiling
        a, b = max(a, 0), min(b, total)
        if b > a:
            spans.setdefault(kind, []).append((a, b))
    return {kind: union(items) for kind, items in spans.items()}


def union(spans) -> List[Tuple[int, int]]:
    out: List[Tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def subtract(spans, minus) -> List[Tuple[int, int]]:
    """Minutes of ``spans`` not in ``minus`` (both coalesced)."""
    out = []
    for a, b in spans:
        for c, d in minus:
            if d <= a or c >= b:
                continue
            if c > a:
                out.append((a, c))
            a = max(a, d)
            if a >= b:
                break
        if a < b:
            out.append((a, b))
    return out


def describe(spans, window_start: datetime.datetime) -> List[str]:
    """Minute spans back as readable UTC times, for failure messages."""
    return ["%s/%s" % ((window_start + a * MINUTE).strftime("%Y%m%dT%H%MZ"),
                       (window_start + b * MINUTE).strftime("%Y%m%dT%H%MZ"))
            for a, b in spans]
