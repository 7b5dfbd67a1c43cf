"""The Graph-shaped getSchedule face, CORS and the OpenAPI document.

One gateway process for the module, with local users and a foreign
domain served by the ``graph`` provider against the Graph emulator over
TLS (tests/emulators/graph_server.py): so Graph statuses, ``unknown``
spans and per-schedule errors reach the face as they do in production.
Every answer of the JSON routes, errors and preflights included, is
validated against the gateway's own OpenAPI document with openapi-core.
"""

import json

import pytest
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import (RequestsOpenAPIRequest,
                                           RequestsOpenAPIResponse)

from conftest import Gateway
from emulators.graph_server import Event, GraphServer, Mailbox
from emulators.tls import Pki
from icaldata import PRIVATE_WORDS, event

OWN = "/.freebusy/getSchedule"
ME = "/v1.0/me/calendar/getSchedule"
USERS = "/v1.0/users/bob@example.com/calendar/getSchedule"
ORIGIN = "https://app.example.com"
MONDAY = {"startTime": {"dateTime": "2026-01-05T08:00:00",
                        "timeZone": "UTC"},
          "endTime": {"dateTime": "2026-01-05T12:00:00", "timeZone": "UTC"},
          "availabilityViewInterval": 60}
BERLIN_HOURS = {"daysOfWeek": ["monday", "tuesday", "wednesday",
                               "thursday", "friday"],
                "startTime": "09:00:00.0000000",
                "endTime": "17:00:00.0000000",
                "timeZone": {"name": "Europe/Berlin"}}
DAVE_AVAILABILITY = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
    "BEGIN:VAVAILABILITY\r\nUID:av\r\nDTSTAMP:20260101T000000Z\r\n"
    "BEGIN:AVAILABLE\r\nUID:av1\r\nDTSTAMP:20260101T000000Z\r\n"
    "DTSTART;TZID=Europe/Berlin:20260105T080000\r\n"
    "DTEND;TZID=Europe/Berlin:20260105T160000\r\n"
    "RRULE:FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR\r\nEND:AVAILABLE\r\n"
    "END:VAVAILABILITY\r\nEND:VCALENDAR\r\n")


def mailboxes():
    subject = "private meeting"
    return {
        "me@corp.example": Mailbox([]),
        "carol@corp.example": Mailbox([
            Event("20260105T080000Z", "20260105T090000Z", "busy", subject),
            Event("20260105T090000Z", "20260105T100000Z", "unknown",
                  subject),
            Event("20260105T100000Z", "20260105T110000Z", "oof", subject),
            Event("20260105T110000Z", "20260105T120000Z",
                  "workingElsewhere", subject)]),
        "denied@corp.example": Mailbox([], error={
            "message": "No free/busy access.",
            "responseCode": "ErrorNoFreeBusyAccess"}),
        "broken@corp.example": Mailbox([], error={
            "message": "The free/busy data could not be generated.",
            "responseCode": "5010"}),
    }


@pytest.fixture(scope="module")
def graph_pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def graph(graph_pki):
    server = GraphServer(graph_pki, mailboxes(), token="delegated-token",
                         me="me@corp.example")
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, graph, graph_pki):
    gateway = Gateway(
        tmp_path_factory.mktemp("getschedule"),
        {"alice": "alice-pw", "bob": "bob-pw", "olga": "olga-pw",
         "dave": "dave-pw"}, "example.com",
        "max_attendees = 8\nmax_window_days = 70\ncors_origins = %s\n"
        "default_working_hours = Mon-Fri 09:00-17:00 Europe/Berlin\n"
        "[provider:corp]\ntype = graph\ndomains = corp.example\nurl = %s\n"
        "ca_file = %s\ntoken = delegated-token\ntimeout = 1\n"
        "cache_ttl = 0\n" % (ORIGIN, graph.url, graph_pki.ca_file), None)
    gateway.start()
    try:
        work = gateway.mkcalendar("alice", "work")
        gateway.put(work + "1.ics", event(
            "a1", "20260105T090000Z", "20260105T100000Z",
            "ATTENDEE:mailto:secret-guest@example.com\r\n"), "alice")
        gateway.put(work + "2.ics", event(
            "a2", "20260105T103000Z", "20260105T110000Z",
            "STATUS:TENTATIVE\r\n"), "alice")
        assert gateway.proppatch(
            "/olga/", '<G:freebusy-opt-out xmlns:G="urn:freebusy-gateway">'
            'true</G:freebusy-opt-out>', "olga").status_code == 207
        assert gateway.proppatch(
            "/dave/.schedule-inbox/", "<C:calendar-availability>%s"
            "</C:calendar-availability>" % DAVE_AVAILABILITY.replace(
                "&", "&amp;").replace("<", "&lt;"), "dave"
        ).status_code == 207
        yield gateway
    finally:
        gateway.stop()


