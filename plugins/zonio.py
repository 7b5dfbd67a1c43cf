"""Zonio Freebusy API: the busy time of one address a call.

``GET {url}/{address}?start=&end=`` (``url`` ends in ``/freebusy``; the
window in Unix seconds; the bare address percent-encoded as one path
segment, so no address can change the path or the host) with
``Accept: application/json`` answers a list of intervals,
``[{"start": "2015-10-26T12:00:00Z", "end": ..., "type": "busy"}]``,
``type`` busy or tentative.  Unreported time is free; where busy and
tentative overlap, busy wins (Zonio's documentation), so tentative time
is kept only where no busy interval lies.  An interval of any other type
is a span we cannot read: BUSY-UNAVAILABLE, never free.

Errors: 404 is an address Zonio does not know (3.7); 429 is the shared
pool's rate limit, which the transport retries after ``Retry-After`` or
remembers; 503 is Zonio timing out on the user's calendar (5.3, timed
out); anything else fails the address.

No credentials: a TLS client certificate (the common keys
``client_cert``, ``client_key``) selects the customer's private pool,
which is not rate-limited; without one, calls go to the shared pool.
"""

import datetime
import json
import urllib.parse

from gateway.provider import (BUSY, BUSY_TENTATIVE, BUSY_UNAVAILABLE,
                              LookupResult, Period, ProviderError,
                              RateLimited, Reason, Window, gaps)
from gateway.provider import Provider as BaseProvider

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def _seconds(moment: datetime.datetime) -> str:
    """Unix seconds; windows are whole seconds (``slot``)."""
    return str((moment - _EPOCH) // datetime.timedelta(seconds=1))


def _instant(text) -> datetime.datetime:
    """``2015-10-26T12:00:00Z`` (an offset or a fraction allowed); a time
    without a zone is refused: we would not know when it is."""
    if isinstance(text, str):
        for form in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
            try:
                return datetime.datetime.strptime(text, form)
            except ValueError:
                pass
    raise ValueError("unreadable time %.40r" % (text,))


def busy_periods(answer) -> list:
    """Periods of Zonio's interval list; ValueError if it is none."""
    if not isinstance(answer, list):
        raise ValueError("not a list of intervals")
    spans = {"busy": [], "tentative": [], "other": []}
    for interval in answer:
        if not isinstance(interval, dict):
            raise ValueError("interval %.80r" % (interval,))
        start, end = _instant(interval.get("start")), \
            _instant(interval.get("end"))
        if end < start:
            raise ValueError("interval ends before it starts")
        kind = interval.get("type")
        spans[kind if kind in ("busy", "tentative") else "other"].append(
            (start, end))
    return [Period(s, e, BUSY) for s, e in spans["busy"]] + \
        [Period(s, e, BUSY_TENTATIVE) for start, end in spans["tentative"]
         for s, e in gaps(spans["busy"], Window(start, end))] + \
        [Period(s, e, BUSY_UNAVAILABLE) for s, e in spans["other"]]


class Provider(BaseProvider):
    """One GET per address; the fan-out runs them in parallel, at most
    ``max_parallel`` at once."""

    max_addresses = 1
    slot = datetime.timedelta(seconds=1)    # Zonio takes whole seconds
    per_asker = False
    #: No login: the client certificate (with any kind) picks the pool.
    AUTH_KINDS = ()

    def __init__(self, name, options, extra, http):
        super().__init__(name, options, extra, http)
        self.base = options["url"].rstrip("/")

    def address_url(self, address: str) -> str:
        return "%s/%s" % (self.base, urllib.parse.quote(address, safe="@"))

    def lookup(self, addresses, window, context):
        address = addresses[0]
        try:
            response = self.http.request(
                "GET", self.address_url(address), context,
                headers={"Accept": "application/json"},
                params={"start": _seconds(window.start),
                        "end": _seconds(window.end)})
        except RateLimited as e:
            if e.status == 503:
                raise ProviderError(Reason.TIMED_OUT, e.detail + " (Zonio "
                                    "timed out reading the calendar)") \
                    from None
            raise
        detail = "GET %s answered %d: %.200s" % (response.url,
                                                 response.status,
                                                 response.text)
        if response.status == 404:
            return {address: LookupResult.failed(Reason.UNKNOWN_USER,
                                                 detail)}
        if response.status in (401, 403):
            raise ProviderError(Reason.NO_AUTHORITY, detail)
        if response.status != 200:
            raise ProviderError(Reason.UNAVAILABLE, detail,
                                "answered HTTP %d" % response.status)
        try:
            periods = busy_periods(json.loads(response.body))
        except (ValueError, TypeError) as e:   # JSONDecodeError included
            return {address: LookupResult.failed(
                Reason.NO_DATA, "GET %s: unreadable answer (%s): %.200s" % (
                    response.url, e, response.text))}
        return {address: LookupResult.busy(periods, window)}
