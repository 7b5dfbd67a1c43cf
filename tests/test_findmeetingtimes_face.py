"""``POST /.freebusy/findMeetingTimes`` through a real gateway process.

The organizer (the caller) and a local attendee have events in Radicale;
foreign attendees live on emulated free/busy URL servers: a CalConnect
one (a tentative meeting; an address it does not know) and a SOGo one
whose fixed range ends inside the asked window, so the fan-out stitches
a no-data span.  Answers are checked slot by slot against those periods:
states, Graph's confidence, order, working hours from a VAVAILABILITY,
the empty reasons, Prefer: outlook.timezone, and Graph's 400 envelope
for every kind of bad body (never a 500).
"""

import datetime
import json
from xml.sax.saxutils import escape

import pytest
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import (RequestsOpenAPIRequest,
                                           RequestsOpenAPIResponse)

from conftest import Gateway
from emulators.ifb_peer import IfbPeer, utc
from icaldata import PRIVATE_WORDS, event

USERS = {"alice": "alice-pw", "bob": "bob-pw"}
JSON = {"Content-Type": "application/json"}
#: bob works 07:00-15:00 UTC on weekdays (his VAVAILABILITY).
BOB_HOURS = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
             "BEGIN:VAVAILABILITY\r\nUID:bob-hours\r\n"
             "DTSTAMP:20260101T000000Z\r\nDTSTART:20260101T000000Z\r\n"
             "BEGIN:AVAILABLE\r\nUID:bob-weekdays\r\n"
             "DTSTAMP:20260101T000000Z\r\nDTSTART:20260105T070000Z\r\n"
             "DTEND:20260105T150000Z\r\n"
             "RRULE:FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR\r\n"
             "END:AVAILABLE\r\nEND:VAVAILABILITY\r\nEND:VCALENDAR\r\n")


