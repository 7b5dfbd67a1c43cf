"""A remote CalDAV server's RFC 6638 outbox: federation with other
gateways, Xandikos, Cyrus, CalendarServer, sabre/dav and the like.

``url`` is the peer's base URL.  The principal is found from
``/.well-known/caldav`` (or the base URL) through DAV:current-user-principal,
then its schedule-outbox-URL and calendar-user-address-set; the first
mailto: address of that set is the ORGANIZER of every request.  Credentials
go with the first request, because some servers answer an unauthenticated
PROPFIND with 200 and an ``<unauthenticated/>`` principal instead of 401.

All addresses of one call go into one VFREEBUSY REQUEST; the answer's
per-recipient request-status maps back to the model (2.x busy, 3.7
unknown, 3.8 no authority, 5.x unavailable).  A reply whose VFREEBUSY
does not say it covers the whole window asked for (DTSTART/DTEND) is no
data for that recipient, never free outside what it covers.

The peer is asked as the configured account, whoever asks here, so its
answers do not depend on the asker: ``per_asker`` is False and one cached
answer serves every local asker.
"""

import datetime
import threading
import uuid

import icalendar

from gateway import xmlsafe
from gateway.config import Option
from gateway.model import LookupResult, Reason
from gateway.provider import Provider as BaseProvider, ProviderError
from gateway.timezones import UTC, format_utc
from gateway.vfreebusy import MAX_PEER_BYTES, PeerDataError, parse_periods

PROPFIND_PRINCIPAL = (b'<?xml version="1.0" encoding="utf-8"?>'
                      b'<D:propfind xmlns:D="DAV:"><D:prop>'
                      b'<D:current-user-principal/></D:prop></D:propfind>')
PROPFIND_SCHEDULING = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
    b'<D:prop><C:schedule-outbox-URL/><C:calendar-user-address-set/>'
    b'</D:prop></D:propfind>')
STATUS_REASONS = {"3.7": Reason.UNKNOWN_USER, "3.8": Reason.NO_AUTHORITY,
                  "5.1": Reason.UNAVAILABLE, "5.2": Reason.UNAVAILABLE,
                  "5.3": Reason.NO_DATA}


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _organizer(value: str) -> str:
    if value and not value.lower().startswith("mailto:"):
        raise ValueError("must be a mailto: address")
    return value


