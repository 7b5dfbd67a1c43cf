"""The ``google`` provider against an emulated Google Calendar API.

A real gateway process (outbox POST) with ``[provider:...]`` sections of
type ``google`` trusting the emulators' test CA through ``ca_file``.  The
identity provider (tests/emulators/token_endpoint.py) is Google's token
endpoint: it checks the service account's JWT grant as google-auth sends
it (signature against the key file's public key, ``sub``, scope).
tests/emulators/google_server.py answers ``freeBusy`` as Google does:
offsets, per-calendar errors, groups, the 50-calendar and 90-day limits,
throttling, expired tokens, slow and broken answers.

Most tests share one gateway (module scope; the emulator is reset before
each test); those about token lifetimes, remembered pauses and other
sections start their own.
"""

import datetime
import time

import pytest

from conftest import ROOT, Gateway, check_config
from emulators.google_server import Calendar, GoogleServer
from emulators.tls import Pki
from emulators.token_endpoint import (GOOGLE_AUDIENCE, IdentityProvider,
                                      service_account_key_file)
from fbcheck import (assert_same_periods, assert_windows_tile, periods_of,
                     schedule_response)

WINDOW = ("20260105T000000Z", "20260109T000000Z")   # Monday to Friday
FREEBUSY_SCOPE = "https://www.googleapis.com/auth/calendar.freebusy"
SERVICE_ACCOUNT = "freebusy@gateway-project.iam.gserviceaccount.example"
SUBJECT = "admin@gws.example"
STATIC_TOKEN = "ya29.static-token-got-elsewhere"
CAROL = [("20260105T090000Z", "20260105T100000Z"),
         ("20260105T093000Z", "20260105T110000Z"),     # overlaps: merged
         ("20260107T000000Z", "20260108T000000Z")]
CAROL_PERIODS = {"BUSY": [("20260105T090000Z", "20260105T110000Z"),
                          ("20260107T000000Z", "20260108T000000Z")]}
DAVE = [("20260106T120000Z", "20260106T130000Z")]
DAVE_PERIODS = {"BUSY": [("20260106T120000Z", "20260106T130000Z")]}


def calendars():
    return {"carol@gws.example": Calendar(CAROL),
            "dave@gws.example": Calendar(DAVE),
            "erin@gws.example": Calendar(),            # free all week
            "broken@gws.example": Calendar(error="internalError"),
            "paula@partner.example": Calendar(DAVE)}


class Setup:
    """The module's CA, token endpoint, Google and service account."""

    def __init__(self, directory):
        self.pki = Pki(directory / "pki")
        self.idp = IdentityProvider(self.pki)
        self.idp.google_scope = FREEBUSY_SCOPE
        self.google = GoogleServer(self.pki, calendars(), idp=self.idp,
                                   token=STATIC_TOKEN)
        self.google.groups["team@gws.example"] = ["carol@gws.example",
                                                  "dave@gws.example"]
        self.key_file = service_account_key_file(
            directory / "service-account.json", SERVICE_ACCOUNT,
            token_uri=self.idp.google_token_uri, register=self.idp)

    def section(self, name="gws", domains="gws.example", timeout=5,
                credentials=None, extra=""):
        if credentials is None:
            credentials = ("auth = google\nservice_account_file = %s\n"
                           "subject = %s\n" % (self.key_file, SUBJECT))
        return ("[provider:%s]\ntype = google\ndomains = %s\nurl = %s\n"
                "ca_file = %s\ntimeout = %s\ncache_ttl = 0\n%s%s\n" % (
                    name, domains, self.google.url, self.pki.ca_file,
                    timeout, credentials, extra))

    def close(self):
        self.google.close()
        self.idp.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    setup = Setup(tmp_path_factory.mktemp("google"))
    yield setup
    setup.close()