# -- the OpenAPI document, used to check every answer ----------------------

_DOCUMENTS = {}


def openapi_of(gateway) -> OpenAPI:
    """The gateway's own document (fetched from it), checked as OpenAPI 3
    by openapi-core when loaded."""
    if gateway.url not in _DOCUMENTS:
        response = requests.get(gateway.url + "/.freebusy/openapi.json",
                                timeout=30)
        assert response.status_code == 200, response.text
        _DOCUMENTS[gateway.url] = OpenAPI.from_dict(response.json())
    return _DOCUMENTS[gateway.url]


def checked(gateway, response: requests.Response) -> requests.Response:
    """``response``, after validating it (status, headers, body) against
    the OpenAPI document; a 500 is never documented, so it fails too."""
    assert response.status_code < 500, response.text
    openapi_of(gateway).validate_response(
        RequestsOpenAPIRequest(response.request),
        RequestsOpenAPIResponse(response))
    return response


def post(gateway, body, path=OWN, user="bob", headers=None, raw=None):
    """POST ``body`` as JSON (or ``raw`` bytes) and check the answer."""
    sent = {"Content-Type": "application/json"}
    sent.update(headers or {})
    data = raw if raw is not None else json.dumps(body).encode("utf-8")
    auth = (user, gateway.users[user]) if user else None
    return checked(gateway, requests.post(
        gateway.url + path, data=data, headers=sent, auth=auth, timeout=60))


def ask(gateway, schedules, path=OWN, user="bob", headers=None, **fields):
    body = dict(MONDAY, schedules=schedules, **fields)
    response = post(gateway, body, path, user, headers)
    assert response.status_code == 200, response.text
    return response


def by_id(response):
    return {s["scheduleId"]: s for s in response.json()["value"]}


# -- answers ----------------------------------------------------------------

def test_local_and_foreign_schedules_in_one_answer(gateway):
    response = ask(gateway, [
        "alice@example.com", "carol@corp.example", "nobody@example.com",
        "denied@corp.example", "broken@corp.example", "olga@example.com",
        "alice@example.com"])
    value = response.json()["value"]
    # One entry per schedule asked, in request order, duplicates too.
    assert [v["scheduleId"] for v in value] == [
        "alice@example.com", "carol@corp.example", "nobody@example.com",
        "denied@corp.example", "broken@corp.example", "olga@example.com",
        "alice@example.com"]
    alice, carol = value[0], value[1]
    assert alice["availabilityView"] == "0210"
    assert alice["scheduleItems"] == [
        {"status": "busy",
         "start": {"dateTime": "2026-01-05T09:00:00.0000000",
                   "timeZone": "UTC"},
         "end": {"dateTime": "2026-01-05T10:00:00.0000000",
                 "timeZone": "UTC"}},
        {"status": "tentative",
         "start": {"dateTime": "2026-01-05T10:30:00.0000000",
                   "timeZone": "UTC"},
         "end": {"dateTime": "2026-01-05T11:00:00.0000000",
                 "timeZone": "UTC"}}]
    assert alice["workingHours"] == BERLIN_HOURS
    # Graph's "unknown" (no data) is busy, never free; working elsewhere
    # is free; out of office stays oof.
    assert carol["availabilityView"] == "2230"
    assert [(i["status"], i["start"]["dateTime"], i["end"]["dateTime"])
            for i in carol["scheduleItems"]] == [
        ("busy", "2026-01-05T08:00:00.0000000", "2026-01-05T10:00:00.0000000"),
        ("oof", "2026-01-05T10:00:00.0000000", "2026-01-05T11:00:00.0000000")]
    errors = {v["scheduleId"]: v["error"]["responseCode"]
              for v in value if "error" in v}
    assert errors == {"nobody@example.com": "ErrorMailRecipientNotFound",
                      "denied@corp.example": "ErrorNoFreeBusyAccess",
                      "broken@corp.example": "ErrorFreeBusyGenerationFailed",
                      "olga@example.com": "ErrorNoFreeBusyAccess"}
    for entry in value:
        if "error" in entry:
            assert set(entry) == {"scheduleId", "error"}
    # Nothing of an event but its time and status ever leaves.
    for word in PRIVATE_WORDS + ("secret-guest", "subject", "location",
                                 "isPrivate", "opted"):
        assert word not in response.text


