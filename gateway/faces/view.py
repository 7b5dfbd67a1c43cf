"""``GET /.freebusy/view``: the team's free/busy grid, as a web page.

Server-rendered HTML and CSS with one line of script (the time zone
choice submits itself), nothing from elsewhere, so it works offline and
on a phone.  One row per attendee (``data-attendee``), time across; each
period is an element with ``data-start``/``data-end`` (UTC, RFC 3339) and
``data-fbtype``, no data (``LookupResult.nodata`` spans, which are also
in the periods as BUSY-UNAVAILABLE and are taken out of them here, or a
whole-window "no data" failure) is ``data-state="nodata"``, any other
failure ``data-state="error"`` with its reason as text.  Left edge and
width are percentages of the visible range, so position is proportional
to time.  Working hours (gateway.faces.finder.working_spans) are shaded
per row, and the finder's best slots of ``duration`` minutes are marked
in their own row (``data-slot-start``/``data-slot-end``), from now on.

Parameters: ``attendee`` (repeated), ``start`` (a date in the viewer's
zone, default today), ``days`` (1..14, default 5), ``tz`` (an IANA zone;
remembered in a cookie; default the zone of ``[gateway]
default_working_hours``), ``duration`` (minutes, default 60).  A bad one
is 400 with a page that says which.  The same authentication and access
policy as every face (gateway.faces.access); never an event's details,
because the engines hand the faces periods only.
"""

import datetime
import functools
import html
import http.cookies
import secrets
import urllib.parse
import zoneinfo
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from gateway.addresses import bare_address
from gateway.engine import finder
from gateway.faces import access
from gateway.faces.finder import attendee_hours, clipped
from gateway.model import (BUSY, BUSY_TENTATIVE, BUSY_UNAVAILABLE, UTC,
                           LookupResult, Reason, Window)

PATH = "/.freebusy/view"
COOKIE = "fbview_tz"
DEFAULT_DAYS = 5
MAX_DAYS = 14
DAY_CHOICES = (1, 3, 5, 7, 14)
DEFAULT_DURATION = 60
DURATION_CHOICES = (15, 30, 45, 60, 90, 120, 180, 240)
#: Suggested slots shown, and the least confidence they need (Graph's
#: findMeetingTimes default).
SLOTS = 5
SLOT_MINIMUM = 50.0
#: Longest query string read; 100 attendees fit in a few kB.
MAX_QUERY = 16384
MAX_ADDRESS = 254
_DRAWN = (BUSY_TENTATIVE, BUSY_UNAVAILABLE, BUSY)    # later ones on top
_CLASS = {BUSY: "busy", BUSY_TENTATIVE: "tentative",
          BUSY_UNAVAILABLE: "unavailable"}
_LABEL = {BUSY: "busy", BUSY_TENTATIVE: "tentative",
          BUSY_UNAVAILABLE: "out of office"}


class BadParameter(ValueError):
    """400: the text names the parameter and says what is wrong."""


class Settings(NamedTuple):
    """What the page shows: its parameters, checked."""

    attendees: Tuple[str, ...]
    start: datetime.date
    days: int
    tz: str
    duration: int
    #: the tz came from the query (so it is remembered)
    tz_chosen: bool

    @property
    def zone(self) -> datetime.tzinfo:
        return UTC if self.tz == "UTC" else zoneinfo.ZoneInfo(self.tz)

    def window(self) -> Window:
        def midnight(day: datetime.date) -> datetime.datetime:
            return datetime.datetime.combine(
                day, datetime.time(), self.zone).astimezone(UTC)
        return Window(midnight(self.start), midnight(
            self.start + datetime.timedelta(days=self.days)))

    def query(self, **changes) -> str:
        """This page's query string with ``changes``."""
        values = self._replace(**changes)
        pairs = [("attendee", a) for a in values.attendees]
        pairs += [("start", values.start.isoformat()),
                  ("days", str(values.days)), ("tz", values.tz),
                  ("duration", str(values.duration))]
        return urllib.parse.urlencode(pairs)


def register(registry) -> None:
    registry.route(("GET", "HEAD"), PATH, handle)


@functools.lru_cache(maxsize=1)
def zone_names() -> Tuple[str, ...]:
    """The IANA zones offered on the page (regions only, and UTC)."""
    return ("UTC",) + tuple(sorted(
        z for z in zoneinfo.available_timezones()
        if "/" in z and not z.startswith(("Etc/", "SystemV/", "posix/",
                                          "right/"))))