class Provider(BaseProvider):
    """Free/busy from a remote CalDAV scheduling outbox."""

    #: Asked as the configured account, not as the asker (see above).
    per_asker = False

    OPTIONS = {
        "max_attendees": Option(_positive_int, "30", "Most attendees in one "
                                "POST (CalendarServer allows 30)."),
        "organizer": Option(_organizer, "", "ORGANIZER address to use; empty "
                            "means the first mailto: of the account's "
                            "calendar-user-address-set."),
    }

    def __init__(self, name, options, extra, http) -> None:
        super().__init__(name, options, extra, http)
        if not options.get("max_addresses"):  # the section's key wins
            self.max_addresses = extra["max_attendees"]
        self._discovered = None
        self._discover_lock = threading.Lock()

    # -- discovery --------------------------------------------------------

    def _propfind(self, url, body, context):
        response = self.http.request(
            "PROPFIND", url, context, data=body,
            headers={"Depth": "0",
                     "Content-Type": "application/xml; charset=utf-8"})
        if response.status in (401, 403):
            raise ProviderError(Reason.NO_AUTHORITY, "PROPFIND %s answered "
                                "HTTP %d" % (url, response.status),
                                "refused the credentials")
        if response.status != 207:
            raise ProviderError(Reason.UNAVAILABLE, "PROPFIND %s answered "
                                "HTTP %d" % (url, response.status),
                                "answered discovery with HTTP %d" %
                                response.status)
        try:
            return xmlsafe.parse(response.body, MAX_PEER_BYTES)
        except xmlsafe.XMLError as e:
            raise ProviderError(Reason.UNAVAILABLE, "PROPFIND %s: bad XML: "
                                "%s" % (url, e), "sent unreadable XML") \
                from None

    def _principal(self, context) -> str:
        failure = ProviderError(Reason.UNAVAILABLE, "no CalDAV principal "
                                "found", "has no CalDAV principal for our "
                                "account")
        for start in ("/.well-known/caldav", self.http.base_url):
            try:
                root = self._propfind(start, PROPFIND_PRINCIPAL, context)
            except ProviderError as e:
                # A peer that refuses or hangs will not do better at the
                # second URL; only a missing well-known URL is worth it.
                if e.reason in (Reason.NO_AUTHORITY, Reason.TIMED_OUT):
                    raise
                failure = e
                continue
            prop = root.find(".//" + xmlsafe.clark("D:current-user-principal"))
            if prop is None:
                continue
            if prop.find(xmlsafe.clark("D:unauthenticated")) is not None:
                raise ProviderError(Reason.NO_AUTHORITY,
                                    "%s: principal is <unauthenticated/>"
                                    % start, "refused the credentials")
            href = prop.findtext(xmlsafe.clark("D:href"))
            if href:
                return self.http.url(href.strip())
        raise failure

    def _discover(self, context):
        """(outbox URL, ORGANIZER address), found once and kept."""
        with self._discover_lock:
            if self._discovered is None:
                principal = self._principal(context)
                root = self._propfind(principal, PROPFIND_SCHEDULING, context)
                outbox = root.findtext(".//%s/%s" % (
                    xmlsafe.clark("C:schedule-outbox-URL"),
                    xmlsafe.clark("D:href")))
                if not outbox:
                    raise ProviderError(Reason.NO_DATA, "%s has no "
                                        "schedule-outbox-URL" % principal,
                                        "has no scheduling outbox")
                organizer = self.extra["organizer"] or next((
                    (h.text or "").strip() for h in root.iterfind(
                        ".//%s/%s" % (xmlsafe.clark("C:calendar-user-address-"
                                                    "set"),
                                      xmlsafe.clark("D:href")))
                    if (h.text or "").strip().lower().startswith("mailto:")),
                    None)
                if not organizer:
                    raise ProviderError(Reason.NO_DATA, "%s has no "
                                        "mailto: calendar user address"
                                        % principal, "gave our account no "
                                        "mailto: address")
                self._discovered = (self.http.url(outbox.strip()), organizer)
            return self._discovered

    # -- the request ------------------------------------------------------

    def _request_body(self, organizer, addresses, window) -> bytes:
        calendar = icalendar.Calendar()
        calendar.add("PRODID", "-//Freebusy Gateway//caldav provider//EN")
        calendar.add("VERSION", "2.0")
        calendar.add("METHOD", "REQUEST")
        request = icalendar.FreeBusy()
        request.add("UID", str(uuid.uuid4()))
        request.add("DTSTAMP", datetime.datetime.now(UTC))
        request.add("DTSTART", window.start)
        request.add("DTEND", window.end)
        request.add("ORGANIZER", organizer)
        for address in addresses:
            request.add("ATTENDEE", "mailto:" + address)
        calendar.add_component(request)
        return calendar.to_ical()

    def lookup(self, addresses, window, context):
        outbox, organizer = self._discover(context)
        response = self.http.request(
            "POST", outbox, context,
            data=self._request_body(organizer, addresses, window),
            headers={"Content-Type": "text/calendar; charset=utf-8"})
        if response.status == 404:
            with self._discover_lock:
                self._discovered = None  # moved; find it again next time
        if response.status in (401, 403):
            raise ProviderError(Reason.NO_AUTHORITY, "POST %s answered HTTP "
                                "%d" % (outbox, response.status),
                                "refused the credentials")
        if response.status != 200:
            raise ProviderError(Reason.UNAVAILABLE, "POST %s answered HTTP "
                                "%d: %s" % (outbox, response.status,
                                            response.text[:200]),
                                "answered the free/busy request with HTTP "
                                "%d" % response.status)
        try:
            root = xmlsafe.parse(response.body, MAX_PEER_BYTES)
        except xmlsafe.XMLError as e:
            raise ProviderError(Reason.NO_DATA, "POST %s: bad XML: %s" % (
                outbox, e), "sent unreadable XML") from None
        return self._results(root, addresses, window)

    @staticmethod
    def _results(root, addresses, window):
        wanted = {a.lower(): a for a in addresses}
        results = {}
        for response in root.iter(xmlsafe.clark("C:response")):
            href = (response.findtext("%s/%s" % (
                xmlsafe.clark("C:recipient"), xmlsafe.clark("D:href"))) or
                response.findtext(xmlsafe.clark("C:recipient")) or "").strip()
            bare = href[7:] if href.lower().startswith("mailto:") else href
            address = wanted.get(bare.lower())
            if address is None:
                continue
            status = (response.findtext(xmlsafe.clark("C:request-status"))
                      or "").strip()
            code = status.split(";")[0]
            if code.startswith("2."):
                data = response.findtext(xmlsafe.clark("C:calendar-data"))
                try:
                    periods, covered = parse_periods(
                        (data or "").encode("utf-8"))
                except PeerDataError as e:
                    results[address] = LookupResult.failed(Reason.NO_DATA,
                                                            str(e))
                    continue
                if covered is None or covered.start > window.start or \
                        covered.end < window.end:
                    results[address] = LookupResult.failed(
                        Reason.NO_DATA, "peer covered only %s" % (
                            "an unknown range" if covered is None else
                            "%s..%s" % (format_utc(covered.start),
                                        format_utc(covered.end))))
                    continue
                results[address] = LookupResult.busy(periods, window)
            else:
                results[address] = LookupResult.failed(
                    STATUS_REASONS.get(code, Reason.NO_DATA),
                    "peer said %s" % (status or "nothing"))
        return results
