"""RFC 4791 7.10 free-busy-query REPORT, on calendars and calendar homes.

On a calendar the answer covers all its objects whatever the Depth, as
CalendarServer and CalDAVTester expect.  On any other collection (a user's
calendar home is Radicale's principal) Depth 0 gives an empty VFREEBUSY,
Depth 1 aggregates the child calendars that count for free/busy, and
Depth infinity also those in plain collections further down (CalDAVTester
depthreports): opaque ones (RFC 6638 9.1) the user may see, as
``[gateway] freebusy_access`` says: with ``authenticated`` (the default)
every authenticated user sees every local calendar's busy time, with
``rights`` Radicale's read or free/busy right decides.
"""

import datetime
import time
from http import client
from typing import Optional, Tuple

from radicale import httputils, storage as radicale_storage
from radicale.app.base import Access

from gateway import timezones, vfreebusy, xmlsafe
from gateway.engine import busy_index
from gateway.model import FBTYPES, Window


class BadRequest(ValueError):
    """400 with the reason as text."""


def parse_window(root, max_days: int) -> Window:
    """The one CALDAV:time-range of a free-busy-query body."""
    if root.tag != xmlsafe.clark("C:free-busy-query"):
        raise BadRequest("not a free-busy-query")
    ranges = root.findall(xmlsafe.clark("C:time-range"))
    if len(ranges) != 1:
        raise BadRequest("free-busy-query needs exactly one time-range, "
                         "found %d" % len(ranges))
    start, end = ranges[0].get("start"), ranges[0].get("end")
    if start is None or end is None:
        raise BadRequest("time-range needs both start and end; open-ended "
                         "free/busy windows are not served")
    try:
        return Window.checked(timezones.parse_utc(start),
                              timezones.parse_utc(end), max_days)
    except ValueError as e:
        raise BadRequest("invalid time-range: %s" % e) from None


def _error(status: int, text: str):
    return status, {"Content-Type": "text/plain; charset=utf-8"}, \
        text.encode("utf-8"), None


def _calendar(body: str):
    return client.OK, {"Content-Type": "text/calendar; charset=utf-8"}, \
        body.encode("utf-8"), None


def register(registry) -> None:
    """The free-busy-query REPORT, by its root element."""
    registry.report(xmlsafe.clark("C:free-busy-query"), _handle)


def _handle(app, request) -> Tuple:
    return free_busy_report(app, request.root, request.path, request.user,
                            request.user_groups,
                            request.environ.get("HTTP_DEPTH"))


def free_busy_report(app, root, path: str, user: str, user_groups: set,
                     depth: Optional[str]) -> Tuple:
    """Answer the REPORT; ``app`` is the gateway application."""
    try:
        window = parse_window(root, app.gateway_options["max_window_days"])
    except BadRequest as e:
        return _error(client.BAD_REQUEST, str(e))
    if depth not in (None, "0", "1", "infinity"):
        return _error(client.BAD_REQUEST, "Depth must be 0, 1 or infinity")
    # Every authenticated user may see every local user's busy time.
    everyone = bool(user) and app.gateway_options.get(
        "freebusy_access", "authenticated") == "authenticated"
    access = Access(app._rights, user, user_groups, path)
    engine = app.local
    # One deadline for the whole answer, as for every lookup.
    deadline = time.monotonic() + app.gateway_options["timeout"]
    owner = path.strip("/").split("/", 1)[0]
    if owner and owner != user and engine.opted_out(owner):
        # design.md: an opted-out user is "no authority" to everyone else.
        return httputils.NOT_ALLOWED
    with app._storage.acquire_lock("r", user):
        item = next(iter(app._storage.discover(path)), None)
        if item is None:
            return httputils.NOT_FOUND
        if not isinstance(item, radicale_storage.BaseCollection):
            parent = Access(app._rights, user, user_groups, access.parent_path)
            if not (access.check("r", item) or parent.allows_freebusy()):
                return httputils.NOT_ALLOWED
            return (client.FORBIDDEN,
                    {"Content-Type": "application/xml; charset=utf-8"},
                    supported_report_error(), None)
        if item.tag == "VCALENDAR":
            if not everyone and not access.allows_freebusy(item):
                return httputils.NOT_ALLOWED
            answers = [engine.calendar_busy(item, window,
                                            deadline=deadline)]
        elif item.tag:
            return (client.FORBIDDEN,
                    {"Content-Type": "application/xml; charset=utf-8"},
                    supported_report_error(), None)
        else:
            answers = []
            if depth not in (None, "0"):
                calendars = list(engine.home_calendars(
                    path, user, user_groups, depth=depth,
                    check_rights=not everyone))
                if not calendars and not everyone and \
                        not access.check("r", item):
                    return httputils.NOT_ALLOWED
                for calendar in calendars:
                    answers.append(engine.calendar_busy(
                        calendar, window, deadline=deadline))
            elif not everyone and not access.check("r", item):
                return httputils.NOT_ALLOWED
    # Each calendar's answer is already clipped and coalesced (the busy
    # index); a home merges them.
    return _calendar(vfreebusy.render_seconds(
        ((start, end, FBTYPES[code]) for start, end, code in
         busy_index.lines(busy_index.merge(answers))), window,
        dtstamp=datetime.datetime.now(timezones.UTC)))


def supported_report_error() -> bytes:
    error = xmlsafe.element("D:error")
    xmlsafe.element("D:supported-report", parent=error)
    return xmlsafe.tostring(error)
