"""The admin's command line: ``query``, ``find``, ``check``, ``passwd``.

``query`` and ``find`` build the gateway from the ini file in this process
(Radicale's storage and the providers; no server needed) and ask as the
admin: the access policy does not apply, so every local user's opaque
calendars count whatever ``freebusy_access``, the rights file or an
opt-out say (whoever runs this can read the storage anyway).  ``check`` is
``check-config`` and then one cheap question to every provider, so a new
``[provider:...]`` section is tried before users meet it.  ``passwd``
writes bcrypt lines into an htpasswd file (gateway.htpasswd).

Exit codes (docs/cli.md): 0 everything answered; 1 an address, provider
or password did not work out (the output says which and why); 2 bad
arguments or a bad configuration, with one line saying what.
"""

import argparse
import bisect
import datetime
import getpass
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
import zoneinfo
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from gateway import config, htpasswd, stores
from gateway.addresses import bare_address
from gateway.model import (BUSY, BUSY_TENTATIVE, BUSY_UNAVAILABLE, UTC,
                           LookupResult, Period, Reason, Window)

#: Exit codes, as docs/cli.md lists them.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

QUERY_DAYS = 7
FIND_DAYS = 14
#: ``check`` waits this long past a provider's own timeout before it calls
#: the provider hung (a plugin stuck outside the HTTP client's deadline).
CHECK_GRACE = 2.0


# -- arguments -----------------------------------------------------------

