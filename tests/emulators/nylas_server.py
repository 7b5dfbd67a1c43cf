"""An emulated Nylas v3 ``calendars/free-busy`` over TLS.

As reference/foreign-apis.md section 4 describes it:

- ``POST /v3/grants/{grant_id}/calendars/free-busy``; ``{grant_id}`` is
  a grant of the application whose API key is sent, or ``me`` with an
  access token of a grant (``access_tokens``); an unknown grant is 404
  ``api.not_found_error``;
- ``Authorization: Bearer <API key or access token>``; anything else is
  401 ``api.authentication_error`` in Nylas's error envelope
  ``{"request_id", "error": {"type", "message"}}``;
- the body: ``start_time``/``end_time`` as integer Unix seconds (other
  types: 400 ``api.invalid_request_payload``), ``emails`` (1 to
  ``max_emails``, 20 as for a Microsoft grant; more is 400
  ``api.invalid_request_error``), a range of at most ``max_days`` (62);
- the answer is always HTTP 200: one entry per email, in request order,
  ``object: "free_busy"`` with ``time_slots`` (Unix seconds, whole
  events, not clipped to the range; an empty list when free) or
  ``object: "error"`` with the provider's message for an address it
  cannot resolve;
- ``script``: 429 from Nylas itself (``nylas_rate_limit_exceeded``, no
  ``provider_error``) or passed on from the provider (``rate_limit_error``
  with ``provider_error``), each with or without Retry-After; other
  errors, slow, scripted and broken answers, one per request.

Every request is recorded with its path, headers, body and status.
"""

import datetime
import json
import threading
import urllib.parse
import uuid
from typing import Dict, List, Optional, Sequence, Tuple

from emulators import JsonPostHandler, JsonRecord
from emulators.tls import HttpsServer, Pki

UTC = datetime.timezone.utc
PREFIX = "/v3/grants/"
SUFFIX = "/calendars/free-busy"


def unix(text: str) -> int:
    """``YYYYMMDDTHHMMSSZ`` as Unix seconds."""
    return int(datetime.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC).timestamp())


def envelope(kind: str, message: str, provider_error=None) -> Dict:
    """Nylas's error envelope."""
    error = {"type": kind, "message": message}
    if provider_error is not None:
        error["provider_error"] = provider_error
    return {"request_id": str(uuid.uuid4()), "error": error}


class Person:
    """An email's calendar as the grant's provider sees it: slots
    ``(start, end, status)`` in ``YYYYMMDDTHHMMSSZ``, or the provider's
    error message for it."""

    def __init__(self, slots: Sequence[Tuple[str, str, str]] = (),
                 error: Optional[str] = None) -> None:
        self.slots = [(unix(s), unix(e), status) for s, e, status in slots]
        self.error = error


class Recorded(JsonRecord):

    @property
    def emails(self) -> List[str]:
        return list((self.body or {}).get("emails") or [])

    def window(self) -> Tuple[datetime.datetime, datetime.datetime]:
        return (datetime.datetime.fromtimestamp(self.body["start_time"], UTC),
                datetime.datetime.fromtimestamp(self.body["end_time"], UTC))