def test_working_hours_from_the_users_vavailability(gateway):
    dave = by_id(ask(gateway, ["dave@example.com"]))["dave@example.com"]
    assert dave["workingHours"] == dict(BERLIN_HOURS,
                                        startTime="08:00:00.0000000",
                                        endTime="16:00:00.0000000")
    # 08:00-16:00 Berlin is 07:00-15:00 UTC: the window is all inside.
    assert dave["availabilityView"] == "0000"
    early = by_id(ask(gateway, ["dave@example.com"], startTime={
        "dateTime": "2026-01-05T05:00:00", "timeZone": "UTC"}))
    assert early["dave@example.com"]["availabilityView"] == "3300000"


@pytest.mark.parametrize("path", [OWN, ME, USERS,
                                  "/v1.0/users/anyone/calendar/getSchedule"])
def test_graph_paths_answer_alike(gateway, path):
    own = ask(gateway, ["alice@example.com", "carol@corp.example"]).json()
    assert ask(gateway, ["alice@example.com", "carol@corp.example"],
               path=path).json() == own


def test_pascal_case_and_interval_forms(gateway):
    body = {"Schedules": ["alice@example.com"],
            "StartTime": {"DateTime": "2026-01-05T08:00:00",
                          "TimeZone": "UTC"},
            "EndTime": {"DateTime": "2026-01-05T12:00:00",
                        "TimeZone": "UTC"},
            "AvailabilityViewInterval": "120"}
    response = post(gateway, body)
    assert response.status_code == 200, response.text
    assert response.json()["value"][0]["availabilityView"] == "21"
    # The default interval is 30 minutes.
    body = dict(MONDAY, schedules=["alice@example.com"])
    del body["availabilityViewInterval"]
    response = post(gateway, body)
    assert response.json()["value"][0]["availabilityView"] == "00220100"


def test_prefer_time_zone_and_windows_zone_names(gateway):
    response = ask(gateway, ["alice@example.com"], headers={
        "Prefer": 'outlook.timezone="Pacific Standard Time"'},
        startTime={"dateTime": "2026-01-05T09:00:00",
                   "timeZone": "W. Europe Standard Time"},
        endTime={"dateTime": "2026-01-05T04:00:00",
                 "timeZone": "America/Los_Angeles"})
    assert response.headers["Preference-Applied"] == \
        'outlook.timezone="Pacific Standard Time"'
    alice = response.json()["value"][0]
    assert alice["availabilityView"] == "0210"     # the same 08:00-12:00Z
    assert alice["scheduleItems"][0] == {
        "status": "busy",
        "start": {"dateTime": "2026-01-05T01:00:00.0000000",
                  "timeZone": "Pacific Standard Time"},
        "end": {"dateTime": "2026-01-05T02:00:00.0000000",
                "timeZone": "Pacific Standard Time"}}
    tokyo = ask(gateway, ["alice@example.com"], headers={
        "Prefer": 'outlook.timezone="Asia/Tokyo"'}).json()["value"][0]
    assert tokyo["scheduleItems"][0]["start"] == {
        "dateTime": "2026-01-05T18:00:00.0000000", "timeZone": "Asia/Tokyo"}
    # Offsets in dateTime win over timeZone.
    offset = ask(gateway, ["alice@example.com"], startTime={
        "dateTime": "2026-01-05T09:00:00+01:00", "timeZone": "UTC"})
    assert offset.json()["value"][0]["availabilityView"] == "0210"


def test_a_foreign_system_that_hangs_fails_its_schedules_only(gateway,
                                                              graph):
    graph.script.append(("slow", 4))
    value = by_id(ask(gateway, ["carol@corp.example", "alice@example.com"]))
    assert value["carol@corp.example"]["error"]["responseCode"] == \
        "ErrorTimeoutExpired"
    assert "corp did not answer" in value["carol@corp.example"]["error"][
        "message"]
    assert value["alice@example.com"]["availabilityView"] == "0210"


# -- bad requests: Graph's envelope, the field named, never a 500 -----------

def _without(name):
    body = dict(MONDAY, schedules=["alice@example.com"])
    del body[name]
    return body