def providers(fb: IfbPeer, sogo: IfbPeer) -> str:
    return (
        "[provider:fb]\ntype = ifb\ndomains = fb.example.net\nurl = %s\n"
        "window_params = calconnect\ntimeout = 5\ncache_ttl = 0\n\n"
        "[provider:sogo]\ntype = ifb\ndomains = sogo.example.net\n"
        "url = %s\nwindow_params = none\ntimeout = 5\ncache_ttl = 0\n"
        "max_window_days = 0.125\n" % (fb.url_template(),
                                       sogo.url_template()))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One gateway for the module: alice busy 12-13 and bob 09-10 on
    Monday 2026-12-07 (UTC), carol (fb) tentative 10-11, erin (sogo)
    with data until Tuesday 00:00 only; bob has working hours."""
    fb = IfbPeer("calconnect", {"carol@fb.example.net": [
        (utc("20261207T100000Z"), utc("20261207T110000Z"),
         "BUSY-TENTATIVE")]})
    sogo = IfbPeer("sogo", {"erin@sogo.example.net": []},
                   now=datetime.datetime(2026, 12, 1,
                                         tzinfo=datetime.timezone.utc))
    gateway = Gateway(tmp_path_factory.mktemp("findmeetingtimes"), USERS,
                      "example.com", providers(fb, sogo), None).start()
    try:
        gateway.put(gateway.mkcalendar("alice", "work") + "a.ics", event(
            "a", "20261207T120000Z", "20261207T130000Z"), "alice")
        gateway.put(gateway.mkcalendar("bob", "work") + "b.ics", event(
            "b", "20261207T090000Z", "20261207T100000Z"), "bob")
        response = gateway.proppatch(
            "/bob/.schedule-inbox/", "<C:calendar-availability>%s"
            "</C:calendar-availability>" % escape(BOB_HOURS), "bob")
        assert response.status_code == 207, response.text
        yield gateway
    finally:
        gateway.stop()
        fb.close()
        sogo.close()


def slot(start: str, end: str, zone: str = "UTC") -> dict:
    return {"start": {"dateTime": start, "timeZone": zone},
            "end": {"dateTime": end, "timeZone": zone}}


def body(attendees, timeslots, duration="PT1H", **more) -> dict:
    out = {"attendees": [
        {"type": kind, "emailAddress": {"address": address}}
        for address, kind in attendees],
        "timeConstraint": {"timeslots": timeslots},
        "meetingDuration": duration}
    out.update(more)
    return out


_DOCUMENTS = {}


def checked(gateway, response: requests.Response) -> requests.Response:
    """``response`` after validating it against the gateway's own OpenAPI
    document (a 500 is never documented, so it fails too)."""
    assert response.status_code < 500, response.text
    if gateway.url not in _DOCUMENTS:
        document = requests.get(gateway.url + "/.freebusy/openapi.json",
                                timeout=30)
        assert document.status_code == 200, document.text
        _DOCUMENTS[gateway.url] = OpenAPI.from_dict(document.json())
    _DOCUMENTS[gateway.url].validate_response(
        RequestsOpenAPIRequest(response.request),
        RequestsOpenAPIResponse(response))
    return response


def ask(gateway, value, user="alice", headers=None, path=None):
    """POST a findMeetingTimes body; answers at the gateway's own path are
    checked against its OpenAPI document."""
    response = gateway.request(
        "POST", path or "/.freebusy/findMeetingTimes",
        value if isinstance(value, (str, bytes)) else json.dumps(value),
        user=user, headers=dict(JSON, **(headers or {})))
    return response if path else checked(gateway, response)


def summary(answer: dict):
    """(start, end, confidence, organizer, {address: state}) per slot."""
    return [(s["meetingTimeSlot"]["start"]["dateTime"][11:16],
             s["meetingTimeSlot"]["end"]["dateTime"][11:16],
             s["confidence"], s["organizerAvailability"],
             {a["attendee"]["emailAddress"]["address"]: a["availability"]
              for a in s["attendeeAvailability"]})
            for s in answer["meetingTimeSuggestions"]]


MONDAY_MORNING = slot("2026-12-07T09:00:00", "2026-12-07T13:00:00")
BOB_CAROL = [("bob@example.com", "required"),
             ("carol@fb.example.net", "optional")]


def test_slots_weigh_every_attendee_by_their_periods(world):
    """Ranked by the required attendees' chance, then Graph's confidence
    over everyone (free 100, tentative 50, busy 0, averaged), then
    time; no two suggestions overlap."""
    response = ask(world, body(BOB_CAROL, [MONDAY_MORNING],
                               timeConstraint={
                                   "activityDomain": "unrestricted",
                                   "timeslots": [MONDAY_MORNING]}))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["emptySuggestionsReason"] == ""
    assert answer["@odata.context"].endswith(
        "$metadata#microsoft.graph.meetingTimeSuggestionsResult")
    both_free = {"bob@example.com": "free",
                 "carol@fb.example.net": "free"}
    assert summary(answer) == [
        ("11:00", "12:00", 100.0, "free", both_free),
        ("10:00", "11:00", 83.33, "free", dict(
            both_free, **{"carol@fb.example.net": "tentative"})),
        ("09:00", "10:00", 66.67, "free", dict(
            both_free, **{"bob@example.com": "busy"}))]
    first = answer["meetingTimeSuggestions"][0]
    assert first["order"] == 1
    assert first["meetingTimeSlot"]["start"] == {
        "dateTime": "2026-12-07T11:00:00.0000000", "timeZone": "UTC"}
    assert first["attendeeAvailability"][1]["attendee"] == {
        "type": "optional",
        "emailAddress": {"address": "carol@fb.example.net"}}
    for word in PRIVATE_WORDS:
        assert word not in response.text


def test_prefer_outlook_timezone_and_graph_path(world):
    """Times come back in the Prefer zone (Windows or IANA names), and
    the same question at Graph's own path gets the same answer."""
    berlin = slot("2026-12-07T10:00:00", "2026-12-07T14:00:00",
                  "W. Europe Standard Time")
    for prefer, local in (("Pacific Standard Time", "03:00"),
                          ("Europe/Berlin", "12:00")):
        response = ask(world, body(BOB_CAROL, [berlin],
                                   minimumAttendeePercentage=100), headers={
            "Prefer": 'outlook.timezone="%s"' % prefer},
            path="/v1.0/me/findMeetingTimes")
        assert response.status_code == 200, response.text
        assert response.headers["Preference-Applied"] == \
            'outlook.timezone="%s"' % prefer
        # Only 11:00-12:00 UTC has everyone free.
        [best] = response.json()["meetingTimeSuggestions"]
        assert best["meetingTimeSlot"]["start"] == {
            "dateTime": "2026-12-07T%s:00.0000000" % local,
            "timeZone": prefer}