@pytest.fixture(scope="module")
def shared(setup, tmp_path_factory):
    """The module's gateway: ``gws`` (service account) for gws.example,
    ``partner`` (a static token) for partner.example."""
    gateway = Gateway(tmp_path_factory.mktemp("google-gateway"),
                      {"alice": "alice-pw"}, "example.com",
                      setup.section() + setup.section(
                          "partner", "partner.example",
                          credentials="token = %s\n" % STATIC_TOKEN), None)
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def google(setup):
    """The emulator, reset before each test; the token endpoint's
    settings restored after it."""
    setup.google.reset()
    yield setup.google
    setup.idp.google_scope = FREEBUSY_SCOPE
    setup.idp.expires_in = 3600
    setup.google.reset()


def post(gateway, attendees, window=WINDOW):
    return gateway.outbox(attendees, window)


def ask(gateway, attendees, window=WINDOW):
    return schedule_response(post(gateway, attendees, window))


# -- busy time, offsets, clipping ---------------------------------------------


def test_busy_spans_and_free_calendars_and_the_request_is_googles(
        shared, google):
    answers = ask(shared, ["carol@gws.example", "dave@gws.example",
                           "erin@gws.example"])
    assert [a[1] for a in answers] == ["2.0", "2.0", "2.0"]
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)
    assert_same_periods(periods_of(answers[1][2]), DAVE_PERIODS)
    assert periods_of(answers[2][2]) == {}          # free, and said so
    [call] = google.requests
    assert (call.path, call.status) == ("/calendar/v3/freeBusy", 200)
    assert call.body == {
        "timeMin": "2026-01-05T00:00:00Z", "timeMax": "2026-01-09T00:00:00Z",
        "timeZone": "UTC", "items": [{"id": "carol@gws.example"},
                                     {"id": "dave@gws.example"},
                                     {"id": "erin@gws.example"}]}
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["Authorization"].startswith("Bearer ")
    assert call.subject == SUBJECT          # domain-wide delegation


@pytest.mark.parametrize("zone, offset", [
    ("Australia/Adelaide", "+10:30"), ("America/St_Johns", "-03:30"),
    ("Asia/Kathmandu", "+05:45")])
def test_offsets_in_answers_are_read_as_written(shared, google, zone,
                                                offset):
    google.answer_zone = zone
    answers = ask(shared, ["carol@gws.example", "dave@gws.example"])
    assert [a[1] for a in answers] == ["2.0", "2.0"]
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)
    assert_same_periods(periods_of(answers[1][2]), DAVE_PERIODS)
    busy = google.requests[0].answer["calendars"]["carol@gws.example"]["busy"]
    assert busy[0]["start"].endswith(offset)


def test_answers_are_clipped_to_the_window(shared, google):
    answers = ask(shared, ["carol@gws.example"],
                  ("20260105T093000Z", "20260107T120000Z"))
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {"BUSY": [
        ("20260105T093000Z", "20260105T110000Z"),
        ("20260107T000000Z", "20260107T120000Z")]})
    assert google.requests[0].body["timeMin"] == "2026-01-05T09:30:00Z"
    assert google.requests[0].body["timeMax"] == "2026-01-07T12:00:00Z"


def test_odd_but_valid_answers_are_read(shared, google):
    """Fractions of any length (an end never cut shorter), lower-case
    ``t`` and ``z``, ``-00:00``, ids in another case."""
    google.script.append(("json", {"kind": "calendar#freeBusy", "calendars": {
        "Carol@GWS.example": {"busy": [
            {"start": "2026-01-05T09:00:00.000Z",
             "end": "2026-01-05T10:00:00.000000001Z"},
            {"start": "2026-01-06t10:00:00z", "end": "2026-01-06T11:00:00"
             "-00:00"},
            {"start": "2026-01-07T10:00:00+01:00",
             "end": "2026-01-07T10:30:00.5+01:00"}]}}}))
    answers = ask(shared, ["carol@gws.example"])
    assert answers[0][1] == "2.0"
    periods = periods_of(answers[0][2])["BUSY"]
    assert periods[1] == ("20260106T100000Z", "20260106T110000Z")
    # iCalendar has whole seconds: the rendering may cut the fraction
    # (gateway.vfreebusy) or round the end up; the plugin read it.
    assert periods[0] in (("20260105T090000Z", "20260105T100000Z"),
                          ("20260105T090000Z", "20260105T100001Z"))
    assert periods[2] in (("20260107T090000Z", "20260107T093000Z"),
                          ("20260107T090000Z", "20260107T093001Z"))