BAD_BODIES = [
    ([], "body", "BadRequest|ErrorInvalidRequest"),
    ("schedules", "body", None),
    (None, "body", None),
    (dict(MONDAY), "schedules", None),
    (dict(MONDAY, schedules=[]), "schedules", None),
    (dict(MONDAY, schedules="alice@example.com"), "schedules", None),
    (dict(MONDAY, schedules=[1]), "schedules", None),
    (dict(MONDAY, schedules=[""]), "schedules", None),
    (dict(MONDAY, schedules=["x" * 400 + "@example.com"]), "schedules",
     None),
    (dict(MONDAY, schedules=["a%d@example.com" % i for i in range(9)]),
     "schedules", "ErrorMailboxDataArrayTooBig"),
    (_without("startTime"), "startTime", None),
    (_without("endTime"), "endTime", None),
    (dict(MONDAY, schedules=["a@example.com"], startTime="2026-01-05"),
     "startTime", None),
    (dict(MONDAY, schedules=["a@example.com"], startTime={
        "dateTime": "tomorrow", "timeZone": "UTC"}), "startTime", None),
    (dict(MONDAY, schedules=["a@example.com"], startTime={
        "dateTime": "2026-02-30T00:00:00", "timeZone": "UTC"}),
     "startTime", None),
    (dict(MONDAY, schedules=["a@example.com"], startTime={
        "dateTime": "2026-01-05T00:00:00", "timeZone": "Mars/Olympus"}),
     "startTime.timeZone", "ErrorInvalidTimeZone"),
    (dict(MONDAY, schedules=["a@example.com"], endTime={
        "dateTime": "2026-01-05T08:00:00", "timeZone": "UTC"}),
     "endTime", None),
    (dict(MONDAY, schedules=["a@example.com"], endTime={
        "dateTime": "2026-03-20T08:00:00", "timeZone": "UTC"}),
     "startTime/endTime", "ErrorTimeIntervalTooBig"),
    (dict(MONDAY, schedules=["a@example.com"], startTime={
        "dateTime": "1700-01-05T00:00:00", "timeZone": "UTC"}),
     "startTime/endTime", None),
    (dict(MONDAY, schedules=["a@example.com"], availabilityViewInterval=4),
     "availabilityViewInterval", None),
    (dict(MONDAY, schedules=["a@example.com"],
          availabilityViewInterval=1441), "availabilityViewInterval", None),
    (dict(MONDAY, schedules=["a@example.com"],
          availabilityViewInterval="abc"), "availabilityViewInterval", None),
    (dict(MONDAY, schedules=["a@example.com"],
          availabilityViewInterval=True), "availabilityViewInterval", None),
    (dict(MONDAY, schedules=["a@example.com"],
          availabilityViewInterval=30.5), "availabilityViewInterval", None),
    (dict(MONDAY, schedules=["a@example.com"], availabilityViewInterval=5,
          endTime={"dateTime": "2026-03-10T08:00:00", "timeZone": "UTC"}),
     "availabilityViewInterval", "ErrorTimeIntervalTooBig"),
]


@pytest.mark.parametrize("body,field,code", BAD_BODIES,
                         ids=[str(i) for i in range(len(BAD_BODIES))])
