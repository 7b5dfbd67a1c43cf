"""An emulated Google Calendar API ``freeBusy`` over TLS.

As reference/foreign-apis.md section 3 describes it:

- ``POST /calendar/v3/freeBusy``; query parameters (``alt=json``,
  ``key``, ``prettyPrint``) are ignored, as Google's client sends them;
- ``Authorization: Bearer``: a live ``google`` token of the identity
  provider (tests/emulators/token_endpoint.py, which checks the service
  account's JWT grant: signature, ``sub``, scope), or the static token;
  anything else is Google's 401 ``authError``.  ``max_token_age`` makes
  tokens expire early (Google refusing a token the gateway still
  trusts), ``refuse_all`` refuses fresh ones too;
- the body: ``timeMin``/``timeMax`` (RFC 3339, an offset required),
  ``timeZone`` (answers are written in it), ``items`` of ``{"id"}``,
  ``groupExpansionMax``/``calendarExpansionMax`` (null accepted, at most
  100 and 50);
- limits: more than ``max_items`` (50) items is 400
  ``tooManyCalendarsRequested``, a range over ``max_days`` (90) is 400
  ``timeRangeTooLong``, an empty or reversed one 400 ``timeRangeEmpty``;
- the answer: ``calendars`` keyed by the ids as sent, busy spans merged
  and clipped to the range, ``errors: [{"domain": "global", "reason":
  "notFound"}]`` for an unknown id, and ``groups`` with their members'
  calendars;
- ``script``: throttling (403 ``rateLimitExceeded``/
  ``userRateLimitExceeded``, 429 with or without Retry-After), other
  errors, slow, scripted and broken answers, one per request.

Every request is recorded with its path, headers, body, the token's
delegated subject, the status and the answer.
"""

import datetime
import json
import re
import threading
import time
import urllib.parse
import zoneinfo
from typing import Dict, List, Optional, Sequence, Tuple

from emulators import JsonPostHandler
from emulators.tls import HttpsServer, Pki

UTC = datetime.timezone.utc
PREFIX = "/calendar/v3"
JSON_TYPE = "application/json; charset=UTF-8"
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?"
                      r"(Z|[+-]\d\d:\d\d)", re.I)
UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 "
    "access token, login cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-"
    "project.")


def utc(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC)


def google_error(status: int, reason: str, message: str,
                 domain: str = "global", **extra) -> Dict:
    """Google's JSON error envelope (Calendar API v3)."""
    item = {"domain": domain, "reason": reason, "message": message}
    item.update(extra)
    return {"error": {"errors": [item], "code": status, "message": message}}


def written(moment: datetime.datetime, zone: datetime.tzinfo) -> str:
    """A time as Google writes it in ``zone``: ``Z`` for UTC, else the
    offset (``+10:30``)."""
    local = moment.astimezone(zone)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    offset = local.utcoffset()
    if offset == datetime.timedelta(0):
        return text + "Z"
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return text + "%s%02d:%02d" % (sign, abs(minutes) // 60,
                                   abs(minutes) % 60)


class Calendar:
    """A user's calendar: busy spans (UTC ``YYYYMMDDTHHMMSSZ`` pairs) or
    an error reason Google gives for it."""

    def __init__(self, busy: Sequence[Tuple[str, str]] = (),
                 error: Optional[str] = None) -> None:
        self.busy = [(utc(s), utc(e)) for s, e in busy]
        self.error = error


class Recorded:
    def __init__(self, path: str, query: str, headers, body, status: int,
                 answer, subject: Optional[str]) -> None:
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.status = status
        #: what was answered (JSON as a dict, else bytes or text)
        self.answer = answer
        #: the user the token acts for (domain-wide delegation), or None
        self.subject = subject
        self.time = time.monotonic()

    @property
    def items(self) -> List[str]:
        return [i.get("id") for i in (self.body or {}).get("items", [])]

    def window(self) -> Tuple[datetime.datetime, datetime.datetime]:
        return (datetime.datetime.fromisoformat(self.body["timeMin"]),
                datetime.datetime.fromisoformat(self.body["timeMax"]))


