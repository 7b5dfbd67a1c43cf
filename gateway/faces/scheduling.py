"""RFC 6638 free/busy scheduling: principal properties, inbox, outbox POST.

Radicale has no scheduling at all; this face adds what a CalDAV client
needs to ask "when are these people busy?" in one request:

- on each principal ``/<user>/``: CALDAV:schedule-outbox-URL,
  schedule-inbox-URL, calendar-user-address-set (``mailto:user@domain`` for
  every ``[gateway] domains`` entry, then the principal URL) and
  calendar-user-type, merged into Radicale's own PROPFIND answer;
- the inbox ``/<user>/.schedule-inbox/`` holds CALDAV:calendar-availability
  (RFC 7953; the CalendarServer name is accepted too), stored on the
  principal in Radicale's storage and used for that user's free/busy;
- the outbox ``/<user>/.schedule-outbox/`` takes a POST of a VFREEBUSY
  REQUEST and answers a schedule-response with one response per ATTENDEE,
  in request order, from the fan-out engine.

Both boxes are virtual: names starting with a dot can never be Radicale
collections, so they cannot collide with a user's calendars.
"""

import datetime
import logging
import zoneinfo
from http import client
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import icalendar
from lxml import etree

from gateway import timezones, vfreebusy, xmlsafe
from gateway.addresses import user_addresses
from gateway.model import (FIRST_ANSWERED, LAST_ANSWERED, LookupResult,
                           Reason, Window)

logger = logging.getLogger(__name__)

INBOX = ".schedule-inbox"
OUTBOX = ".schedule-outbox"
MAX_REQUEST_BYTES = 256 * 1024

REQUEST_STATUS = {
    None: "2.0;Success",
    Reason.UNKNOWN_USER: "3.7;Invalid calendar user",
    Reason.NO_AUTHORITY: "3.8;No authority",
    Reason.UNAVAILABLE: "5.1;Could not deliver",
    Reason.TIMED_OUT: "5.3;No scheduling support for user",
    Reason.RATE_LIMITED: "5.3;No scheduling support for user",
    Reason.NO_DATA: "5.3;No scheduling support for user",
}
OVER_LIMIT_STATUS = "5.1;Service unavailable"
#: Namespace of the human-readable reason inside a DAV:error.
MESSAGE_NS = "urn:x-freebusy-gateway"

AVAILABILITY_PROPS = (xmlsafe.clark("C:calendar-availability"),
                      xmlsafe.clark("CS:calendar-availability"))


def box_of(path: str) -> Optional[Tuple[str, str]]:
    """``/alice/.schedule-outbox/`` -> ("alice", OUTBOX); else None."""
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[1] in (INBOX, OUTBOX) and parts[0]:
        return parts[0], parts[1]
    return None


def _href(base_prefix: str, path: str) -> str:
    return base_prefix + path


# -- PROPFIND and PROPPATCH -------------------------------------------------

def requested_props(root) -> Optional[List[str]]:
    """Clark names asked for; None for allprop/propname/empty (all)."""
    if root is None:
        return None
    prop = root.find(xmlsafe.clark("D:prop"))
    if prop is None:
        return None
    return [child.tag for child in prop if isinstance(child.tag, str)]


def principal_values(base_prefix: str, user: str, domains) -> Dict[str, List]:
    """Our properties of a principal as lists of child elements/text."""
    home = "/%s/" % user
    addresses = user_addresses(user, domains) + [_href(base_prefix, home)]
    return {
        xmlsafe.clark("C:schedule-outbox-URL"): [
            ("D:href", _href(base_prefix, "%s%s/" % (home, OUTBOX)))],
        xmlsafe.clark("C:schedule-inbox-URL"): [
            ("D:href", _href(base_prefix, "%s%s/" % (home, INBOX)))],
        xmlsafe.clark("C:calendar-user-address-set"): [
            ("D:href", a) for a in addresses],
        xmlsafe.clark("C:calendar-user-type"): "INDIVIDUAL",
    }


