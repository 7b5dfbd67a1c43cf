"""The ``nylas`` provider against an emulated Nylas v3 free-busy API.

A real gateway process (outbox POST) with ``[provider:...]`` sections of
type ``nylas`` trusting the emulator's test CA through ``ca_file``;
tests/emulators/nylas_server.py answers ``calendars/free-busy`` as Nylas
does: always 200 with per-email entries (errors among them), Unix
seconds, the API key or a grant's access token, the 20-email limit,
Nylas's error envelope, 429 from Nylas and from the provider with and
without Retry-After, slow and broken answers.

Most tests share one gateway (module scope; the emulator is reset before
each test); those about remembered pauses and other sections start
their own.
"""

import datetime
import time

import pytest

from conftest import ROOT, Gateway, check_config
from emulators.nylas_server import NylasServer, Person, unix
from emulators.tls import Pki
from fbcheck import (assert_same_periods, assert_windows_tile, periods_of,
                     schedule_response)

WINDOW = ("20260105T000000Z", "20260109T000000Z")   # Monday to Friday
API_KEY = "nyk_v0_gateway_test_key"
GRANT = "b2c3d4e5-grant-of-the-service-mailbox"
ACCESS_TOKEN = "access-token-of-the-grant"
CAROL = [("20260104T220000Z", "20260105T010000Z", "busy"),   # clipped
         ("20260105T090000Z", "20260105T100000Z", "busy"),
         ("20260105T110000Z", "20260105T120000Z", "free"),
         ("20260106T130000Z", "20260106T143000Z", "tentative")]
CAROL_PERIODS = {
    "BUSY": [("20260105T000000Z", "20260105T010000Z"),
             ("20260105T090000Z", "20260105T100000Z")],
    "BUSY-TENTATIVE": [("20260106T130000Z", "20260106T143000Z")]}
DAVE = [("20260106T120000Z", "20260106T130000Z", "busy")]
DAVE_PERIODS = {"BUSY": [("20260106T120000Z", "20260106T130000Z")]}


def people():
    return {
        "carol@corp.example": Person(CAROL),
        "dave@corp.example": Person(DAVE),
        "erin@corp.example": Person(),               # free all week
        "denied@corp.example": Person(error="Access is denied. Check "
                                      "credentials and try again."),
        "broken@corp.example": Person(error="The free/busy data could not "
                                      "be generated."),
        "busyserver@corp.example": Person(error="Rate limit exceeded: the "
                                          "mailbox is throttled."),
        "paula@me.example": Person(DAVE)}


class Setup:
    """The module's CA and Nylas."""

    def __init__(self, directory):
        self.pki = Pki(directory / "pki")
        self.nylas = NylasServer(self.pki, people(), api_key=API_KEY,
                                 grants=[GRANT],
                                 access_tokens={ACCESS_TOKEN: GRANT})

    def section(self, name="nylas", domains="corp.example", timeout=5,
                credentials="token = %s\ngrant_id = %s\n" % (API_KEY, GRANT),
                extra=""):
        return ("[provider:%s]\ntype = nylas\ndomains = %s\nurl = %s\n"
                "ca_file = %s\ntimeout = %s\ncache_ttl = 0\n%s%s\n" % (
                    name, domains, self.nylas.url, self.pki.ca_file,
                    timeout, credentials, extra))

    def close(self):
        self.nylas.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    setup = Setup(tmp_path_factory.mktemp("nylas"))
    yield setup
    setup.close()


@pytest.fixture(scope="module")
def shared(setup, tmp_path_factory):
    """The module's gateway: ``nylas`` (API key and grant id) for
    corp.example, ``nylas-me`` (an access token, grant ``me``) for
    me.example."""
    gateway = Gateway(tmp_path_factory.mktemp("nylas-gateway"),
                      {"alice": "alice-pw"}, "example.com",
                      setup.section() + setup.section(
                          "nylas-me", "me.example",
                          credentials="token = %s\n" % ACCESS_TOKEN), None)
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def nylas(setup):
    """The emulator, reset before each test."""
    setup.nylas.reset()
    yield setup.nylas
    setup.nylas.reset()


def post(gateway, attendees, window=WINDOW):
    return gateway.outbox(attendees, window)


def ask(gateway, attendees, window=WINDOW):
    return schedule_response(post(gateway, attendees, window))


# -- time slots ---------------------------------------------------------------


