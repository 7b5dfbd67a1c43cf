"""An emulated Microsoft Graph ``calendar/getSchedule`` over TLS.

As reference/foreign-apis.md section 2 describes Graph:

- ``POST /v1.0/users/{id}/calendar/getSchedule`` and
  ``POST /v1.0/me/calendar/getSchedule``; ``/me`` only with a delegated
  token (the static ``token`` here), an app-only token gets Graph's 400
  ``BadRequest``; an unknown ``{id}`` is 404 ``ErrorInvalidUser``;
- ``Authorization: Bearer``: a live token of the identity provider
  (tests/emulators/token_endpoint.py) or the static delegated token;
  anything else, an expired or revoked token, or one older than
  ``max_token_age``, is 401 ``InvalidAuthenticationToken``;
- the body in camelCase or PascalCase; ``dateTime``/``timeZone`` in
  UTC, Windows or IANA zones; ``availabilityViewInterval`` 5..1440 (an
  int or a numeric string; ``null`` is Graph's 500);
- limits: more than ``max_schedules`` schedules is 400
  ``ErrorMailboxDataArrayTooBig``, a window of ``max_days`` days or more
  400 ``ErrorTimeIntervalTooBig``, with Graph's messages;
- answers: per schedule ``scheduleItems`` (free items too, with
  subjects), the ``availabilityView`` (0 free, 1 tentative, 2 busy, 3
  oof; working elsewhere is ``elsewhere_digit``, "0" as Graph sends it),
  ``workingHours``, or an ``error`` with a numeric ``responseCode``
  ("5009" for addresses it cannot resolve) at HTTP 200.  Times are in
  the ``Prefer: outlook.timezone`` zone (UTC without it), or in
  ``answer_zone`` when a test sets one, with 7-digit fractions;
- a script of misbehaviour, one entry used up per request: ``("429",
  retry_after)``, ``("slow", seconds)``, ``"garbage"``, ``"html"``,
  ``("status", code)`` (an odata error), ``("json", object or text)``.

Every request is recorded; the server listens on 127.0.0.1 only and
stops with ``close()``.
"""

import datetime
import json
import math
import threading
import time
import urllib.parse
import uuid
import zoneinfo
from typing import Dict, List, Optional

from emulators import JsonPostHandler, JsonRecord
from emulators.tls import HttpsServer, Pki

UTC = datetime.timezone.utc
WINDOWS = {"UTC": "Etc/UTC", "Pacific Standard Time": "America/Los_Angeles",
           "W. Europe Standard Time": "Europe/Berlin",
           "Tokyo Standard Time": "Asia/Tokyo",
           "Eastern Standard Time": "America/New_York"}
WORKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday"]
#: view digit of each status, and its weight when events overlap
DIGIT = {"free": "0", "workingElsewhere": None, "tentative": "1",
         "busy": "2", "oof": "3", "unknown": "0"}


def utc(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC)


def tz(name: str) -> datetime.tzinfo:
    if name in ("UTC", "Etc/UTC"):
        return UTC
    return zoneinfo.ZoneInfo(WINDOWS.get(name, name))


def graph_time(moment: datetime.datetime, zone: str) -> Dict[str, str]:
    local = moment.astimezone(tz(zone))
    return {"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.") +
            "%06d0" % local.microsecond, "timeZone": zone}


class Event:
    def __init__(self, start: str, end: str, status: str = "busy",
                 subject: str = "private meeting") -> None:
        self.start = utc(start)
        self.end = utc(end)
        self.status = status
        self.subject = subject


class Mailbox:
    def __init__(self, events: List[Event], items: bool = True,
                 working_hours: Optional[Dict] = None,
                 error: Optional[Dict[str, str]] = None) -> None:
        self.events = events
        #: False: scheduleItems is null (only the view is given)
        self.items = items
        self.working_hours = working_hours or {
            "daysOfWeek": WORKDAYS, "startTime": "08:00:00.0000000",
            "endTime": "17:00:00.0000000", "timeZone": {"name": "UTC"}}
        #: a freeBusyError answered for this schedule
        self.error = error


class Recorded(JsonRecord):

    @property
    def schedules(self) -> List[str]:
        return _field(self.body, "schedules") or []

    def window(self):
        return (_parse_time(_field(self.body, "startTime")),
                _parse_time(_field(self.body, "endTime")))


def _field(body, name: str):
    """A body field by its camelCase or PascalCase name."""
    if not isinstance(body, dict):
        return None
    for key, value in body.items():
        if key.lower() == name.lower():
            return value
    return None