def _fill(element, value) -> None:
    if isinstance(value, str):
        element.text = value
    else:
        for tag, text in value:
            xmlsafe.element(tag, text, parent=element)


TRANSP = xmlsafe.clark("C:schedule-calendar-transp")


def transp_as_text(root) -> bool:
    """Rewrite a PROPPATCH of schedule-calendar-transp for Radicale.

    Radicale keeps only a property's text, and RFC 6638 9.1 gives the value
    as a child element (``<C:transparent/>``), which it would lose; the
    gateway stores "transparent"/"opaque" as text instead.
    """
    changed = False
    for element in root.iter(TRANSP):
        for child in list(element):
            if child.tag in (xmlsafe.clark("C:transparent"),
                             xmlsafe.clark("C:opaque")):
                element.text = etree.QName(child).localname
                element.remove(child)
                changed = True
    return changed


def augment_multistatus(body: bytes, fixes_for,
                        wanted: Optional[List[str]]) -> bytes:
    """Put our property values into Radicale's multistatus answer.

    ``fixes_for(href)`` gives {clark name: value} for a response, or None.
    A property Radicale reported as 404 (or with a wrong value) moves to the
    200 propstat with ours; with allprop, ours are added too.  Stored
    schedule-calendar-transp text becomes its RFC 6638 child element.
    """
    try:
        root = xmlsafe.parse(body, 64 << 20)
    except xmlsafe.XMLError:
        return body
    changed = False
    for element in root.iter(TRANSP):
        value = (element.text or "").strip().lower()
        if value in ("transparent", "opaque"):
            element.text = None
            xmlsafe.element("C:" + value, parent=element)
            changed = True
    for response in root.findall(xmlsafe.clark("D:response")):
        href = response.findtext(xmlsafe.clark("D:href"))
        props = fixes_for(href)
        if not props:
            continue
        names = [n for n in props if wanted is None or n in wanted]
        if not names:
            continue
        ok_prop = None
        for propstat in response.findall(xmlsafe.clark("D:propstat")):
            status = propstat.findtext(xmlsafe.clark("D:status")) or ""
            prop = propstat.find(xmlsafe.clark("D:prop"))
            if prop is None:
                continue
            for child in list(prop):
                if child.tag in names:
                    prop.remove(child)
            if " 200 " in status:
                ok_prop = prop
            elif len(prop) == 0:
                response.remove(propstat)
        if ok_prop is None:
            propstat = etree.SubElement(response, xmlsafe.clark("D:propstat"))
            ok_prop = etree.SubElement(propstat, xmlsafe.clark("D:prop"))
            etree.SubElement(propstat, xmlsafe.clark(
                "D:status")).text = "HTTP/1.1 200 OK"
        for name in names:
            if props[name] is None:
                continue
            _fill(etree.SubElement(ok_prop, name), props[name])
        changed = True
    return xmlsafe.tostring(root) if changed else body


