"""The ``graph`` provider against an emulated Microsoft Graph over TLS.

A real gateway process (outbox POST) with a ``[provider:corp]`` of type
``graph`` trusting the emulators' test CA through ``ca_file``; an
identity provider (tests/emulators/token_endpoint.py) issues the
client-credentials tokens, tests/emulators/graph_server.py answers
``calendar/getSchedule`` as Graph does: statuses, the availability view,
time zones, per-schedule errors, limits, throttling, expired tokens,
slow and broken answers.
"""

import datetime
import time

import pytest

from conftest import ROOT, check_config
from emulators.graph_server import Event, GraphServer, Mailbox
from emulators.token_endpoint import IdentityProvider
from fbcheck import (assert_same_periods, assert_windows_tile, periods_of,
                     schedule_response, suggested_hours)

WINDOW = ("20260105T000000Z", "20260109T000000Z")   # Monday to Friday
CAROL = [
    Event("20260105T090000Z", "20260105T100000Z", "busy"),
    Event("20260106T130000Z", "20260106T143000Z", "tentative"),
    Event("20260107T000000Z", "20260108T000000Z", "oof"),
    Event("20260108T090000Z", "20260108T170000Z", "workingElsewhere"),
    Event("20260108T180000Z", "20260108T190000Z", "free"),
]
CAROL_PERIODS = {
    "BUSY": [("20260105T090000Z", "20260105T100000Z")],
    "BUSY-TENTATIVE": [("20260106T130000Z", "20260106T143000Z")],
    "BUSY-UNAVAILABLE": [("20260107T000000Z", "20260108T000000Z")]}
DAVE = [Event("20260105T120000Z", "20260105T130000Z", "busy")]
DAVE_PERIODS = {"BUSY": [("20260105T120000Z", "20260105T130000Z")]}


def mailboxes():
    return {
        "finder@corp.example": Mailbox([]),
        "carol@corp.example": Mailbox(list(CAROL)),
        "dave@corp.example": Mailbox(list(DAVE)),
        # only the availability view: scheduleItems is null
        "erin@corp.example": Mailbox([
            Event("20260105T101000Z", "20260105T104000Z", "busy"),
            Event("20260105T130000Z", "20260105T150000Z",
                  "workingElsewhere"),
            Event("20260106T090000Z", "20260106T093000Z", "tentative")],
            items=False),
        "denied@corp.example": Mailbox([], error={
            "message": "Microsoft.Exchange.InfoWorker.Common.Availability."
            "NoFreeBusyAccessException: No free/busy access.",
            "responseCode": "ErrorNoFreeBusyAccess"}),
        "broken@corp.example": Mailbox([], error={
            "message": "The free/busy data could not be generated.",
            "responseCode": "5010"}),
    }


@pytest.fixture
def graph(pki, idp, servers):
    return servers(GraphServer(pki, mailboxes(), idp=idp,
                               token="delegated-token",
                               me="finder@corp.example"))


def section(graph, idp, pki, mailbox="finder@corp.example", timeout=5,
            extra="", credentials=None):
    if credentials is None:
        credentials = ("auth = oauth2\nauthority = %s\ntenant = %s\n"
                       "client_id = %s\nclient_secret = %s\n" % (
                           idp.authority, idp.tenant, idp.client_id,
                           idp.client_secret))
    return ("[provider:corp]\ntype = graph\ndomains = corp.example\n"
            "url = %s\nca_file = %s\ntimeout = %s\ncache_ttl = 0\n%s%s%s"
            % (graph.url, pki.ca_file, timeout, credentials,
               "mailbox = %s\n" % mailbox if mailbox else "", extra))


def post(gateway, attendees, window=WINDOW):
    return gateway.outbox(attendees, window)


def ask(gateway, attendees, window=WINDOW):
    return schedule_response(post(gateway, attendees, window))


