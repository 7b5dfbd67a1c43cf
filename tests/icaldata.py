"""iCalendar texts the tests send: one event, one free/busy request.

Events carry a title, place and notes, so tests can check that none of
it ever leaves the gateway in a free/busy answer.
"""

from typing import Iterable

PRIVATE_WORDS = ("private meeting", "board room", "secret notes")


def event(uid: str, start: str, end: str, extra: str = "") -> str:
    """A calendar object with one VEVENT; ``extra`` is more CRLF lines."""
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
            "BEGIN:VEVENT\r\nUID:%s\r\nDTSTAMP:20260101T000000Z\r\n"
            "DTSTART:%s\r\nDTEND:%s\r\n%sSUMMARY:private meeting %s\r\n"
            "LOCATION:board room\r\nDESCRIPTION:secret notes\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n" % (uid, start, end, extra, uid))


def freebusy_request(attendees: Iterable[str], start: str, end: str,
                     organizer: str = "mailto:alice@example.com",
                     uid: str = "fb-request") -> str:
    """An RFC 6638 VFREEBUSY REQUEST; bare attendees get ``mailto:``."""
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
            "METHOD:REQUEST\r\nBEGIN:VFREEBUSY\r\nUID:%s\r\n"
            "DTSTAMP:20260101T000000Z\r\nDTSTART:%s\r\nDTEND:%s\r\n"
            "ORGANIZER:%s\r\n%sEND:VFREEBUSY\r\nEND:VCALENDAR\r\n" % (
                uid, start, end, organizer, "".join(
                    "ATTENDEE:%s\r\n" % (a if ":" in a else "mailto:" + a)
                    for a in attendees)))