def test_time_slots_and_the_request_are_nylas(shared, nylas):
    answers = ask(shared, ["carol@corp.example", "dave@corp.example",
                           "erin@corp.example"])
    assert [a[1] for a in answers] == ["2.0", "2.0", "2.0"]
    # busy kept, free left out, another status tentative, clipped.
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)
    assert_same_periods(periods_of(answers[1][2]), DAVE_PERIODS)
    assert periods_of(answers[2][2]) == {}      # empty time_slots: free
    [call] = nylas.requests
    assert call.path == "/v3/grants/%s/calendars/free-busy" % GRANT
    assert call.status == 200
    assert call.headers["Authorization"] == "Bearer " + API_KEY
    assert call.headers["Content-Type"] == "application/json"
    assert call.body == {"start_time": unix(WINDOW[0]),
                         "end_time": unix(WINDOW[1]),
                         "emails": ["carol@corp.example", "dave@corp.example",
                                    "erin@corp.example"],
                         "tentative_as_busy": True}


def test_an_access_token_asks_for_the_grant_me(shared, nylas):
    answers = ask(shared, ["paula@me.example"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), DAVE_PERIODS)
    [call] = nylas.requests
    assert call.path == "/v3/grants/me/calendars/free-busy"
    assert call.headers["Authorization"] == "Bearer " + ACCESS_TOKEN


def test_odd_but_valid_entries_are_read(shared, nylas):
    """Emails in another case, statuses capitalised, missing or unknown
    (typically busy: a slot without a status is busy, an unknown one
    tentative)."""
    start = unix("20260105T090000Z")
    nylas.script.append(("json", {"request_id": "r1", "data": [
        {"object": "free_busy", "email": "Carol@Corp.Example",
         "time_slots": [
             {"object": "time_slot", "status": "Busy",
              "start_time": start, "end_time": start + 3600},
             {"object": "time_slot", "start_time": start + 7200,
              "end_time": start + 9000},
             {"object": "time_slot", "status": "FREE",
              "start_time": start + 10800, "end_time": start + 14400},
             {"object": "time_slot", "status": "out_of_office",
              "start_time": start + 86400, "end_time": start + 90000}]}]}))
    answers = ask(shared, ["carol@corp.example"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260105T090000Z", "20260105T100000Z"),
                 ("20260105T110000Z", "20260105T113000Z")],
        "BUSY-TENTATIVE": [("20260106T090000Z", "20260106T100000Z")]})


# -- per-email errors ---------------------------------------------------------


def test_error_entries_are_kept_per_address(shared, nylas):
    response = post(shared, ["carol@corp.example", "nobody@corp.example",
                             "denied@corp.example", "broken@corp.example",
                             "busyserver@corp.example", "dave@corp.example"])
    answers = schedule_response(response)
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:carol@corp.example", "2.0"),
        ("mailto:nobody@corp.example", "3.7"),
        ("mailto:denied@corp.example", "3.8"),
        ("mailto:broken@corp.example", "5.3"),
        ("mailto:busyserver@corp.example", "5.3"),
        ("mailto:dave@corp.example", "2.0")]
    assert [a[2] is None for a in answers] == [False, True, True, True,
                                               True, False]
    assert "nylas does not know this user" in response.text
    assert "nylas refused access" in response.text
    assert "nylas is throttling requests" in response.text
    [call] = nylas.requests
    assert call.status == 200
    assert "127.0.0.1" not in response.text


@pytest.mark.parametrize("message, status", [
    ("Unable to resolve e-mail address x to an Active Directory object.",
     "3.7"),
    ("Not Found", "3.7"),
    ("The user does not exist.", "3.7"),
    ("Access is denied.", "3.8"),
    ("You do not have permission to view this calendar.", "3.8"),
    ("Too many requests", "5.3"),
    ("Backend Error", "5.3"),
    ("", "5.3"),
])
def test_error_messages(shared, nylas, message, status):
    nylas.script.append(("json", {"request_id": "r2", "data": [
        {"object": "error", "email": "carol@corp.example", "error": message},
        {"object": "free_busy", "email": "dave@corp.example",
         "time_slots": []}]}))
    answers = ask(shared, ["carol@corp.example", "dave@corp.example"])
    assert [a[1] for a in answers] == [status, "2.0"]
    assert answers[0][2] is None
    assert periods_of(answers[1][2]) == {}


def test_an_email_missing_from_the_answer_is_no_data(shared, nylas):
    nylas.script.append(("json", {"request_id": "r3", "data": [
        {"object": "free_busy", "email": "dave@corp.example",
         "time_slots": []}]}))
    answers = ask(shared, ["carol@corp.example", "dave@corp.example"])
    assert [a[1] for a in answers] == ["5.3", "2.0"]
    assert answers[0][2] is None


# -- limits -------------------------------------------------------------------


