"""Exchange Web Services XML: namespaces, date-times and time zones.

What the EWS face (and the ``ews`` provider) need to read and write the
types of EWS availability:

- ``xs:dateTime`` values: with an offset (or ``Z``) they are absolute;
  without one they are wall-clock time in the request's time zone, and
  Exchange 2010 and later write its answers so (MS-OXWAVLS 4.2).
- ``SerializableTimeZone`` (the ``TimeZone`` of GetUserAvailability and
  of ``WorkingHours``): UTC = local + ``Bias`` + the ``Bias`` of the
  ``StandardTime`` or ``DaylightTime`` rule in force.  A rule's ``Time``
  is the wall-clock time of the switch in the period it ends (so the
  daylight rule's time is standard time), as in Windows'
  TIME_ZONE_INFORMATION; ``DayOrder`` 5 is the last such weekday.
  :class:`SerializableZone` is a ``tzinfo`` for both directions.
- ``TimeZoneDefinition`` (GetServerTimeZones): Windows zone ids such as
  ``W. Europe Standard Time``, mapped to IANA zones by the CLDR table
  that ``tzlocal`` ships, with the rules of each year from 2000 to 2037
  read from the IANA data and grouped where they repeat.
"""

import calendar
import datetime
import functools
import re
import zoneinfo
from typing import Dict, List, NamedTuple, Optional, Tuple

from lxml import etree
from tzlocal.windows_tz import win_tz

from gateway.model import UTC

NS_SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
NS_M = "http://schemas.microsoft.com/exchange/services/2006/messages"
NS_T = "http://schemas.microsoft.com/exchange/services/2006/types"
NS_E = "http://schemas.microsoft.com/exchange/services/2006/errors"
NSMAP = {"s": NS_SOAP, "m": NS_M, "t": NS_T}
#: Where Exchange clients find EWS: Exchange's own path.
EWS_PATH = "/EWS/Exchange.asmx"
#: EWS day names in Python's weekday order (Monday is 0).
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
             "Saturday", "Sunday")
#: Years whose rules a TimeZoneDefinition spells out; the first group also
#: holds for earlier years and the last one for later years.
FIRST_YEAR, LAST_YEAR = 2000, 2037


def t(name: str) -> str:
    """Clark name in the EWS types namespace."""
    return "{%s}%s" % (NS_T, name)


def m(name: str) -> str:
    """Clark name in the EWS messages namespace."""
    return "{%s}%s" % (NS_M, name)


def sub(parent, tag: str, text: Optional[str] = None, **attributes):
    """Append an element (Clark name) with optional text."""
    element = etree.SubElement(parent, tag, **attributes)
    if text is not None:
        element.text = text
    return element


# -- date-times --------------------------------------------------------------

_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?"
                       r"(Z|[+-]\d{2}:\d{2})?$")


def parse_datetime(text: Optional[str],
                   zone: datetime.tzinfo) -> datetime.datetime:
    """An ``xs:dateTime`` as aware UTC: with an offset as written,
    without one wall-clock time in ``zone``.  ValueError otherwise."""
    value = (text or "").strip()
    match = _DATETIME.match(value)
    if match is None:
        raise ValueError("%r is not an xs:dateTime" % value[:40])
    if match.group(1):   # .NET writes seven fraction digits
        value = value.replace(match.group(1), match.group(1)[:7], 1)
    try:
        moment = datetime.datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as e:
        raise ValueError("%r is not a usable date-time: %s" % (
            value[:40], e)) from None


def format_local(moment: datetime.datetime, zone: datetime.tzinfo) -> str:
    """``moment`` as naive wall-clock time in ``zone``, as Exchange 2010
    and later write CalendarEvent times."""
    return moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S")


def format_duration(minutes: int) -> str:
    """Minutes as an ``xs:duration``: ``-PT5H30M``, ``PT0H``."""
    sign = "-" if minutes < 0 else ""
    hours, rest = divmod(abs(minutes), 60)
    return "%sPT%dH%s" % (sign, hours, "%dM" % rest if rest else "")


# -- SerializableTimeZone ----------------------------------------------------