@pytest.fixture
def corp(gateway_factory, graph, idp, pki):
    """A gateway with the default graph section."""
    return gateway_factory(extra=section(graph, idp, pki))


# -- statuses, the view, zones, clipping --------------------------------------


def test_statuses_map_to_fbtypes_and_the_request_is_graphs(corp, graph,
                                                           idp):
    response = post(corp, ["carol@corp.example", "dave@corp.example"])
    answers = schedule_response(response)
    assert [a[1] for a in answers] == ["2.0", "2.0"]
    # busy, tentative, oof kept; working elsewhere and free are free.
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)
    assert_same_periods(periods_of(answers[1][2]), DAVE_PERIODS)
    assert "private meeting" not in response.text
    assert "board room" not in response.text
    [call] = graph.requests
    assert call.path == "/v1.0/users/finder@corp.example/calendar/" \
        "getSchedule"
    assert call.status == 200
    assert call.headers["Prefer"] == 'outlook.timezone="UTC"'
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["Authorization"].startswith("Bearer ")
    assert call.body == {
        "schedules": ["carol@corp.example", "dave@corp.example"],
        "startTime": {"dateTime": "2026-01-05T00:00:00.0000000",
                      "timeZone": "UTC"},
        "endTime": {"dateTime": "2026-01-09T00:00:00.0000000",
                    "timeZone": "UTC"},
        "availabilityViewInterval": 30}
    [(kind, form)] = idp.token_requests
    assert form["scope"] == "https://graph.microsoft.com/.default"
    assert form["grant_type"] == "client_credentials"


def test_availability_view_where_items_are_missing(corp, graph):
    """erin's answer has no scheduleItems: her view is read, in whole
    30-minute slots (busier, never freer); digit 4, working elsewhere,
    is free."""
    graph.elsewhere_digit = "4"
    answers = ask(corp, ["erin@corp.example"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260105T100000Z", "20260105T110000Z")],
        "BUSY-TENTATIVE": [("20260106T090000Z", "20260106T093000Z")]})
    view = graph.requests[0]
    assert view.status == 200


def test_view_slots_without_items_are_busy_too(corp, graph):
    """A view digit that says busy where the items show nothing is kept
    (Graph's own answer says busy there)."""
    graph.script.append(("json", {"value": [{
        "scheduleId": "carol@corp.example",
        "availabilityView": "0" * 20 + "22" + "0" * 170,
        "scheduleItems": [{
            "status": "busy",
            "start": {"dateTime": "2026-01-05T00:15:00.0000000",
                      "timeZone": "UTC"},
            "end": {"dateTime": "2026-01-05T00:45:00.0000000",
                    "timeZone": "UTC"}}]}]}))
    answers = ask(corp, ["carol@corp.example"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {"BUSY": [
        ("20260105T001500Z", "20260105T004500Z"),
        ("20260105T100000Z", "20260105T110000Z")]})


@pytest.mark.parametrize("zone", ["W. Europe Standard Time",
                                  "Pacific Standard Time", "Asia/Tokyo",
                                  "America/New_York"])
def test_items_in_another_time_zone(corp, graph, zone):
    """Graph may answer in another zone than the Prefer header asked for
    (Windows or IANA names, wall-clock times without offsets)."""
    graph.answer_zone = zone
    answers = ask(corp, ["carol@corp.example", "dave@corp.example"])
    assert [a[1] for a in answers] == ["2.0", "2.0"]
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)
    assert_same_periods(periods_of(answers[1][2]), DAVE_PERIODS)


def test_answers_are_clipped_and_windows_widened_to_slots(corp, graph):
    answers = ask(corp, ["carol@corp.example"],
                  ("20260105T091500Z", "20260107T120000Z"))
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260105T091500Z", "20260105T100000Z")],
        "BUSY-TENTATIVE": [("20260106T130000Z", "20260106T143000Z")],
        "BUSY-UNAVAILABLE": [("20260107T000000Z", "20260107T120000Z")]})
    start, end = graph.requests[0].window()
    assert (start.isoformat(), end.isoformat()) == (
        "2026-01-05T09:00:00+00:00", "2026-01-07T12:00:00+00:00")


