"""``POST /.freebusy/findMeetingTimes``: Graph's findMeetingTimes.

The body and answer of Microsoft Graph's ``findMeetingTimes`` (also at
Graph's own path ``/v1.0/me/findMeetingTimes``, so a Graph client pointed
at the gateway works): the caller is the organizer and counts as a
required attendee unless ``isOrganizerOptional``; every attendee is
looked up under the one access policy (gateway.faces.access) over the
span of the ``timeConstraint.timeslots``, and the pure finder
(gateway.engine.finder) ranks the slots of each timeslot.

``activityDomain`` ``work`` (the default; ``personal`` and ``unknown``
alike) keeps each slot inside every required attendee's working hours
(:func:`working_spans`), ``unrestricted`` ignores them.  Times are UTC
unless ``Prefer: outlook.timezone``.  Locations are not resolved: a
``locationConstraint`` with ``isRequired`` gets no suggestions and
``locationsUnavailable``.  Bad bodies are 400 in Graph's error envelope.
"""

import datetime
from typing import Dict, List, NamedTuple, Optional, Sequence

from gateway.addresses import bare_address
from gateway.engine import finder
from gateway.engine.local import AVAILABILITY_KEY
from gateway.faces import access, cors, graphjson
from gateway.faces.graphjson import bad_request, member
from gateway.model import (BUSY, BUSY_UNAVAILABLE, LookupResult, Span,
                           Window, normalize, spans_of)

PATHS = ("/.freebusy/findMeetingTimes", "/v1.0/me/findMeetingTimes")
#: Graph's defaults: a 30-minute meeting, suggestions of at least 50 %.
DEFAULT_DURATION = datetime.timedelta(minutes=30)
DEFAULT_MINIMUM = 50.0
DEFAULT_CANDIDATES = 10
#: Most suggestions one answer carries, and most timeslots one asks for.
MAX_CANDIDATES = 100
MAX_TIMESLOTS = 50
#: Longest span of all timeslots together: one lookup covers it.
MAX_DAYS = 62
#: Finest step between slot starts: a one-minute meeting is still looked
#: for every 5 minutes, so 62 days stay within the finder's bound.
MIN_STEP = datetime.timedelta(minutes=5)
#: When no timeslot is given: from the next half hour, a week.
DEFAULT_SPAN = datetime.timedelta(days=7)
DOMAINS = {"work": True, "personal": True, "unknown": True,
           "unrestricted": False}
TYPES = ("required", "optional", "resource")
ODATA_CONTEXT = "$metadata#microsoft.graph.meetingTimeSuggestionsResult"


def register(registry) -> None:
    for path in PATHS:
        registry.route(("POST", "OPTIONS"), path, handle)


# -- working hours ----------------------------------------------------------

def working_spans(app, address: str, window: Window,
                  result: Optional[LookupResult] = None) -> List[Span]:
    """The working hours of ``address`` inside ``window`` (UTC spans):
    those its foreign system gave with ``result`` (Graph, EWS), a local
    user's own VAVAILABILITY (the time it does not make busy), else
    ``[gateway] default_working_hours``.  ``address`` is bare or
    ``mailto:``.  No access policy: the caller applies it."""
    if result is not None and result.ok and result.working is not None:
        return list(spans_of(result.working, window))
    if not address.lower().startswith("mailto:"):
        address = "mailto:" + address
    kind, user = app.fanout.route(address)
    if kind == "local":
        text = app.local.principal_meta(user, AVAILABILITY_KEY)
        if text and str(text).strip():
            busy = normalize(app.local.availability_of_text(str(text),
                                                            window), window)
            return finder.outside(spans_of(
                ((p.start, p.end) for p in busy), window), window)
    return list(app.gateway_options["default_working_hours"].spans(window))


def default_working_spans(app, window: Window) -> List[Span]:
    return list(app.gateway_options["default_working_hours"].spans(window))


def attendee_hours(app, caller: access.Caller, address: str,
                   result: LookupResult, window: Window) -> List[Span]:
    """Working hours as the policy lets ``caller`` see them: a user's
    own only when their busy time could be looked up, and never for
    anonymous callers (who must not tell an opted-out user's hours from
    the default)."""
    if caller.anonymous or not result.ok:
        return default_working_spans(app, window)
    return working_spans(app, address, window, result)


