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

Push: with ``publish_url`` (a template with ``{address}``, on the same
host as ``url``) local users' free/busy is PUT there as one VFREEBUSY
(METHOD:PUBLISH, DTSTAMP the change's time) whenever it changes: the
Outlook and Kolab model of .ifb files in a WebDAV folder, and the push to
a peer gateway (``https://peer.example/.freebusy/{address}``).
"""

import datetime
import urllib.parse

from gateway.config import Option
from gateway.model import LookupResult, Reason
from gateway.provider import Provider as BaseProvider, ProviderError
from gateway.timezones import format_utc
from gateway.vfreebusy import PeerDataError, parse_periods, render

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


def _check_template(url: str) -> None:
    if "{address}" not in url:
        raise ValueError("%s must contain {address}" % url)
    if "{address}" in urllib.parse.urlsplit(url).netloc:
        raise ValueError("{address} may not be part of the host")


def _origin(url: str):
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc.lower()


class Provider(BaseProvider):
    """One GET per address; the fan-out runs them in parallel."""

    max_addresses = 1
    #: Read URLs answer the same whoever asks (the gateway's credentials).
    per_asker = False
    OPTIONS = {
        "window_params": Option(_style, "calconnect", "How the window is "
                                "sent: calconnect, kolab, zimbra or none."),
        "publish_url": Option(str, "", "Where local users' free/busy is "
                              "PUT when it changes: a template with "
                              "{address}, e.g. https://dav.example/fb/"
                              "{address}.ifb; empty: no push."),
    }

    def __init__(self, name, options, extra, http) -> None:
        _check_template(options["url"])
        if extra["publish_url"]:
            _check_template(extra["publish_url"])
            if _origin(extra["publish_url"]) != _origin(options["url"]):
                raise ValueError("publish_url must be on the host of url "
                                 "(the only one this provider contacts)")
        super().__init__(name, options, extra, http)
        if not options.get("max_window_days"):  # the section's key wins
            self.max_window = MAX_WINDOW.get(extra["window_params"])

    def address_url(self, address: str, template: str = "") -> str:
        return (template or self.options["url"]).replace(
            "{address}", urllib.parse.quote(address, safe="@"))

    @property
    def can_publish(self) -> bool:
        return bool(self.extra["publish_url"])

    def publish(self, address, periods, window, context, stamp):
        body = render(periods, window, method="PUBLISH",
                      uid="freebusy-%s" % address,
                      organizer="mailto:%s" % address, dtstamp=stamp)
        response = self.http.request(
            "PUT", self.address_url(address, self.extra["publish_url"]),
            context, headers={"Content-Type": "text/calendar; charset=utf-8"},
            data=body.encode("utf-8"))
        if not 200 <= response.status < 300:
            raise ProviderError(Reason.UNAVAILABLE, "PUT %s answered HTTP %d"
                                % (response.url, response.status),
                                "answered HTTP %d" % response.status)

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