class Rule(NamedTuple):
    """One ``StandardTime`` or ``DaylightTime``: its extra bias (minutes)
    and when it starts: the ``order``-th (5: last) ``weekday`` (0 Monday)
    of ``month`` at ``time``, wall clock of the period it ends."""

    bias: int
    time: datetime.time
    order: int
    month: int
    weekday: int

    def start(self, year: int) -> datetime.datetime:
        """The naive wall-clock moment this rule starts in ``year``."""
        first = datetime.date(year, self.month, 1)
        day = 1 + (self.weekday - first.weekday()) % 7 + 7 * (self.order - 1)
        while day > calendar.monthrange(year, self.month)[1]:
            day -= 7
        return datetime.datetime.combine(
            datetime.date(year, self.month, day), self.time)


#: What exchangelib (and Exchange) write for a zone without daylight
#: saving: both rules with the same bias, so neither ever changes it.
NO_DST = (Rule(0, datetime.time(0), 1, 1, 0),
          Rule(0, datetime.time(0), 5, 12, 6))


def _integer(element, name: str, low: int, high: int) -> int:
    text = (element.findtext(t(name)) or "").strip()
    try:
        value = int(text)
    except ValueError:
        raise ValueError("%s %r is not an integer" % (name, text[:20])
                         ) from None
    if not low <= value <= high:
        raise ValueError("%s %d is not within %d..%d" % (name, value, low,
                                                         high))
    return value


def _rule(element, name: str) -> Rule:
    bias = _integer(element, "Bias", -1440, 1440)
    text = (element.findtext(t("Time")) or "").strip()
    try:
        at = datetime.time.fromisoformat(text)
    except ValueError:
        raise ValueError("%s Time %r is not hh:mm:ss" % (name, text[:20])
                         ) from None
    order = _integer(element, "DayOrder", -1, 5)
    if order == 0:
        raise ValueError("%s DayOrder must be 1..5 (5: last)" % name)
    month = _integer(element, "Month", 0, 12)
    weekday = (element.findtext(t("DayOfWeek")) or "").strip()
    if weekday not in DAY_NAMES:
        raise ValueError("%s DayOfWeek %r is not a day name" % (
            name, weekday[:20]))
    return Rule(bias, at, 5 if order == -1 else order, month,
                DAY_NAMES.index(weekday))


class SerializableZone(datetime.tzinfo):
    """A SerializableTimeZone as a ``tzinfo``: one bias and, when the
    two rules differ, a yearly switch between them."""

    def __init__(self, bias: int, standard: Rule, daylight: Rule) -> None:
        self.bias = bias
        self.standard = standard
        self.daylight = daylight
        self.has_dst = daylight.bias != standard.bias and \
            daylight.month != 0 and standard.month != 0

    def __repr__(self) -> str:
        return "SerializableZone(%d, %r, %r)" % (self.bias, self.standard,
                                                 self.daylight)

    # -- reading and writing ------------------------------------------

    @classmethod
    def from_element(cls, element) -> "SerializableZone":
        """Read a ``TimeZone`` element; ValueError says what is wrong.
        Missing rules mean no daylight saving."""
        bias = _integer(element, "Bias", -1440, 1440)
        rules = []
        for name, default in zip(("StandardTime", "DaylightTime"), NO_DST):
            found = element.find(t(name))
            rules.append(default if found is None else _rule(found, name))
        return cls(bias, *rules)

    def append_to(self, parent, tag: str = t("TimeZone")):
        """Write this zone as a ``TimeZone`` element (or ``tag``)."""
        zone = sub(parent, tag)
        sub(zone, t("Bias"), str(self.bias))
        for name, rule in (("StandardTime", self.standard),
                           ("DaylightTime", self.daylight)):
            element = sub(zone, t(name))
            sub(element, t("Bias"), str(rule.bias))
            sub(element, t("Time"), rule.time.strftime("%H:%M:%S"))
            sub(element, t("DayOrder"), str(rule.order))
            sub(element, t("Month"), str(rule.month))
            sub(element, t("DayOfWeek"), DAY_NAMES[rule.weekday])
        return zone

    @classmethod
    def of_zone(cls, zone: datetime.tzinfo, year: int) -> "SerializableZone":
        """The rules ``zone`` (any tzinfo) follows in ``year``."""
        shape = _year_shape(zone, year)
        if shape[0] == "fixed":
            return cls(-shape[1], *NO_DST)
        _, standard, daylight, into_daylight, into_standard = shape
        return cls(-standard,
                   Rule(0, *into_standard),
                   Rule(standard - daylight, *into_daylight))

    # -- tzinfo ---------------------------------------------------------

    def _in_daylight(self, local: datetime.datetime) -> bool:
        begin = self.daylight.start(local.year)
        end = self.standard.start(local.year)
        if begin < end:
            return begin <= local < end
        return not end <= local < begin

    def utcoffset(self, dt) -> datetime.timedelta:
        rule = self.standard
        if self.has_dst and dt is not None and \
                self._in_daylight(dt.replace(tzinfo=None)):
            rule = self.daylight
        return -datetime.timedelta(minutes=self.bias + rule.bias)

    def dst(self, dt) -> datetime.timedelta:
        return self.utcoffset(dt) + datetime.timedelta(minutes=self.bias +
                                                       self.standard.bias)

    def tzname(self, dt) -> Optional[str]:
        return None

    def fromutc(self, dt: datetime.datetime) -> datetime.datetime:
        utc = dt.replace(tzinfo=None)
        rule = self.standard
        if self.has_dst:
            year = (utc - datetime.timedelta(
                minutes=self.bias + self.standard.bias)).year
            begin = self.daylight.start(year) + datetime.timedelta(
                minutes=self.bias + self.standard.bias)
            end = self.standard.start(year) + datetime.timedelta(
                minutes=self.bias + self.daylight.bias)
            summer = begin <= utc < end if begin < end else \
                not end <= utc < begin
            if summer:
                rule = self.daylight
        return (utc - datetime.timedelta(minutes=self.bias + rule.bias)
                ).replace(tzinfo=self)


