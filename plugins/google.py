"""Google Calendar: free/busy from the Calendar API's ``freeBusy`` query.

``POST {url}/freeBusy`` (``url`` is ``https://www.googleapis.com/
calendar/v3``) with ``{"timeMin": ..., "timeMax": ..., "timeZone": "UTC",
"items": [{"id": address}, ...]}`` answers
``{"calendars": {address: {"busy": [{"start", "end"}], "errors": [...]}}}``.
Google knows only busy: every period is BUSY, an empty ``busy`` list is
free.  Times are RFC 3339 with the offset of the request's ``timeZone``
(or another, if Google chooses); they are read as written, never
assumed to be UTC.

Per calendar ``errors``: ``notFound`` is an unknown user (3.7), any
other reason (``internalError``, ``groupTooBig``,
``tooManyCalendarsRequested``, reasons Google adds later) is no data
(5.3).  An address missing from ``calendars`` (a group, which Google
answers under ``groups``) is no data too.

Whole-call answers: 403 ``rateLimitExceeded``/``userRateLimitExceeded``
(and the other quota reasons) are throttling (5.3), as is a 429, which
the transport handles with its Retry-After; any other 403 is no
authority (3.8); 400 ``timeRangeTooLong`` or
``tooManyCalendarsRequested`` mean the section's limits exceed what
Google takes (5.1, the log names the key to lower).

Limits: 50 calendars a call (Google's ``calendarExpansionMax``) and 60
days, well below the undocumented limit of about 90 days
(``max_addresses`` and ``max_window_days`` change them).  Credentials:
``auth = google`` (a service account with domain-wide delegation acting
as ``subject``; default scope ``calendar.freebusy``) or a ``token`` got
elsewhere.
"""

import datetime
import re

from gateway.provider import (BUSY, LookupResult, Period, ProviderError,
                              RateLimited, Reason, no_data)
from gateway.provider import Provider as BaseProvider
from gateway.timezones import UTC

#: Least privilege: free/busy only, no events.
FREEBUSY_SCOPE = "https://www.googleapis.com/auth/calendar.freebusy"
#: 403 reasons that mean "slow down", not "not allowed".
THROTTLE_REASONS = {"ratelimitexceeded", "userratelimitexceeded",
                    "quotaexceeded", "dailylimitexceeded"}
#: 400 reasons that mean the section asks more than Google takes.
TOO_BIG = {"timerangetoolong": "max_window_days",
           "toomanycalendarsrequested": "max_addresses"}
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)"
                      r"(?:\.(\d{1,9}))?([Zz]|([+-])(\d\d):(\d\d))")


class BadAnswer(ValueError):
    """A part of Google's answer we cannot read: no data, never free."""


def rfc3339(moment):
    """An aware datetime as Google wants it: UTC, ``Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_rfc3339(text, round_up=False):
    """An RFC 3339 time with its own offset (``Z``, ``+10:30``) as an
    aware datetime; digits finer than a microsecond are cut, or rounded
    up for an end (never shorter than Google said)."""
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise BadAnswer("not an RFC 3339 time with an offset: %.80r"
                        % (text,))
    (year, month, day, hour, minute, second, fraction, zulu, sign,
     offset_hours, offset_minutes) = match.groups()
    fraction = (fraction or "").ljust(9, "0")
    if sign:
        offset = datetime.timedelta(hours=int(offset_hours),
                                    minutes=int(offset_minutes))
        zone = datetime.timezone(-offset if sign == "-" else offset)
    else:
        zone = UTC
    try:
        moment = datetime.datetime(int(year), int(month), int(day),
                                   int(hour), int(minute), int(second),
                                   int(fraction[:6]), tzinfo=zone)
        if round_up and int(fraction[6:]):
            moment += datetime.timedelta(microseconds=1)
    except (ValueError, OverflowError) as e:
        raise BadAnswer("time %.80r: %s" % (text, e)) from None
    return moment


def calendar_result(entry, window):
    """One calendar of the answer as a LookupResult."""
    if not isinstance(entry, dict):
        return LookupResult.failed(Reason.NO_DATA, "calendar entry %.80r"
                                   % (entry,))
    errors = entry.get("errors")
    if errors:
        reasons = [str(e.get("reason", "")) if isinstance(e, dict) else
                   repr(e) for e in (errors if isinstance(errors, list)
                                     else [errors])]
        detail = "Google said %s" % ", ".join(reasons)[:200]
        if "notFound" in reasons:
            return LookupResult.failed(Reason.UNKNOWN_USER, detail)
        return LookupResult.failed(Reason.NO_DATA, detail)
    busy = entry.get("busy")
    if not isinstance(busy, list):
        return LookupResult.failed(Reason.NO_DATA, "no busy list and no "
                                   "errors: %.120r" % (entry,))
    periods = []
    try:
        for span in busy:
            if not isinstance(span, dict):
                raise BadAnswer("busy entry %.80r" % (span,))
            start = parse_rfc3339(span.get("start"))
            end = parse_rfc3339(span.get("end"), round_up=True)
            if end < start:
                raise BadAnswer("busy span ends before it starts: %s/%s"
                                % (span.get("start"), span.get("end")))
            periods.append(Period(start, end, BUSY))
    except BadAnswer as e:
        return LookupResult.failed(Reason.NO_DATA, "unreadable busy "
                                   "list: %s" % e)
    return LookupResult.busy(periods, window)


def _error_of(answer):
    """``(message, [reasons])`` of Google's error envelope."""
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return "", []
    reasons = [str(e.get("reason", "")) for e in error.get("errors") or []
               if isinstance(e, dict)]
    status = error.get("status")     # the newer envelope: "PERMISSION_DENIED"
    if isinstance(status, str):
        reasons.append(status)
    details = error.get("details")
    if isinstance(details, list):    # google.rpc.ErrorInfo's reason
        reasons += [str(d.get("reason")) for d in details
                    if isinstance(d, dict) and d.get("reason")]
    return str(error.get("message", "")), reasons