# -- per-calendar errors ------------------------------------------------------


def test_unknown_broken_and_group_calendars_beside_good_ones(shared, google):
    response = post(shared, ["carol@gws.example", "nobody@gws.example",
                             "broken@gws.example", "team@gws.example",
                             "dave@gws.example"])
    answers = schedule_response(response)
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:carol@gws.example", "2.0"),
        ("mailto:nobody@gws.example", "3.7"),
        ("mailto:broken@gws.example", "5.3"),
        ("mailto:team@gws.example", "5.3"),
        ("mailto:dave@gws.example", "2.0")]
    assert [a[2] is None for a in answers] == [False, True, True, True,
                                               False]
    assert "gws does not know this user" in response.text
    assert "gws gave no usable answer" in response.text
    assert_same_periods(periods_of(answers[4][2]), DAVE_PERIODS)
    [call] = google.requests
    assert call.answer["calendars"]["nobody@gws.example"]["errors"] == [
        {"domain": "global", "reason": "notFound"}]
    assert "team@gws.example" in call.answer["groups"]
    assert "127.0.0.1" not in response.text


@pytest.mark.parametrize("reason, status", [
    ("notFound", "3.7"), ("internalError", "5.3"), ("groupTooBig", "5.3"),
    ("tooManyCalendarsRequested", "5.3"), ("aReasonAddedLater", "5.3")])
def test_calendar_error_reasons(shared, google, reason, status):
    google.script.append(("json", {"calendars": {
        "carol@gws.example": {"errors": [{"domain": "global",
                                          "reason": reason}], "busy": []},
        "dave@gws.example": {"busy": []}}}))
    answers = ask(shared, ["carol@gws.example", "dave@gws.example"])
    assert [a[1] for a in answers] == [status, "2.0"]
    assert answers[0][2] is None


def test_a_calendar_missing_from_the_answer_is_no_data(shared, google):
    google.script.append(("json", {"calendars": {
        "dave@gws.example": {"busy": []}}}))
    answers = ask(shared, ["carol@gws.example", "dave@gws.example"])
    assert [a[1] for a in answers] == ["5.3", "2.0"]
    assert answers[0][2] is None


# -- limits -------------------------------------------------------------------


def many(google, count):
    """``count`` more calendars, each busy once in January and once in
    April."""
    names = []
    for i in range(count):
        name = "user%02d@gws.example" % i
        google.calendars[name] = Calendar([
            ("20260110T%02d0000Z" % (i % 24), "20260110T%02d3000Z" % (i % 24)),
            ("20260415T100000Z", "20260415T110000Z")])
        names.append(name)
    return names


def test_more_than_50_calendars_and_60_days_are_split(shared, google):
    names = many(google, 55)
    answers = ask(shared, names, ("20260101T000000Z", "20260501T000000Z"))
    assert [a[1] for a in answers] == ["2.0"] * 55
    for i, answer in enumerate(answers):
        assert_same_periods(periods_of(answer[2]), {"BUSY": [
            ("20260110T%02d0000Z" % (i % 24), "20260110T%02d3000Z" % (i % 24)),
            ("20260415T100000Z", "20260415T110000Z")]})
    # 120 days in parts of at most 60, 55 calendars in 50 + 5.
    assert google.statuses() == [200] * 4
    assert sorted(len(r.items) for r in google.requests) == [5, 5, 50, 50]
    for call in google.requests:
        start, end = call.window()
        assert end - start <= datetime.timedelta(days=60)
    assert_windows_tile(
        [(call.items, call.window()) for call in google.requests], names,
        "2026-01-01T00:00:00+00:00", "2026-05-01T00:00:00+00:00")


