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
from http import client
from typing import Dict, List, Optional, Tuple

import icalendar
from lxml import etree

from gateway import timezones, vfreebusy, xmlsafe
from gateway.model import LookupResult, Reason, Window

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


def user_addresses(user: str, domains) -> List[str]:
    return ["mailto:%s@%s" % (user, domain) for domain in domains]


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


def parse_availability_patch(root) -> Tuple[bool, Optional[str]]:
    """(found, text or None to remove) for calendar-availability.

    Raises ValueError when the value is not iCalendar with a VAVAILABILITY.
    """
    for action in root:
        is_set = action.tag == xmlsafe.clark("D:set")
        if action.tag not in (xmlsafe.clark("D:set"),
                              xmlsafe.clark("D:remove")):
            continue
        for prop in action.iterfind(xmlsafe.clark("D:prop")):
            for child in prop:
                if child.tag not in AVAILABILITY_PROPS:
                    raise ValueError("only calendar-availability can be "
                                     "set on the inbox")
                if not is_set:
                    return True, None
                text = (child.text or "").strip()
                try:
                    calendar = icalendar.Calendar.from_ical(text)
                except Exception as e:
                    raise ValueError("calendar-availability is not "
                                     "iCalendar: %s" % e) from None
                if not any(c.name == "VAVAILABILITY"
                           for c in calendar.subcomponents):
                    raise ValueError("calendar-availability holds no "
                                     "VAVAILABILITY")
                return True, text.replace("\r\n", "\n").replace(
                    "\n", "\r\n") + "\r\n"
    return False, None


def proppatch_ok(base_prefix: str, path: str, names: List[str]) -> bytes:
    multistatus = xmlsafe.element("D:multistatus")
    response = xmlsafe.element("D:response", parent=multistatus)
    xmlsafe.element("D:href", _href(base_prefix, path), parent=response)
    propstat = etree.SubElement(response, xmlsafe.clark("D:propstat"))
    prop = etree.SubElement(propstat, xmlsafe.clark("D:prop"))
    for name in names:
        etree.SubElement(prop, name)
    etree.SubElement(propstat, xmlsafe.clark("D:status")).text = \
        "HTTP/1.1 200 OK"
    return xmlsafe.tostring(multistatus)


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


def _utc_property(component, name: str) -> datetime.datetime:
    if name not in component:
        raise SchedulingError(client.BAD_REQUEST,
                              "C:valid-scheduling-message",
                              "VFREEBUSY request needs %s" % name)
    value = component[name].dt
    if not isinstance(value, datetime.datetime) or value.tzinfo is None:
        raise SchedulingError(client.BAD_REQUEST,
                              "C:valid-scheduling-message",
                              "%s must be a UTC date-time" % name)
    return value.astimezone(timezones.UTC)


def parse_request(body: bytes, content_type: str, own_addresses: List[str],
                  max_days: int) -> FreeBusyRequest:
    """Check a POSTed scheduling message; SchedulingError says what is wrong.

    The order of checks follows sabre/dav and CalDAVTester: media type,
    iCalendar syntax, METHOD and component, ORGANIZER (403), then the
    rest of RFC 5546 3.3.2 (400).
    """
    if content_type.split(";")[0].strip().lower() != "text/calendar":
        raise SchedulingError(client.BAD_REQUEST, "C:supported-calendar-data",
                              "a scheduling POST must be text/calendar")
    if len(body) > MAX_REQUEST_BYTES:
        raise SchedulingError(client.BAD_REQUEST, "C:max-resource-size",
                              "scheduling message too large")
    try:
        calendar = icalendar.Calendar.from_ical(body)
    except Exception as e:
        raise SchedulingError(client.BAD_REQUEST, "C:valid-calendar-data",
                              "not iCalendar: %s" % e) from None
    if getattr(calendar, "name", None) != "VCALENDAR":
        raise SchedulingError(client.BAD_REQUEST, "C:valid-calendar-data",
                              "not a VCALENDAR")
    method = str(calendar.get("METHOD", "")).upper()
    components = [c for c in calendar.subcomponents if c.name != "VTIMEZONE"]
    if not method:
        raise SchedulingError(client.BAD_REQUEST,
                              "C:valid-scheduling-message",
                              "scheduling message needs METHOD")
    if any(c.name != "VFREEBUSY" for c in components):
        raise SchedulingError(client.NOT_IMPLEMENTED,
                              "C:valid-scheduling-message",
                              "only VFREEBUSY requests are handled here; "
                              "this server does no implicit scheduling")
    if method != "REQUEST" or len(components) != 1:
        raise SchedulingError(client.BAD_REQUEST,
                              "C:valid-scheduling-message",
                              "need METHOD:REQUEST and exactly one VFREEBUSY")
    component = components[0]
    organizer = component.get("ORGANIZER")
    own = {a.lower() for a in own_addresses}
    if organizer is None or str(organizer).strip().lower() not in own:
        raise SchedulingError(client.FORBIDDEN, "C:valid-organizer",
                              "ORGANIZER must be one of your own calendar "
                              "user addresses")
    attendees = component.get("ATTENDEE", [])
    if not isinstance(attendees, list):
        attendees = [attendees]
    if not attendees:
        raise SchedulingError(client.BAD_REQUEST,
                              "C:valid-scheduling-message",
                              "VFREEBUSY request needs at least one ATTENDEE")
    start = _utc_property(component, "DTSTART")
    end = _utc_property(component, "DTEND")
    try:
        window = Window.checked(start, end, max_days)
    except ValueError as e:
        raise SchedulingError(client.BAD_REQUEST,
                              "C:valid-scheduling-message",
                              "invalid DTSTART/DTEND: %s" % e) from None
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
