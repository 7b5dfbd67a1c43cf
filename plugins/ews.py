"""Exchange Web Services: free/busy from ``GetUserAvailability`` (SOAP).

One POST to ``url`` (``https://mail.corp.example/EWS/Exchange.asmx``,
Exchange Online: ``https://outlook.office365.com/EWS/Exchange.asmx``)
asks for up to 100 mailboxes over up to 42 days (Exchange Online: 62;
the common keys ``max_addresses`` and ``max_window_days`` change both).
The answer holds one ``FreeBusyResponse`` per mailbox, in request order
and without the address, so answers are matched by position; a count
that does not match makes the whole answer unusable.

What is read, per mailbox:

- ``CalendarEventArray``: each event's ``BusyType`` (Busy -> BUSY,
  Tentative -> BUSY-TENTATIVE, OOF -> BUSY-UNAVAILABLE, Free and
  WorkingElsewhere -> free, NoData -> no data).  Times without an offset
  are in the request's time zone, which is UTC (bias 0) here; times with
  an offset are read as written.  Events reaching past the window are
  clipped.
- ``MergedFreeBusy``: one digit per ``interval`` minutes from the window
  start, 0 free, 1 tentative, 2 busy, 3 OOF, 4 no data.  Where events
  came too they decide the busy time (exact times), and the digits add
  only what no event explains: no data, and busy intervals no event
  covers.  Digit 4 (and 5, which Exchange's own client libraries disagree
  about) is no data, except where a WorkingElsewhere event overlaps it
  (some Exchange versions write working elsewhere as 4).  Any other
  character, or a string too short for the window, is no data.
- No data is never free: a no-data span is BUSY-UNAVAILABLE in the
  answer, and a mailbox whose whole window is no data fails with
  Reason.NO_DATA (5.3).
- Per-mailbox errors: ErrorMailRecipientNotFound and
  ErrorInvalidSmtpAddress -> unknown user (3.7), ErrorNoFreeBusyAccess
  -> no authority (3.8), any other -> no data (5.3).

Whole-request answers: ErrorTimeIntervalTooBig and
ErrorMailboxDataArrayTooBig (as a SOAP fault or in the responses) halve
the window or the batch and ask again within the deadline, and the
smaller limit is kept for later calls; ErrorServerBusy's
``BackOffMilliseconds`` goes into the transport's throttle memory, and
one retry is made through it when the pause fits the deadline.

Credentials (the transport's): ``auth = basic`` or ``ntlm`` on premises,
``auth = oauth2`` (client credentials, scope
``https://outlook.office365.com/.default``) for Exchange Online, where an
app-only token must impersonate a mailbox: the own key ``mailbox`` is
sent as ``ExchangeImpersonation``/``ConnectingSID``/``SmtpAddress`` and
as ``X-AnchorMailbox``.  With basic or NTLM, ``mailbox`` is optional
(impersonation through the ApplicationImpersonation role).

Own keys: ``view`` (FreeBusyMerged by default: busy types, exact times
and the merged digits, but no subjects or locations), ``interval``
(minutes per merged digit, 5..1440, default 15), ``mailbox``,
``working_hours`` (yes: time outside the mailbox's working hours, as
its FreeBusyView states them, is BUSY-UNAVAILABLE; off by default).

The SOAP is built with lxml and answers are parsed by gateway.xmlsafe;
exchangelib is not used because it brings its own sessions, threads,
retries and credentials, which would bypass the transport's host
pinning, deadline, body bound and throttle memory.
"""

import datetime
import logging
import re
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from lxml import etree

from gateway import xmlsafe
from gateway.exchange_xml import (DAY_NAMES, NS_E, NS_M, NS_SOAP, NS_T, NSMAP,
                                  UTC_ZONE, SerializableZone, format_local,
                                  parse_datetime)
from gateway.exchange_xml import m as _m, t as _t
from gateway.provider import (BUSY, BUSY_TENTATIVE, BUSY_UNAVAILABLE,
                              LookupResult, Option, Period, ProviderError,
                              RateLimited, Reason, Span, Window, gaps)