def test_working_hours_come_from_the_vavailability_and_the_default(world):
    """``work``: inside bob's own hours (07-15 UTC) and alice's default
    ones (09-17 UTC), so 09-15; ``unrestricted``: anywhere, and bob is
    oof outside his hours because his VAVAILABILITY makes that time
    BUSY-UNAVAILABLE."""
    day = slot("2026-12-08T06:00:00", "2026-12-08T19:00:00")
    response = ask(world, body([("bob@example.com", "required")], [day],
                               maxCandidates=20))
    assert [(s[0], s[2]) for s in summary(response.json())] == [
        ("%02d:00" % hour, 100.0) for hour in range(9, 15)]
    response = ask(world, body([("bob@example.com", "required")], [day],
                               maxCandidates=20, timeConstraint={
                                   "activityDomain": "unrestricted",
                                   "timeslots": [day]}))
    found = summary(response.json())
    assert [s[0] for s in found] == ["%02d:00" % hour for hour in (
        7, 8, 9, 10, 11, 12, 13, 14, 6, 15, 16, 17, 18)]
    assert {s[4]["bob@example.com"] for s in found[8:]} == {"oof"}
    assert {s[2] for s in found[8:]} == {50.0}
    assert all(s[3] == "free" for s in found)


def test_no_data_and_failures_are_unknown_never_free(world):
    """erin's provider has data until Tuesday 00:00 only: slots reaching
    past it show her unknown (49 %), never free; an address the
    provider does not know is unknown everywhere."""
    evening = slot("2026-12-07T18:00:00", "2026-12-08T02:00:00")
    response = ask(world, body([("erin@sogo.example.net", "required")],
                               [evening], maxCandidates=20, timeConstraint={
                                   "activityDomain": "unrestricted",
                                   "timeslots": [evening]}))
    assert response.status_code == 200, response.text
    found = summary(response.json())
    assert found, response.text
    for start, end, confidence, organizer, states in found:
        late = start >= "00:00" and start < "18:00" or start == "23:30"
        assert states["erin@sogo.example.net"] == (
            "unknown" if late else "free"), (start, states)
        assert confidence == (74.5 if late else 100.0)
    assert {s[0] for s in found if s[2] == 100.0} == {
        "18:00", "19:00", "20:00", "21:00", "22:00", "23:00"}
    response = ask(world, body([("nobody@fb.example.net", "required")],
                               [MONDAY_MORNING],
                               minimumAttendeePercentage=0))
    found = summary(response.json())
    assert found and all(s[4] == {"nobody@fb.example.net": "unknown"}
                         for s in found)