def local_zone() -> datetime.tzinfo:
    """This machine's zone: ``TZ`` if it names one, else /etc/localtime,
    else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as f:
            return zoneinfo.ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return UTC


def zone_argument(text: str) -> datetime.tzinfo:
    if text.upper() == "UTC":
        return UTC
    try:
        return zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(
            "unknown time zone %r (an IANA name such as Europe/Berlin, or "
            "UTC)" % text) from None


_BASIC_UTC = re.compile(r"^\d{8}T\d{6}Z?$")


def parse_time(text: str, zone: datetime.tzinfo) -> datetime.datetime:
    """An RFC 3339 time (``2026-12-07T09:00:00Z``, an offset, or none),
    a date (``2026-12-07``, midnight) or iCalendar's ``20261207T090000Z``;
    without an offset in ``zone``.  ValueError says what is accepted."""
    value = text.strip()
    try:
        if _BASIC_UTC.match(value):
            moment = datetime.datetime.strptime(value.rstrip("Z"),
                                                "%Y%m%dT%H%M%S")
            if value.endswith("Z"):
                moment = moment.replace(tzinfo=UTC)
        else:
            # Python 3.9's fromisoformat knows no "Z".
            if value[-1:] in ("Z", "z"):
                value = value[:-1] + "+00:00"
            moment = datetime.datetime.fromisoformat(value.replace(" ", "T"))
    except (ValueError, IndexError):
        raise ValueError(
            "not a time: %r (use 2026-12-07T09:00:00Z, 2026-12-07T09:00 "
            "(in --tz), 2026-12-07 or 20261207T090000Z)" % text) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range: %r" % text) from None


def window_of(args, max_days: int, default_days: int) -> Window:
    """The window of ``--start``/``--end``: from now (the hour) for
    ``default_days`` unless given; ValueError when it is not a window."""
    if args.start:
        start = parse_time(args.start, args.tz)
    else:
        start = datetime.datetime.now(UTC).replace(minute=0, second=0,
                                                   microsecond=0)
    try:
        end = parse_time(args.end, args.tz) if args.end else \
            start + datetime.timedelta(days=default_days)
    except OverflowError:
        raise ValueError("time out of range: %r" % args.start) from None
    return Window.checked(start, end, max_days)


def address_argument(text: str) -> str:
    """``alice@example.com`` or ``mailto:alice@example.com`` -> the bare
    address; anything else is a usage error."""
    bare = text.strip()
    if bare[:7].lower() == "mailto:":
        bare = bare[7:]
    if bare_address("mailto:" + bare) is None:
        raise argparse.ArgumentTypeError(
            "not an address: %r (user@domain)" % text)
    return bare


def user_argument(text: str) -> str:
    try:
        htpasswd.check_user(text)
    except htpasswd.PasswdError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _window_arguments(command, days: int) -> None:
    command.add_argument("--config", required=True, help="the ini file")
    command.add_argument(
        "--start", help="start of the window (default: now, on the hour): "
        "2026-12-07T09:00:00Z, 2026-12-07T09:00 (in --tz), 2026-12-07 or "
        "20261207T090000Z")
    command.add_argument("--end", help="end of the window (default: start "
                         "plus %d days)" % days)
    command.add_argument(
        "--tz", type=zone_argument, default=None,
        help="zone of times without an offset and of the grid's days "
        "(default: this machine's)")
    command.add_argument("-v", "--verbose", action="store_true",
                         help="log what the providers answered (stderr)")
    command.add_argument("addresses", metavar="ADDRESS", nargs="+",
                         type=address_argument,
                         help="user@domain, local or foreign")


def add_commands(commands) -> None:
    """The subcommands of this module on ``fbgateway``'s parser."""
    query = commands.add_parser(
        "query", help="free/busy of local and foreign addresses",
        description="Free/busy of local and foreign addresses, asked in "
        "this process as the admin (no server needed).")
    _window_arguments(query, QUERY_DAYS)
    query.add_argument("--format", choices=("grid", "ics", "json"),
                       default="grid", help="a text grid (default), one "
                       "iCalendar file, or JSON")
    query.set_defaults(run=run_query, parser=query)

    find = commands.add_parser(
        "find", help="the best meeting slots for attendees",
        description="The best slots for a meeting of --duration, as "
        "findMeetingTimes ranks them, asked in this process as the admin.")
    _window_arguments(find, FIND_DAYS)
    find.add_argument("--duration", required=True,
                      help="the meeting's length: PT1H, PT30M, P1D")
    find.add_argument("--optional", metavar="ADDRESS", action="append",
                      default=[], type=address_argument,
                      help="an optional attendee (repeatable)")
    find.add_argument("--unrestricted", action="store_true",
                      help="any hour, not only working hours")
    find.add_argument("--max-candidates", type=int, default=10,
                      help="how many slots at most (default 10)")
    find.add_argument("--minimum", type=float, default=50.0,
                      help="least confidence of a slot, in percent "
                      "(default 50, as Graph's minimumAttendeePercentage)")
    find.add_argument("--format", choices=("text", "json"), default="text",
                      help="lines of text (default) or the "
                      "findMeetingTimes JSON answer")
    find.set_defaults(run=run_find, parser=find)

    check = commands.add_parser(
        "check", help="check-config, then ask every provider one question",
        description="What check-config does, then every provider asked "
        "one cheap question (its authentication and a one-hour lookup): "
        "one line per provider, 'NAME: ok' or 'NAME: failing: REASON'.")
    check.add_argument("--config", required=True, help="the ini file")
    check.add_argument("--no-bind", action="store_true",
                       help="do not check that [server] hosts are free "
                       "(for the file of a server that is running)")
    check.set_defaults(run=run_check, parser=check)

    passwd = commands.add_parser(
        "passwd", help="set a user's password in an htpasswd file (bcrypt)",
        description="Write USER's bcrypt hash into the htpasswd FILE "
        "(replacing their line, or adding one; a new file gets mode "
        "0600). The ini's [auth] htpasswd_encryption must be bcrypt or "
        "autodetect.")
    passwd.add_argument("file", metavar="FILE", help="the htpasswd file")
    passwd.add_argument("user", metavar="USER", type=user_argument,
                        help="the login name")
    passwd.add_argument("--stdin", action="store_true",
                        help="read the password from the first line of "
                        "standard input instead of asking twice")
    passwd.set_defaults(run=run_passwd, parser=passwd)