def _parse_time(value) -> datetime.datetime:
    text = _field(value, "dateTime")
    zone = _field(value, "timeZone")
    if not isinstance(text, str) or not isinstance(zone, str):
        raise ValueError("dateTime and timeZone required")
    text = text.rstrip("Z")
    whole, _, fraction = text.partition(".")
    moment = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S")
    moment = moment.replace(microsecond=int((fraction + "000000")[:6]))
    return moment.replace(tzinfo=tz(zone)).astimezone(UTC)


def odata_error(code: str, message: str) -> Dict:
    return {"error": {"code": code, "message": message, "innerError": {
        "date": datetime.datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": str(uuid.uuid4()),
        "client-request-id": str(uuid.uuid4())}}}


class GraphServer:
    """Graph's getSchedule for ``mailboxes`` (address -> Mailbox)."""

    def __init__(self, pki: Pki, mailboxes: Dict[str, Mailbox],
                 idp=None, token: str = "", me: str = "",
                 max_schedules: int = 20, max_days: int = 42) -> None:
        self.mailboxes = {k.lower(): v for k, v in mailboxes.items()}
        #: the identity provider whose live tokens are app-only tokens
        self.idp = idp
        #: a delegated token of the user ``me`` (for /me)
        self.token = token
        self.me = me
        self.max_schedules = max_schedules
        self.max_days = max_days
        #: tokens older than this (seconds since first seen) are expired
        self.max_token_age: Optional[float] = None
        #: answer in this zone whatever Prefer says (None: as asked)
        self.answer_zone: Optional[str] = None
        #: the view digit of working elsewhere (Graph sends 0)
        self.elsewhere_digit = "0"
        self.script: List = []
        self.requests: List[Recorded] = []
        self._first_seen: Dict[str, float] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        handler = type("Handler", (JsonPostHandler,), {"owner": self})
        self.server = HttpsServer(handler, pki.server_context())
        self.base = self.server.base
        self.url = self.base + "/v1.0"

    def close(self) -> None:
        self._closing.set()
        self.server.close()

    def calls(self, status: Optional[int] = None) -> List[Recorded]:
        return [r for r in self.requests
                if status is None or r.status == status]

    # -- serving --------------------------------------------------------

    def handle(self, handler: JsonPostHandler) -> None:
        raw = handler.body
        path = urllib.parse.urlsplit(handler.path).path
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        status, answer, content_type, headers = self._answer(
            handler, path, raw, body)
        with self._lock:
            self.requests.append(Recorded(path, dict(handler.headers), body,
                                          status))
        handler.send(status, answer, content_type,
                     {"request-id": str(uuid.uuid4()), **headers})

    def _answer(self, handler, path, raw, body):
        json_type = "application/json; odata.metadata=minimal; " \
            "odata.streaming=true; IEEE754Compatible=false; charset=utf-8"
        prefix = "/v1.0/"
        target = None
        if path == prefix + "me/calendar/getSchedule":
            target = "me"
        elif path.startswith(prefix + "users/") and \
                path.endswith("/calendar/getSchedule"):
            target = urllib.parse.unquote(
                path[len(prefix + "users/"):-len("/calendar/getSchedule")])
        if raw is None or target is None:
            return 404, odata_error(
                "UnknownError" if raw is None else "BadRequest",
                "Resource not found for the segment '%s'." % path.split(
                    "/")[-1]), json_type, {}
        # -- authentication --
        authorization = handler.headers.get("Authorization", "")
        token = authorization[7:] if authorization.startswith("Bearer ") \
            else ""
        delegated = bool(self.token) and token == self.token
        app = self.idp is not None and bool(token) and \
            self.idp.valid(token) is not None
        if token:
            with self._lock:
                first = self._first_seen.setdefault(token, time.time())
            if self.max_token_age is not None and \
                    time.time() - first > self.max_token_age:
                delegated = app = False
        if not token:
            return 401, odata_error(
                "InvalidAuthenticationToken",
                "Access token is empty."), json_type, {
                    "WWW-Authenticate": 'Bearer realm=""'}
        if not (delegated or app):
            return 401, odata_error(
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired."
                ), json_type, {"WWW-Authenticate": 'Bearer realm="", '
                               'error="invalid_token"'}
        # -- scripted misbehaviour --
        with self._lock:
            step = self.script.pop(0) if self.script else None
        kind, arg = (step if isinstance(step, tuple) else (step, None))
        if kind == "429":
            return 429, odata_error(
                "TooManyRequests", "Please retry again later."), \
                json_type, {"Retry-After": arg}
        if kind == "slow":
            self._closing.wait(arg)
        if kind == "garbage":
            return 200, b"\x00\xffnot json at all {", json_type, {}
        if kind == "html":
            return 200, "<html><body>Sign in to your account</body>" \
                "</html>", "text/html", {}
        if kind == "status":
            return arg, odata_error(
                "UnknownError" if arg >= 500 else "ErrorAccessDenied"
                if arg == 403 else "BadRequest",
                "Access is denied. Check credentials and try again."
                if arg == 403 else "An error occurred."), json_type, {}
        if kind == "json":
            return 200, arg, json_type, {}
        # -- the request --
        if target == "me" and not delegated:
            return 400, odata_error(
                "BadRequest", "/me request is only valid with delegated "
                "authentication flow."), json_type, {}
        owner = self.me if target == "me" else target.lower()
        if owner not in self.mailboxes:
            return 404, odata_error(
                "ErrorInvalidUser", "The requested user '%s' is invalid."
                % target), json_type, {}
        if not isinstance(body, dict):
            return 400, odata_error("BadRequest", "Empty Payload. JSON "
                                    "content expected."), json_type, {}
        schedules = _field(body, "schedules")
        interval = _field(body, "availabilityViewInterval")
        if interval is None and any(k.lower() == "availabilityviewinterval"
                                    for k in body):
            return 500, odata_error("ErrorInternalServerError", "An "
                                    "internal server error occurred."), \
                json_type, {}
        try:
            start, end = (_parse_time(_field(body, "startTime")),
                          _parse_time(_field(body, "endTime")))
            interval = 30 if interval is None else int(interval)
            if not 5 <= interval <= 1440:
                raise ValueError("interval")
            if not isinstance(schedules, list) or not schedules or \
                    not all(isinstance(s, str) for s in schedules):
                raise ValueError("schedules")
        except (ValueError, TypeError, zoneinfo.ZoneInfoNotFoundError):
            return 400, odata_error("ErrorInvalidRequest", "The request is "
                                    "invalid."), json_type, {}
        if len(schedules) > self.max_schedules:
            return 400, odata_error(
                "ErrorMailboxDataArrayTooBig", "There are too many target "
                "users in the EmailAddress array. The allowed size = %d; "
                "the actual size = %d." % (self.max_schedules,
                                           len(schedules))), json_type, {}
        if end <= start:
            return 400, odata_error(
                "ErrorInvalidTimeInterval", "The start date must be before "
                "the end date."), json_type, {}
        days = (end - start) / datetime.timedelta(days=1)
        if days >= self.max_days:
            return 400, odata_error(
                "ErrorTimeIntervalTooBig", "The requested time duration "
                "specified for FreeBusyViewOptions.TimeWindow is too long. "
                "The allowed limit = %d days; the actual limit = %d days."
                % (self.max_days, max(self.max_days, math.ceil(days)))), \
                json_type, {}
        zone = self.answer_zone or self._preferred(handler) or "UTC"
        return 200, {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata"
            "#Collection(microsoft.graph.scheduleInformation)",
            "value": [self._schedule(s, start, end, interval, zone)
                      for s in schedules]}, json_type, {
                          "Preference-Applied": 'outlook.timezone="%s"'
                          % zone}

    @staticmethod
    def _preferred(handler) -> Optional[str]:
        for part in handler.headers.get_all("Prefer") or []:
            for item in part.split(","):
                key, _, value = item.strip().partition("=")
                if key.strip().lower() == "outlook.timezone":
                    return value.strip().strip('"')
        return None

    def _schedule(self, schedule: str, start, end, interval: int,
                  zone: str) -> Dict:
        mailbox = self.mailboxes.get(schedule.lower())
        if mailbox is None:
            return {"scheduleId": schedule, "error": {
                "message": "Unable to resolve e-mail address %s to an "
                "Active Directory object." % schedule,
                "responseCode": "5009"}, "availabilityView": None,
                "scheduleItems": None, "workingHours": None}
        if mailbox.error is not None:
            return {"scheduleId": schedule, "error": mailbox.error,
                    "availabilityView": None, "scheduleItems": None,
                    "workingHours": None}
        events = [e for e in mailbox.events
                  if e.start < end and e.end > start]
        view = []
        step = datetime.timedelta(minutes=interval)
        slot = start
        while slot < end:
            digits = [self._digit(e.status) for e in events
                      if e.start < slot + step and e.end > slot]
            view.append(max(digits, key=lambda d: (
                {"3": 4, "2": 3, "1": 2}.get(d, 0)), default="0"))
            slot += step
        items = [{"isPrivate": False, "status": e.status,
                  "subject": e.subject, "location": "board room",
                  "isMeeting": False, "isRecurring": False,
                  "isException": False, "isReminderSet": False,
                  "start": graph_time(e.start, zone),
                  "end": graph_time(e.end, zone)} for e in events]
        return {"scheduleId": schedule, "availabilityView": "".join(view),
                "scheduleItems": items if mailbox.items else None,
                "workingHours": mailbox.working_hours}

    def _digit(self, status: str) -> str:
        digit = DIGIT.get(status, "0")
        return self.elsewhere_digit if digit is None else digit