class NylasServer:
    """Nylas's free-busy for ``people`` (email -> Person), reachable
    through the grants in ``grants`` with ``api_key``, or through
    ``access_tokens`` (token -> grant) as ``me``."""

    def __init__(self, pki: Pki, people: Dict[str, Person],
                 api_key: str = "nyk_v0_test", grants: Sequence[str] = (),
                 access_tokens: Optional[Dict[str, str]] = None,
                 max_emails: int = 20, max_days: int = 62) -> None:
        self.people = {k.lower(): v for k, v in people.items()}
        self.api_key = api_key
        self.grants = set(grants)
        self.access_tokens = dict(access_tokens or {})
        self.max_emails = max_emails
        self.max_days = max_days
        self.script: List = []
        self.requests: List[Recorded] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        handler = type("Handler", (JsonPostHandler,), {"owner": self})
        self.server = HttpsServer(handler, pki.server_context())
        self.base = self.server.base
        self.url = self.base + "/v3"

    def close(self) -> None:
        self._closing.set()
        self.server.close()

    def reset(self) -> None:
        """Forget requests and scripted answers."""
        with self._lock:
            self.requests.clear()
            self.script.clear()

    def statuses(self) -> List[int]:
        return [r.status for r in self.requests]

    # -- serving --------------------------------------------------------

    def handle(self, handler: JsonPostHandler) -> None:
        raw = handler.body
        path = urllib.parse.urlsplit(handler.path).path
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        status, answer, headers = self._answer(handler, path, raw, body)
        with self._lock:
            self.requests.append(Recorded(path, dict(handler.headers), body,
                                          status))
        if isinstance(answer, tuple):       # (content type, bytes)
            return handler.send(status, answer[1], answer[0], headers)
        handler.send(status, answer, headers=headers)

    def _answer(self, handler, path, raw, body):
        if not (path.startswith(PREFIX) and path.endswith(SUFFIX)) or \
                raw is None:
            return 404, envelope("api.not_found_error", "Resource not "
                                 "found."), {}
        grant = urllib.parse.unquote(path[len(PREFIX):-len(SUFFIX)])
        authorization = handler.headers.get("Authorization", "")
        token = authorization[7:] if authorization.startswith("Bearer ") \
            else ""
        if token and token == self.api_key:
            known = grant in self.grants
        elif token in self.access_tokens:
            known = grant in ("me", self.access_tokens[token])
        else:
            return 401, envelope("api.authentication_error",
                                 "Unauthorized"), {}
        if not known:
            return 404, envelope("api.not_found_error", "grant not found"
                                 ), {}
        with self._lock:
            step = self.script.pop(0) if self.script else None
        kind, arg = step if isinstance(step, tuple) else (step, None)
        if kind == "nylas-429":         # Nylas's own limit; arg: Retry-After
            return 429, envelope("nylas_rate_limit_exceeded", "Too many "
                                 "requests. Please try again later."), \
                {"Retry-After": arg} if arg else {}
        if kind == "provider-429":      # the provider's, passed on
            return 429, envelope(
                "rate_limit_error", "Rate limit exceeded at the provider.",
                {"error": {"code": "ApplicationThrottled", "message":
                           "Application is over its MailboxConcurrency "
                           "limit."}}), {"Retry-After": arg} if arg else {}
        if kind == "slow":
            self._closing.wait(arg)
        if kind == "error":             # (status, type, message)
            status, error_type, message = arg
            return status, envelope(error_type, message), {}
        if kind == "json":
            return 200, arg, {}
        if kind == "garbage":
            return 200, ("application/json", b"\x00\xff{not json"), {}
        return self._free_busy(body)

    def _free_busy(self, body):
        if not isinstance(body, dict):
            return 400, envelope("api.invalid_request_payload", "Invalid "
                                 "JSON payload format."), {}
        start, end, emails = (body.get("start_time"), body.get("end_time"),
                              body.get("emails"))
        if not all(isinstance(t, int) and not isinstance(t, bool)
                   for t in (start, end)):
            return 400, envelope("api.invalid_request_payload", "Invalid "
                                 "JSON payload format."), {}
        if not isinstance(emails, list) or not emails or not all(
                isinstance(e, str) for e in emails):
            return 400, envelope("api.invalid_request_error", "emails is "
                                 "required"), {}
        if len(emails) > self.max_emails:
            return 400, envelope("api.invalid_request_error", "Too many "
                                 "emails: at most %d are allowed for this "
                                 "provider." % self.max_emails), {}
        if end <= start:
            return 400, envelope("api.invalid_request_error", "start_time "
                                 "must be before end_time"), {}
        if end - start > self.max_days * 86400:
            return 400, envelope("api.invalid_request_error", "The time "
                                 "range must not exceed %d days."
                                 % self.max_days), {}
        data = []
        for email in emails:
            person = self.people.get(email.lower())
            if person is None or person.error:
                data.append({"object": "error", "email": email, "error":
                             person.error if person else "Unable to resolve "
                             "e-mail address %s to an Active Directory "
                             "object." % email})
                continue
            data.append({"object": "free_busy", "email": email,
                         "time_slots": [
                             {"object": "time_slot", "status": status,
                              "start_time": s, "end_time": e}
                             for s, e, status in person.slots
                             if s < end and e > start]})
        return 200, {"request_id": str(uuid.uuid4()), "data": data}, {}