class GoogleServer:
    """Google Calendar's freeBusy for ``calendars`` (id -> Calendar)."""

    def __init__(self, pki: Pki, calendars: Dict[str, Calendar], idp=None,
                 token: str = "", max_items: int = 50,
                 max_days: int = 90) -> None:
        self.calendars = {k.lower(): v for k, v in calendars.items()}
        #: group address -> member addresses
        self.groups: Dict[str, List[str]] = {}
        #: the identity provider whose live google tokens are accepted
        self.idp = idp
        #: a token got elsewhere, accepted as well (its subject: None)
        self.token = token
        self.max_items = max_items
        self.max_days = max_days
        #: tokens older than this (seconds since first seen) are refused
        self.max_token_age: Optional[float] = None
        #: refuse every token, fresh ones too
        self.refuse_all = False
        #: write answers in this zone whatever timeZone asked (None: as
        #: asked)
        self.answer_zone: Optional[str] = None
        self.script: List = []
        self.requests: List[Recorded] = []
        self._first_seen: Dict[str, float] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        handler = type("Handler", (JsonPostHandler,), {"owner": self})
        self.server = HttpsServer(handler, pki.server_context())
        self.base = self.server.base
        self.url = self.base + PREFIX

    def close(self) -> None:
        self._closing.set()
        self.server.close()

    def reset(self) -> None:
        """Forget requests, scripted answers and early expiry."""
        with self._lock:
            self.requests.clear()
            self.script.clear()
            self.max_token_age = None
            self.refuse_all = False
            self.answer_zone = None

    def statuses(self) -> List[int]:
        return [r.status for r in self.requests]

    # -- serving --------------------------------------------------------

    def handle(self, handler: JsonPostHandler) -> None:
        raw = handler.body
        split = urllib.parse.urlsplit(handler.path)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        subject, refusal = self._authenticate(handler)
        if refusal is not None:
            status, answer, headers = refusal
        else:
            status, answer, headers = self._answer(split.path, raw, body)
        with self._lock:
            self.requests.append(Recorded(split.path, split.query,
                                          dict(handler.headers), body,
                                          status, answer, subject))
        content_type = JSON_TYPE
        if isinstance(answer, tuple):       # (content type, bytes)
            content_type, answer = answer
        elif isinstance(answer, (dict, list)):
            answer = json.dumps(answer, indent=1)   # Google pretty-prints
        handler.send(status, answer, content_type,
                     {"Vary": "Origin, X-Origin, Referer", **headers})

    def _authenticate(self, handler):
        """(subject, None) for a live token, else (None, 401 answer)."""
        authorization = handler.headers.get("Authorization", "")
        token = authorization[7:] if authorization.startswith("Bearer ") \
            else ""
        challenge = {"WWW-Authenticate": 'Bearer realm="https://'
                     'accounts.google.com/", error="invalid_token"'}
        if not token:
            return None, (401, google_error(
                401, "required", "Request is missing required "
                "authentication credential. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential.",
                location="Authorization", locationType="header"),
                {"WWW-Authenticate": 'Bearer realm="https://accounts.'
                 'google.com/"'})
        subject, live = None, False
        if self.token and token == self.token:
            live = True
        elif self.idp is not None:
            issued = self.idp.valid(token)
            if issued is not None and issued.kind == "google":
                subject, live = issued.subject, True
        with self._lock:
            first = self._first_seen.setdefault(token, time.time())
        if self.refuse_all or self.max_token_age is not None and \
                time.time() - first > self.max_token_age:
            live = False
        if not live:
            return None, (401, google_error(
                401, "authError", "Invalid Credentials",
                location="Authorization", locationType="header"),
                challenge)
        return subject, None

    def _answer(self, path, raw, body):
        if path != PREFIX + "/freeBusy" or raw is None:
            return 404, ("text/html; charset=UTF-8", "<!DOCTYPE html><html "
                         "lang=en><title>Error 404 (Not Found)!!1</title>"
                         "<p><b>404.</b> <ins>That's an error.</ins>"), {}
        with self._lock:
            step = self.script.pop(0) if self.script else None
        kind, arg = step if isinstance(step, tuple) else (step, None)
        if kind == "403":
            return 403, google_error(403, arg, "Rate Limit Exceeded",
                                     domain="usageLimits"), {}
        if kind == "429":
            return 429, google_error(429, "rateLimitExceeded", "Rate Limit "
                                     "Exceeded", domain="usageLimits"), \
                {"Retry-After": arg} if arg else {}
        if kind == "slow":
            self._closing.wait(arg)
        if kind == "error":             # (status, reason, message)
            status, reason, message = arg
            return status, google_error(status, reason, message), {}
        if kind == "json":
            return 200, arg, {}
        if kind == "garbage":
            return 200, ("application/json", b"\x00\xff{not json"), {}
        if kind == "html":
            return 200, ("text/html", "<html><body>Sign in - Google "
                         "Accounts</body></html>"), {}
        return self._free_busy(body)

    def _free_busy(self, body):
        if not isinstance(body, dict):
            return 400, google_error(400, "parseError", "Parse Error"), {}
        for field in ("timeMin", "timeMax"):
            if body.get(field) is None:
                return 400, google_error(400, "required", "Missing %s "
                                         "parameter." % field,
                                         location=field,
                                         locationType="parameter"), {}
            if not isinstance(body[field], str) or \
                    not _RFC3339.fullmatch(body[field]):
                return 400, google_error(400, "badRequest", "Bad Request"), {}
        start = datetime.datetime.fromisoformat(body["timeMin"])
        end = datetime.datetime.fromisoformat(body["timeMax"])
        try:
            zone = zoneinfo.ZoneInfo(self.answer_zone or body.get(
                "timeZone") or "UTC")
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return 400, google_error(400, "invalid", "Invalid time zone "
                                     "definition for the request."), {}
        for field, most in (("calendarExpansionMax", 50),
                            ("groupExpansionMax", 100)):
            value = body.get(field)
            if value is not None and (not isinstance(value, int) or
                                      not 0 < value <= most):
                return 400, google_error(400, "invalid", "Invalid value "
                                         "for %s" % field), {}
        items = body.get("items")
        if not isinstance(items, list) or not all(
                isinstance(i, dict) and isinstance(i.get("id"), str)
                for i in items):
            return 400, google_error(400, "invalid", "Invalid Value"), {}
        if len(items) > self.max_items:
            return 400, google_error(
                400, "tooManyCalendarsRequested", "The number of calendars "
                "requested is too large for a single query.",
                domain="calendar"), {}
        if end <= start:
            return 400, google_error(
                400, "timeRangeEmpty", "The specified time range is empty.",
                domain="calendar", locationType="parameter",
                location="timeMax"), {}
        if end - start > datetime.timedelta(days=self.max_days):
            return 400, google_error(
                400, "timeRangeTooLong", "The requested time range is too "
                "long.", domain="calendar", locationType="parameter",
                location="timeMax"), {}
        calendars, groups = {}, {}
        for item in items:
            name = item["id"]
            members = self.groups.get(name.lower())
            if members is not None:
                groups[name] = {"calendars": list(members)}
                for member in members:
                    calendars[member] = self._calendar(member, start, end,
                                                       zone)
            else:
                calendars[name] = self._calendar(name, start, end, zone)
        answer = {"kind": "calendar#freeBusy",
                  "timeMin": start.astimezone(UTC).strftime(
                      "%Y-%m-%dT%H:%M:%S.000Z"),
                  "timeMax": end.astimezone(UTC).strftime(
                      "%Y-%m-%dT%H:%M:%S.000Z"),
                  "calendars": calendars}
        if groups:
            answer["groups"] = groups
        return 200, answer, {}

    def _calendar(self, name: str, start, end, zone) -> Dict:
        calendar = self.calendars.get(name.lower())
        if calendar is None or calendar.error:
            return {"errors": [{"domain": "global", "reason":
                                calendar.error if calendar else "notFound"}],
                    "busy": []}
        spans = sorted((max(s, start), min(e, end)) for s, e in calendar.busy
                       if s < end and e > start)
        merged: List[List[datetime.datetime]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        return {"busy": [{"start": written(s, zone), "end": written(e, zone)}
                         for s, e in merged]}