from gateway.provider import Provider as BaseProvider
from gateway.timezones import UTC
from gateway.vfreebusy import MAX_PEER_BYTES

logger = logging.getLogger(__name__)

#: Exchange 2013 and later (and Exchange Online) take this; it is the
#: first version that returns WorkingElsewhere.
SERVER_VERSION = "Exchange2013"

VIEWS = ("FreeBusyMerged", "DetailedMerged", "FreeBusy", "Detailed",
         "MergedOnly")
#: BusyType -> FBTYPE; None is free.  NoData is handled apart.
BUSY_TYPES = {"Free": None, "WorkingElsewhere": None,
              "Tentative": BUSY_TENTATIVE, "Busy": BUSY,
              "OOF": BUSY_UNAVAILABLE}
#: MergedFreeBusy digits that are busy time.
DIGITS = {"1": BUSY_TENTATIVE, "2": BUSY, "3": BUSY_UNAVAILABLE}
RANK = {BUSY_TENTATIVE: 1, BUSY: 2, BUSY_UNAVAILABLE: 3}
#: Per-mailbox ResponseCodes with their own reason; any other: no data.
MAILBOX_ERRORS = {"ErrorMailRecipientNotFound": Reason.UNKNOWN_USER,
                  "ErrorInvalidSmtpAddress": Reason.UNKNOWN_USER,
                  "ErrorNoFreeBusyAccess": Reason.NO_AUTHORITY}
WINDOW_TOO_BIG = "ErrorTimeIntervalTooBig"
BATCH_TOO_BIG = "ErrorMailboxDataArrayTooBig"
#: Whole-request codes that mean our account may not do this.
REFUSED = ("ErrorAccessDenied", "ErrorImpersonateUserDenied",
           "ErrorImpersonationDenied", "ErrorNonExistentMailbox",
           "ErrorInvalidExchangeImpersonationHeaderData")
def _view(value: str) -> str:
    for view in VIEWS:
        if view.lower() == value.strip().lower():
            return view
    raise ValueError("must be one of %s" % ", ".join(VIEWS))


def _interval(value: str) -> int:
    minutes = int(value)
    if not 5 <= minutes <= 1440:
        raise ValueError("must be 5 to 1440 minutes")
    return minutes


_SMTP = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$")


def _mailbox(value: str) -> Optional[str]:
    value = value.strip()
    if value and not _SMTP.match(value):
        raise ValueError("must be an SMTP address (user@domain)")
    return value or None