def _zone_name(text: str) -> str:
    text = text.strip()
    if text.upper() in ("UTC", "Z", "ETC/UTC"):
        return "UTC"
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise BadParameter("tz: %r is not a time zone (write it as "
                           "Europe/Berlin)" % text[:64]) from None
    return text


def _one(params: Dict[str, List[str]], name: str) -> Optional[str]:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadParameter("%s: give it once" % name)
    return values[0]


def parse(environ, default_zone: str, max_attendees: int) -> Settings:
    """The page's settings from the query and the time zone cookie."""
    query = environ.get("QUERY_STRING", "")
    if len(query) > MAX_QUERY:
        raise BadParameter("the query is longer than %d bytes" % MAX_QUERY)
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    attendees: List[str] = []
    for value in params.get("attendee", []):
        value = value.strip()
        if value[:7].lower() == "mailto:":
            value = value[7:]
        if len(value) > MAX_ADDRESS:
            raise BadParameter("attendee: longer than %d characters"
                               % MAX_ADDRESS)
        if value and value not in attendees:
            attendees.append(value)
    if len(attendees) > max_attendees:
        raise BadParameter("attendee: at most %d ([gateway] max_attendees)"
                           % max_attendees)
    tz = _one(params, "tz")
    chosen = bool(tz and tz.strip())
    if chosen:
        tz = _zone_name(tz)
    else:
        tz = _remembered_zone(environ.get("HTTP_COOKIE", "")) or default_zone
    start_text = _one(params, "start")
    if start_text:
        try:
            start = datetime.date.fromisoformat(start_text.strip())
        except ValueError:
            raise BadParameter("start: %r is not a date like 2026-12-07"
                               % start_text[:32]) from None
        if not 1900 <= start.year <= 2900:
            raise BadParameter("start: the year must lie between 1900 "
                               "and 2900")
    else:
        start = datetime.datetime.now(
            UTC if tz == "UTC" else zoneinfo.ZoneInfo(tz)).date()
    days = _whole(_one(params, "days"), "days", DEFAULT_DAYS, 1, MAX_DAYS)
    duration = _whole(_one(params, "duration"), "duration",
                      DEFAULT_DURATION, 5, 24 * 60)
    return Settings(tuple(attendees), start, days, tz, duration, chosen)


def _whole(text: Optional[str], name: str, default: int, low: int,
           high: int) -> int:
    if text is None or not text.strip():
        return default
    try:
        value = int(text.strip())
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise BadParameter("%s: a whole number from %d to %d" % (
            name, low, high))
    return value


def _remembered_zone(cookie_header: str) -> Optional[str]:
    try:
        cookie = http.cookies.SimpleCookie(cookie_header)
    except http.cookies.CookieError:
        return None
    morsel = cookie.get(COOKIE)
    if morsel is None:
        return None
    try:
        return _zone_name(urllib.parse.unquote(morsel.value))
    except BadParameter:
        return None


# -- what is drawn --------------------------------------------------------

class Row(NamedTuple):
    """One attendee's row: their address, result and working hours."""

    address: str
    result: LookupResult
    working: List[Tuple[datetime.datetime, datetime.datetime]]


def failure_text(result: LookupResult) -> str:
    """A failed result's reason and detail, for people."""
    reason = result.failure.value if isinstance(result.failure, Reason) \
        else str(result.failure)
    return "%s: %s" % (reason, result.detail) if result.detail else reason


