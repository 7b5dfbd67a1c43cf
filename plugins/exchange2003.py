"""Exchange 2003: free/busy from OWA's XML interface.

``GET {url}?cmd=freebusy&start=&end=&interval=&u=SMTP:a&u=SMTP:b`` (``url``
is the public folder root, ``https://owa.corp.example/public/``) with an
Internet Explorer User-Agent (anything else gets OWA's HTML pages) answers
``<a:response xmlns:a="WM"><a:recipients><a:item>`` per recipient, each
with ``<a:email>`` and ``<a:fbdata>``: one digit per ``interval`` minutes
from ``start``, in UTC: 0 free, 1 tentative, 2 busy, 3 out of office, 4 no
data.  The first item, "All Attendees", has no email and is not used; a
recipient Exchange does not know is not in the answer at all (3.7).

Times go out as ``yyyy-MM-ddTHH:mm:ssZ``: Exchange reads a time without
the ``Z`` in the server's own zone and the digits would be shifted.

Outlook and CDO publish free/busy for about ``publish_months`` (default 3)
from the start of the current month; OWA answers 0 (free) for slots past
that, as CDO does.  Those slots, slots before the current month, digit 4
and slots the answer does not reach are no data: BUSY-UNAVAILABLE in the
answer, and a recipient with no data in the whole window fails as no data
(5.3), never as free.  The publisher's time zone is unknown, so its month
boundaries are taken as early (end) or as late (start) as any zone has
them.

Own keys: ``interval`` (minutes per digit, default 15), ``publish_months``.
Credentials: Basic, NTLM, or OWA's forms login (``auth = form``).
"""

import datetime
import math

from gateway.provider import (BUSY, BUSY_TENTATIVE, BUSY_UNAVAILABLE,
                              LookupResult, Option, Period, ProviderError,
                              Reason, gaps)
from gateway.provider import Provider as BaseProvider
from gateway.timezones import UTC
from gateway.xmlsafe import XMLError, parse

#: What Outlook Web Access 2003 wants to see; any other browser gets HTML.
IE_USER_AGENT = ("Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1; "
                 ".NET CLR 1.1.4322)")
WM = "{WM}"
#: fbdata digits; 0 is free, 4 and anything unknown is no data.
DIGITS = {"0": None, "1": BUSY_TENTATIVE, "2": BUSY, "3": BUSY_UNAVAILABLE}
NO_DATA_DIGIT = "4"
#: "The highest value wins" (CDO): for a recipient listed twice, per slot.
RANK = {"0": 0, "1": 1, "2": 2, "3": 3}
#: Month boundaries of the publisher's zone: as early as UTC+14 has them
#: for the horizon, as late as UTC-12 for the start of the range.
EARLIEST_ZONE = datetime.timedelta(hours=14)
LATEST_ZONE = datetime.timedelta(hours=12)
#: Answers must stay well inside the transport's 4 MiB body bound: about
#: one byte per digit per recipient, plus the "All Attendees" row.
BODY_BUDGET = 2 << 20
MAX_ADDRESSES = 50          # each is a u=SMTP:... in the URL (IIS: 16 KB)
MAX_WINDOW = datetime.timedelta(days=366)