def box_propfind(base_prefix: str, owner: str, box: str,
                 wanted: Optional[List[str]],
                 availability: Optional[str]) -> bytes:
    """A multistatus describing an inbox or outbox itself (Depth 0)."""
    values: Dict[str, object] = {
        xmlsafe.clark("D:resourcetype"): [("D:collection", None), (
            "C:schedule-inbox" if box == INBOX else "C:schedule-outbox",
            None)],
        xmlsafe.clark("D:displayname"): "%s %s" % (
            owner, "inbox" if box == INBOX else "outbox"),
        xmlsafe.clark("D:owner"): [("D:href",
                                    _href(base_prefix, "/%s/" % owner))],
        xmlsafe.clark("D:supported-report-set"): [],
    }
    if box == INBOX:
        for name in AVAILABILITY_PROPS:
            values[name] = availability
    multistatus = xmlsafe.element("D:multistatus")
    response = xmlsafe.element("D:response", parent=multistatus)
    xmlsafe.element("D:href", _href(base_prefix, "/%s/%s/" % (owner, box)),
                    parent=response)
    found = etree.SubElement(response, xmlsafe.clark("D:propstat"))
    found_prop = etree.SubElement(found, xmlsafe.clark("D:prop"))
    missing_prop = None
    for name in (wanted if wanted is not None else list(values)):
        value = values.get(name)
        if value is None:
            if missing_prop is None:
                missing = etree.SubElement(response,
                                           xmlsafe.clark("D:propstat"))
                missing_prop = etree.SubElement(missing,
                                                xmlsafe.clark("D:prop"))
                etree.SubElement(missing, xmlsafe.clark(
                    "D:status")).text = "HTTP/1.1 404 Not Found"
            etree.SubElement(missing_prop, name)
            continue
        _fill(etree.SubElement(found_prop, name), value)
    etree.SubElement(found, xmlsafe.clark("D:status")).text = \
        "HTTP/1.1 200 OK"
    return xmlsafe.tostring(multistatus)


# -- property values: checked before anything is stored ---------------------

TIMEZONE = xmlsafe.clark("C:calendar-timezone")
_SET, _REMOVE = xmlsafe.clark("D:set"), xmlsafe.clark("D:remove")


class PropertyProblem(NamedTuple):
    """Why one property of a PROPPATCH/MKCALENDAR/MKCOL cannot be set."""

    tag: str
    status: int
    #: precondition element (``C:valid-calendar-data``) or None
    precondition: Optional[str]
    text: str


def instructions(root) -> List[Tuple[bool, object]]:
    """(is_set, property element) of a propertyupdate, mkcalendar or
    mkcol body, in document order (RFC 4918 9.2)."""
    if root is None:
        return []
    found = []
    for action in root:
        if action.tag not in (_SET, _REMOVE):
            continue
        for prop in action.iterfind(xmlsafe.clark("D:prop")):
            for child in prop:
                if isinstance(child.tag, str):
                    found.append((action.tag == _SET, child))
    return found


def _calendar_or_reason(text: str):
    """(calendar, None) or (None, why it is not one iCalendar object)."""
    if not text.strip():
        return None, "empty value"
    try:
        calendar = icalendar.Calendar.from_ical(text)
    except Exception as e:  # icalendar raises many kinds on bad input
        return None, "not iCalendar (%s)" % _short(e)
    if getattr(calendar, "name", None) != "VCALENDAR":
        return None, "not a VCALENDAR object"
    return calendar, None


def timezone_problem(text: str) -> Optional[str]:
    """Why a CALDAV:calendar-timezone value is unusable, or None.

    RFC 4791 5.2.2: an iCalendar object with exactly one VTIMEZONE.  Its
    TZID must be an IANA name or the VTIMEZONE must carry usable rules,
    since the value decides how floating times become busy time.
    """
    calendar, why = _calendar_or_reason(text)
    if calendar is None:
        return why
    zones = [c for c in calendar.subcomponents if c.name == "VTIMEZONE"]
    others = sorted({c.name for c in calendar.subcomponents
                     if c.name != "VTIMEZONE"})
    if others:
        return "only a VTIMEZONE may be in it, not %s" % ", ".join(others)
    if len(zones) != 1:
        return "it needs exactly one VTIMEZONE, not %d" % len(zones)
    tzid = zones[0].get("TZID")
    if tzid is None or isinstance(tzid, list) or not str(tzid).strip():
        return "its VTIMEZONE needs one TZID"
    if named_zone(str(tzid)) is not None:
        return None
    if not any(c.name in ("STANDARD", "DAYLIGHT")
               for c in zones[0].subcomponents):
        return "TZID %r is not a known zone and has no rules" % str(tzid)
    try:
        zones[0].to_tz()
    except Exception as e:  # broken STANDARD/DAYLIGHT rules
        return "TZID %r is not a known zone and its rules are unusable " \
            "(%s)" % (str(tzid), _short(e))
    return None