def drawn_periods(result: LookupResult):
    """``(start, end, fbtype)`` to draw: BUSY-UNAVAILABLE without the
    no-data spans, which are drawn as no data."""
    nodata = sorted(result.nodata)
    for period in result.periods:
        if period.fbtype == BUSY_UNAVAILABLE and nodata:
            for start, end in finder.outside(
                    nodata, Window(period.start, period.end)):
                yield start, end, period.fbtype
        else:
            yield period.start, period.end, period.fbtype


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Page:
    """Turns times into positions and text for one page."""

    def __init__(self, settings: Settings, window: Window) -> None:
        self.settings = settings
        self.zone = settings.zone
        self.window = window
        self.total = (window.end - window.start).total_seconds()

    def place(self, start: datetime.datetime, end: datetime.datetime
              ) -> str:
        """``left`` and ``width`` of ``[start, end)`` as percentages."""
        start, end = max(start, self.window.start), min(end,
                                                         self.window.end)
        left = (start - self.window.start).total_seconds() / self.total
        width = (end - start).total_seconds() / self.total
        return "left:%.4f%%;width:%.4f%%" % (left * 100, width * 100)

    def local(self, moment: datetime.datetime, with_day: bool = True
              ) -> str:
        local = moment.astimezone(self.zone)
        return local.strftime("%a %d %b %H:%M" if with_day else "%H:%M")

    def span_text(self, start, end) -> str:
        same_day = start.astimezone(self.zone).date() == \
            end.astimezone(self.zone).date()
        return "%s–%s" % (self.local(start), self.local(end, not same_day))

    def item(self, start, end, css: str, attributes: str, text: str = "",
             title: str = "") -> str:
        start, end = max(start, self.window.start), min(end,
                                                        self.window.end)
        return ('<div class="%s" data-start="%s" data-end="%s" %s '
                'style="%s" title="%s">%s</div>' % (
                    css, _iso(start), _iso(end), attributes,
                    self.place(start, end), html.escape(
                        "%s %s" % (self.span_text(start, end), title)),
                    html.escape(text)))

    def days(self) -> List[Tuple[datetime.datetime, datetime.date]]:
        """Each local midnight of the range with its date."""
        out = []
        for offset in range(self.settings.days):
            day = self.settings.start + datetime.timedelta(days=offset)
            out.append((datetime.datetime.combine(
                day, datetime.time(), self.zone).astimezone(UTC), day))
        return out


def _row_html(page: Page, row: Row, remove_query: str, base: str) -> str:
    address = html.escape(row.address)
    parts = []
    for start, end in finder.outside(row.working, page.window):
        parts.append('<div class="offhours" style="%s"></div>'
                     % page.place(start, end))
    for midnight, _ in page.days()[1:]:
        parts.append('<div class="dayline" style="left:%.4f%%"></div>' % (
            100 * (midnight - page.window.start).total_seconds() /
            page.total))
    result = row.result
    if not result.ok:
        state = "nodata" if result.failure == Reason.NO_DATA else "error"
        text = failure_text(result)
        parts.append(page.item(page.window.start, page.window.end,
                               "state " + state, 'data-state="%s"' % state,
                               text, text))
    else:
        drawn = sorted(drawn_periods(result),
                       key=lambda p: _DRAWN.index(p[2]))
        for start, end, fbtype in drawn:
            parts.append(page.item(start, end, "period " + _CLASS[fbtype],
                                   'data-fbtype="%s"' % fbtype,
                                   title=_LABEL[fbtype]))
        for start, end in result.nodata:
            parts.append(page.item(start, end, "state nodata",
                                   'data-state="nodata"', "no data",
                                   "no data"))
    return ('<div class="row" data-attendee="%s"><div class="who">'
            '<span class="name" title="%s">%s</span><a class="remove" '
            'href="%s?%s" title="remove %s" aria-label="remove %s">✕</a>'
            '</div><div class="track">%s</div></div>' % (
                address, address, address, base, html.escape(remove_query),
                address, address, "".join(parts)))


def _axis_html(page: Page) -> str:
    parts = []
    hours = (0, 6, 12, 18) if page.settings.days <= 7 else (0,)
    for midnight, day in page.days():
        for hour in hours:
            local = datetime.datetime.combine(
                day, datetime.time(hour), page.zone).astimezone(UTC)
            left = 100 * (local - page.window.start).total_seconds() / \
                page.total
            label = day.strftime("%a %d %b") if hour == 0 else "%02d" % hour
            parts.append('<span class="tick%s" style="left:%.4f%%">%s</span>'
                         % (" day" if hour == 0 else "", left,
                            html.escape(label)))
    return ('<div class="row axis"><div class="who"></div>'
            '<div class="track">%s</div></div>' % "".join(parts))


def _slots_html(page: Page, slots: Sequence[finder.Suggestion]) -> str:
    marks = []
    for order, slot in enumerate(slots, 1):
        marks.append(
            '<div class="slot" data-slot-start="%s" data-slot-end="%s" '
            'data-confidence="%s" style="%s" title="%s">%d</div>' % (
                _iso(slot.start), _iso(slot.end), slot.confidence,
                page.place(slot.start, slot.end), html.escape(
                    "%s, %s %%" % (page.span_text(slot.start, slot.end),
                                   slot.confidence)), order))
    return ('<div class="row slots"><div class="who">Best slots</div>'
            '<div class="track">%s</div></div>' % "".join(marks))


