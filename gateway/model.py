"""The free/busy model: one vocabulary for every engine and face.

A window is ``[start, end)`` in UTC, a period is ``[start, end)`` in UTC with
one FBTYPE.  Free time is the absence of periods; FBTYPE=FREE never appears.
A lookup result per address is either periods (maybe none: free) or a
failure with a reason, because "no data" must never be reported as free.

This module imports nothing of the gateway: everything else builds on it.
"""

import datetime
import enum
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

UTC = datetime.timezone.utc

BUSY = "BUSY"
BUSY_TENTATIVE = "BUSY-TENTATIVE"
BUSY_UNAVAILABLE = "BUSY-UNAVAILABLE"
#: The busy types in output order; RFC 5545 says unknown types mean BUSY.
FBTYPES = (BUSY, BUSY_TENTATIVE, BUSY_UNAVAILABLE)


def normalize_fbtype(value: Optional[str]) -> Optional[str]:
    """Map an FBTYPE parameter to one of ours; None means free.

    RFC 5545 3.2.9: a missing FBTYPE is BUSY and unknown x-name or IANA
    values MUST be treated as BUSY.
    """
    if value is None:
        return BUSY
    value = str(value).upper()
    if value == "FREE":
        return None
    return value if value in FBTYPES else BUSY


#: The span of time free/busy questions may ask about.  Windows outside it
#: are refused (a question about year 1 or 9999 is a client's mistake, and
#: refusing it keeps every computation far from datetime's limits).
FIRST_ANSWERED = datetime.datetime(1800, 1, 1, tzinfo=UTC)
LAST_ANSWERED = datetime.datetime(3000, 1, 1, tzinfo=UTC)