def test_bad_bodies_are_400_naming_the_field(gateway, body, field, code):
    response = post(gateway, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    if field != "body":
        assert error["message"].startswith(field), error
    if code:
        assert error["code"] in code.split("|"), error


@pytest.mark.parametrize("raw,content_type,status", [
    (b"{not json", "application/json", 400),
    (b"\xff\xfe{}", "application/json", 400),
    (b"", "application/json", 400),
    (b'{"schedules": []}', "text/plain", 415),
    (b'{"schedules": []}', "application/x-www-form-urlencoded", 415),
    (b"{" + b" " * (1 << 20) + b"}", "application/json", 413),
])
def test_unreadable_bodies(gateway, raw, content_type, status):
    response = post(gateway, None, raw=raw,
                    headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]


def test_unknown_preferred_zone_is_400(gateway):
    response = post(gateway, dict(MONDAY, schedules=["alice@example.com"]),
                    headers={"Prefer": 'outlook.timezone="Nowhere/City"'})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(
        "Prefer: outlook.timezone")


def test_unknown_graph_path_is_404(gateway):
    response = requests.post(
        gateway.url + "/v1.0/users/bob/calendar/getScheduleX", json={},
        auth=("bob", "bob-pw"), timeout=30)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ResourceNotFound"


def test_credentials(gateway):
    response = post(gateway, dict(MONDAY, schedules=["alice@example.com"]),
                    user=None)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    wrong = checked(gateway, requests.post(
        gateway.url + OWN, json=dict(MONDAY, schedules=["a@example.com"]),
        auth=("bob", "wrong"), timeout=30))
    assert wrong.status_code == 401
    # A Graph bearer token is no login here.
    bearer = post(gateway, dict(MONDAY, schedules=["alice@example.com"]),
                  user=None, headers={"Authorization": "Bearer abc"})
    assert bearer.status_code == 401


# -- CORS ---------------------------------------------------------------------

@pytest.mark.parametrize("path", [OWN, ME, USERS])
def test_preflight_for_a_listed_origin(gateway, path):
    response = checked(gateway, requests.options(
        gateway.url + path, headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"},
        timeout=30))
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed


def test_preflight_for_other_origins_and_methods_grants_nothing(gateway):
    for origin, method in (("https://evil.example", "POST"),
                           (ORIGIN + ":8443", "POST"), (ORIGIN, "DELETE")):
        response = checked(gateway, requests.options(
            gateway.url + OWN, headers={
                "Origin": origin, "Access-Control-Request-Method": method},
            timeout=30))
        assert response.status_code == 204
        assert "Access-Control-Allow-Methods" not in response.headers
        if origin != ORIGIN:
            assert "Access-Control-Allow-Origin" not in response.headers


def test_answers_carry_cors_headers_for_listed_origins_only(gateway):
    body = dict(MONDAY, schedules=["alice@example.com"])
    listed = post(gateway, body, headers={"Origin": ORIGIN})
    assert listed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert listed.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in listed.headers["Vary"]
    other = post(gateway, body, headers={"Origin": "https://evil.example"})
    assert other.status_code == 200
    assert "Access-Control-Allow-Origin" not in other.headers
    # Errors too, so the page can read why.
    refused = post(gateway, body, user=None, headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == ORIGIN
    document = checked(gateway, requests.get(
        gateway.url + "/.freebusy/openapi.json",
        headers={"Origin": ORIGIN}, timeout=30))
    assert document.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_any_origin_gets_no_credentials(gateway_factory):
    gateway = gateway_factory(extra="cors_origins = *\n")
    body = dict(MONDAY, schedules=["bob@example.com"])
    response = post(gateway, body, headers={"Origin": "https://x.example"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers


# -- the OpenAPI document -----------------------------------------------------

def test_openapi_document_describes_the_json_routes(gateway):
    response = checked(gateway, requests.get(
        gateway.url + "/.freebusy/openapi.json", timeout=30))
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert {OWN, ME, "/v1.0/users/{id}/calendar/getSchedule",
            "/.freebusy/findMeetingTimes", "/v1.0/me/findMeetingTimes",
            "/.freebusy/openapi.json"} <= set(document["paths"])
    # The request schema accepts what the face accepts.
    openapi = openapi_of(gateway)
    for body in (dict(MONDAY, schedules=["a@example.com"]),
                 {"Schedules": ["a@example.com"],
                  "StartTime": MONDAY["startTime"],
                  "EndTime": MONDAY["endTime"]}):
        sent = requests.Request("POST", gateway.url + OWN, json=body,
                                auth=("bob", "bob-pw")).prepare()
        openapi.validate_request(RequestsOpenAPIRequest(sent))


@pytest.mark.parametrize("path", ["/.freebusy/findMeetingTimes",
                                  "/v1.0/me/findMeetingTimes"])
def test_find_meeting_times_answers_match_the_document(gateway, path):
    """The finder face's answers, good and bad, fit the shapes described
    here, so one document serves both faces."""
    good = post(gateway, {
        "attendees": [{"type": "required",
                       "emailAddress": {"address": "alice@example.com"}}],
        "timeConstraint": {"activityDomain": "unrestricted", "timeslots": [{
            "start": MONDAY["startTime"], "end": MONDAY["endTime"]}]},
        "meetingDuration": "PT1H"}, path=path, headers={"Origin": ORIGIN})
    assert good.status_code == 200, good.text
    assert good.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert post(gateway, {"meetingDuration": "soon"},
                path=path).status_code == 400
    assert post(gateway, {}, path=path, user=None).status_code == 401
    preflight = checked(gateway, requests.options(
        gateway.url + path, headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        timeout=30))
    assert preflight.status_code == 204