def test_interval_is_an_own_key(gateway_factory, graph, idp, pki):
    gateway = gateway_factory(extra=section(
        graph, idp, pki, extra="interval = 60\n"))
    answers = ask(gateway, ["erin@corp.example"],
                  ("20260105T000000Z", "20260105T120000Z"))
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260105T100000Z", "20260105T110000Z")]})
    assert graph.requests[0].body["availabilityViewInterval"] == 60


# -- per-schedule errors ------------------------------------------------------


def test_unknown_and_denied_schedules_beside_good_ones(corp, graph):
    response = post(corp, ["carol@corp.example", "nobody@corp.example",
                           "denied@corp.example", "broken@corp.example",
                           "dave@corp.example"])
    answers = schedule_response(response)
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:carol@corp.example", "2.0"),
        ("mailto:nobody@corp.example", "3.7"),
        ("mailto:denied@corp.example", "3.8"),
        ("mailto:broken@corp.example", "5.3"),
        ("mailto:dave@corp.example", "2.0")]
    assert [a[2] is None for a in answers] == [False, True, True, True,
                                               False]
    assert "corp does not know this user" in response.text
    assert "corp refused access" in response.text
    assert len(graph.requests) == 1
    assert "127.0.0.1" not in response.text


@pytest.mark.parametrize("code, message, status", [
    ("5009", "", "3.7"),
    ("5016", "", "3.7"),
    ("ErrorMailRecipientNotFound", "", "3.7"),
    ("ErrorNoFreeBusyAccess", "", "3.8"),
    ("ErrorAccessDenied", "", "3.8"),
    ("", "Access is denied. Check credentials and try again.", "3.8"),
    ("", "The user x could not be found.", "3.7"),
    ("5010", "", "5.3"),
    ("ErrorMailboxStoreUnavailable", "The mailbox database is "
     "temporarily unavailable.", "5.3"),
])
def test_schedule_error_codes(corp, graph, code, message, status):
    graph.script.append(("json", {"value": [
        {"scheduleId": "carol@corp.example", "availabilityView": None,
         "scheduleItems": None, "workingHours": None,
         "error": {"message": message, "responseCode": code}},
        {"scheduleId": "dave@corp.example", "availabilityView": "0" * 192,
         "scheduleItems": []}]}))
    answers = ask(corp, ["carol@corp.example", "dave@corp.example"])
    assert [a[1] for a in answers] == [status, "2.0"]
    assert answers[0][2] is None
    assert periods_of(answers[1][2]) == {}


# -- limits -------------------------------------------------------------------


def many(graph, count):
    """``count`` more mailboxes, each busy once in January and once in
    February."""
    names = []
    for i in range(count):
        name = "user%02d@corp.example" % i
        graph.mailboxes[name] = Mailbox([
            Event("20260110T%02d0000Z" % (i % 24),
                  "20260110T%02d3000Z" % (i % 24)),
            Event("20260215T100000Z", "20260215T110000Z", "tentative")])
        names.append(name)
    return names


def test_more_than_20_schedules_and_42_days_are_split(corp, graph):
    names = many(graph, 25)
    answers = ask(corp, names, ("20260101T000000Z", "20260220T000000Z"))
    assert [a[1] for a in answers] == ["2.0"] * 25
    for i, answer in enumerate(answers):
        assert_same_periods(periods_of(answer[2]), {
            "BUSY": [("20260110T%02d0000Z" % (i % 24),
                      "20260110T%02d3000Z" % (i % 24))],
            "BUSY-TENTATIVE": [("20260215T100000Z", "20260215T110000Z")]})
    # The emulator refuses >20 schedules and >=42 days: all calls passed.
    assert [r.status for r in graph.requests] == [200] * 4
    for call in graph.requests:
        assert len(call.schedules) <= 20
        start, end = call.window()
        assert end - start < datetime.timedelta(days=42)
    assert_windows_tile(
        [(call.schedules, call.window()) for call in graph.requests], names,
        "2026-01-01T00:00:00+00:00", "2026-02-20T00:00:00+00:00")


