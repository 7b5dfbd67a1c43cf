"""Working hours: a weekly pattern in one time zone.

The finder keeps meetings inside each attendee's working hours, the views
shade what lies outside them, and the EWS and Graph faces report them.
Where a user has a VAVAILABILITY the engine computes the same thing from
it; this is the simple form an admin writes in the ini
(``[gateway] default_working_hours = Mon-Fri 09:00-17:00 Europe/Berlin``)
and the one foreign systems send (days, a start and an end, a zone).
"""

import datetime
import re
import zoneinfo
from typing import FrozenSet, Iterator, List, NamedTuple, Tuple

from gateway.model import UTC, Window, gaps

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_PATTERN = re.compile(
    r"^\s*(?P<days>[A-Za-z]{3}(?:\s*-\s*[A-Za-z]{3})?"
    r"(?:\s*,\s*[A-Za-z]{3}(?:\s*-\s*[A-Za-z]{3})?)*)\s+"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})"
    r"(?:\s+(?P<zone>\S+))?\s*$")


def _clock(text: str) -> datetime.timedelta:
    hours, minutes = (int(x) for x in text.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError("%r is not a time of day" % text)
    return datetime.timedelta(hours=hours, minutes=minutes)


def _days(text: str) -> FrozenSet[int]:
    days = set()
    for part in text.lower().split(","):
        ends = [d.strip() for d in part.split("-")]
        for name in ends:
            if name not in DAY_NAMES:
                raise ValueError("%r is not a day (Mon..Sun)" % name)
        first, last = DAY_NAMES.index(ends[0]), DAY_NAMES.index(ends[-1])
        day = first
        while True:
            days.add(day)
            if day == last:
                break
            day = (day + 1) % 7
    return frozenset(days)


class WorkingHours(NamedTuple):
    """Weekdays (0 Monday .. 6 Sunday) from ``start`` to ``end`` (times
    of day as offsets from midnight) in ``zone``."""

    days: FrozenSet[int]
    start: datetime.timedelta
    end: datetime.timedelta
    zone: datetime.tzinfo

    @classmethod
    def parse(cls, text: str) -> "WorkingHours":
        """``Mon-Fri 09:00-17:00 Europe/Berlin`` (zone optional: UTC)."""
        match = _PATTERN.match(text or "")
        if match is None:
            raise ValueError("write it as 'Mon-Fri 09:00-17:00 Zone/Name'")
        start, end = _clock(match["start"]), _clock(match["end"])
        if end <= start:
            raise ValueError("the end must be after the start")
        zone: datetime.tzinfo = UTC
        if match["zone"]:
            try:
                zone = zoneinfo.ZoneInfo(match["zone"])
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError("%r is not a time zone" % match["zone"]
                                 ) from None
        return cls(_days(match["days"]), start, end, zone)

    def spans(self, window: Window) -> Iterator[Tuple[datetime.datetime,
                                                      datetime.datetime]]:
        """Working spans (UTC) overlapping ``window``, in order."""
        local = window.start.astimezone(self.zone).date() - \
            datetime.timedelta(days=1)
        last = window.end.astimezone(self.zone).date()
        while local <= last:
            if local.weekday() in self.days:
                midnight = datetime.datetime.combine(local, datetime.time())
                start = (midnight + self.start).replace(
                    tzinfo=self.zone).astimezone(UTC)
                end = (midnight + self.end).replace(
                    tzinfo=self.zone).astimezone(UTC)
                if start < window.end and end > window.start:
                    yield max(start, window.start), min(end, window.end)
            local += datetime.timedelta(days=1)

    def outside(self, window: Window) -> List[Tuple[datetime.datetime,
                                                    datetime.datetime]]:
        """The spans of ``window`` outside working hours."""
        return gaps(self.spans(window), window)

    def __str__(self) -> str:
        days = ",".join(DAY_NAMES[d].capitalize() for d in sorted(self.days))
        return "%s %02d:%02d-%02d:%02d %s" % (
            days, *divmod(int(self.start.total_seconds()) // 60, 60),
            *divmod(int(self.end.total_seconds()) // 60, 60),
            getattr(self.zone, "key", "UTC"))