# -- the request ------------------------------------------------------------

class Attendee(NamedTuple):
    address: str        # bare, as the caller wrote it
    type: str


class Question(NamedTuple):
    """A findMeetingTimes body, checked."""

    attendees: List[Attendee]
    timeslots: List[Window]
    duration: datetime.timedelta
    minimum: float
    max_candidates: int
    working: bool
    organizer_optional: bool
    reasons: bool
    location_required: bool


def _number(value, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request("%s must be a number" % what)
    if not low <= value <= high:
        raise bad_request("%s must be between %g and %g" % (what, low, high))
    return float(value)


def _attendees(value, limit: int) -> List[Attendee]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request("attendees must be a list")
    if len(value) > limit:
        raise bad_request("at most %d attendees ([gateway] max_attendees)"
                          % limit)
    out = []
    for i, item in enumerate(value):
        kind = member(item, "type", "required")
        if not isinstance(kind, str) or kind.lower() not in TYPES:
            raise bad_request("attendees[%d].type must be required, "
                              "optional or resource" % i)
        address = member(member(item, "emailAddress"), "address")
        if not isinstance(address, str) or bare_address(
                "mailto:" + address.strip()) is None:
            raise bad_request("attendees[%d].emailAddress.address must be "
                              "a mail address" % i)
        out.append(Attendee(address.strip(), kind.lower()))
    return out


def _timeslots(constraint, now: datetime.datetime,
               max_days: int) -> List[Window]:
    slots = member(constraint, "timeslots")
    if slots is None:
        slots = member(constraint, "timeSlots")
    if slots is None:
        epoch = datetime.datetime(1970, 1, 1, tzinfo=now.tzinfo)
        start = epoch - (epoch - now) // finder.DEFAULT_STEP * \
            finder.DEFAULT_STEP
        return [Window(start, start + DEFAULT_SPAN)]
    if not isinstance(slots, list) or not slots:
        raise bad_request("timeConstraint.timeslots must be a non-empty "
                          "list")
    if len(slots) > MAX_TIMESLOTS:
        raise bad_request("at most %d timeslots" % MAX_TIMESLOTS)
    out = []
    for i, slot in enumerate(slots):
        what = "timeConstraint.timeslots[%d]" % i
        if not isinstance(slot, dict):
            raise bad_request("%s must be an object with start and end"
                              % what)
        start = graphjson.parse_datetime(member(slot, "start"),
                                         what + ".start")
        end = graphjson.parse_datetime(member(slot, "end"), what + ".end")
        try:
            out.append(Window.checked(start, end, max_days))
        except ValueError as e:
            raise bad_request("%s: %s" % (what, e)) from None
    limit = datetime.timedelta(days=max_days)
    if max(w.end for w in out) - min(w.start for w in out) > limit or \
            sum((w.end - w.start for w in out), datetime.timedelta(0)) > \
            limit:
        raise bad_request("the timeslots must lie within %d days and "
                          "add up to at most that" % max_days)
    return out


def parse_question(body, max_attendees: int, max_days: int,
                   now: datetime.datetime) -> Question:
    """The checked question; GraphError 400 naming what is wrong."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    constraint = member(body, "timeConstraint", {})
    if not isinstance(constraint, dict):
        raise bad_request("timeConstraint must be an object")
    domain = member(constraint, "activityDomain", "work")
    if not isinstance(domain, str) or domain.lower() not in DOMAINS:
        raise bad_request("timeConstraint.activityDomain must be work, "
                          "personal or unrestricted")
    duration = member(body, "meetingDuration")
    duration = DEFAULT_DURATION if duration is None else \
        graphjson.parse_duration(duration, "meetingDuration")
    minimum = member(body, "minimumAttendeePercentage")
    minimum = DEFAULT_MINIMUM if minimum is None else \
        _number(minimum, "minimumAttendeePercentage", 0, 100)
    candidates = member(body, "maxCandidates")
    if candidates is None:
        candidates = DEFAULT_CANDIDATES
    elif isinstance(candidates, bool) or not isinstance(candidates, int) \
            or candidates < 1:
        raise bad_request("maxCandidates must be a whole number of at "
                          "least 1")
    flags = {}
    for name in ("isOrganizerOptional", "returnSuggestionReasons"):
        flags[name] = member(body, name, False)
        if not isinstance(flags[name], bool):
            raise bad_request("%s must be true or false" % name)
    location = member(body, "locationConstraint") or {}
    if not isinstance(location, dict):
        raise bad_request("locationConstraint must be an object")
    required = member(location, "isRequired", False)
    slots = _timeslots(constraint, now, max_days)
    if all(duration > w.end - w.start for w in slots):
        raise bad_request("meetingDuration %s is longer than every "
                          "timeslot" % duration)
    return Question(
        _attendees(member(body, "attendees"), max_attendees), slots,
        duration, minimum, min(candidates, MAX_CANDIDATES),
        DOMAINS[domain.lower()], flags["isOrganizerOptional"],
        flags["returnSuggestionReasons"],
        required is True or str(required).lower() == "true")


# -- the answer -------------------------------------------------------------

def clipped(result: LookupResult, window: Window) -> LookupResult:
    """``result`` over a part of the window it was looked up for."""
    if not result.ok:
        return result
    return LookupResult.busy(result.periods, window, result.nodata,
                             result.working)


class Party(NamedTuple):
    """One person the finder weighs: its key, type and lookup."""

    key: str            # lower-cased bare address: one party per person
    address: str        # bare, as written (local parts keep their case)
    type: str
    result: LookupResult = LookupResult()
    #: the caller, who must attend unless isOrganizerOptional
    organizer: bool = False


def suggestions(app, caller: access.Caller, parties: Sequence[Party],
                question: Question, lookup_window: Window
                ) -> List[finder.Suggestion]:
    """The best slots over all timeslots, best first."""
    found = []
    for slot_window in question.timeslots:
        found.append(finder.find_slots(
            [finder_attendee(app, caller, p, slot_window, question.working)
             for p in parties], question.duration, slot_window,
            step_for(question.duration),
            max_candidates=question.max_candidates,
            minimum_percentage=question.minimum))
    return finder.merge(found, [p.key for p in parties
                                if p.type != "optional"],
                        question.max_candidates)


def step_for(duration: datetime.timedelta) -> datetime.timedelta:
    """Slots start every half hour, or every ``duration`` if shorter,
    but no finer than :data:`MIN_STEP`."""
    return max(MIN_STEP, min(finder.DEFAULT_STEP, duration))


def finder_attendee(app, caller: access.Caller, party: Party,
                    window: Window, working: bool) -> finder.FinderAttendee:
    """``party`` over ``window`` as the finder takes it.  A required
    organizer's busy and out-of-office time count as outside their hours,
    so no slot is proposed that the organizer cannot attend (Graph's
    organizerUnavailable)."""
    result = clipped(party.result, window)
    hours = attendee_hours(app, caller, party.address, party.result,
                           window) if working else None
    if party.organizer and party.type != "optional" and result.ok:
        blocked = [(p.start, p.end) for p in result.periods
                   if p.fbtype in (BUSY, BUSY_UNAVAILABLE)]
        if hours is not None:
            blocked.extend(finder.outside(hours, window))
        hours = finder.outside(blocked, window)
    return finder.FinderAttendee(party.key, party.type != "optional",
                                 result, hours)


def empty_reason(parties: Sequence[Party], organizer: Optional[Party],
                 question: Question, app, caller) -> str:
    """Graph's emptySuggestionsReason for an answer without any."""
    if question.location_required:
        return "locationsUnavailable"
    if organizer is not None and not question.organizer_optional:
        alone = [s for window in question.timeslots
                 for s in finder.find_slots(
                     [finder_attendee(app, caller, organizer, window,
                                      question.working)],
                     question.duration, window,
                     step_for(question.duration), max_candidates=1,
                     minimum_percentage=DEFAULT_MINIMUM)]
        if not alone:
            return "organizerUnavailable"
    if any(not p.result.ok or p.result.nodata for p in parties):
        return "attendeesUnavailableOrUnknown"
    return "attendeesUnavailable"


def _reason_text(suggestion: finder.Suggestion) -> str:
    states = list(suggestion.states.values())
    free = states.count(finder.FREE)
    if free == len(states):
        return "Suggested because all attendees are available."
    return "Suggested because %d of %d attendees are available." % (
        free, len(states))


def answer_of(suggestions_found: Sequence[finder.Suggestion],
              question: Question, organizer: Optional[Party],
              zone_name: str, tzinfo, base: str, reason: str) -> dict:
    """The meetingTimeSuggestionsResult."""
    out = []
    for order, suggestion in enumerate(suggestions_found, 1):
        item = {
            "confidence": suggestion.confidence,
            "order": order,
            "organizerAvailability": suggestion.states.get(
                organizer.key, finder.UNKNOWN) if organizer else
            finder.UNKNOWN,
            "meetingTimeSlot": {
                "start": graphjson.format_datetime(suggestion.start,
                                                   zone_name, tzinfo),
                "end": graphjson.format_datetime(suggestion.end,
                                                 zone_name, tzinfo)},
            "attendeeAvailability": [
                {"attendee": {"type": a.type,
                              "emailAddress": {"address": a.address}},
                 "availability": suggestion.states[_key(a.address)]}
                for a in question.attendees],
            "locations": []}
        if question.reasons:
            item["suggestionReason"] = _reason_text(suggestion)
        out.append(item)
    return {"@odata.context": base + "/" + ODATA_CONTEXT,
            "emptySuggestionsReason": "" if out else reason,
            "meetingTimeSuggestions": out}


def _key(address: str) -> str:
    return bare_address("mailto:" + address).lower()


def handle(app, request) -> tuple:
    if request.path.rstrip("/") not in PATHS:
        return graphjson.GraphError(404, "ResourceNotFound", "no such "
                                    "route").answer(cors.headers(
                                        app, request.environ))
    environ = request.environ
    if environ.get("REQUEST_METHOD") == "OPTIONS":
        return cors.preflight(app, environ, ["POST"])
    headers = cors.headers(app, environ)
    refused = graphjson.refused(app, request, headers)
    if refused is not None:
        return refused
    caller = access.Caller.of(request)
    options = app.gateway_options
    try:
        zone_name, tzinfo, applied = graphjson.preferred_zone(environ)
        question = parse_question(
            graphjson.read_json_body(environ), options["max_attendees"],
            min(MAX_DAYS, options["max_window_days"]),
            datetime.datetime.now(datetime.timezone.utc))
    except graphjson.GraphError as e:
        return e.answer(headers)
    headers.update(applied)
    # Who is weighed: the organizer (the caller, a local user), then each
    # attendee once (required wins over optional when named twice).
    parties: Dict[str, Party] = {}
    organizer = None
    if not caller.anonymous:
        own = app.local_users.addresses_of(caller.user)
        if own:
            bare = bare_address(own[0])
            organizer = parties[bare.lower()] = Party(
                bare.lower(), bare, "optional" if question.organizer_optional
                else "required", organizer=True)
    for attendee in question.attendees:
        key = _key(attendee.address)
        kind = "required" if attendee.type == "resource" else attendee.type
        if key not in parties:
            parties[key] = Party(key, bare_address(
                "mailto:" + attendee.address), kind)
        elif kind == "required" and key != getattr(organizer, "key", None):
            parties[key] = parties[key]._replace(type="required")
    lookup_window = Window(min(w.start for w in question.timeslots),
                           max(w.end for w in question.timeslots))
    results = access.lookup(app, caller,
                            ["mailto:" + p.address for p in parties.values()],
                            lookup_window, face="findmeetingtimes")
    parties = {k: p._replace(result=results["mailto:" + p.address])
               for k, p in parties.items()}
    if organizer is not None:
        organizer = parties[organizer.key]
    found = [] if question.location_required else suggestions(
        app, caller, list(parties.values()), question, lookup_window)
    reason = "" if found else empty_reason(
        list(parties.values()), organizer, question, app, caller)
    return graphjson.json_answer(200, answer_of(
        found, question, organizer, zone_name, tzinfo,
        request.base_prefix + "/.freebusy", reason), headers)