def named_zone(tzid: str) -> Optional[datetime.tzinfo]:
    """The IANA zone called ``tzid``, or None."""
    try:
        return zoneinfo.ZoneInfo(tzid.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None
    except Exception:  # odd names (NUL, very long) raise other kinds
        return None


def availability_problem(text: str) -> Optional[str]:
    """Why a CALDAV:calendar-availability value is unusable, or None
    (RFC 7953 7.2.4: VAVAILABILITY components, with their VTIMEZONEs)."""
    calendar, why = _calendar_or_reason(text)
    if calendar is None:
        return why
    names = [c.name for c in calendar.subcomponents]
    if "VAVAILABILITY" not in names:
        return "it holds no VAVAILABILITY"
    others = sorted(set(names) - {"VAVAILABILITY", "VTIMEZONE"})
    if others:
        return "only VAVAILABILITY and VTIMEZONE may be in it, not %s" % \
            ", ".join(others)
    return None


def collection_problem(is_set: bool, element) -> Optional[PropertyProblem]:
    """Check one property of a calendar PROPPATCH, MKCALENDAR or MKCOL."""
    if not is_set:
        return None
    if element.tag == TIMEZONE:
        why = timezone_problem(element.text or "")
        if why:
            return PropertyProblem(element.tag, 403, "C:valid-calendar-data",
                                   "calendar-timezone: %s" % why)
    elif element.tag == TRANSP:
        children = [c.tag for c in element if isinstance(c.tag, str)]
        text = (element.text or "").strip()
        if children and (text or len(children) != 1 or children[0] not in (
                xmlsafe.clark("C:opaque"), xmlsafe.clark("C:transparent"))):
            ok = False
        elif not children:
            ok = text.lower() in ("opaque", "transparent")
        else:
            ok = True
        if not ok:
            # RFC 4918 9.2: 409 for a value whose semantics do not fit.
            return PropertyProblem(element.tag, 409, None,
                                   "schedule-calendar-transp must be "
                                   "<C:opaque/> or <C:transparent/>")
    return None


def inbox_problem(is_set: bool, element) -> Optional[PropertyProblem]:
    """Check one property of an inbox PROPPATCH."""
    if element.tag not in AVAILABILITY_PROPS:
        return PropertyProblem(element.tag, 403, None,
                               "only calendar-availability can be changed "
                               "on the scheduling inbox")
    if is_set:
        why = availability_problem(element.text or "")
        if why:
            return PropertyProblem(element.tag, 403, "C:valid-calendar-data",
                                   "calendar-availability: %s" % why)
    return None


def availability_value(text: str) -> str:
    """A checked calendar-availability value as stored (CRLF lines)."""
    return text.strip().replace("\r\n", "\n").replace("\n", "\r\n") + \
        "\r\n"


def _propstats(parent, found, problems: List[PropertyProblem]) -> None:
    failed = {p.tag for p in problems}
    for problem in problems:
        propstat = etree.SubElement(parent, xmlsafe.clark("D:propstat"))
        prop = etree.SubElement(propstat, xmlsafe.clark("D:prop"))
        etree.SubElement(prop, problem.tag)
        etree.SubElement(propstat, xmlsafe.clark("D:status")).text = \
            "HTTP/1.1 %d %s" % (problem.status, client.responses.get(
                problem.status, ""))
        if problem.precondition:
            error = xmlsafe.element("D:error", parent=propstat)
            xmlsafe.element(problem.precondition, parent=error)
        xmlsafe.element("D:responsedescription", problem.text,
                        parent=propstat)
    others = []
    for _, element in found:
        if element.tag not in failed and element.tag not in others:
            others.append(element.tag)
    if others:
        _propstat(parent, others, "HTTP/1.1 424 Failed Dependency")


def _propstat(parent, tags: List[str], status: str):
    """A DAV:propstat naming ``tags`` (empty elements) with ``status``."""
    propstat = etree.SubElement(parent, xmlsafe.clark("D:propstat"))
    prop = etree.SubElement(propstat, xmlsafe.clark("D:prop"))
    for tag in tags:
        etree.SubElement(prop, tag)
    etree.SubElement(propstat, xmlsafe.clark("D:status")).text = status
    return propstat


def refused_multistatus(base_prefix: str, path: str, found,
                        problems: List[PropertyProblem]) -> bytes:
    """207 body of a PROPPATCH (or MKCALENDAR, RFC 4791 5.3.1.1) that
    changed nothing: the failed properties with their reasons, every other
    one 424 Failed Dependency (RFC 4918 9.2.1)."""
    multistatus = xmlsafe.element("D:multistatus")
    response = xmlsafe.element("D:response", parent=multistatus)
    xmlsafe.element("D:href", _href(base_prefix, path), parent=response)
    _propstats(response, found, problems)
    return xmlsafe.tostring(multistatus)


def refused_mkcol(found, problems: List[PropertyProblem]) -> bytes:
    """403 body of an extended MKCOL that created nothing (RFC 5689 3)."""
    root = xmlsafe.element("D:mkcol-response")
    _propstats(root, found, problems)
    return xmlsafe.tostring(root)


def proppatch_ok(base_prefix: str, path: str, names: List[str]) -> bytes:
    multistatus = xmlsafe.element("D:multistatus")
    response = xmlsafe.element("D:response", parent=multistatus)
    xmlsafe.element("D:href", _href(base_prefix, path), parent=response)
    _propstat(response, names, "HTTP/1.1 200 OK")
    return xmlsafe.tostring(multistatus)


def _short(error: Exception, limit: int = 160) -> str:
    """An exception's message for a client: a parser's ValueError says
    what is wrong; anything else is the parser's own trouble."""
    if not isinstance(error, ValueError):
        return "the iCalendar parser could not read it"
    text = " ".join(str(error).split()) or "unreadable"
    return text if len(text) <= limit else text[:limit] + "..."


# -- the outbox POST ----------------------------------------------------------

class SchedulingError(Exception):
    """A refused POST: HTTP status plus the RFC 6638 precondition."""

    def __init__(self, status: int, precondition: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.precondition = precondition
        self.text = text

    def body(self) -> bytes:
        """DAV:error with the precondition, and the reason for people."""
        error = xmlsafe.element("D:error")
        xmlsafe.element(self.precondition, parent=error)
        etree.SubElement(error, "{%s}message" % MESSAGE_NS).text = \
            xmlsafe.text(self.text)
        return xmlsafe.tostring(error)


def _refused(precondition: str, text: str) -> SchedulingError:
    """RFC 4791 1.3: a failed precondition is 403 with its element."""
    return SchedulingError(client.FORBIDDEN, precondition, text)


def _invalid(text: str) -> SchedulingError:
    return _refused("C:valid-scheduling-message", text)


class FreeBusyRequest:
    """A checked VFREEBUSY METHOD:REQUEST (RFC 5546 3.3.2)."""

    def __init__(self, component, window: Window, attendees: List) -> None:
        self.component = component
        self.window = window
        #: ATTENDEE properties in request order, duplicates dropped
        self.attendees = attendees

    @property
    def uid(self) -> Optional[str]:
        return str(self.component["UID"]) if "UID" in self.component \
            else None

    @property
    def organizer(self):
        return self.component.get("ORGANIZER")


def _one(component, name: str, required: bool = True):
    """The one property ``name``; refuse it repeated (or missing)."""
    value = component.get(name)
    if value is None:
        if required:
            raise _invalid("VFREEBUSY request needs %s" % name)
        return None
    if isinstance(value, list):
        raise _invalid("%s appears %d times; a VFREEBUSY request has one"
                       % (name, len(value)))
    return value


def _utc_property(component, name: str,
                  floating_zone: Callable[[], datetime.tzinfo]
                  ) -> datetime.datetime:
    """DTSTART/DTEND in UTC.

    UTC and TZID values (a VTIMEZONE of the request or an IANA name) are
    converted; floating date-times and DATE values (midnight) are read in
    ``floating_zone()``, the organizer's calendar-timezone.
    """
    prop = _one(component, name)
    value = getattr(prop, "dt", None)
    if not isinstance(value, datetime.date) or isinstance(value,
                                                          datetime.time):
        raise _invalid("%s must be a date-time" % name)
    params = getattr(prop, "params", None) or {}
    tzid = params.get("TZID")
    try:
        if isinstance(value, datetime.datetime) and value.tzinfo is None:
            if tzid:
                zone = named_zone(str(tzid))
                if zone is None:
                    raise _invalid("%s has TZID %r, which is neither a "
                                   "VTIMEZONE of the request nor a known "
                                   "time zone" % (name, str(tzid)[:80]))
            else:
                zone = floating_zone()
            value = value.replace(tzinfo=zone)
        elif not isinstance(value, datetime.datetime):
            value = datetime.datetime(value.year, value.month, value.day,
                                      tzinfo=floating_zone())
        value = value.astimezone(timezones.UTC)
    except (OverflowError, ValueError):
        raise _invalid("%s is outside the range of dates this server "
                       "handles" % name) from None
    if not FIRST_ANSWERED <= value <= LAST_ANSWERED:
        raise _invalid("%s must lie between %d and %d" % (
            name, FIRST_ANSWERED.year, LAST_ANSWERED.year))
    return value


def _decoded(body: bytes, content_type: str) -> str:
    """The body as text, in its declared charset (UTF-8 by default)."""
    charset = "utf-8"
    for parameter in content_type.split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').strip() or "utf-8"
    try:
        text = body.decode(charset)
    except UnicodeError as e:
        raise _refused("C:valid-calendar-data", "the body is not %s text "
                       "(%s)" % (charset[:40], _short(e, 80))) from None
    except (LookupError, ValueError):  # unknown, or not a text encoding
        raise _refused("C:supported-calendar-data", "unknown charset %r" %
                       charset[:40]) from None
    return text.lstrip("\ufeff")


def _utc_zone() -> datetime.tzinfo:
    return timezones.UTC


def parse_request(body: bytes, content_type: str, own_addresses: List[str],
                  max_days: int,
                  floating_zone: Callable[[], datetime.tzinfo] = _utc_zone
                  ) -> FreeBusyRequest:
    """Check a POSTed scheduling message; SchedulingError says what is wrong.

    Every failed precondition is 403 with its element (RFC 4791 1.3; RFC
    6638 5 lists them; CalDAVTester checks 403).  The order of checks
    follows sabre/dav and CalDAVTester: media type, iCalendar syntax,
    METHOD and component, ORGANIZER, then the rest of RFC 5546 3.3.2.
    ``floating_zone`` (called only when needed) gives the zone of
    floating DTSTART/DTEND and DATE values.
    """
    if content_type.split(";")[0].strip().lower() != "text/calendar":
        raise _refused("C:supported-calendar-data",
                       "a scheduling POST must be text/calendar")
    if len(body) > MAX_REQUEST_BYTES:
        raise _refused("C:max-resource-size", "scheduling message larger "
                       "than %d bytes" % MAX_REQUEST_BYTES)
    text = _decoded(body, content_type)
    try:
        calendar = icalendar.Calendar.from_ical(text)
    except Exception as e:  # icalendar raises many kinds on bad input
        raise _refused("C:valid-calendar-data",
                       "not iCalendar: %s" % _short(e)) from None
    if getattr(calendar, "name", None) != "VCALENDAR":
        raise _refused("C:valid-calendar-data", "not a VCALENDAR")
    method = calendar.get("METHOD")
    if method is None or not str(method).strip():
        raise _invalid("scheduling message needs METHOD")
    if isinstance(method, list):
        raise _invalid("METHOD appears %d times" % len(method))
    components = [c for c in calendar.subcomponents if c.name != "VTIMEZONE"]
    if any(c.name != "VFREEBUSY" for c in components):
        # RFC 6638 5: the outbox takes VFREEBUSY requests only; everything
        # else is scheduled implicitly, which this server does not do.
        raise _invalid("only VFREEBUSY requests can be POSTed to the "
                       "outbox; this server does no implicit scheduling")
    if str(method).strip().upper() != "REQUEST" or len(components) != 1:
        raise _invalid("need METHOD:REQUEST and exactly one VFREEBUSY")
    component = components[0]
    organizer = component.get("ORGANIZER")
    if isinstance(organizer, list):
        raise _invalid("ORGANIZER appears %d times" % len(organizer))
    own = {a.lower() for a in own_addresses}
    if organizer is None or str(organizer).strip().lower() not in own:
        raise SchedulingError(client.FORBIDDEN, "C:valid-organizer",
                              "ORGANIZER must be one of your own calendar "
                              "user addresses")
    _one(component, "UID", required=False)
    attendees = component.get("ATTENDEE", [])
    if not isinstance(attendees, list):
        attendees = [attendees]
    if not attendees:
        raise _invalid("VFREEBUSY request needs at least one ATTENDEE")
    start = _utc_property(component, "DTSTART", floating_zone)
    end = _utc_property(component, "DTEND", floating_zone)
    try:
        window = Window.checked(start, end, max_days)
    except ValueError as e:
        raise _invalid("invalid DTSTART/DTEND: %s" % e) from None
    seen, unique = set(), []
    for attendee in attendees:
        key = str(attendee).strip().lower()
        if key not in seen:
            seen.add(key)
            unique.append(attendee)
    return FreeBusyRequest(component, window, unique)


def schedule_response(request: FreeBusyRequest,
                      results: Dict[str, LookupResult],
                      over_limit: List) -> bytes:
    """The C:schedule-response, one C:response per ATTENDEE in order."""
    root = xmlsafe.element("C:schedule-response")
    now = datetime.datetime.now(timezones.UTC)
    for attendee in request.attendees:
        address = str(attendee).strip()
        response = xmlsafe.element("C:response", parent=root)
        recipient = xmlsafe.element("C:recipient", parent=response)
        xmlsafe.element("D:href", address, parent=recipient)
        if any(attendee is a for a in over_limit):
            xmlsafe.element("C:request-status", _status(
                OVER_LIMIT_STATUS, "more attendees than this server answers "
                "in one request"), parent=response)
            continue
        result = results[address]
        xmlsafe.element("C:request-status", _status(
            REQUEST_STATUS[result.failure], result.detail), parent=response)
        if result.ok:
            text = vfreebusy.render(
                result.periods, request.window, method="REPLY",
                uid=request.uid, organizer=request.organizer,
                attendee=attendee, dtstamp=now)
            # XML turns CR into "&#13;"; inside XML plain LF line ends are
            # the usual form and every iCalendar parser takes them.
            xmlsafe.element("C:calendar-data", text.replace("\r\n", "\n"),
                            parent=response)
    return xmlsafe.tostring(root)


def _status(code_and_text: str, detail: str) -> str:
    """REQUEST-STATUS with the reason as its exdata (RFC 5545 3.8.8.3).

    The reason goes there rather than into DAV:responsedescription, which
    the caldav library refuses inside a schedule-response.
    """
    if not detail or code_and_text.startswith("2."):
        return code_and_text
    return "%s;%s" % (code_and_text, detail.replace(";", ",").replace(
        "\n", " ")[:200])
