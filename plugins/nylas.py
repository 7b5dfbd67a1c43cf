"""Nylas v3: free/busy from ``calendars/free-busy``.

``POST {url}/grants/{grant_id}/calendars/free-busy`` (``url`` is
``https://api.us.nylas.com/v3`` or the EU host) with
``{"start_time": unix, "end_time": unix, "emails": [...],
"tentative_as_busy": true}`` answers HTTP 200 with one entry per email
in ``data``: ``{"object": "free_busy", "email", "time_slots": [{"status",
"start_time", "end_time"}]}`` or ``{"object": "error", "email",
"error": "<the provider's message>"}``.  Times are Unix seconds, so
windows are sent in whole seconds.

Slots: ``busy`` -> BUSY, ``free`` -> free, anything else (Nylas says
the status is "typically busy") -> BUSY-TENTATIVE.  An empty
``time_slots`` list is free; an email missing from ``data``, or an
entry we cannot read, is no data (5.3).  Error entries are kept per
address: a message saying the address cannot be resolved or found is
an unknown user (3.7), one saying access is denied is no authority
(3.8), throttling is rate limited (5.3), anything else no data (5.3).

Whole-call errors come in Nylas's envelope ``{"request_id", "error":
{"type", "message", "provider_error"}}``: 401 and
``token.unauthorized_access`` refused the credentials (3.8), 403 no
authority, 404 (a wrong ``grant_id``) and other errors 5.1.  A 429,
from Nylas itself (``nylas_rate_limit_exceeded``) or passed on from the
provider (``rate_limit_error`` with ``provider_error``, and its
Retry-After when the provider sent one), is the transport's: retried
after a Retry-After that fits the deadline, remembered when it does
not, and 5.3 (throttling) either way when it cannot be retried.

Limits: 20 emails a call and 61 days (Microsoft grants; a Google grant
takes 50 emails and about 3 months: raise ``max_addresses`` and
``max_window_days``).  Credentials: ``token`` is the API key (or a
grant's access token with ``grant_id = me``).  Own key ``grant_id``.
"""

import datetime
import json
import urllib.parse

from gateway.provider import (BUSY, BUSY_TENTATIVE, LookupResult, Option,
                              Period, ProviderError, Reason,
                              failure_in_words, no_data)
from gateway.provider import Provider as BaseProvider
from gateway.timezones import UTC

#: time_slots statuses; None is free, any other status is BUSY_TENTATIVE.
STATUS = {"busy": BUSY, "free": None}
#: Per-email error messages (the provider's words, passed on by Nylas).
#: Error types that mean our credentials are refused.
REFUSED_TYPES = {"api.authentication_error", "token.unauthorized_access",
                 "unauthorized"}


def _grant_id(value):
    value = value.strip()
    if not value or any(c.isspace() or c in "/\\?#%" for c in value):
        raise ValueError("a grant id (or me), without spaces, slashes, "
                         "%, ? or #")
    return value


def _unix(value):
    """A Unix-seconds time of Nylas's answer as an aware datetime."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("not a Unix time: %.40r" % (value,))
    return datetime.datetime.fromtimestamp(value, UTC)


def email_error(message):
    """An ``object: "error"`` entry as a failed LookupResult."""
    text = str(message)
    return failure_in_words(text, "Nylas said: %.200s" % text)


def entry_result(entry, window):
    """One entry of ``data`` as a LookupResult."""
    if entry.get("object") == "error":
        return email_error(entry.get("error"))
    if entry.get("object") != "free_busy":
        return LookupResult.failed(Reason.NO_DATA, "entry of object %.40r"
                                   % (entry.get("object"),))
    slots = entry.get("time_slots")
    if not isinstance(slots, list):
        return LookupResult.failed(Reason.NO_DATA, "no time_slots list")
    periods = []
    try:
        for slot in slots:
            status = str(slot.get("status") or "busy").lower()
            fbtype = STATUS.get(status, BUSY_TENTATIVE)
            start, end = _unix(slot["start_time"]), _unix(slot["end_time"])
            if end < start:
                raise ValueError("slot ends before it starts")
            if fbtype is not None:
                periods.append(Period(start, end, fbtype))
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError,
            OSError) as e:
        return LookupResult.failed(Reason.NO_DATA, "unreadable time_slots: "
                                   "%s" % (e,))
    return LookupResult.busy(periods, window)


class Provider(BaseProvider):
    """One free-busy POST per call; the gateway splits by the limits."""

    max_addresses = 20
    max_window = datetime.timedelta(days=61)
    #: Nylas takes whole Unix seconds: windows are widened to them.
    slot = datetime.timedelta(seconds=1)
    per_asker = False
    AUTH_KINDS = ("bearer",)
    OPTIONS = {
        "grant_id": Option(_grant_id, "me", "The Nylas grant whose "
                           "calendar provider answers; 'me' for the grant "
                           "of an access token given as token."),
    }

    def __init__(self, name, options, extra, http):
        super().__init__(name, options, extra, http)
        self.endpoint = "%s/grants/%s/calendars/free-busy" % (
            options["url"].rstrip("/"),
            urllib.parse.quote(extra["grant_id"], safe="@"))

    def lookup(self, addresses, window, context):
        response = self.http.post_json(self.endpoint, context, {
            "start_time": int(window.start.timestamp()),
            "end_time": int(window.end.timestamp()),
            "emails": list(addresses),
            "tentative_as_busy": True})
        answer = response.json()
        if response.status != 200:
            raise self._failure(response, answer)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise ProviderError(Reason.NO_DATA, "POST %s: not a free-busy "
                                "answer: %.200r" % (response.url,
                                                    response.text))
        results = no_data(addresses, "not in Nylas's answer")
        for entry in data:
            email = entry.get("email") if isinstance(entry, dict) else None
            address = email.strip().lower() if isinstance(email, str) \
                else None
            if address in results:
                results[address] = entry_result(entry, window)
        return results

    def _failure(self, response, answer):
        error = answer.get("error") if isinstance(answer, dict) else None
        kind = message = ""
        if isinstance(error, dict):
            kind = str(error.get("type", ""))
            message = str(error.get("message", ""))
            if error.get("provider_error") is not None:
                message += " (provider: %.200s)" % json.dumps(
                    error["provider_error"])
        detail = "POST %s answered %d %s: %.300s" % (
            response.url, response.status, kind, message or response.text)
        if response.status == 401 or kind.lower() in REFUSED_TYPES:
            return ProviderError(Reason.NO_AUTHORITY, detail,
                                 "refused the credentials")
        if response.status == 403:
            return ProviderError(Reason.NO_AUTHORITY, detail)
        if response.status == 404:
            return ProviderError(Reason.UNAVAILABLE, detail + " (is the "
                                 "key 'grant_id' right?)",
                                 "answered HTTP 404")
        return ProviderError(Reason.UNAVAILABLE, detail,
                             "answered HTTP %d" % response.status)