def many(nylas, count):
    """``count`` more people, each busy once in January and once in
    March."""
    names = []
    for i in range(count):
        name = "user%02d@corp.example" % i
        nylas.people[name] = Person([
            ("20260110T%02d0000Z" % (i % 24), "20260110T%02d3000Z" % (i % 24),
             "busy"),
            ("20260320T100000Z", "20260320T110000Z", "busy")])
        names.append(name)
    return names


def test_more_than_20_emails_and_61_days_are_split(shared, nylas):
    names = many(nylas, 25)
    answers = ask(shared, names, ("20260101T000000Z", "20260411T000000Z"))
    assert [a[1] for a in answers] == ["2.0"] * 25
    for i, answer in enumerate(answers):
        assert_same_periods(periods_of(answer[2]), {"BUSY": [
            ("20260110T%02d0000Z" % (i % 24), "20260110T%02d3000Z" % (i % 24)),
            ("20260320T100000Z", "20260320T110000Z")]})
    # 100 days in parts of at most 61, 25 emails in 20 + 5.
    assert nylas.statuses() == [200] * 4
    assert sorted(len(r.emails) for r in nylas.requests) == [5, 5, 20, 20]
    for call in nylas.requests:
        start, end = call.window()
        assert end - start <= datetime.timedelta(days=61)
    assert_windows_tile(
        [(call.emails, call.window()) for call in nylas.requests], names,
        "2026-01-01T00:00:00+00:00", "2026-04-11T00:00:00+00:00")


def test_limits_beyond_the_providers_fail_never_free(gateway_factory, setup,
                                                     nylas):
    """A section raising the limits past what Nylas takes for this
    grant's provider gets its 400 invalid_request: those calls'
    attendees fail, none is free."""
    names = many(nylas, 22)
    gateway = gateway_factory(extra=setup.section(
        extra="max_addresses = 30\n"))
    response = post(gateway, names)
    answers = schedule_response(response)
    assert {a[1] for a in answers} == {"5.1"}
    assert all(a[2] is None for a in answers)
    assert "nylas answered HTTP 400" in response.text
    assert nylas.statuses() == [400]
    assert nylas.requests[0].body["emails"] == names
    gateway = gateway_factory(extra=setup.section(
        extra="max_window_days = 70\n"))
    answers = ask(gateway, ["dave@corp.example"],
                  ("20260101T000000Z", "20260310T000000Z"))
    assert answers[0][1] == "5.1" and answers[0][2] is None
    assert nylas.statuses()[-1] == 400


# -- throttling ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["nylas-429", "provider-429"])
def test_429_without_retry_after_is_throttling(shared, nylas, kind):
    nylas.script.append((kind, None))
    response = post(shared, ["carol@corp.example", "dave@corp.example"])
    answers = schedule_response(response)
    assert [a[1] for a in answers] == ["5.3", "5.3"]
    assert all(a[2] is None for a in answers)
    assert "nylas is throttling requests" in response.text
    assert nylas.statuses() == [429]
    # No pause was named: the next lookup asks again.
    assert ask(shared, ["dave@corp.example"])[0][1] == "2.0"