def test_limits_beyond_the_tenants_fail_never_free(gateway_factory, graph,
                                                   idp, pki):
    """A section that raises the limits past what the tenant takes gets
    Graph's 400s: every address of those calls fails, none is free."""
    names = many(graph, 22)
    gateway = gateway_factory(extra=section(
        graph, idp, pki, extra="max_addresses = 30\n"))
    response = post(gateway, names)
    answers = schedule_response(response)
    assert {a[1] for a in answers} == {"5.1"}
    assert all(a[2] is None for a in answers)
    assert "corp refused a request as too large" in response.text
    assert [r.status for r in graph.requests] == [400]
    gateway = gateway_factory(extra=section(
        graph, idp, pki, extra="max_window_days = 50\n"))
    answers = ask(gateway, ["dave@corp.example"],
                  ("20260101T000000Z", "20260215T000000Z"))
    assert answers[0][1] == "5.1" and answers[0][2] is None
    assert graph.requests[-1].status == 400


def test_a_tenant_with_the_servers_real_limits(gateway_factory, pki, idp,
                                               servers):
    """Graph's servers take up to 100 schedules and 62 days: a section
    with max_addresses = 100 and max_window_days = 61 makes one call."""
    graph = servers(GraphServer(pki, mailboxes(), idp=idp,
                                max_schedules=100, max_days=62))
    names = many(graph, 25)
    gateway = gateway_factory(extra=section(
        graph, idp, pki, extra="max_addresses = 100\n"
        "max_window_days = 61\n"))
    answers = ask(gateway, names, ("20260101T000000Z", "20260220T000000Z"))
    assert [a[1] for a in answers] == ["2.0"] * 25
    assert [r.status for r in graph.requests] == [200]


# -- throttling, tokens -------------------------------------------------------