def _options(values, chosen, label=str) -> str:
    return "".join('<option value="%s"%s>%s</option>' % (
        html.escape(str(v)), " selected" if v == chosen else "",
        html.escape(label(v))) for v in values)


def _hidden(settings: Settings, *names) -> str:
    values = {"start": settings.start.isoformat(), "days": settings.days,
              "tz": settings.tz, "duration": settings.duration}
    out = ['<input type="hidden" name="attendee" value="%s">'
           % html.escape(a) for a in settings.attendees]
    out += ['<input type="hidden" name="%s" value="%s">'
            % (n, html.escape(str(values[n]))) for n in names]
    return "".join(out)


def render(settings: Settings, page: Page, rows: Sequence[Row],
           slots: Sequence[finder.Suggestion], base: str, nonce: str,
           slots_from: datetime.datetime) -> str:
    s = settings
    day = datetime.timedelta(days=1)
    nav = [("prev-week", "« week", s.start - 7 * day),
           ("prev-day", "‹ day", s.start - day),
           ("today", "today", datetime.datetime.now(page.zone).date()),
           ("next-day", "day ›", s.start + day),
           ("next-week", "week »", s.start + 7 * day)]
    nav_html = "".join('<a data-nav="%s" href="%s?%s">%s</a>' % (
        name, base, html.escape(s.query(start=start)), html.escape(text))
        for name, text, start in nav)
    last = s.start + (s.days - 1) * day
    label = s.start.strftime("%a %d %b %Y") + (
        "" if s.days == 1 else " – " + last.strftime("%a %d %b %Y"))
    rows_html = "".join(_row_html(page, row, s.query(attendees=tuple(
        a for a in s.attendees if a != row.address)), base) for row in rows)
    if rows:
        listed = "".join("<li>%s <span class=\"confidence\">%s %%</span>"
                         "</li>" % (html.escape(page.span_text(
                             x.start, x.end)), x.confidence) for x in slots)
        suggestions = ("<ol>%s</ol>" % listed) if slots else (
            "<p>No %d-minute slot from %s on has at least %d %% of the "
            "attendees free within the required attendees' working "
            "hours.</p>" % (s.duration, html.escape(page.local(slots_from)),
                            SLOT_MINIMUM))
        grid = ('<section class="grid" data-range-start="%s" '
                'data-range-end="%s" data-tz="%s">%s%s%s</section>'
                '<section class="suggest"><h2>Best %d-minute slots</h2>%s'
                '</section>' % (
                    _iso(page.window.start), _iso(page.window.end),
                    html.escape(s.tz), _axis_html(page), rows_html,
                    _slots_html(page, slots), s.duration, suggestions))
    else:
        grid = ('<p class="empty">Add attendees by mail address to see '
                'their free/busy time.</p>')
    return PAGE % {
        "title": html.escape(label), "nonce": nonce, "style": STYLE,
        "nav": nav_html, "label": html.escape(label),
        "tz": html.escape(s.tz), "base": base,
        "hidden_settings": _hidden(s, "start"),
        "zones": _options(zone_names(), s.tz),
        "days": _options(DAY_CHOICES, s.days,
                         lambda d: "%d day%s" % (d, "" if d == 1 else "s")),
        "durations": _options(DURATION_CHOICES, s.duration,
                              lambda m: "%d min" % m),
        "hidden_add": _hidden(s, "start", "days", "tz", "duration"),
        "grid": grid}


def _bad(status: int, text: str, base: str) -> tuple:
    body = ERROR_PAGE % {"style": STYLE, "text": html.escape(text),
                         "base": base}
    return status, _headers(""), body.encode("utf-8"), None


