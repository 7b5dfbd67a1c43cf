"""Free/busy read URLs (CalConnect CC/S 0903, Kolab, SOGo, Zimbra, Cyrus).

``url`` is a template with ``{address}``, e.g.
``https://kolab.example.net/freebusy/{address}.ifb``.  The address is the
bare address percent-encoded as one path segment (or query value), so it
cannot change the path or the host.  ``window_params`` says how the window
is passed: ``calconnect`` (start/end, RFC 3339), ``kolab``
(dtstart/dtend, iCalendar UTC form), ``zimbra`` (s/e, milliseconds) or
``none`` (the server picks its own range, as SOGo does).  Zimbra refuses
windows over 200 days, so longer ones are split.

The answer's DTSTART/DTEND say what it covers (servers may ignore the
parameters); a window it does not cover is reported as no data, never as
free.
"""

import datetime
import urllib.parse

from gateway.config import Option
from gateway.model import LookupResult, Reason
from gateway.provider import Provider as BaseProvider, ProviderError
from gateway.timezones import format_utc
from gateway.vfreebusy import PeerDataError, parse_periods

STYLES = ("calconnect", "kolab", "zimbra", "none")
#: Longest window a dialect's servers accept in one request.
MAX_WINDOW = {"zimbra": datetime.timedelta(days=200)}


def _style(value: str) -> str:
    if value not in STYLES:
        raise ValueError("must be one of %s" % ", ".join(STYLES))
    return value


def window_params(style: str, window) -> dict:
    if style == "calconnect":
        return {"start": window.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "end": window.end.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if style == "kolab":
        return {"dtstart": format_utc(window.start),
                "dtend": format_utc(window.end)}
    if style == "zimbra":
        return {"s": str(int(window.start.timestamp() * 1000)),
                "e": str(int(window.end.timestamp() * 1000))}
    return {}


class Provider(BaseProvider):
    """One GET per address; the fan-out runs them in parallel."""

    max_addresses = 1
    #: Read URLs answer the same whoever asks (the gateway's credentials).
    per_asker = False
    OPTIONS = {
        "window_params": Option(_style, "calconnect", "How the window is "
                                "sent: calconnect, kolab, zimbra or none."),
    }

    def __init__(self, name, options, extra, http) -> None:
        url = options["url"]
        if "{address}" not in url:
            raise ValueError("url must contain {address}")
        if "{address}" in urllib.parse.urlsplit(url).netloc:
            raise ValueError("{address} may not be part of the host")
        super().__init__(name, options, extra, http)
        if not options.get("max_window_days"):  # the section's key wins
            self.max_window = MAX_WINDOW.get(extra["window_params"])

    def address_url(self, address: str) -> str:
        return self.options["url"].replace(
            "{address}", urllib.parse.quote(address, safe="@"))

    def lookup(self, addresses, window, context):
        address = addresses[0]
        response = self.http.request(
            "GET", self.address_url(address), context,
            headers={"Accept": "text/calendar"},
            params=window_params(self.extra["window_params"], window))
        if response.status == 404:
            return {address: LookupResult.failed(Reason.UNKNOWN_USER,
                                                 "no such user at the peer")}
        if response.status in (401, 403):
            return {address: LookupResult.failed(Reason.NO_AUTHORITY,
                                                 "peer refused access")}
        if response.status != 200:
            raise ProviderError(Reason.UNAVAILABLE, "GET %s answered HTTP %d"
                                % (response.url, response.status),
                                "answered HTTP %d" % response.status)
        try:
            periods, covered = parse_periods(response.body)
        except PeerDataError as e:
            return {address: LookupResult.failed(Reason.NO_DATA, str(e))}
        if covered is None or covered.start > window.start or \
                covered.end < window.end:
            return {address: LookupResult.failed(
                Reason.NO_DATA, "peer covered only %s" % (
                    "an unknown range" if covered is None else "%s..%s" % (
                        format_utc(covered.start), format_utc(covered.end))))}
        return {address: LookupResult.busy(periods, window)}