def _setup_logging(verbose: bool) -> None:
    """Only errors reach stderr unless ``--verbose``: the output is the
    answer, not Radicale's start-up chatter."""
    logging.basicConfig(
        stream=sys.stderr, format="fbgateway: %(levelname)s: %(message)s",
        level=logging.INFO if verbose else logging.ERROR)


# -- check-config --------------------------------------------------------

def check_config(path: str, bind_hosts: bool = True):
    """Load and check the ini file as ``serve`` would (ConfigError if
    anything would stop it); print the one-line summary; the config and
    its providers."""
    from gateway import server
    from gateway.app import load_providers
    gateway_config = config.load(path)
    providers = load_providers(gateway_config)
    for sock in server.check(gateway_config, bind_hosts=bind_hosts):
        sock.close()
    hosts = ", ".join("http://%s/" % server._show(host) for host in
                      gateway_config.radicale.get("server", "hosts"))
    print("config OK: %s: %d provider%s%s, listening on %s%s" % (
        path, len(providers), "" if len(providers) == 1 else "s",
        " (%s)" % ", ".join(p.name for p in providers) if providers else "",
        hosts, "" if bind_hosts else " (not tried: --no-bind)"))
    return gateway_config, providers


# -- query ---------------------------------------------------------------

class AdminLookup:
    """The gateway built from an ini file, asked as the admin."""

    def __init__(self, gateway_config: config.GatewayConfig) -> None:
        # Imported here: --version and passwd need none of the application.
        from gateway.app import GatewayApplication
        self.app = GatewayApplication(gateway_config, admin=True)

    def lookup(self, addresses: Sequence[str], window: Window
               ) -> Dict[str, LookupResult]:
        """A result per bare address (the fan-out wants ``mailto:``)."""
        results = self.app.fanout.lookup(
            ["mailto:" + a for a in addresses], window, requester="")
        return {a: results["mailto:" + a] for a in addresses}

    def close(self) -> None:
        self.app.fanout.close()


def request_status(result: LookupResult) -> Tuple[str, str]:
    """(code, description) of the outbox's REQUEST-STATUS for a result:
    ("2.0", "Success"), ("3.7", "Invalid calendar user"), ..."""
    from gateway.faces.scheduling import REQUEST_STATUS
    code, _, text = REQUEST_STATUS[result.failure].partition(";")
    return code, text


def status_of(result: LookupResult) -> Tuple[str, str]:
    """(request-status code, reason): the lookup's own words where it
    has them."""
    code, text = request_status(result)
    return code, result.detail or text


def _utc_text(moment: datetime.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_json(rows: Sequence[Tuple[str, LookupResult]]) -> str:
    """design.md's list: address, status, reason, periods in UTC; and the
    spans that had no data (also BUSY-UNAVAILABLE periods)."""
    out = []
    for address, result in rows:
        code, reason = status_of(result)
        out.append({
            "address": address, "status": code, "reason": reason,
            "periods": [{"start": _utc_text(p.start), "end": _utc_text(p.end),
                         "fbtype": p.fbtype} for p in result.periods],
            "nodata": [{"start": _utc_text(s), "end": _utc_text(e)}
                       for s, e in result.nodata]})
    return json.dumps(out, indent=2) + "\n"


def _ical_text(value: str) -> str:
    """RFC 5545 TEXT escaping, for the parts of REQUEST-STATUS."""
    return (value.replace("\\", "\\\\").replace(";", "\\;")
            .replace(",", "\\,").replace("\r", "").replace("\n", "\\n"))


def render_ics(rows: Sequence[Tuple[str, LookupResult]],
               window: Window) -> str:
    """One VCALENDAR (METHOD:PUBLISH) with one VFREEBUSY per address,
    ORGANIZER the address, as each read URL would publish it; a failed
    address is BUSY-UNAVAILABLE over the whole window, never free, with
    its REQUEST-STATUS saying why."""
    import icalendar
    from gateway import vfreebusy
    now = datetime.datetime.now(UTC)
    components = []
    for address, result in rows:
        periods = list(result.periods)
        extra = []
        if not result.ok:
            periods = [Period(window.start, window.end, BUSY_UNAVAILABLE)]
            code, text = request_status(result)
            extra = [("REQUEST-STATUS", icalendar.prop.vInline("%s;%s;%s" % (
                code, _ical_text(text), _ical_text(result.detail or text))))]
        text = vfreebusy.render(periods, window, uid=str(uuid.uuid4()),
                                organizer="mailto:" + address, dtstamp=now,
                                extra_properties=extra)
        # render() writes a whole VCALENDAR; keep its one VFREEBUSY.
        components.append(text[text.index("BEGIN:VFREEBUSY"):
                               text.index("END:VCALENDAR")])
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:%s\r\n"
            "METHOD:PUBLISH\r\n%sEND:VCALENDAR\r\n" % (
                vfreebusy.PRODID, "".join(components)))