@pytest.mark.parametrize("kind", ["nylas-429", "provider-429"])
def test_429_with_retry_after_is_retried(shared, nylas, kind):
    nylas.script.append((kind, "1"))
    answers = ask(shared, ["carol@corp.example"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)
    first, second = nylas.requests
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 0.95


@pytest.mark.parametrize("kind", ["nylas-429", "provider-429"])
def test_429_beyond_the_deadline_is_remembered(gateway_factory, setup,
                                               nylas, kind):
    gateway = gateway_factory(extra=setup.section())
    nylas.script.append((kind, "3600"))
    answers = ask(gateway, ["carol@corp.example", "dave@corp.example"])
    assert [a[1] for a in answers] == ["5.3", "5.3"]
    response = post(gateway, ["dave@corp.example"])
    assert schedule_response(response)[0][1] == "5.3"
    assert "nylas asked for a pause" in response.text
    assert nylas.statuses() == [429]


# -- credentials and whole-call errors ----------------------------------------


def test_a_refused_api_key_is_final(gateway_factory, setup, nylas):
    gateway = gateway_factory(extra=setup.section(
        credentials="token = nyk_v0_revoked\ngrant_id = %s\n" % GRANT))
    response = post(gateway, ["carol@corp.example", "dave@corp.example"])
    assert [a[1] for a in schedule_response(response)] == ["3.8", "3.8"]
    assert "nylas refused the credentials" in response.text
    assert nylas.statuses() == [401]
    assert nylas.requests[0].headers["Authorization"] == \
        "Bearer nyk_v0_revoked"


def test_an_api_key_without_a_grant_id_fails_the_call(gateway_factory,
                                                      setup, nylas):
    """``me`` names the grant of an access token; an API key needs the
    grant's id: Nylas answers 404 and the log says which key to fix."""
    gateway = gateway_factory(extra=setup.section(
        credentials="token = %s\n" % API_KEY))
    answers = ask(gateway, ["carol@corp.example"])
    assert answers[0][1] == "5.1" and answers[0][2] is None
    assert nylas.requests[0].path == "/v3/grants/me/calendars/free-busy"
    assert nylas.statuses() == [404]
    assert "grant_id" in gateway.log()


@pytest.mark.parametrize("error, status", [
    ((400, "token.unauthorized_access", "Invalid API key."), "3.8"),
    ((403, "api.forbidden", "Forbidden"), "3.8"),
    ((400, "api.invalid_request_error", "Bad request"), "5.1"),
    ((500, "api.internal_error", "Internal error, contact administrator."),
     "5.1"),
    ((504, "api.provider_error", "Provider error message."), "5.1"),
])
def test_whole_call_errors(shared, nylas, error, status):
    nylas.script.append(("error", error))
    answers = ask(shared, ["carol@corp.example", "dave@corp.example"])
    assert [a[1] for a in answers] == [status, status]
    assert all(a[2] is None for a in answers)
    assert len(nylas.requests) == 1


# -- slow and broken answers --------------------------------------------------


def test_a_slow_answer_is_5_3(gateway_factory, setup, nylas):
    gateway = gateway_factory(extra=setup.section(timeout=1))
    nylas.script.append(("slow", 8))
    started = time.monotonic()
    response = post(gateway, ["carol@corp.example"])
    answers = schedule_response(response)
    assert time.monotonic() - started < 8
    assert answers[0][1] == "5.3" and answers[0][2] is None
    assert "nylas did not answer within 1 s" in response.text


def entry(**fields):
    base = {"object": "free_busy", "email": "carol@corp.example",
            "time_slots": []}
    base.update(fields)
    return ("json", {"request_id": "r4", "data": [base]})


def slot(**fields):
    base = {"object": "time_slot", "status": "busy",
            "start_time": unix("20260105T090000Z"),
            "end_time": unix("20260105T100000Z")}
    base.update(fields)
    return base


@pytest.mark.parametrize("behaviour", [
    "garbage", ("json", []), ("json", {"data": {}}),
    ("json", {"request_id": "r5"}), ("json", {"data": None}),
    entry(time_slots=None), entry(time_slots="busy"), entry(object="busy"),
    entry(time_slots=["busy"]),
    entry(time_slots=[slot(start_time="1767603600")]),
    entry(time_slots=[slot(start_time=True)]),
    entry(time_slots=[slot(end_time=None)]),
    entry(time_slots=[slot(start_time=10 ** 20)]),
    entry(time_slots=[slot(start_time=unix("20260105T110000Z"))]),
    ("json", {"request_id": "r6", "data": ["carol@corp.example"]}),
])
def test_broken_answers_are_never_free(shared, nylas, behaviour):
    nylas.script.append(behaviour)
    answers = ask(shared, ["carol@corp.example"])
    assert answers[0][1].startswith("5."), answers
    assert answers[0][2] is None
    assert len(nylas.requests) == 1
    assert ask(shared, ["carol@corp.example"])[0][1] == "2.0"


# -- the section --------------------------------------------------------------


@pytest.mark.parametrize("credentials, named", [
    ("token = k\ngrant_id = a/b\n", "'grant_id'"),
    ("token = k\ngrant_id = \n", "'grant_id'"),
    ("username = a\npassword = b\n", "'auth'"),
    ("auth = oauth2\ntenant = t\nclient_id = c\nclient_secret = s\n",
     "'auth'"),
])
def test_the_section_is_checked(tmp_path, setup, credentials, named):
    result = check_config(tmp_path, setup.section(credentials=credentials))
    assert result.returncode == 2, result.stderr
    assert "[provider:nylas]" in result.stderr and named in result.stderr, \
        result.stderr
    assert check_config(tmp_path, setup.section()).returncode == 0


def test_the_example_sections_pass_check_config(tmp_path):
    example = (ROOT / "config" / "examples" / "nylas.ini").read_text()
    result = check_config(tmp_path, example)
    assert result.returncode == 0, result.stderr
    google = example[example.index("# [provider:nylas-google]"):]
    result = check_config(tmp_path, "\n".join(
        line[2:] for line in google.splitlines() if line.startswith("# ")
        and ("=" in line or line.startswith("# [provider:"))) + "\n")
    assert result.returncode == 0, result.stderr