def _yes_no(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("yes", "true", "on", "1"):
        return True
    if lowered in ("no", "false", "off", "0", ""):
        return False
    raise ValueError("must be yes or no")


def _time(text: Optional[str]) -> datetime.datetime:
    """An EWS dateTime: with an offset as written, without one in the
    request's time zone (UTC, see ``_request``)."""
    return parse_datetime(text, UTC)


class _TooBig(Exception):
    """Exchange refused the size of the request (window or batch)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class _Answer:
    """One mailbox's answer over one piece of the window."""

    def __init__(self) -> None:
        self.periods: List[Period] = []
        self.no_data: List[Tuple[datetime.datetime, datetime.datetime]] = []
        #: the mailbox's WorkingHours as UTC spans; None: not given
        self.working: Optional[List[Span]] = None


class Provider(BaseProvider):
    """GetUserAvailability, batched; see the module doc."""

    max_addresses = 100
    max_window = datetime.timedelta(days=42)
    per_asker = False
    AUTH_KINDS = ("basic", "ntlm", "oauth2")
    AUTH_SCOPES = {"oauth2": "https://outlook.office365.com/.default"}
    OPTIONS = {
        "view": Option(_view, "FreeBusyMerged", "RequestedView: "
                       "FreeBusyMerged (busy types, times and merged "
                       "digits, no details), DetailedMerged, FreeBusy, "
                       "Detailed or MergedOnly."),
        "interval": Option(_interval, "15", "Minutes per MergedFreeBusy "
                           "digit (5 to 1440)."),
        "mailbox": Option(_mailbox, "", "SMTP address the gateway "
                          "impersonates (ExchangeImpersonation and "
                          "X-AnchorMailbox); required with auth = oauth2 "
                          "(Exchange Online app-only)."),
        "working_hours": Option(_yes_no, "no", "yes: time outside each "
                                "mailbox's working hours is "
                                "BUSY-UNAVAILABLE."),
    }

    def __init__(self, name, options, extra, http) -> None:
        super().__init__(name, options, extra, http)
        kind = options.get("auth") or (
            "oauth2" if options.get("tenant") or options.get("client_id")
            else "")
        if kind == "oauth2" and not extra["mailbox"]:
            raise ValueError("key 'mailbox': required with auth = oauth2 "
                             "(app-only EWS must impersonate a mailbox)")
        self.slot = datetime.timedelta(minutes=extra["interval"])
        self._limits = threading.Lock()

    # -- the request ------------------------------------------------------

    def _request(self, addresses: Sequence[str], window: Window) -> bytes:
        s, m, t = ("{%s}%%s" % ns for ns in (NS_SOAP, NS_M, NS_T))
        envelope = etree.Element(s % "Envelope", nsmap=NSMAP)
        header = etree.SubElement(envelope, s % "Header")
        etree.SubElement(header, t % "RequestServerVersion",
                         Version=SERVER_VERSION)
        if self.extra["mailbox"]:
            impersonation = etree.SubElement(header,
                                             t % "ExchangeImpersonation")
            sid = etree.SubElement(impersonation, t % "ConnectingSID")
            etree.SubElement(sid, t % "SmtpAddress").text = \
                self.extra["mailbox"]
        body = etree.SubElement(envelope, s % "Body")
        request = etree.SubElement(body, m % "GetUserAvailabilityRequest")
        # UTC: bias 0 and no daylight saving; naive times are UTC then.
        UTC_ZONE.append_to(request)
        array = etree.SubElement(request, m % "MailboxDataArray")
        for address in addresses:
            data = etree.SubElement(array, t % "MailboxData")
            email = etree.SubElement(data, t % "Email")
            etree.SubElement(email, t % "Address").text = \
                xmlsafe.text(address)
            etree.SubElement(email, t % "RoutingType").text = "SMTP"
            etree.SubElement(data, t % "AttendeeType").text = "Required"
            etree.SubElement(data, t % "ExcludeConflicts").text = "false"
        view = etree.SubElement(request, t % "FreeBusyViewOptions")
        time_window = etree.SubElement(view, t % "TimeWindow")
        etree.SubElement(time_window, t % "StartTime").text = \
            format_local(window.start, UTC)
        etree.SubElement(time_window, t % "EndTime").text = \
            format_local(window.end, UTC)
        etree.SubElement(view, t % "MergedFreeBusyIntervalInMinutes"
                         ).text = str(self.extra["interval"])
        etree.SubElement(view, t % "RequestedView").text = self.extra["view"]
        return etree.tostring(envelope, xml_declaration=True,
                              encoding="utf-8")

    def _post(self, addresses, window, context):
        headers = {"Content-Type": "text/xml; charset=utf-8",
                   "Accept": "text/xml"}
        if self.extra["mailbox"]:
            headers["X-AnchorMailbox"] = self.extra["mailbox"]
        return self.http.request("POST", self.options["url"], context,
                                 headers=headers,
                                 data=self._request(addresses, window))

    # -- one call ---------------------------------------------------------

    def _call(self, addresses, window, context) -> List:
        """``[_Answer or LookupResult failure]`` in the order of
        ``addresses``; _TooBig, RateLimited or ProviderError for the
        whole call.  A server-busy fault is retried once through the
        transport's throttle memory, which waits if the deadline lets it
        or fails fast as rate limited."""
        for attempt in (1, 2):
            response = self._post(addresses, window, context)
            try:
                return self._read(response, addresses, window)
            except RateLimited as e:
                if attempt == 2 or e.retry_after is None or \
                        e.retry_after >= context.deadline - time.monotonic():
                    raise       # the fan-out remembers the pause
                self.http.throttle(e.retry_after)
        raise AssertionError("unreachable")

    def _read(self, response, addresses, window) -> List:
        where = "POST %s" % response.url
        if response.status in (401, 403):
            raise ProviderError(Reason.NO_AUTHORITY, "%s answered HTTP %d"
                                % (where, response.status),
                                "refused the credentials")
        try:
            root = xmlsafe.parse(response.body, MAX_PEER_BYTES)
        except xmlsafe.XMLError as e:
            if response.status != 200:
                raise ProviderError(
                    Reason.UNAVAILABLE, "%s answered HTTP %d: %.200s" % (
                        where, response.status, response.text),
                    "answered HTTP %d" % response.status) from None
            raise ProviderError(Reason.NO_DATA, "%s: no SOAP answer: %s: "
                                "%.200s" % (where, e, response.text),
                                "sent an unreadable answer") from None
        if root.tag != "{%s}Envelope" % NS_SOAP:
            raise ProviderError(Reason.NO_DATA, "%s: not a SOAP envelope "
                                "(%.100s)" % (where, root.tag),
                                "sent an unreadable answer")
        fault = root.find("{%s}Body/{%s}Fault" % (NS_SOAP, NS_SOAP))
        if fault is not None:
            self._fault(fault, where, response.status)
        if response.status != 200:
            raise ProviderError(Reason.UNAVAILABLE, "%s answered HTTP %d "
                                "without a fault" % (where, response.status),
                                "answered HTTP %d" % response.status)
        answer = root.find("{%s}Body/%s" % (
            NS_SOAP, _m("GetUserAvailabilityResponse")))
        array = None if answer is None else \
            answer.find(_m("FreeBusyResponseArray"))
        if array is None:
            raise ProviderError(Reason.NO_DATA, "%s: no "
                                "FreeBusyResponseArray" % where,
                                "sent an unreadable answer")
        responses = array.findall(_m("FreeBusyResponse"))
        codes = [(r.findtext("%s/%s" % (_m("ResponseMessage"),
                                        _m("ResponseCode"))) or "").strip()
                 for r in responses]
        for code in (WINDOW_TOO_BIG, BATCH_TOO_BIG):
            if code in codes:
                raise _TooBig(code)
        if len(responses) != len(addresses):
            raise ProviderError(Reason.NO_DATA, "%s: %d FreeBusyResponses "
                                "for %d mailboxes" % (
                                    where, len(responses), len(addresses)),
                                "sent an unreadable answer")
        out = []
        for address, element in zip(addresses, responses):
            try:
                out.append(self._mailbox(element, window))
            except (ValueError, TypeError, OverflowError) as e:
                out.append(LookupResult.failed(
                    Reason.NO_DATA, "unreadable FreeBusyResponse for %s: %s"
                    % (address, e)))
        return out

    @staticmethod
    def _fault(fault, where, status) -> None:
        detail = fault.find("detail")
        code = ""
        if detail is not None:
            code = (detail.findtext("{%s}ResponseCode" % NS_E) or "").strip()
        if not code:
            code = (fault.findtext("faultcode") or "").strip()
            code = code.rpartition(":")[2]
        text = (fault.findtext("faultstring") or "").strip()
        if code in (WINDOW_TOO_BIG, BATCH_TOO_BIG):
            raise _TooBig(code)
        if code == "ErrorServerBusy":
            pause = None
            if detail is not None:
                for value in detail.iter(_t("Value")):
                    if value.get("Name") == "BackOffMilliseconds":
                        try:
                            pause = float(value.text) / 1000
                        except (TypeError, ValueError):
                            pause = None
            raise RateLimited(pause, "%s: ErrorServerBusy, back off %s s"
                              % (where, pause))
        if code in REFUSED:
            raise ProviderError(Reason.NO_AUTHORITY, "%s: fault %s: %.200s"
                                % (where, code, text), "refused access")
        raise ProviderError(Reason.UNAVAILABLE, "%s: HTTP %d fault %s: "
                            "%.200s" % (where, status, code or "?", text),
                            "answered with an error")

    # -- one mailbox ------------------------------------------------------

    def _mailbox(self, element, window):
        message = element.find(_m("ResponseMessage"))
        if message is None:
            raise ValueError("no ResponseMessage")
        klass = message.get("ResponseClass", "")
        code = (message.findtext(_m("ResponseCode")) or "").strip()
        if klass == "Error" or klass not in ("Success", "Warning"):
            text = (message.findtext(_m("MessageText")) or "").strip()
            return LookupResult.failed(
                MAILBOX_ERRORS.get(code, Reason.NO_DATA),
                "%s %s: %.200s" % (klass or "no class", code, text))
        view = element.find(_m("FreeBusyView"))
        if view is None:
            raise ValueError("no FreeBusyView")
        kind = (view.findtext(_t("FreeBusyViewType")) or "").strip()
        merged = view.findtext(_t("MergedFreeBusy"))
        events = view.find(_t("CalendarEventArray"))
        if kind in ("", "None") or (merged is None and events is None and
                                    "Merged" in kind):
            return LookupResult.failed(Reason.NO_DATA, "FreeBusyViewType "
                                       "%r without data" % kind)
        answer = _Answer()
        elsewhere = []
        if events is not None:
            for event in events.findall(_t("CalendarEvent")):
                start = _time(event.findtext(_t("StartTime")))
                end = _time(event.findtext(_t("EndTime")))
                busy = (event.findtext(_t("BusyType")) or "").strip()
                if end <= start:
                    continue
                if busy == "NoData":
                    answer.no_data.append((start, end))
                elif busy == "WorkingElsewhere":
                    elsewhere.append((start, end))
                elif busy in BUSY_TYPES:
                    if BUSY_TYPES[busy] is not None:
                        answer.periods.append(Period(start, end,
                                                     BUSY_TYPES[busy]))
                else:   # RFC 5545: an unknown type is BUSY
                    answer.periods.append(Period(start, end, BUSY))
        if merged is not None:
            self._digits(merged.strip(), window, answer, elsewhere,
                         events is not None)
        elif events is None:
            # An events view with no events: Exchange leaves the array
            # out when the calendar is empty there.
            if kind not in ("FreeBusy", "Detailed"):
                return LookupResult.failed(Reason.NO_DATA, "view %r "
                                           "without data" % kind)
        hours = view.find(_t("WorkingHours"))
        if hours is not None:
            try:
                answer.working = _working_spans(hours, window)
            except (TypeError, ValueError, OverflowError):
                # Counted as busy, unreadable hours fail the mailbox;
                # otherwise the finder uses the default hours instead.
                if self.extra["working_hours"]:
                    raise
            if answer.working is not None and self.extra["working_hours"]:
                answer.periods.extend(Period(s, e, BUSY_UNAVAILABLE)
                                      for s, e in gaps(answer.working,
                                                       window))
        return answer

    def _digits(self, digits, window, answer, elsewhere, have_events):
        step = self.slot
        start = window.start
        for digit in digits:
            if start >= window.end:
                break
            end = min(start + step, window.end)
            if digit == "0":
                pass
            elif digit in DIGITS:
                # The highest status in the interval is the digit's: an
                # event saying as much explains it, else it is added.
                if not have_events or not any(
                        p.start < end and p.end > start and
                        RANK[p.fbtype] >= RANK[DIGITS[digit]]
                        for p in answer.periods):
                    answer.periods.append(Period(start, end, DIGITS[digit]))
            elif digit in "45" and any(s < end and e > start
                                       for s, e in elsewhere):
                pass    # working elsewhere, as some versions write it
            else:
                answer.no_data.append((start, end))
            start = end
        if start < window.end:
            answer.no_data.append((start, window.end))

    # -- lookup -----------------------------------------------------------

    def lookup(self, addresses, window, context):
        answers: Dict[str, List[_Answer]] = {a: [] for a in addresses}
        failures: Dict[str, LookupResult] = {}
        todo = [(tuple(addresses), window)]
        while todo:
            batch, part = todo.pop()
            try:
                got = self._call(batch, part, context)
            except _TooBig as e:
                todo.extend(self._smaller(e.code, batch, part))
                continue
            for address, result in zip(batch, got):
                if isinstance(result, LookupResult):
                    failures.setdefault(address, result)
                else:
                    answers[address].append(result)
        results = {}
        for address in addresses:
            if address in failures:
                results[address] = failures[address]
                continue
            pieces = answers[address]
            no_data = [span for piece in pieces for span in piece.no_data]
            if not gaps(no_data, window):
                results[address] = LookupResult.failed(
                    Reason.NO_DATA, "no data for the whole window")
                continue
            periods = [p for piece in pieces for p in piece.periods]
            working = None if any(piece.working is None for piece in pieces) \
                else [span for piece in pieces for span in piece.working]
            results[address] = LookupResult.busy(periods, window, no_data,
                                                 working)
        return results

    def _smaller(self, code, batch, part):
        """The pieces to ask instead of one Exchange found too big; the
        smaller limit is kept for later lookups."""
        if code == BATCH_TOO_BIG:
            if len(batch) < 2:
                raise ProviderError(Reason.UNAVAILABLE, "%s for one mailbox"
                                    % code, "refused the request size")
            half = (len(batch) + 1) // 2
            with self._limits:
                if self.max_addresses == 0 or half < self.max_addresses:
                    self.max_addresses = half
                    logger.warning("Provider %s: Exchange refused %d "
                                   "mailboxes in one call; asking for %d "
                                   "from now on (set max_addresses)",
                                   self.name, len(batch), half)
            return [(batch[:half], part), (batch[half:], part)]
        middle = part.start + (part.end - part.start) / 2 // self.slot \
            * self.slot
        if middle <= part.start:
            raise ProviderError(Reason.UNAVAILABLE, "%s for %s"
                                % (code, part.end - part.start),
                                "refused the request size")
        # Keep the limit a whole number of slots, as the fan-out needs.
        with self._limits:
            learned = middle - part.start
            if self.max_window is None or learned < self.max_window:
                self.max_window = learned
                logger.warning("Provider %s: Exchange refused a window of "
                               "%s; asking for %s from now on (set "
                               "max_window_days)", self.name,
                               part.end - part.start, learned)
        return [(batch, Window(part.start, middle)),
                (batch, Window(middle, part.end))]


def _working_spans(hours, window) -> List[Span]:
    """The WorkingPeriods of a ``WorkingHours`` element around ``window``,
    in its own SerializableTimeZone, as UTC spans."""
    element = hours.find(_t("TimeZone"))
    zone = UTC if element is None else SerializableZone.from_element(element)
    periods = hours.findall("%s/%s" % (_t("WorkingPeriodArray"),
                                       _t("WorkingPeriod")))
    working = []
    day = window.start.date() - datetime.timedelta(days=2)
    while day <= window.end.date() + datetime.timedelta(days=2):
        name = DAY_NAMES[day.weekday()]
        weekend = day.weekday() >= 5
        for period in periods:
            days = (period.findtext(_t("DayOfWeek")) or "").split()
            if name in days or "Day" in days or \
                    ("Weekday" in days and not weekend) or \
                    ("WeekendDay" in days and weekend):
                midnight = datetime.datetime.combine(day, datetime.time())
                working.append(tuple((midnight + datetime.timedelta(
                    minutes=int(period.findtext(_t(key))))).replace(
                        tzinfo=zone).astimezone(UTC) for key in (
                            "StartTimeInMinutes", "EndTimeInMinutes")))
        day += datetime.timedelta(days=1)
    return working
