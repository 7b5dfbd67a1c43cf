"""VFREEBUSY in and out: the one iCalendar shape every face answers with.

Output: one VCALENDAR with one VFREEBUSY whose DTSTART/DTEND are the window
asked for, FREEBUSY periods in UTC start/end form, sorted, FBTYPE always
written (Thunderbird shows "no information" without it, sabre/vobject#701).
The header properties go through icalendar, so echoed ORGANIZER/ATTENDEE
keep their parameters and escaping; the FREEBUSY lines, thousands on a long
window, are written directly because their form is fixed and short.

Input: defensive parsing of VFREEBUSY replies from peers, bounded in size.
"""

import datetime
from typing import Dict, Iterable, List, Optional, Tuple

import icalendar

from gateway import timezones
from gateway.model import Period, Window, normalize_fbtype

PRODID = "-//Freebusy Gateway//freebusy-gateway 0.1//EN"
MAX_PEER_BYTES = 2 << 20


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


def render(periods: Iterable[Period], window: Window, *,
           method: Optional[str] = None, uid: Optional[str] = None,
           organizer=None, attendee=None,
           dtstamp: Optional[datetime.datetime] = None,
           extra_properties: Iterable = ()) -> str:
    """One VCALENDAR/VFREEBUSY text with CRLF line ends.

    iCalendar has whole seconds: starts are rounded down and ends up,
    never freer than the periods say."""
    epoch = _EPOCH
    second = _SECOND
    return render_seconds(
        (((p.start - epoch) // second,
          -((epoch - p.end) // second), p.fbtype) for p in periods),
        window, method=method, uid=uid, organizer=organizer,
        attendee=attendee, dtstamp=dtstamp,
        extra_properties=extra_properties)


def render_seconds(spans: Iterable[Tuple[int, int, str]], window: Window,
                   **header) -> str:
    """``render`` for periods given as (start, end, FBTYPE) in POSIX
    seconds, sorted: the busy index's form, written without making a
    datetime per period (the hot part of a long warm answer): dates and
    times of day are formatted once and remembered."""
    days, times = _DAYS, _TIMES
    if len(days) > _MAX_REMEMBERED or len(times) > _MAX_REMEMBERED:
        days.clear()
        times.clear()
    out = []
    append = out.append
    for start, end, fbtype in spans:
        start_day, start_time = divmod(start, 86400)
        end_day, end_time = divmod(end, 86400)
        append("FREEBUSY;FBTYPE=%s:%sT%sZ/%sT%sZ\r\n" % (
            fbtype, days.get(start_day) or _day(start_day),
            times.get(start_time) or _time(start_time),
            days.get(end_day) or _day(end_day),
            times.get(end_time) or _time(end_time)))
    return _wrap("".join(out), window, header.get("method"),
                 header.get("uid"), header.get("organizer"),
                 header.get("attendee"), header.get("dtstamp"),
                 header.get("extra_properties", ()))


_EPOCH_DAY = datetime.date(1970, 1, 1)
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=timezones.UTC)
_SECOND = datetime.timedelta(seconds=1)
#: Formatted dates and times of day, by POSIX day and second of the day.
_DAYS: Dict[int, str] = {}
_TIMES: Dict[int, str] = {}
_MAX_REMEMBERED = 50000


def _day(day: int) -> str:
    moment = _EPOCH_DAY + datetime.timedelta(days=day)
    text = _DAYS[day] = "%04d%02d%02d" % (moment.year, moment.month,
                                          moment.day)
    return text


def _time(second: int) -> str:
    hour, rest = divmod(second, 3600)
    text = _TIMES[second] = "%02d%02d%02d" % (hour, rest // 60, rest % 60)
    return text


def _utc_text(moment: datetime.datetime) -> Optional[str]:
    """``moment`` as an iCalendar UTC DATE-TIME, as icalendar writes it;
    None unless it is in UTC."""
    if moment.utcoffset() != datetime.timedelta(0):
        return None
    return "%04d%02d%02dT%02d%02d%02dZ" % (
        moment.year, moment.month, moment.day, moment.hour, moment.minute,
        moment.second)


def _wrap(body: str, window: Window, method, uid, organizer, attendee,
          dtstamp, extra_properties) -> str:
    dtstamp = dtstamp or datetime.datetime.now(timezones.UTC)
    times = [_utc_text(t) for t in (window.end, dtstamp, window.start)]
    if uid is None and organizer is None and attendee is None and \
            not extra_properties and None not in times:
        # A REPORT's header: three UTC times, written here (icalendar's
        # to_ical was a tenth of a warm answer's time); the same text,
        # in icalendar's (alphabetical) order.
        head = "BEGIN:VFREEBUSY\r\nDTEND:%s\r\nDTSTAMP:%s\r\n" \
            "DTSTART:%s\r\n" % tuple(times)
    else:
        head = _icalendar_head(window, uid, organizer, attendee, dtstamp,
                               extra_properties)
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:" + PRODID]
    if method:
        lines.append("METHOD:" + method)
    return ("\r\n".join(lines) + "\r\n" + head + body +
            "END:VFREEBUSY\r\nEND:VCALENDAR\r\n")


def _icalendar_head(window: Window, uid, organizer, attendee, dtstamp,
                    extra_properties) -> str:
    component = icalendar.FreeBusy()
    if uid is not None:
        component.add("UID", uid)
    component.add("DTSTAMP", dtstamp)
    component.add("DTSTART", window.start)
    component.add("DTEND", window.end)
    if organizer is not None:
        component.add("ORGANIZER", organizer)
    if attendee is not None:
        component.add("ATTENDEE", attendee)
    for name, value in extra_properties:
        component.add(name, value)
    head = component.to_ical().decode("utf-8")
    return head[:head.rindex("END:VFREEBUSY")]


class PeerDataError(ValueError):
    """A peer's free/busy data is missing, too big or not iCalendar."""


def parse_periods(data: bytes, max_bytes: int = MAX_PEER_BYTES
                  ) -> Tuple[List[Period], Optional[Window]]:
    """FREEBUSY periods of the VFREEBUSY components in ``data``, and the
    span their DTSTART/DTEND say they cover (None if they do not say).

    Raises PeerDataError rather than guessing: garbage is never "free".
    """
    periods, covered, _ = parse_published(data, max_bytes)
    return periods, covered


def parse_published(data: bytes, max_bytes: int = MAX_PEER_BYTES
                    ) -> Tuple[List[Period], Optional[Window],
                               Optional[datetime.datetime]]:
    """``parse_periods`` and the first DTSTAMP (UTC) of its VFREEBUSY
    components, None without one: a pushed VFREEBUSY says by it which of
    two pushes is newer."""
    if len(data) > max_bytes:
        raise PeerDataError("free/busy data larger than %d bytes" % max_bytes)
    try:
        calendar = icalendar.Calendar.from_ical(data)
        components = [c for c in calendar.walk() if c.name == "VFREEBUSY"]
        if not components:
            raise PeerDataError("no VFREEBUSY in the answer")
        periods, starts, ends = [], [], []
        stamp = next((timezones.to_utc(c["DTSTAMP"].dt, timezones.UTC)
                      for c in components if "DTSTAMP" in c), None)
        for component in components:
            periods.extend(freebusy_component_periods(component,
                                                      timezones.UTC))
            if "DTSTART" in component and "DTEND" in component:
                starts.append(timezones.to_utc(component["DTSTART"].dt,
                                               timezones.UTC))
                ends.append(timezones.to_utc(component["DTEND"].dt,
                                             timezones.UTC))
        covered = Window(min(starts), max(ends)) \
            if starts and min(starts) < max(ends) else None
    except PeerDataError:
        raise
    except Exception as e:  # icalendar raises ValueError, KeyError, ...
        raise PeerDataError("unreadable iCalendar: %s" % e) from None
    return periods, covered, stamp