def test_limits_beyond_googles_fail_never_free(gateway_factory, setup,
                                              google):
    """A section raising the limits past what Google takes gets its
    400s (tooManyCalendarsRequested, timeRangeTooLong): those calls'
    attendees fail, none is free."""
    names = many(google, 52)
    gateway = gateway_factory(extra=setup.section(
        extra="max_addresses = 60\n"))
    response = post(gateway, names)
    answers = schedule_response(response)
    assert {a[1] for a in answers} == {"5.1"}
    assert all(a[2] is None for a in answers)
    assert "gws refused a request as too large" in response.text
    assert google.statuses() == [400]
    gateway = gateway_factory(extra=setup.section(
        extra="max_window_days = 100\n"))
    answers = ask(gateway, ["dave@gws.example"],
                  ("20260101T000000Z", "20260405T000000Z"))
    assert answers[0][1] == "5.1" and answers[0][2] is None
    last = google.requests[-1]
    assert last.status == 400
    assert last.answer["error"]["errors"][0]["reason"] == "timeRangeTooLong"
    assert "lower max_window_days" in gateway.log()


def test_an_empty_range_answer_fails_never_free(shared, google):
    """Google's timeRangeEmpty (the gateway never sends a reversed
    window, but the answer must still not read as free)."""
    google.script.append(("error", (400, "timeRangeEmpty", "The specified "
                                    "time range is empty.")))
    answers = ask(shared, ["carol@gws.example"])
    assert answers[0][1] == "5.1" and answers[0][2] is None


# -- throttling ---------------------------------------------------------------


@pytest.mark.parametrize("reason", ["rateLimitExceeded",
                                    "userRateLimitExceeded"])
def test_403_rate_limits_are_throttling(shared, google, reason):
    google.script.append(("403", reason))
    response = post(shared, ["carol@gws.example", "dave@gws.example"])
    answers = schedule_response(response)
    assert [a[1] for a in answers] == ["5.3", "5.3"]
    assert all(a[2] is None for a in answers)
    assert "gws is throttling requests" in response.text
    assert google.statuses() == [403]
    # No pause was named: the next lookup asks again.
    assert ask(shared, ["dave@gws.example"])[0][1] == "2.0"


def test_a_403_that_is_no_rate_limit_is_no_authority(shared, google):
    google.script.append(("error", (403, "forbidden", "Forbidden")))
    response = post(shared, ["carol@gws.example"])
    assert schedule_response(response)[0][1] == "3.8"
    assert "gws refused access" in response.text


def test_429_without_retry_after_is_throttling(shared, google):
    google.script.append(("429", None))
    answers = ask(shared, ["carol@gws.example"])
    assert answers[0][1] == "5.3" and answers[0][2] is None
    assert google.statuses() == [429]