@pytest.mark.parametrize("attendees,extra,reason", [
    ([("bob@example.com", "required")],
     {"timeConstraint": {"activityDomain": "unrestricted", "timeslots": [
         slot("2026-12-07T12:00:00", "2026-12-07T13:00:00")]}},
     "organizerUnavailable"),
    ([("bob@example.com", "required")],
     {"timeConstraint": {"activityDomain": "unrestricted", "timeslots": [
         slot("2026-12-07T09:00:00", "2026-12-07T10:00:00")]},
      "minimumAttendeePercentage": 100}, "attendeesUnavailable"),
    ([("nobody@fb.example.net", "required")],
     {"minimumAttendeePercentage": 100}, "attendeesUnavailableOrUnknown"),
    ([("bob@example.com", "required")],
     {"locationConstraint": {"isRequired": True, "locations": [
         {"displayName": "Room 1"}]}}, "locationsUnavailable"),
], ids=["organizer", "attendees", "unknown", "locations"])
def test_empty_suggestions_say_why(world, attendees, extra, reason):
    value = body(attendees, [MONDAY_MORNING])
    value.update(extra)
    response = ask(world, value)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "@odata.context": response.json()["@odata.context"],
        "emptySuggestionsReason": reason, "meetingTimeSuggestions": []}


def test_several_timeslots_and_pascal_case(world):
    """Suggestions come from inside the timeslots only, ranked as one
    list; PascalCase keys are read as Graph reads them."""
    value = {"Attendees": [{"Type": "Required", "EmailAddress": {
        "Address": "bob@example.com"}}],
        "TimeConstraint": {"ActivityDomain": "Unrestricted", "TimeSlots": [
            slot("2026-12-07T09:00:00", "2026-12-07T10:30:00"),
            slot("2026-12-09T13:00:00", "2026-12-09T14:00:00")]},
        "MeetingDuration": "PT30M", "MinimumAttendeePercentage": 0,
        "IsOrganizerOptional": True, "ReturnSuggestionReasons": True}
    answer = ask(world, value).json()
    found = answer["meetingTimeSuggestions"]
    assert [s["meetingTimeSlot"]["start"]["dateTime"][:16] for s in found] \
        == ["2026-12-07T10:00", "2026-12-09T13:00", "2026-12-09T13:30",
            "2026-12-07T09:00", "2026-12-07T09:30"]
    assert found[0]["suggestionReason"] == \
        "Suggested because all attendees are available."
    assert found[-1]["suggestionReason"] == \
        "Suggested because 1 of 2 attendees are available."


MONDAY = [MONDAY_MORNING]
BAD = [
    ("not json", "{attendees", "RequestBodyRead"),
    ("a list", [1, 2], "ErrorInvalidRequest"),
    ("duration", body(BOB_CAROL, MONDAY, "1 hour"), "ErrorInvalidRequest"),
    ("zero duration", body(BOB_CAROL, MONDAY, "PT0M"),
     "ErrorInvalidRequest"),
    ("too long", body(BOB_CAROL, MONDAY, "PT5H"), "ErrorInvalidRequest"),
    ("percentage", body(BOB_CAROL, MONDAY, minimumAttendeePercentage=101),
     "ErrorInvalidRequest"),
    ("candidates", body(BOB_CAROL, MONDAY, maxCandidates=0),
     "ErrorInvalidRequest"),
    ("attendees", dict(body([], MONDAY), attendees="bob"),
     "ErrorInvalidRequest"),
    ("address", body([("bob", "required")], MONDAY), "ErrorInvalidRequest"),
    ("type", body([("bob@example.com", "maybe")], MONDAY),
     "ErrorInvalidRequest"),
    ("no timeslots", body(BOB_CAROL, []), "ErrorInvalidRequest"),
    ("reversed", body(BOB_CAROL, [slot("2026-12-07T13:00:00",
                                       "2026-12-07T09:00:00")]),
     "ErrorInvalidRequest"),
    ("zone", body(BOB_CAROL, [slot("2026-12-07T09:00:00",
                                   "2026-12-07T13:00:00", "Mars/Base")]),
     "ErrorInvalidTimeZone"),
    ("dateTime", body(BOB_CAROL, [slot("Monday", "2026-12-07T13:00:00")]),
     "ErrorInvalidRequest"),
    ("63 days", body(BOB_CAROL, [slot("2026-12-07T09:00:00",
                                      "2027-02-08T09:00:00")]),
     "ErrorInvalidRequest"),
    ("2 x 40 days", body(BOB_CAROL, [slot("2026-12-07T09:00:00",
                                          "2027-01-16T09:00:00")] * 2),
     "ErrorInvalidRequest"),
    ("domain", dict(body(BOB_CAROL, MONDAY), timeConstraint={
        "activityDomain": "never", "timeslots": MONDAY}),
     "ErrorInvalidRequest"),
    ("flag", body(BOB_CAROL, MONDAY, isOrganizerOptional="no"),
     "ErrorInvalidRequest"),
]