#: The request TimeZone of a UTC caller.
UTC_ZONE = SerializableZone(0, *NO_DST)


# -- the rules of an IANA zone, year by year ---------------------------------


def _offset(zone: datetime.tzinfo, moment: datetime.datetime) -> int:
    """UTC offset of ``zone`` at aware ``moment``, in minutes."""
    return int(moment.astimezone(zone).utcoffset().total_seconds() // 60)


def _changes(zone: datetime.tzinfo, year: int
             ) -> List[Tuple[datetime.datetime, int, int]]:
    """(UTC instant, offset before, offset after) of every change of
    ``zone``'s offset whose local date (old offset) is in ``year``.
    Probed weekly, then narrowed to the second by bisection."""
    out = []
    step = datetime.timedelta(days=7)
    probe = datetime.datetime(year, 1, 1, tzinfo=UTC) - datetime.timedelta(
        days=2)
    stop = datetime.datetime(year + 1, 1, 3, tzinfo=UTC)
    before = _offset(zone, probe)
    while probe < stop:
        nxt = probe + step
        after = _offset(zone, nxt)
        low, high = probe, nxt
        while after != before and high - low > datetime.timedelta(seconds=1):
            middle = low + (high - low) / 2
            middle = middle.replace(microsecond=0)
            if _offset(zone, middle) == before:
                low = middle
            else:
                high = middle
        if after != before:
            changed = _offset(zone, high)
            if (high + datetime.timedelta(minutes=before)).year == year:
                out.append((high, before, changed))
            before = changed
            probe = high
            continue
        probe = nxt
    return out


def _when(instant: datetime.datetime, old_offset: int
          ) -> Tuple[datetime.time, int, int, int]:
    """A change at ``instant`` as a rule's (time, order, month, weekday),
    the wall clock of the period it ends; the last such weekday of its
    month is order 5, as Windows' rules say "last"."""
    local = (instant + datetime.timedelta(minutes=old_offset)).replace(
        tzinfo=None)
    order = (local.day - 1) // 7 + 1
    if local.day + 7 > calendar.monthrange(local.year, local.month)[1]:
        order = 5
    return local.time(), order, local.month, local.weekday()


def _year_shape(zone: datetime.tzinfo, year: int) -> Tuple:
    """``("fixed", offset)`` or ``("dst", standard, daylight, into
    daylight, into standard)`` (offsets in minutes east of UTC, changes
    as :func:`_when` gives them).  A year whose clocks change other than
    twice and back (a zone moving its standard offset, Morocco's
    Ramadan) is described by its offset on 1 July."""
    changes = _changes(zone, year)
    if len(changes) == 2 and changes[0][1] == changes[1][2] and \
            changes[0][2] == changes[1][1]:
        low = min(changes[0][1], changes[0][2])
        high = max(changes[0][1], changes[0][2])
        into_daylight = next(c for c in changes if c[2] == high)
        into_standard = next(c for c in changes if c[2] == low)
        return ("dst", low, high, _when(into_daylight[0], low),
                _when(into_standard[0], high))
    return ("fixed", _offset(zone, datetime.datetime(year, 7, 1,
                                                     tzinfo=UTC)))


# -- TimeZoneDefinition (GetServerTimeZones) ---------------------------------


def windows_zone_ids() -> List[str]:
    """Every Windows zone id this server defines, sorted."""
    return sorted(win_tz)


def iana_zone(windows_id: str) -> Optional[datetime.tzinfo]:
    """The IANA zone of a Windows zone id (CLDR), None if unknown."""
    key = win_tz.get(windows_id)
    if key is None:
        return None
    try:
        return zoneinfo.ZoneInfo(key)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def _utc_label(minutes: int) -> str:
    return "(UTC%s%02d:%02d)" % ("-" if minutes < 0 else "+",
                                 *divmod(abs(minutes), 60))


@functools.lru_cache(maxsize=256)
def _groups(windows_id: str) -> Tuple[Tuple[int, Tuple], ...]:
    """(first year, shape) of each run of years with the same rules."""
    zone = iana_zone(windows_id)
    groups: List[Tuple[int, Tuple]] = []
    for year in range(FIRST_YEAR, LAST_YEAR + 1):
        shape = _year_shape(zone, year)
        if not groups or groups[-1][1] != shape:
            groups.append((year, shape))
    return tuple(groups)


def zone_definition(parent, windows_id: str, full: bool):
    """Append the ``TimeZoneDefinition`` of a known Windows zone id: its
    Id and Name, and with ``full`` its periods and transitions."""
    groups = _groups(windows_id)
    current = groups[-1][1][1]
    definition = sub(parent, t("TimeZoneDefinition"), Id=windows_id,
                     Name="%s %s" % (_utc_label(current),
                                     win_tz[windows_id]))
    if not full:
        return definition
    periods: Dict[Tuple[str, int], str] = {}

    def period(name: str, offset: int) -> str:
        return periods.setdefault(
            (name, offset), "%s/%s" % (name, format_duration(-offset)))

    bodies = []
    for year, shape in groups:
        if shape[0] == "fixed":
            bodies.append((year, [(period("Standard", shape[1]), None)]))
        else:
            _, standard, daylight, into_daylight, into_standard = shape
            bodies.append((year, [
                (period("Daylight", daylight), into_daylight),
                (period("Standard", standard), into_standard)]))
    element = sub(definition, t("Periods"))
    for (name, offset), ident in periods.items():
        sub(element, t("Period"), Bias=format_duration(-offset), Name=name,
            Id=ident)
    element = sub(definition, t("TransitionsGroups"))
    for year, transitions in bodies:
        group = sub(element, t("TransitionsGroup"), Id=str(year))
        for target, when in transitions:
            if when is None:
                transition = sub(group, t("Transition"))
                sub(transition, t("To"), target, Kind="Period")
                continue
            at, order, month, weekday = when
            transition = sub(group, t("RecurringDayTransition"))
            sub(transition, t("To"), target, Kind="Period")
            sub(transition, t("TimeOffset"), format_duration(
                at.hour * 60 + at.minute))
            sub(transition, t("Month"), str(month))
            sub(transition, t("DayOfWeek"), DAY_NAMES[weekday])
            sub(transition, t("Occurrence"), "-1" if order == 5
                else str(order))
    element = sub(definition, t("Transitions"))
    for index, (year, _) in enumerate(bodies):
        if index == 0:
            transition = sub(element, t("Transition"))
            sub(transition, t("To"), str(year), Kind="Group")
        else:
            transition = sub(element, t("AbsoluteDateTransition"))
            sub(transition, t("To"), str(year), Kind="Group")
            sub(transition, t("DateTime"), "%d-01-01T00:00:00" % year)
    return definition