class _Spans:
    """Sorted, disjoint spans of one kind: does a cell touch any?"""

    def __init__(self, spans) -> None:
        spans = sorted(spans)
        self.starts = [s for s, _ in spans]
        self.ends = [e for _, e in spans]

    def touch(self, start, end) -> bool:
        i = bisect.bisect_right(self.ends, start)
        return i < len(self.starts) and self.starts[i] < end


#: Grid characters, first wins: a cell shows the first state found
#: inside it.  No data comes before unavailable because no-data spans are
#: also BUSY-UNAVAILABLE periods (LookupResult.nodata), so after it only
#: real unavailability (out of office) is left to show as "=".
GRID_SYMBOLS = ((BUSY, "#", "busy"), ("nodata", "?", "no data"),
                (BUSY_UNAVAILABLE, "=", "unavailable"),
                (BUSY_TENTATIVE, "~", "tentative"))
FREE_SYMBOL = "."
#: ANSI colours of the grid characters on a terminal.
COLOURS = {"#": "31", "=": "35", "?": "90", "~": "33", ".": "32"}
CELL = datetime.timedelta(minutes=30)
CELLS_PER_DAY = 48


def use_colour(stream) -> bool:
    """Colours on a terminal, unless NO_COLOR is set (no-color.org)."""
    return bool(stream.isatty()) and not os.environ.get("NO_COLOR")


def _paint(text: str, colour: bool) -> str:
    if not colour:
        return text
    return "".join("\x1b[%sm%s\x1b[0m" % (COLOURS[c], c) if c in COLOURS
                   else c for c in text)


def _row(result: LookupResult, cells) -> str:
    kinds = {BUSY: [], BUSY_TENTATIVE: [], BUSY_UNAVAILABLE: []}
    for p in result.periods:
        kinds.setdefault(p.fbtype, []).append((p.start, p.end))
    spans = {kind: _Spans(found) for kind, found in kinds.items()}
    spans["nodata"] = _Spans(result.nodata)
    row = []
    for start, end in cells:
        if start is None:
            row.append(" ")
            continue
        row.append(next((symbol for kind, symbol, _ in GRID_SYMBOLS
                         if spans[kind].touch(start, end)), FREE_SYMBOL))
    return "".join(row)