class Window(NamedTuple):
    """``[start, end)`` in UTC, both aware datetimes."""

    start: datetime.datetime
    end: datetime.datetime

    @classmethod
    def checked(cls, start: datetime.datetime, end: datetime.datetime,
                max_days: Optional[int] = None) -> "Window":
        """Build a window, refusing reversed, empty, naive or absurd ones."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("window bounds must be in UTC")
        try:
            start, end = start.astimezone(UTC), end.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValueError("window bounds out of range") from None
        if start < FIRST_ANSWERED or end > LAST_ANSWERED:
            raise ValueError("window must lie between %d and %d" % (
                FIRST_ANSWERED.year, LAST_ANSWERED.year))
        if end <= start:
            raise ValueError("window end must be after its start")
        if max_days is not None and end - start > datetime.timedelta(
                days=max_days):
            raise ValueError("window longer than %d days" % max_days)
        return cls(start, end)

    def overlaps(self, start: datetime.datetime,
                 end: datetime.datetime) -> bool:
        return start < self.end and end > self.start

    def aligned(self, slot: datetime.timedelta) -> "Window":
        """Widened to whole ``slot``s counted from the Unix epoch, for
        systems that answer in fixed slots (EWS, Graph intervals)."""
        epoch = datetime.datetime(1970, 1, 1, tzinfo=UTC)
        start = epoch + (self.start - epoch) // slot * slot
        end = epoch - (epoch - self.end) // slot * slot
        return Window(start, end)

    def split(self, max_length: datetime.timedelta) -> List["Window"]:
        """Cut into consecutive windows no longer than ``max_length``."""
        parts, start = [], self.start
        while start < self.end:
            end = min(self.end, start + max_length)
            parts.append(Window(start, end))
            start = end
        return parts


class Period(NamedTuple):
    """``[start, end)`` in UTC with one busy type."""

    start: datetime.datetime
    end: datetime.datetime
    fbtype: str = BUSY


def clip(periods: Iterable[Period], window: Window) -> List[Period]:
    """Keep the parts of ``periods`` that lie inside ``window``."""
    out = []
    for p in periods:
        if p.start < window.end and p.end > window.start:
            out.append(Period(max(p.start, window.start),
                              min(p.end, window.end), p.fbtype))
    return out


def coalesce(periods: Iterable[Period]) -> List[Period]:
    """Merge overlapping or touching periods of the same type.

    Types are never merged into each other (RFC 4791 7.10 lets them
    overlap); the result is sorted by start, then end, then type order.
    """
    by_type: Dict[str, List[Tuple[datetime.datetime, datetime.datetime]]] = {}
    for p in periods:
        if p.end > p.start:
            by_type.setdefault(p.fbtype, []).append((p.start, p.end))
    merged: List[Period] = []
    for fbtype, spans in by_type.items():
        spans.sort()
        cur_start, cur_end = spans[0]
        for start, end in spans[1:]:
            if start <= cur_end:
                if end > cur_end:
                    cur_end = end
            else:
                merged.append(Period(cur_start, cur_end, fbtype))
                cur_start, cur_end = start, end
        merged.append(Period(cur_start, cur_end, fbtype))
    order = {t: i for i, t in enumerate(FBTYPES)}
    merged.sort(key=lambda p: (p.start, p.end, order.get(p.fbtype, 9)))
    return merged


def normalize(periods: Iterable[Period], window: Window) -> List[Period]:
    """Clip to the window, then coalesce: the form every answer has."""
    return coalesce(clip(periods, window))


class Reason(enum.Enum):
    """Why a lookup has no periods; each face maps these to its codes."""

    UNKNOWN_USER = "unknown user"
    NO_AUTHORITY = "no authority"
    UNAVAILABLE = "unavailable"
    TIMED_OUT = "timed out"
    RATE_LIMITED = "rate limited"
    NO_DATA = "no data"


#: A ``[start, end)`` span in UTC, without a busy type.
Span = Tuple[datetime.datetime, datetime.datetime]


def spans_of(spans: Iterable[Span], window: Window) -> Tuple[Span, ...]:
    """``spans`` clipped to ``window``, merged and sorted."""
    return tuple((p.start, p.end) for p in normalize(
        (Period(s, e, BUSY_UNAVAILABLE) for s, e in spans), window))


def gaps(spans: Iterable[Span], window: Window) -> List[Span]:
    """The parts of ``window`` that ``spans`` do not cover."""
    out, cursor = [], window.start
    for start, end in sorted(spans):
        if start > cursor:
            out.append((cursor, min(start, window.end)))
        cursor = max(cursor, end)
        if cursor >= window.end:
            break
    if cursor < window.end:
        out.append((cursor, window.end))
    return [(s, e) for s, e in out if e > s]


class LookupResult(NamedTuple):
    """The answer for one address: periods, or a failure reason.

    ``nodata`` are the spans of a successful answer where the source had
    no data (a publishing horizon, EWS NoData, Graph ``unknown``).  They
    are also in ``periods`` as BUSY-UNAVAILABLE, so a face that cannot
    say "no data" (VFREEBUSY) is never wrong; a face that can (the view,
    EWS MergedFreeBusy) reads them here.

    ``working`` are the attendee's working hours inside the window as
    their own system stated them (Graph ``workingHours``, EWS
    ``WorkingHours``), None where it did not: the finder and the view use
    them instead of the gateway's default.
    """

    periods: Tuple[Period, ...] = ()
    failure: Optional[Reason] = None
    detail: str = ""
    nodata: Tuple[Span, ...] = ()
    working: Optional[Tuple[Span, ...]] = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @classmethod
    def busy(cls, periods: Iterable[Period], window: Window,
             nodata: Iterable[Span] = (),
             working: Optional[Iterable[Span]] = None) -> "LookupResult":
        """Periods (none: free) over ``window``, with the spans that had
        no data counted BUSY-UNAVAILABLE."""
        nodata = spans_of(nodata, window)
        periods = list(periods)
        periods.extend(Period(s, e, BUSY_UNAVAILABLE) for s, e in nodata)
        return cls(tuple(normalize(periods, window)), nodata=nodata,
                   working=None if working is None
                   else spans_of(working, window))

    @classmethod
    def failed(cls, reason: Reason, detail: str = "") -> "LookupResult":
        return cls((), reason, detail)