@pytest.mark.parametrize("retry_after", ["1", "0.5"])
def test_429_retry_after_is_honoured(corp, graph, retry_after):
    graph.script.append(("429", retry_after))
    answers = ask(corp, ["carol@corp.example"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)
    first, second = graph.requests
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= float(retry_after) - 0.05


def test_429_beyond_the_deadline_is_remembered(corp, graph):
    graph.script.append(("429", "3600"))
    answers = ask(corp, ["carol@corp.example", "dave@corp.example"])
    assert [a[1] for a in answers] == ["5.3", "5.3"]
    assert all(a[2] is None for a in answers)
    response = post(corp, ["dave@corp.example"])
    assert schedule_response(response)[0][1] == "5.3"
    assert "corp asked for a pause" in response.text
    assert len(graph.requests) == 1


def test_a_token_expiring_between_lookups_is_replaced(
        gateway_factory, pki, servers):
    """A short expires_in: the gateway fetches the next token before
    Graph would refuse the old one."""
    idp = servers(IdentityProvider(pki, expires_in=2))
    graph = servers(GraphServer(pki, mailboxes(), idp=idp))
    gateway = gateway_factory(extra=section(graph, idp, pki))
    assert ask(gateway, ["dave@corp.example"])[0][1] == "2.0"
    time.sleep(2.5)
    assert ask(gateway, ["dave@corp.example"])[0][1] == "2.0"
    assert len(idp.token_requests) == 2
    tokens = [r.headers["Authorization"] for r in graph.requests]
    assert [r.status for r in graph.requests] == [200, 200]
    assert tokens[0] != tokens[1]


def test_a_token_refused_mid_run_is_renewed_after_the_401(corp, graph, idp):
    """Graph says the token is expired before the gateway thought it
    would (InvalidAuthenticationToken): one fresh token, the call
    repeated."""
    assert ask(corp, ["dave@corp.example"])[0][1] == "2.0"
    graph.max_token_age = 0.5
    time.sleep(1)
    answers = ask(corp, ["carol@corp.example"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)
    assert [r.status for r in graph.requests] == [200, 401, 200]
    assert len(idp.token_requests) == 2
    # A revoked token too.
    idp.revoke_all()
    assert ask(corp, ["dave@corp.example"])[0][1] == "2.0"
    assert [r.status for r in graph.requests][3:] == [401, 200]
    assert len(idp.token_requests) == 3


def test_a_static_bearer_token_asks_for_me(gateway_factory, graph, idp,
                                           pki):
    gateway = gateway_factory(extra=section(
        graph, idp, pki, mailbox="", credentials="token = delegated-token\n"
    ))
    answers = ask(gateway, ["carol@corp.example"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)
    [call] = graph.requests
    assert call.path == "/v1.0/me/calendar/getSchedule"
    assert call.headers["Authorization"] == "Bearer delegated-token"
    assert idp.token_requests == []


def test_a_static_token_with_a_mailbox_asks_for_that_user(
        gateway_factory, graph, idp, pki):
    gateway = gateway_factory(extra=section(
        graph, idp, pki, mailbox="dave@corp.example",
        credentials="auth = bearer\ntoken = delegated-token\n"))
    assert ask(gateway, ["carol@corp.example"])[0][1] == "2.0"
    assert graph.requests[0].path == \
        "/v1.0/users/dave@corp.example/calendar/getSchedule"


def test_a_refused_static_token_is_no_authority(gateway_factory, graph, idp,
                                                pki):
    gateway = gateway_factory(extra=section(
        graph, idp, pki, mailbox="", credentials="token = stale\n"))
    response = post(gateway, ["carol@corp.example", "dave@corp.example"])
    answers = schedule_response(response)
    assert [a[1] for a in answers] == ["3.8", "3.8"]
    assert "corp refused the credentials" in response.text
    assert [r.status for r in graph.requests] == [401]


def test_a_403_is_no_authority(corp, graph):
    """No admin consent, or an application access policy: Graph answers
    403 ErrorAccessDenied for the whole call."""
    graph.script.append(("status", 403))
    response = post(corp, ["carol@corp.example", "dave@corp.example"])
    answers = schedule_response(response)
    assert [a[1] for a in answers] == ["3.8", "3.8"]
    assert "corp refused access" in response.text
    assert len(graph.requests) == 1


def test_an_unknown_mailbox_fails_the_call(gateway_factory, graph, idp,
                                           pki):
    gateway = gateway_factory(extra=section(graph, idp, pki,
                                            mailbox="gone@corp.example"))
    answers = ask(gateway, ["carol@corp.example"])
    assert answers[0][1] == "5.1" and answers[0][2] is None
    assert graph.requests[0].status == 404


@pytest.mark.parametrize("change, named", [
    ("mailbox", "'mailbox'"),
    ("interval = 2\n", "'interval'"),
    ("working_hours = maybe\n", "'working_hours'"),
    ("username = a\npassword = b\nauth = basic\n", "'auth'"),
])
def test_the_section_is_checked(tmp_path, graph, idp, pki, change, named):
    text = section(graph, idp, pki)
    if change == "mailbox":
        text = section(graph, idp, pki, mailbox="")
    elif change.startswith("username"):
        text = section(graph, idp, pki, credentials=change)
    else:
        text += change
    result = check_config(tmp_path, text)
    assert result.returncode == 2, result.stderr
    assert "[provider:corp]" in result.stderr and named in result.stderr, \
        result.stderr
    assert check_config(tmp_path, section(graph, idp, pki)).returncode == 0


# -- slow and broken answers --------------------------------------------------


def test_a_slow_answer_is_5_3_and_others_still_answer(gateway_factory,
                                                      graph, idp, pki):
    gateway = gateway_factory(extra=section(graph, idp, pki, timeout=1))
    ask(gateway, ["dave@corp.example"])        # token fetched
    graph.script.append(("slow", 8))
    gateway.put(gateway.mkcalendar("bob", "work") + "1.ics",
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
                "BEGIN:VEVENT\r\nUID:b\r\nDTSTAMP:20260101T000000Z\r\n"
                "DTSTART:20260105T080000Z\r\nDTEND:20260105T083000Z\r\n"
                "END:VEVENT\r\nEND:VCALENDAR\r\n", "bob")
    started = time.monotonic()
    response = post(gateway, ["carol@corp.example", "bob@example.com"])
    answers = schedule_response(response)
    assert time.monotonic() - started < 8
    assert [a[1] for a in answers] == ["5.3", "2.0"]
    assert answers[0][2] is None
    assert "corp did not answer within 1 s" in response.text
    assert ask(gateway, ["carol@corp.example"])[0][1] == "2.0"


def entry(**fields):
    base = {"scheduleId": "carol@corp.example",
            "availabilityView": "0" * 192, "scheduleItems": [],
            "workingHours": None}
    base.update(fields)
    return ("json", {"value": [base]})


def item(status="busy", start="2026-01-05T09:00:00.0000000",
         end="2026-01-05T10:00:00.0000000", zone="UTC"):
    return {"status": status, "start": {"dateTime": start, "timeZone": zone},
            "end": {"dateTime": end, "timeZone": zone}}


@pytest.mark.parametrize("behaviour", [
    "garbage", "html", "truncated-json", ("status", 500), ("status", 502),
    ("status", 400), ("json", {"value": "nope"}), ("json", []),
    ("json", {"value": []}),
    entry(scheduleItems=[item("unknown", "2026-01-05T00:00:00",
                              "2026-01-09T00:00:00")]),
    entry(scheduleItems=[item("maybe")]),
    entry(scheduleItems=[item(start="yesterday")]),
    entry(scheduleItems=[item(zone="Mars Standard Time")]),
    entry(scheduleItems=[item(zone=None)]),
    entry(scheduleItems=["busy"]),
    entry(scheduleItems="busy"),
    entry(scheduleItems=None, availabilityView="0" * 191),
    entry(scheduleItems=None, availabilityView="0" * 100 + "9" + "0" * 91),
    entry(scheduleItems=None, availabilityView=None),
    entry(scheduleItems=None, availabilityView=""),
    entry(scheduleItems=None, availabilityView=2222),
    entry(scheduleId=None),
    entry(error={"responseCode": "ErrorInternalServerError"}),
    entry(error="oops"),
])
def test_broken_answers_are_never_free(corp, graph, behaviour):
    if behaviour == "truncated-json":
        behaviour = ("json", '{"value": [{"scheduleId": "carol@corp.exa')
    graph.script.append(behaviour)
    answers = ask(corp, ["carol@corp.example"])
    assert answers[0][1].startswith("5."), answers
    assert answers[0][2] is None
    assert len(graph.requests) == 1
    # The gateway is still fine afterwards.
    answers = ask(corp, ["carol@corp.example"])
    assert answers[0][1] == "2.0"


def test_an_unknown_item_is_no_data_never_free(corp, graph):
    """Graph's ``unknown`` over part of the window: BUSY-UNAVAILABLE
    there (the model's no data), the rest read as usual."""
    graph.script.append(entry(scheduleItems=[
        item("unknown", "2026-01-05T09:00:00", "2026-01-05T12:00:00"),
        item("busy", "2026-01-06T09:00:00", "2026-01-06T10:00:00")]))
    answers = ask(corp, ["carol@corp.example"])
    assert answers[0][1] == "2.0"
    periods = periods_of(answers[0][2])
    assert periods["BUSY-UNAVAILABLE"] == [("20260105T090000Z",
                                            "20260105T120000Z")]
    assert periods["BUSY"] == [("20260106T090000Z", "20260106T100000Z")]


def test_odd_but_valid_answers_are_read(corp, graph):
    """Capitalised statuses, offsets on dateTime, fewer fraction digits,
    and an end with an eighth of a microsecond more."""
    graph.script.append(entry(scheduleItems=[
        item("Busy", "2026-01-05T10:00:00+01:00", "2026-01-05T11:00:00Z"),
        item("Tentative", "2026-01-06T09:00:00.5", "2026-01-06T09:30:00"
             ".0000001", "Europe/Berlin"),
        item("OOF", "2026-01-07T00:00:00", "2026-01-07T01:00:00",
             "Tokyo Standard Time")]))
    answers = ask(corp, ["carol@corp.example"])
    assert answers[0][1] == "2.0"
    periods = periods_of(answers[0][2])
    assert periods["BUSY"] == [("20260105T090000Z", "20260105T110000Z")]
    # 08:00:00.5Z to 08:30:00.0000001Z: seconds in iCalendar, never less.
    assert periods["BUSY-TENTATIVE"] == [("20260106T080000Z",
                                          "20260106T083001Z")] or \
        periods["BUSY-TENTATIVE"] == [("20260106T080000Z",
                                       "20260106T083000Z")]
    assert periods["BUSY-UNAVAILABLE"] == [("20260106T150000Z",
                                            "20260106T160000Z")]


# -- working hours ------------------------------------------------------------


def test_working_hours_are_off_by_default_and_busy_unavailable_when_on(
        corp, gateway_factory, graph, idp, pki):
    window = ("20260105T000000Z", "20260106T000000Z")
    answers = ask(corp, ["dave@corp.example"], window)
    assert_same_periods(periods_of(answers[0][2]), DAVE_PERIODS)
    graph.mailboxes["frank@corp.example"] = Mailbox([], working_hours={
        "daysOfWeek": ["monday", "tuesday"],
        "startTime": "08:00:00.0000000", "endTime": "17:00:00.0000000",
        "timeZone": {"name": "Pacific Standard Time"}})
    gateway = gateway_factory(extra=section(
        graph, idp, pki, extra="working_hours = yes\n"))
    answers = ask(gateway, ["dave@corp.example", "frank@corp.example"],
                  window)
    assert [a[1] for a in answers] == ["2.0", "2.0"]
    # dave works 08:00-17:00 UTC on weekdays.
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260105T120000Z", "20260105T130000Z")],
        "BUSY-UNAVAILABLE": [("20260105T000000Z", "20260105T080000Z"),
                             ("20260105T170000Z", "20260106T000000Z")]})
    # frank works 08:00-17:00 in Los Angeles (16:00-01:00 UTC).
    assert_same_periods(periods_of(answers[1][2]), {
        "BUSY-UNAVAILABLE": [("20260105T000000Z", "20260105T160000Z")]})
    # With or without working_hours, the finder meets frank in his own
    # hours and alice in the default ones (09:00-17:00 UTC): 16:00 only.
    for asked in (corp, gateway):
        assert suggested_hours(asked, ["frank@corp.example"],
                               "2026-01-05T00:00:00",
                               "2026-01-06T00:00:00") == ["16:00"]


def test_the_example_sections_pass_check_config(tmp_path):
    example = (ROOT / "config" / "examples" / "graph.ini").read_text()
    result = check_config(tmp_path, example)
    assert result.returncode == 0, result.stderr
    delegated = "\n".join(line[2:] for line in example.splitlines()
                          if line.startswith("# ") and "=" in line and
                          "[" not in line.split("=")[0] and
                          example.index(line) > example.index(
                              "[provider:m365-delegated]"))
    result = check_config(tmp_path, "[provider:m365-delegated]\n" +
                          delegated + "\n")
    assert result.returncode == 0, result.stderr