def test_429_with_retry_after_is_retried(shared, google):
    google.script.append(("429", "1"))
    answers = ask(shared, ["carol@gws.example"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)
    first, second = google.requests
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 0.95


def test_429_beyond_the_deadline_is_remembered(gateway_factory, setup,
                                               google):
    gateway = gateway_factory(extra=setup.section())
    google.script.append(("429", "3600"))
    answers = ask(gateway, ["carol@gws.example", "dave@gws.example"])
    assert [a[1] for a in answers] == ["5.3", "5.3"]
    response = post(gateway, ["dave@gws.example"])
    assert schedule_response(response)[0][1] == "5.3"
    assert "gws asked for a pause" in response.text
    assert google.statuses() == [429]


# -- credentials --------------------------------------------------------------


def test_the_service_account_token_is_fetched_once_for_the_subject(
        gateway_factory, setup, google):
    requests_before = len(setup.idp.token_requests)
    gateway = gateway_factory(extra=setup.section())
    assert ask(gateway, ["carol@gws.example"])[0][1] == "2.0"
    assert ask(gateway, ["dave@gws.example"])[0][1] == "2.0"
    fetched = setup.idp.token_requests[requests_before:]
    assert len(fetched) == 1
    kind, claims = fetched[0]
    assert kind == "google"
    assert claims["iss"] == SERVICE_ACCOUNT
    assert claims["sub"] == SUBJECT
    assert claims["scope"] == FREEBUSY_SCOPE
    assert claims["aud"] == GOOGLE_AUDIENCE
    first, second = google.requests
    assert first.headers["Authorization"] == second.headers["Authorization"]
    assert first.subject == second.subject == SUBJECT


def test_an_expired_token_is_refreshed_once_after_the_401(
        gateway_factory, setup, google):
    """Google refuses a token the gateway still trusted: one fresh token,
    the call repeated; a fresh token refused too is final (3.8)."""
    requests_before = len(setup.idp.token_requests)
    gateway = gateway_factory(extra=setup.section())
    assert ask(gateway, ["dave@gws.example"])[0][1] == "2.0"
    google.max_token_age = 0.3
    time.sleep(0.5)
    answers = ask(gateway, ["carol@gws.example"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)
    assert google.statuses() == [200, 401, 200]
    assert google.requests[1].answer["error"]["errors"][0]["reason"] == \
        "authError"
    assert len(setup.idp.token_requests) - requests_before == 2
    google.refuse_all = True
    response = post(gateway, ["carol@gws.example"])
    assert schedule_response(response)[0][1] == "3.8"
    assert "gws refused the credentials" in response.text
    assert google.statuses()[3:] == [401, 401]
    assert len(setup.idp.token_requests) - requests_before == 3


def test_a_token_expiring_between_lookups_is_replaced(gateway_factory,
                                                      setup, google):
    """A short expires_in: the next token is fetched before Google would
    refuse the old one."""
    setup.idp.expires_in = 1
    requests_before = len(setup.idp.token_requests)
    gateway = gateway_factory(extra=setup.section())
    assert ask(gateway, ["dave@gws.example"])[0][1] == "2.0"
    time.sleep(1.1)
    assert ask(gateway, ["dave@gws.example"])[0][1] == "2.0"
    assert len(setup.idp.token_requests) - requests_before == 2
    assert google.statuses() == [200, 200]
    tokens = [r.headers["Authorization"] for r in google.requests]
    assert tokens[0] != tokens[1]


def test_a_scope_the_domain_did_not_grant_is_refused(gateway_factory, setup,
                                                     google):
    """The admin console delegated only calendar.readonly: the token
    endpoint refuses calendar.freebusy (3.8, Google never asked); the
    section's ``scope`` asks for the one granted."""
    setup.idp.google_scope = "https://www.googleapis.com/auth/" \
        "calendar.readonly"
    gateway = gateway_factory(extra=setup.section())
    response = post(gateway, ["carol@gws.example"])
    assert schedule_response(response)[0][1] == "3.8"
    assert "gws refused the credentials" in response.text
    assert google.requests == []
    gateway = gateway_factory(extra=setup.section(
        extra="scope = https://www.googleapis.com/auth/calendar.readonly\n"))
    assert ask(gateway, ["carol@gws.example"])[0][1] == "2.0"


def test_a_key_the_token_endpoint_does_not_know_is_refused(
        gateway_factory, setup, google, tmp_path):
    """A key file whose private key is not the service account's (a
    deleted or rotated key): the JWT signature does not verify."""
    other = service_account_key_file(tmp_path / "old-key.json",
                                     SERVICE_ACCOUNT,
                                     token_uri=setup.idp.google_token_uri)
    gateway = gateway_factory(extra=setup.section(credentials=(
        "auth = google\nservice_account_file = %s\nsubject = %s\n"
        % (other, SUBJECT))))
    response = post(gateway, ["carol@gws.example"])
    assert schedule_response(response)[0][1] == "3.8"
    assert google.requests == []
    assert "bad signature" in setup.idp.errors


def test_a_static_token(shared, google):
    answers = ask(shared, ["paula@partner.example"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), DAVE_PERIODS)
    [call] = google.requests
    assert call.headers["Authorization"] == "Bearer " + STATIC_TOKEN
    assert call.subject is None


def test_a_refused_static_token_is_final(gateway_factory, setup, google):
    gateway = gateway_factory(extra=setup.section(
        credentials="token = ya29.stale\n"))
    response = post(gateway, ["carol@gws.example", "dave@gws.example"])
    assert [a[1] for a in schedule_response(response)] == ["3.8", "3.8"]
    assert "gws refused the credentials" in response.text
    assert google.statuses() == [401]


# -- slow and broken answers --------------------------------------------------


def test_a_slow_answer_is_5_3(gateway_factory, setup, google):
    gateway = gateway_factory(extra=setup.section(timeout=1))
    ask(gateway, ["dave@gws.example"])              # token fetched
    google.script.append(("slow", 8))
    started = time.monotonic()
    response = post(gateway, ["carol@gws.example"])
    answers = schedule_response(response)
    assert time.monotonic() - started < 8
    assert answers[0][1] == "5.3" and answers[0][2] is None
    assert "gws did not answer within 1 s" in response.text


def entry(busy):
    return ("json", {"calendars": {"carol@gws.example": {"busy": busy}}})


def span(start="2026-01-05T09:00:00Z", end="2026-01-05T10:00:00Z"):
    return {"start": start, "end": end}


@pytest.mark.parametrize("behaviour", [
    "garbage", "html", ("json", []), ("json", {"calendars": []}),
    ("json", {"kind": "calendar#freeBusy"}),
    ("json", {"calendars": {"carol@gws.example": "busy"}}),
    ("json", {"calendars": {"carol@gws.example": {}}}),
    entry(None), entry("all day"), entry(["busy"]),
    entry([span(start="2026-01-05T09:00:00")]),          # no offset
    entry([span(start="yesterday")]),
    entry([span(end=1767607200)]),
    entry([span(start="2026-02-30T09:00:00Z")]),
    entry([span(start="2026-01-05T11:00:00Z")]),         # ends first
    ("error", (500, "backendError", "Backend Error")),
    ("error", (400, "invalid", "Invalid Value")),
    ("error", (404, "notFound", "Not Found")),
])
def test_broken_answers_are_never_free(shared, google, behaviour):
    google.script.append(behaviour)
    answers = ask(shared, ["carol@gws.example"])
    assert answers[0][1].startswith("5."), answers
    assert answers[0][2] is None
    assert len(google.requests) == 1
    assert ask(shared, ["carol@gws.example"])[0][1] == "2.0"


# -- the section --------------------------------------------------------------


@pytest.mark.parametrize("credentials, named", [
    ("auth = google\nservice_account_file = KEY\n", "'subject'"),
    ("auth = google\nsubject = a@gws.example\n", "'service_account_file'"),
    ("username = a\npassword = b\n", "'auth'"),
    ("auth = oauth2\ntenant = t\nclient_id = c\nclient_secret = s\n",
     "'auth'"),
])
def test_the_section_is_checked(tmp_path, setup, credentials, named):
    text = setup.section(credentials=credentials.replace(
        "KEY", setup.key_file))
    result = check_config(tmp_path, text)
    assert result.returncode == 2, result.stderr
    assert "[provider:gws]" in result.stderr and named in result.stderr, \
        result.stderr
    assert check_config(tmp_path, setup.section()).returncode == 0


def test_the_example_sections_pass_check_config(tmp_path, setup):
    example = (ROOT / "config" / "examples" / "google.ini").read_text()
    placeholder = "/etc/freebusy-gateway/google-service-account.json"
    assert placeholder in example
    result = check_config(tmp_path, example.replace(placeholder,
                                                    setup.key_file))
    assert result.returncode == 0, result.stderr
    static = example[example.index("# [provider:google-token]"):]
    result = check_config(tmp_path, "\n".join(
        line[2:] for line in static.splitlines() if line.startswith("# ")
        and ("=" in line or line.startswith("# [provider:"))) + "\n")
    assert result.returncode == 0, result.stderr
