"""Time zones and UTC conversion, in one place for the engines and plugins.

Floating times and all-day dates have no zone of their own; RFC 4791 7.3
says free/busy resolves them with the calendar's CALDAV:calendar-timezone,
and otherwise the server picks one (we pick UTC, as CalendarServer does).
"""

import datetime
import functools
import logging
import zoneinfo
from typing import Optional, Union

import icalendar

from gateway.model import UTC

logger = logging.getLogger(__name__)

Time = Union[datetime.date, datetime.datetime]


@functools.lru_cache(maxsize=256)
def zone_from_calendar_timezone(text: Optional[str]) -> datetime.tzinfo:
    """The tzinfo a CALDAV:calendar-timezone value stands for, else UTC.

    The TZID is tried as an IANA name first (clients send real zone names,
    and sabre's test sends a VTIMEZONE with no rules at all); otherwise
    the VTIMEZONE's own rules are used.
    """
    if not text or not text.strip():
        return UTC
    try:
        cal = icalendar.Calendar.from_ical(text)
    except ValueError:
        logger.warning("Ignoring unparsable calendar-timezone")
        return UTC
    for vtz in cal.walk("VTIMEZONE"):
        tzid = str(vtz.get("TZID", ""))
        try:
            return zoneinfo.ZoneInfo(tzid)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
        try:
            return vtz.to_tz()
        except Exception:  # icalendar raises many kinds on broken rules
            logger.warning("Ignoring calendar-timezone %r without usable "
                           "rules", tzid)
    return UTC


def to_utc(value: Time, floating_zone: datetime.tzinfo) -> datetime.datetime:
    """A DATE or DATE-TIME as an aware UTC datetime.

    Dates are midnight and naive datetimes are wall-clock time, both in
    ``floating_zone``.
    """
    if not isinstance(value, datetime.datetime):
        value = datetime.datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=floating_zone)
    return value.astimezone(UTC)


def format_utc(value: datetime.datetime) -> str:
    """RFC 5545 UTC form, ``19980119T070000Z``."""
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_utc(text: str) -> datetime.datetime:
    """Parse a "date with UTC time" as CalDAV time-range wants it.

    Date-only and floating values are refused (RFC 4791 9.9).
    """
    try:
        value = datetime.datetime.strptime(text, "%Y%m%dT%H%M%SZ")
    except (TypeError, ValueError):
        raise ValueError("not a UTC date-time: %r" % (text,)) from None
    return value.replace(tzinfo=UTC)