class Provider(BaseProvider):
    """One freeBusy POST per call; the gateway splits by the limits."""

    max_addresses = 50
    #: Google refuses about 90 days and more (undocumented): keep well
    #: below it.
    max_window = datetime.timedelta(days=60)
    per_asker = False
    AUTH_KINDS = ("google", "bearer")
    AUTH_SCOPES = {"google": FREEBUSY_SCOPE}

    def __init__(self, name, options, extra, http):
        super().__init__(name, options, extra, http)
        self.endpoint = options["url"].rstrip("/") + "/freeBusy"

    def lookup(self, addresses, window, context):
        response = self.http.post_json(self.endpoint, context, {
            "timeMin": rfc3339(window.start),
            "timeMax": rfc3339(window.end),
            "timeZone": "UTC",
            "items": [{"id": a} for a in addresses]})
        answer = response.json()
        if response.status != 200:
            raise self._failure(response, answer)
        calendars = answer.get("calendars") \
            if isinstance(answer, dict) else None
        if not isinstance(calendars, dict):
            raise ProviderError(Reason.NO_DATA, "POST %s: not a freeBusy "
                                "answer: %.200r" % (response.url,
                                                    response.text))
        results = no_data(addresses, "not in Google's answer")
        groups = answer.get("groups")
        if isinstance(groups, dict):
            for group in groups:
                if str(group).lower() in results:
                    results[str(group).lower()] = LookupResult.failed(
                        Reason.NO_DATA, "a group: Google answers for its "
                        "members, not for the group")
        for calendar, entry in calendars.items():
            address = str(calendar).strip().lower()
            if address in results:
                results[address] = calendar_result(entry, window)
        return results

    def _failure(self, response, answer):
        message, reasons = _error_of(answer)
        lowered = {r.lower() for r in reasons}
        detail = "POST %s answered %d %s: %.200s" % (
            response.url, response.status, ",".join(reasons),
            message or response.text)
        if response.status == 401:
            return ProviderError(Reason.NO_AUTHORITY, detail,
                                 "refused the credentials")
        if response.status == 403 and lowered & THROTTLE_REASONS:
            # Google sends no Retry-After here: nothing to remember.
            return RateLimited(None, detail)
        if response.status == 403:
            return ProviderError(Reason.NO_AUTHORITY, detail)
        too_big = sorted(lowered & set(TOO_BIG))
        if too_big:
            return ProviderError(Reason.UNAVAILABLE, detail + " (lower %s "
                                 "for this section)" % TOO_BIG[too_big[0]],
                                 "refused a request as too large")
        if response.status == 404:
            return ProviderError(Reason.UNAVAILABLE, detail + " (is the "
                                 "key 'url' right?)", "answered HTTP 404")
        return ProviderError(Reason.UNAVAILABLE, detail,
                             "answered HTTP %d" % response.status)