@pytest.mark.parametrize("value,code", [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_bad_bodies_get_400_in_graphs_envelope(world, value, code):
    response = ask(world, value)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]


def test_a_one_minute_meeting_over_62_days_is_answered(world):
    """Slots start at most every 5 minutes, so the longest question
    stays within the finder's bounds and is answered, not refused."""
    response = ask(world, body([("bob@example.com", "required")], [slot(
        "2026-12-07T00:00:00", "2027-02-07T00:00:00")], "PT1M",
        maxCandidates=3))
    assert response.status_code == 200, response.text
    starts = [s[0] for s in summary(response.json())]
    assert starts == ["10:00", "10:05", "10:10"]


def test_refusals_in_graphs_envelope(gateway_factory):
    """Anonymous: 401 with Radicale's realm; JSON must be declared as
    JSON (a form elsewhere cannot post it); past the caller's request
    limit 429 with Retry-After; a bad Prefer zone is 400.  A listed web
    origin may call the route from a browser (preflight, then the POST
    with its credentials)."""
    origin = "https://app.example.com"
    gateway = gateway_factory(users=USERS, extra=(
        "requests_per_minute = 3\ncors_origins = %s\n" % origin))
    preflight = gateway.request(
        "OPTIONS", "/.freebusy/findMeetingTimes", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    value = json.dumps(body([("bob@example.com", "required")], MONDAY))
    response = checked(gateway, gateway.request(
        "POST", "/.freebusy/findMeetingTimes", value, headers=JSON))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    response = checked(gateway, gateway.request(
        "POST", "/.freebusy/findMeetingTimes", value, user="alice",
        headers={"Content-Type": "text/plain"}))
    assert response.status_code == 415
    response = ask(gateway, value, headers={
        "Prefer": 'outlook.timezone="Nowhere Standard Time"'})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "ErrorInvalidTimeZone"
    response = ask(gateway, value, headers={"Origin": origin})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    response = ask(gateway, value)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "TooManyRequests"
    assert ask(gateway, value, user="bob").status_code == 200


def test_anonymous_callers_see_local_busy_time_only(gateway_factory):
    """With anonymous free/busy on there is no organizer; a foreign
    address is never asked and looks free, as the access policy says."""
    fb = IfbPeer("calconnect", {"carol@fb.example.net": [
        (utc("20261207T090000Z"), utc("20261207T130000Z"), "BUSY")]})
    sogo = IfbPeer("sogo", {})
    try:
        gateway = gateway_factory(users=USERS, extra=(
            "anonymous_freebusy = yes\n" + providers(fb, sogo)))
        gateway.put(gateway.mkcalendar("bob", "work") + "b.ics", event(
            "b", "20261207T090000Z", "20261207T120000Z"), "bob")
        response = gateway.request(
            "POST", "/.freebusy/findMeetingTimes", json.dumps(body(
                [("bob@example.com", "required"),
                 ("carol@fb.example.net", "required")], MONDAY,
                minimumAttendeePercentage=100)), headers=JSON)
        assert response.status_code == 200, response.text
        found = summary(response.json())
        assert [s[:3] for s in found] == [("12:00", "13:00", 100.0)]
        assert found[0][3] == "unknown"     # no organizer
        assert fb.requests == []
    finally:
        fb.close()
        sogo.close()