def _ranged(low, high):
    def parse_value(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError("must be between %d and %d" % (low, high))
        return number
    return parse_value


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _month_start(moment: datetime.datetime, months: int
                 ) -> datetime.datetime:
    """00:00 UTC of the first day of the month ``months`` after
    ``moment``'s."""
    index = moment.year * 12 + moment.month - 1 + months
    return datetime.datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def published_range(now: datetime.datetime, months: int):
    """``(start, end)``: where published free/busy can be trusted."""
    return (_month_start(now, 0) + LATEST_ZONE,
            _month_start(now, months) - EARLIEST_ZONE)


def read_fbdata(fbdata: str, window, interval: datetime.timedelta,
                published) -> LookupResult:
    """One recipient's digits over ``window`` (which starts a slot)."""
    periods, nodata, known = [], [], False
    count = math.ceil((window.end - window.start) / interval)
    for i in range(count):
        start = window.start + i * interval
        end = min(start + interval, window.end)
        digit = fbdata[i] if i < len(fbdata) else NO_DATA_DIGIT
        if digit not in DIGITS:
            nodata.append((start, end))
            continue
        if start < published[1] and end > published[0]:
            known = True    # this slot says something inside the range
        if DIGITS[digit] is not None:
            periods.append(Period(start, end, DIGITS[digit]))
    if not known:
        return LookupResult.failed(Reason.NO_DATA, "no published free/busy "
                                   "in the window (%d digits: %.40s...)"
                                   % (len(fbdata), fbdata))
    nodata += gaps([published], window)
    return LookupResult.busy(periods, window, nodata)


def _merge(first: str, second: str) -> str:
    """A recipient listed twice: per slot the higher digit, and no data
    wherever either has no data."""
    out = []
    for i in range(max(len(first), len(second))):
        a = first[i] if i < len(first) else NO_DATA_DIGIT
        b = second[i] if i < len(second) else NO_DATA_DIGIT
        if a not in RANK or b not in RANK:
            out.append(NO_DATA_DIGIT)
        else:
            out.append(a if RANK[a] >= RANK[b] else b)
    return "".join(out)


def fbdata_by_address(body: bytes, max_bytes: int):
    """``{lower-case email: fbdata}`` of an OWA free/busy answer;
    ProviderError (no data) for anything else."""
    try:
        root = parse(body, max_bytes)
    except XMLError as e:
        raise ProviderError(Reason.NO_DATA, "not an OWA free/busy answer "
                            "(%s): %.200r" % (e, body[:200])) from None
    if root.tag != WM + "response" or root.find(WM + "recipients") is None:
        raise ProviderError(Reason.NO_DATA, "not an OWA free/busy answer: "
                            "root %.100s: %.200r" % (root.tag, body[:200]))
    found = {}
    for item in root.find(WM + "recipients").iter(WM + "item"):
        email = (item.findtext(WM + "email") or "").strip().lower()
        if not email:
            continue        # "All Attendees", the merged row
        if email.lower().startswith("smtp:"):
            email = email[5:]
        fbdata = "".join((item.findtext(WM + "fbdata") or "").split())
        found[email] = _merge(found[email], fbdata) if email in found \
            else fbdata
    return found


class Provider(BaseProvider):
    """One GET for up to ``max_addresses`` recipients."""

    max_addresses = MAX_ADDRESSES
    max_window = MAX_WINDOW
    per_asker = False           # asked as the configured account
    AUTH_KINDS = ("basic", "ntlm", "form")
    OPTIONS = {
        "interval": Option(_ranged(1, 1440), "15", "Minutes per fbdata "
                           "digit (OWA's interval parameter)."),
        "publish_months": Option(_ranged(1, 36), "3", "Months of free/busy "
                                 "Outlook and CDO publish from the start of "
                                 "the current month (Outlook's 'publish N "
                                 "months'); later slots are no data."),
    }

    def __init__(self, name, options, extra, http):
        super().__init__(name, options, extra, http)
        self.interval = datetime.timedelta(minutes=extra["interval"])
        self.slot = self.interval
        if not options.get("max_window_days"):
            # Keep the largest answer well under the body bound.
            slots = BODY_BUDGET // (self.max_addresses + 1)
            self.max_window = min(MAX_WINDOW, max(
                datetime.timedelta(days=1), slots * self.interval))

    def lookup(self, addresses, window, context):
        params = [("cmd", "freebusy"), ("start", _iso(window.start)),
                  ("end", _iso(window.end)),
                  ("interval", str(self.extra["interval"]))]
        params += [("u", "SMTP:" + address) for address in addresses]
        response = self.http.request(
            "GET", self.options["url"], context, params=params,
            headers={"User-Agent": IE_USER_AGENT,
                     "Accept": "text/xml, */*"})
        if response.status in (401, 403):
            raise ProviderError(Reason.NO_AUTHORITY, "GET %.300s answered "
                                "%d" % (response.url, response.status),
                                "refused the credentials")
        if response.status != 200:
            raise ProviderError(Reason.UNAVAILABLE, "GET %.300s answered %d:"
                                " %.200s" % (response.url, response.status,
                                             response.text),
                                "answered HTTP %d" % response.status)
        found = fbdata_by_address(response.body, len(response.body) + 1)
        published = published_range(datetime.datetime.now(UTC),
                                    self.extra["publish_months"])
        results = {}
        for address in addresses:
            if address not in found:
                results[address] = LookupResult.failed(
                    Reason.UNKNOWN_USER, "not in OWA's answer")
            else:
                results[address] = read_fbdata(found[address], window,
                                               self.interval, published)
        return results