def _headers(nonce: str) -> Dict[str, str]:
    script = "'nonce-%s'" % nonce if nonce else "'none'"
    return {"Content-Type": "text/html; charset=utf-8",
            "Cache-Control": "no-store",
            "Content-Security-Policy": (
                "default-src 'none'; style-src 'unsafe-inline'; "
                "script-src %s; form-action 'self'; base-uri 'none'; "
                "frame-ancestors 'none'" % script),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer"}


def handle(app, request) -> tuple:
    if request.path.rstrip("/") != PATH:
        return 404, {"Content-Type": "text/plain; charset=utf-8"}, \
            b"not found", None
    refused = access.refusal(app, request)
    if refused is not None:
        return refused
    base = html.escape(request.base_prefix + PATH)
    options = app.gateway_options
    default_zone = getattr(options["default_working_hours"].zone, "key",
                           "UTC")
    try:
        settings = parse(request.environ, default_zone,
                         options["max_attendees"])
    except BadParameter as e:
        return _bad(400, str(e), base)
    caller = access.Caller.of(request)
    window = settings.window()
    addresses = {a: "mailto:" + a for a in settings.attendees}
    valid = [m for m in addresses.values() if bare_address(m)]
    results = access.lookup(app, caller, valid, window,
                            face="view") if valid else {}
    rows = []
    for address, mailto in addresses.items():
        result = results.get(mailto) or LookupResult.failed(
            Reason.UNKNOWN_USER, "not a mail address")
        rows.append(Row(address, result, attendee_hours(
            app, caller, mailto, result, window)))
    now = datetime.datetime.now(UTC)
    step = min(finder.DEFAULT_STEP,
               datetime.timedelta(minutes=settings.duration))
    epoch = datetime.datetime(1970, 1, 1, tzinfo=UTC)
    slots_from = max(window.start, epoch - (epoch - now) // step * step)
    slots: List[finder.Suggestion] = []
    if rows and slots_from < window.end:
        part = Window(slots_from, window.end)
        slots = finder.find_slots(
            [finder.FinderAttendee(
                r.address, True,
                clipped(r.result, part),
                [(max(s, part.start), e) for s, e in r.working
                 if e > part.start])
             for r in rows],
            datetime.timedelta(minutes=settings.duration), part, step,
            max_candidates=SLOTS, minimum_percentage=SLOT_MINIMUM)
    nonce = secrets.token_urlsafe(16)
    body = render(settings, Page(settings, window), rows, slots, base,
                  nonce, slots_from)
    headers = _headers(nonce)
    if settings.tz_chosen:
        headers["Set-Cookie"] = (
            "%s=%s; Path=%s/.freebusy/; Max-Age=31536000; SameSite=Lax; "
            "HttpOnly" % (COOKIE, urllib.parse.quote(settings.tz, safe=""),
                          request.base_prefix))
    return 200, headers, body.encode("utf-8"), None


STYLE = """
:root { --busy: #2457a6; --tentative: #7fa9e0; --oof: #7b3fb5;
  --nodata: #8a8f98; --error: #c0392b; --slot: #1e8449; --off: #eceff3;
  font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
body { margin: 0 auto; padding: .75rem; max-width: 80rem; color: #1d232b; }
h1 { font-size: 1.3rem; margin: 0 0 .5rem; }
h2 { font-size: 1.05rem; margin: 1rem 0 .4rem; }
header nav { display: flex; flex-wrap: wrap; gap: .4rem; }
header nav a { padding: .25rem .6rem; border: 1px solid #b8c0cc;
  border-radius: .3rem; text-decoration: none; color: inherit; }
.range-label { margin: .4rem 0; font-weight: 600; }
form { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center;
  margin: .4rem 0; }
form input[type=text] { min-width: 14rem; flex: 1 1 14rem; max-width: 24rem; }
.grid { margin-top: .75rem; border-top: 1px solid #d5dae1; }
.row { display: grid; grid-template-columns: 13rem 1fr; align-items: center;
  border-bottom: 1px solid #d5dae1; }
.who { display: flex; gap: .3rem; min-width: 0; padding: .3rem .4rem .3rem 0;
  font-size: .9rem; }
.who .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.who .remove { flex: none; color: #8a1f11; text-decoration: none; }
.track { position: relative; height: 2.1rem; background: #fff;
  overflow: hidden; }
.axis .track { height: 2.3rem; background: none; }
.tick { position: absolute; top: 1.2rem; font-size: .7rem; color: #5b6573;
  padding-left: 2px; border-left: 1px solid #c3c9d2; white-space: nowrap; }
.tick.day { top: .15rem; bottom: 0; font-weight: 600; color: #1d232b;
  border-left-color: #5b6573; }
.offhours { position: absolute; top: 0; bottom: 0; background: var(--off); }
.dayline { position: absolute; top: 0; bottom: 0; width: 0;
  border-left: 1px solid #9aa3af; }
.period, .state, .slot { position: absolute; top: .25rem; bottom: .25rem;
  min-width: 2px; box-sizing: border-box; border-radius: 2px; }
.period.busy { background: var(--busy); }
.period.tentative { background: repeating-linear-gradient(45deg,
  var(--tentative) 0 4px, #fff 4px 7px); border: 1px solid var(--tentative); }
.period.unavailable { background: var(--oof); }
.state { font-size: .72rem; line-height: 1.6rem; padding: 0 .3rem;
  overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
.state.nodata { background: repeating-linear-gradient(135deg, #d9dce1 0 5px,
  #f4f5f7 5px 10px); color: #303844; border: 1px dashed var(--nodata); }
.state.error { background: repeating-linear-gradient(135deg, #f6d5d1 0 5px,
  #fdf0ee 5px 10px); color: #7b1d12; border: 1px solid var(--error); }
.slot { background: rgba(30, 132, 73, .22); border: 2px solid var(--slot);
  color: #0f4d29; font-size: .75rem; font-weight: 700; text-align: center;
  line-height: 1.5rem; overflow: hidden; }
.suggest ol { margin: 0; padding-left: 1.4rem; }
.confidence { color: #5b6573; }
.legend { display: flex; flex-wrap: wrap; gap: .8rem; font-size: .8rem;
  margin-top: 1rem; }
.legend span::before { content: ""; display: inline-block; width: 1rem;
  height: .8rem; margin-right: .3rem; vertical-align: -1px; }
.legend .l-busy::before { background: var(--busy); }
.legend .l-tentative::before { background: repeating-linear-gradient(45deg,
  var(--tentative) 0 3px, #fff 3px 5px); border: 1px solid var(--tentative); }
.legend .l-oof::before { background: var(--oof); }
.legend .l-nodata::before { background: #d9dce1;
  border: 1px dashed var(--nodata); }
.legend .l-error::before { background: #f6d5d1;
  border: 1px solid var(--error); }
.legend .l-off::before { background: var(--off); border: 1px solid #d5dae1; }
.legend .l-slot::before { background: rgba(30, 132, 73, .22);
  border: 2px solid var(--slot); }
.error-text { color: #7b1d12; font-weight: 600; }
@media (max-width: 640px) {
  body { padding: .5rem; }
  .row { grid-template-columns: 1fr; }
  .who { padding: .3rem 0 0; }
  .axis .who { display: none; }
  .tick:not(.day) { display: none; }
  form input[type=text] { min-width: 0; max-width: none; }
}
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Free/busy: %(title)s</title><style>%(style)s</style></head>
<body data-tz="%(tz)s">
<header><h1>Free/busy</h1><nav>%(nav)s</nav>
<p class="range-label">%(label)s <span class="zone">(%(tz)s)</span></p>
</header>
<form class="settings" method="get" action="%(base)s">%(hidden_settings)s
<label>Time zone <select name="tz" id="tz">%(zones)s</select></label>
<label>Show <select name="days">%(days)s</select></label>
<label>Meeting <select name="duration">%(durations)s</select></label>
<button type="submit">Show</button></form>
<form class="add" method="get" action="%(base)s">%(hidden_add)s
<label for="add-attendee">Add attendee</label>
<input type="text" id="add-attendee" name="attendee" inputmode="email"
 autocomplete="email" placeholder="name@example.com" maxlength="254"
 required>
<button type="submit">Add</button></form>
%(grid)s
<footer class="legend"><span class="l-busy">busy</span>
<span class="l-tentative">tentative</span>
<span class="l-oof">out of office</span><span class="l-nodata">no data</span>
<span class="l-error">error</span><span class="l-off">outside working
hours</span><span class="l-slot">suggested slot</span></footer>
<script nonce="%(nonce)s">document.getElementById("tz").addEventListener(
"change", function (e) { e.target.form.submit(); });</script>
</body></html>
"""

ERROR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Free/busy: bad request</title><style>%(style)s</style></head>
<body><h1>Free/busy</h1><p class="error-text">%(text)s</p>
<p><a href="%(base)s">Start again</a></p></body></html>
"""