def render_grid(rows: Sequence[Tuple[str, LookupResult]], window: Window,
                zone: datetime.tzinfo, colour: bool = False) -> str:
    """Each address's status, then per day in ``zone`` one line per
    address of half-hour cells; time outside the window is blank."""
    width = max([len(a) for a, _ in rows] + [len("Mon 2026-12-07")]) + 2
    first = window.start.astimezone(zone)
    last = (window.end - datetime.timedelta(microseconds=1)).astimezone(zone)
    lines = ["Free/busy from %s to %s, one character = 30 minutes" % (
        first.strftime("%Y-%m-%d %H:%M %Z"),
        window.end.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")), ""]
    for address, result in rows:
        code, reason = status_of(result)
        if result.ok:
            reason = "ok" + (", no data for part of the window"
                             if result.nodata else "")
        lines.append("%-*s%s %s" % (width, address, code, reason))
    ruler = "".join("%-6s" % ("%02d" % hour)
                    for hour in range(0, 24, 3)).rstrip()
    day = first.date()
    while day <= last.date():
        midnight = datetime.datetime.combine(day, datetime.time(),
                                             tzinfo=zone)
        cells = []
        for k in range(CELLS_PER_DAY):
            # Wall-clock arithmetic in the zone, then UTC.
            start = (midnight + k * CELL).astimezone(UTC)
            end = (midnight + (k + 1) * CELL).astimezone(UTC)
            inside = end > window.start and start < window.end
            cells.append((start, end) if inside else (None, None))
        lines.append("")
        lines.append("%-*s%s" % (width, day.strftime("%a %Y-%m-%d"), ruler))
        for address, result in rows:
            if result.ok:
                text = _paint(_row(result, cells), colour)
            else:
                text = "(no answer: %s)" % status_of(result)[0]
            lines.append("%-*s%s" % (width, address, text))
        day += datetime.timedelta(days=1)
    lines.append("")
    lines.append(_paint("  ".join(
        "%s %s" % (symbol, name) for _, symbol, name in GRID_SYMBOLS) +
        "  %s free" % FREE_SYMBOL, colour))
    return "\n".join(lines) + "\n"


def _lookup_arguments(args, parser, default_days: int,
                      max_days: Optional[int] = None):
    """(config, window) of a query or find, or a usage error (exit 2)."""
    _setup_logging(args.verbose)
    args.zone_given = args.tz is not None
    if args.tz is None:
        args.tz = local_zone()
    gateway_config = config.load(args.config)
    longest = gateway_config.gateway["max_window_days"]
    try:
        window = window_of(args, min(longest, max_days or longest),
                           default_days)
    except ValueError as e:
        parser.error(str(e))
    return gateway_config, window


def run_query(args, parser) -> int:
    gateway_config, window = _lookup_arguments(args, parser, QUERY_DAYS)
    addresses = list(dict.fromkeys(args.addresses))
    lookup = AdminLookup(gateway_config)
    try:
        results = lookup.lookup(addresses, window)
    finally:
        lookup.close()
    rows = [(a, results[a]) for a in addresses]
    if args.format == "json":
        sys.stdout.write(render_json(rows))
    elif args.format == "ics":
        sys.stdout.write(render_ics(rows, window))
    else:
        sys.stdout.write(render_grid(rows, window, args.tz,
                                     use_colour(sys.stdout)))
    return EXIT_OK if all(r.ok for _, r in rows) else EXIT_FAILED


# -- find ----------------------------------------------------------------

def _length(duration: datetime.timedelta) -> str:
    """``1 h 30 min``."""
    minutes = int(duration.total_seconds() // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [("%d d" % days) if days else "", ("%d h" % hours) if hours
             else "", ("%d min" % minutes) if minutes else ""]
    return " ".join(p for p in parts if p) or "%s" % duration


def render_slots(found, attendees, results, window: Window,
                 duration: datetime.timedelta, zone: datetime.tzinfo,
                 working: bool, reason: str) -> str:
    """The slots as lines of text, best first, each attendee's state in
    it; then the attendees who could not be looked up."""
    def local(moment, form="%H:%M"):
        return moment.astimezone(zone).strftime(form)
    lines = ["Best slots for %s between %s and %s (%s):" % (
        _length(duration), local(window.start, "%Y-%m-%d %H:%M %Z"),
        local(window.end, "%Y-%m-%d %H:%M %Z"),
        "working hours" if working else "any hour")]
    for order, suggestion in enumerate(found, 1):
        lines.append("%3d. %s-%s %s %4.0f%%  %s" % (
            order, local(suggestion.start, "%a %Y-%m-%d %H:%M"),
            local(suggestion.end), local(suggestion.start, "%Z"),
            suggestion.confidence, ", ".join(
                "%s %s" % (address, suggestion.states[key])
                for key, address, _ in attendees)))
    if not found:
        lines.append("  none (%s)" % reason)
    failed = [(address, results[address]) for _, address, _ in attendees
              if not results[address].ok]
    if failed:
        lines.append("Could not be looked up (unknown in every slot):")
        lines.extend("  %s: %s %s" % ((address,) + status_of(result))
                     for address, result in failed)
    return "\n".join(lines) + "\n"


def run_find(args, parser) -> int:
    from gateway.engine import finder
    from gateway.faces import finder as finder_face
    from gateway.faces import graphjson
    gateway_config, window = _lookup_arguments(
        args, parser, FIND_DAYS, finder_face.MAX_DAYS)
    try:
        duration = graphjson.parse_duration(args.duration, "--duration")
    except graphjson.GraphError as e:
        parser.error(e.message)
    if duration > window.end - window.start:
        parser.error("--duration %s is longer than the window" %
                     args.duration)
    if args.max_candidates < 1:
        parser.error("--max-candidates must be at least 1")
    if not 0 <= args.minimum <= 100:
        parser.error("--minimum must be between 0 and 100")
    # One attendee per person (the finder's key: the address without
    # case), required when named as required anywhere; required first.
    people: Dict[str, Tuple[str, bool]] = {}
    for address, required in [(a, True) for a in args.addresses] + \
            [(a, False) for a in args.optional]:
        people.setdefault(bare_address("mailto:" + address).lower(),
                          (address, required))
    attendees = [(key, address, required)
                 for key, (address, required) in people.items()]
    addresses = [address for _, address, _ in attendees]
    lookup = AdminLookup(gateway_config)
    try:
        results = lookup.lookup(addresses, window)
        found = finder.find_slots(
            [finder.FinderAttendee(
                key, required, results[address],
                None if args.unrestricted else
                finder_face.working_spans(lookup.app, address, window,
                                          results[address]))
             for key, address, required in attendees],
            duration, window, max_candidates=args.max_candidates,
            minimum_percentage=args.minimum)
        question = finder_face.Question(
            attendees=[finder_face.Attendee(address, "required" if required
                                            else "optional")
                       for _, address, required in attendees],
            timeslots=[window], duration=duration, minimum=args.minimum,
            max_candidates=args.max_candidates,
            working=not args.unrestricted, organizer_optional=True,
            reasons=False, location_required=False)
        reason = "" if found else finder_face.empty_reason(
            [finder_face.Party(key, address, "required" if required
                               else "optional", results[address])
             for key, address, required in attendees],
            None, question, lookup.app, None)
    except ValueError as e:     # a step too fine for the window
        parser.error(str(e))
    finally:
        lookup.close()
    if args.format == "json":
        zone_name, zone = ("UTC", UTC)
        if args.zone_given and args.tz is not UTC:
            zone_name, zone = args.tz.key, args.tz
        answer = finder_face.answer_of(found, question, None, zone_name,
                                       zone, "", reason)
        # Its OData context names a server URL; there is none here.
        answer.pop("@odata.context", None)
        sys.stdout.write(json.dumps(answer, indent=2) + "\n")
    else:
        sys.stdout.write(render_slots(found, attendees, results, window,
                                      duration, args.tz,
                                      not args.unrestricted, reason))
    return EXIT_OK if found else EXIT_FAILED


# -- check ---------------------------------------------------------------

#: The address each provider is asked about: any answer, "no such user"
#: included, proves that the credentials and the URL work.
PROBE_LOCAL_PART = "postmaster"


class ProbeResult(NamedTuple):
    name: str
    #: None when the provider works
    problem: Optional[str]


def probe(provider, window: Window) -> Optional[str]:
    """Ask ``provider`` its one cheap question; None when it answers, else
    what went wrong, with the details only the admin may read."""
    from gateway.transport.lookup import LookupContext, ProviderError
    context = LookupContext(time.monotonic() + provider.options["timeout"])
    address = "%s@%s" % (PROBE_LOCAL_PART, provider.options["domains"][0])
    part = window.aligned(provider.slot) if provider.slot else window
    try:
        authenticator = getattr(getattr(provider, "http", None),
                                "authenticator", None)
        if authenticator is not None:
            # Fetches a token where the credential is one (oauth2,
            # google, forms login): refused credentials show here first.
            authenticator.headers(context)
        answer = provider.lookup([address], part, context)
    except ProviderError as e:
        return "%s (%s)" % (e.public, e.detail)
    except Exception as e:
        return "failed with an internal error: %s: %s" % (
            type(e).__name__, e)
    result = answer.get(address) if isinstance(answer, Mapping) else None
    if not isinstance(result, LookupResult):
        return "gave no answer for %s" % address
    if result.ok or result.failure is Reason.UNKNOWN_USER:
        return None
    reason = getattr(result.failure, "value", str(result.failure))
    return "%s for %s%s" % (reason, address,
                            ": %s" % result.detail if result.detail else "")


def probe_all(providers, window: Window) -> List[ProbeResult]:
    """Every provider asked at once, each on its own thread, each bounded
    by its timeout (a hung plugin is reported, not waited for)."""
    answers: Dict[str, Optional[str]] = {}

    def ask(provider) -> None:
        answers[provider.name] = probe(provider, window)

    threads = []
    for provider in providers:
        thread = threading.Thread(target=ask, args=(provider,), daemon=True,
                                  name="check-%s" % provider.name)
        thread.start()
        threads.append((provider, thread,
                        time.monotonic() + provider.options["timeout"] +
                        CHECK_GRACE))
    out = []
    for provider, thread, deadline in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            problem = "did not answer within %.3g s" % (
                provider.options["timeout"])
        else:
            problem = answers.get(provider.name)
        out.append(ProbeResult(provider.name, problem))
    return out


def probe_redis(options) -> List[ProbeResult]:
    """Each Redis the ini names, pinged: ("redis (cache, queue)", None)
    or (..., what failed).  Its address, never its password."""
    out = []
    for link, roles in stores.redis_links(options).values():
        try:
            link.client().ping()
            problem = None
        except Exception as e:  # RedisError, OSError
            problem = "%s at %s: %s" % (type(e).__name__, link.where,
                                        str(e)[:200])
        out.append(ProbeResult("redis (%s)" % ", ".join(roles), problem))
    return out


def run_check(args, parser) -> int:
    _setup_logging(False)
    gateway_config, providers = check_config(args.config,
                                             bind_hosts=not args.no_bind)
    start = datetime.datetime.now(UTC).replace(minute=0, second=0,
                                               microsecond=0)
    window = Window(start, start + datetime.timedelta(hours=1))
    failing = 0
    for name, problem in probe_redis(gateway_config.gateway) + \
            probe_all(providers, window):
        if problem is None:
            print("%s: ok" % name)
        else:
            failing += 1
            print("%s: failing: %s" % (name, " ".join(problem.split())))
    return EXIT_FAILED if failing else EXIT_OK


# -- passwd --------------------------------------------------------------

def _read_password(args) -> str:
    if args.stdin:
        line = sys.stdin.readline(htpasswd.MAX_PASSWORD_BYTES * 4 + 2)
        return line[:-1] if line.endswith("\n") else line
    first = getpass.getpass("New password for %s: " % args.user)
    second = getpass.getpass("Again: ")
    if first != second:
        raise htpasswd.PasswdError("the two passwords differ")
    return first


def run_passwd(args, parser) -> int:
    try:
        password = _read_password(args)
        replaced = htpasswd.set_password(args.file, args.user, password)
    except htpasswd.PasswdError as e:
        print("fbgateway passwd: %s" % e, file=sys.stderr)
        return EXIT_FAILED
    except EOFError:
        print("fbgateway passwd: no password given", file=sys.stderr)
        return EXIT_FAILED
    print("%s %s in %s (bcrypt; the ini's [auth] htpasswd_encryption must "
          "be bcrypt or autodetect)" % (
              args.user, "has a new password" if replaced else "added",
              args.file), file=sys.stderr)
    return EXIT_OK

