"""The ``domino`` provider against emulated Domino Access Services.

A real gateway process (outbox POST) with a ``[provider:domino]``
section; tests/emulators/domino_server.py answers ``busytime`` as Domino
does: HTTP Basic, ``before`` (``until`` is ignored, leaving Domino's
default 30 days), "Unparseable date" for milliseconds, "Name not found",
date/time/utc objects in UTC or in the server's wall-clock time, slow
and broken answers.
"""


import pytest

from conftest import ROOT, check_config
from emulators.domino_server import PATH, DominoServer
from fbcheck import assert_same_periods, periods_of, schedule_response

WINDOW = ("20260105T000000Z", "20260109T000000Z")   # Monday to Friday
CAROL = [("20260105T090000Z", "20260105T100000Z"),
         ("20260106T130000Z", "20260106T143000Z"),
         ("20260108T230000Z", "20260109T010000Z"),   # past the window
         ("20260210T080000Z", "20260210T090000Z")]   # 36 days later
CAROL_PERIODS = {"BUSY": [("20260105T090000Z", "20260105T100000Z"),
                          ("20260106T130000Z", "20260106T143000Z"),
                          ("20260108T230000Z", "20260109T000000Z")]}
DAVE = [("20260105T120000Z", "20260105T130000Z")]
DAVE_PERIODS = {"BUSY": [("20260105T120000Z", "20260105T130000Z")]}


def people(extra=0):
    """carol, dave, and ``extra`` people user00.. busy for half an hour."""
    found = {"carol@domino.example": CAROL, "dave@domino.example": DAVE}
    for i in range(extra):
        found["user%02d@domino.example" % i] = [
            ("20260106T%02d0000Z" % i, "20260106T%02d3000Z" % i)]
    return found


def section(domino, pki, timeout=5, credentials=None, extra=""):
    if credentials is None:
        credentials = "username = %s\npassword = %s\n" % (domino.username,
                                                           domino.password)
    return ("[provider:domino]\ntype = domino\ndomains = domino.example\n"
            "url = %s\nca_file = %s\ntimeout = %s\ncache_ttl = 0\n%s%s"
            % (domino.url, pki.ca_file, timeout, credentials, extra))


def post(gateway, attendees, window=WINDOW):
    return gateway.outbox(attendees, window)


def ask(gateway, attendees, window=WINDOW):
    return schedule_response(post(gateway, attendees, window))


@pytest.fixture
def domino(pki, servers):
    return servers(DominoServer(pki, people()))


@pytest.fixture
def gateway(gateway_factory, domino, pki):
    return gateway_factory(extra=section(domino, pki))


# -- the request and the answer ----------------------------------------------


def test_busy_times_and_the_exact_request(gateway, domino):
    answers = ask(gateway, ["carol@domino.example", "dave@domino.example"])
    assert [a[1] for a in answers] == ["2.0", "2.0"]
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)
    assert_same_periods(periods_of(answers[1][2]), DAVE_PERIODS)
    # One GET per name: before (not until), no milliseconds, Basic.
    assert sorted(r.query["name"][0] for r in domino.requests) == [
        "carol@domino.example", "dave@domino.example"]
    for call in domino.requests:
        assert call.path == PATH
        assert call.status == 200
        assert set(call.query) == {"name", "since", "before"}
        assert call.query["since"] == ["2026-01-05T00:00:00Z"]
        assert call.query["before"] == ["2026-01-09T00:00:00Z"]
        assert call.headers["Authorization"] == domino.basic()
        assert call.headers["Accept"] == "application/json"


def test_a_window_longer_than_dominos_default_range(gateway, domino):
    """40 days: Domino's default range is 30, so a window sent any other
    way than since/before would leave the last days uncovered."""
    answers = ask(gateway, ["carol@domino.example"],
                  ("20260105T000000Z", "20260214T000000Z"))
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {"BUSY": [
        ("20260105T090000Z", "20260105T100000Z"),
        ("20260106T130000Z", "20260106T143000Z"),
        ("20260108T230000Z", "20260109T010000Z"),
        ("20260210T080000Z", "20260210T090000Z")]})
    assert [r.query["before"] for r in domino.requests] == [
        ["2026-02-14T00:00:00Z"]]


def test_name_not_found_is_3_7_and_other_errors_no_data(gateway, domino):
    domino.script["dave@domino.example"] = [
        ("status", 500, "Could not open the database")]
    domino.script["erin@domino.example"] = [
        ("status", 400, 'Unparseable date: "2026-01-05T00:00:00.000Z"')]
    domino.script["frank@domino.example"] = [
        ("status", 403, "The Freebusy service is disabled")]
    response = post(gateway, ["carol@domino.example", "nobody@domino.example",
                              "dave@domino.example", "erin@domino.example",
                              "frank@domino.example"])
    answers = schedule_response(response)
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:carol@domino.example", "2.0"),
        ("mailto:nobody@domino.example", "3.7"),
        ("mailto:dave@domino.example", "5.3"),
        ("mailto:erin@domino.example", "5.3"),
        ("mailto:frank@domino.example", "5.3")]
    assert [a[2] is None for a in answers] == [False, True, True, True,
                                               True]
    assert "3.7;Invalid calendar user;domino does not know this user" in \
        response.text
    assert "domino answered HTTP 500" in response.text
    assert "domino answered HTTP 400" in response.text
    assert "127.0.0.1" not in response.text
    assert sorted(domino.statuses()) == [200, 400, 400, 403, 500]


HOSTILE = ["a&since=2020-01-01T00:00:00Z@domino.example",
           "b=c&before=2030-01-01T00:00:00Z@domino.example",
           "x+y@domino.example", "%41nna@domino.example"]


def test_a_name_stays_one_query_value(gateway, domino):
    domino.people["x+y@domino.example"] = domino.people[
        "dave@domino.example"]
    answers = ask(gateway, ["mailto:" + a for a in HOSTILE])
    assert [a[1] for a in answers] == ["3.7", "3.7", "2.0", "3.7"]
    assert_same_periods(periods_of(answers[2][2]), DAVE_PERIODS)
    assert sorted(r.query["name"][0] for r in domino.requests) == sorted(
        a.lower() for a in HOSTILE)
    for call in domino.requests:
        assert call.path == PATH
        assert set(call.query) == {"name", "since", "before"}
        assert call.query["since"] == ["2026-01-05T00:00:00Z"]
        assert call.query["before"] == ["2026-01-09T00:00:00Z"]


# -- credentials --------------------------------------------------------------


def test_refused_or_missing_credentials_are_3_8(gateway_factory, domino,
                                                pki, servers):
    gateway = gateway_factory(extra=section(
        domino, pki, credentials="username = fbgateway\npassword = wrong\n"))
    response = post(gateway, ["carol@domino.example", "dave@domino.example"])
    assert [a[1] for a in schedule_response(response)] == ["3.8", "3.8"]
    assert "domino refused the credentials" in response.text
    assert domino.statuses() == [401, 401]
    gateway = gateway_factory(extra=section(domino, pki, credentials=""))
    assert ask(gateway, ["carol@domino.example"])[0][1] == "3.8"
    assert "Authorization" not in domino.requests[-1].headers
    # A server that lets anonymous callers read free/busy.
    anonymous = servers(DominoServer(pki, people(), anonymous=True))
    gateway = gateway_factory(extra=section(anonymous, pki, credentials=""))
    answers = ask(gateway, ["carol@domino.example"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)
    assert "Authorization" not in anonymous.requests[0].headers


# -- "utc": false -------------------------------------------------------------


def test_wall_clock_times_are_read_in_the_server_timezone(
        gateway_factory, domino, pki):
    domino.local_zone = "Europe/Berlin"
    gateway = gateway_factory(extra=section(
        domino, pki, extra="server_timezone = Europe/Berlin\n"))
    answers = ask(gateway, ["carol@domino.example", "dave@domino.example"])
    assert [a[1] for a in answers] == ["2.0", "2.0"]
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)
    assert_same_periods(periods_of(answers[1][2]), DAVE_PERIODS)


def test_wall_clock_times_without_a_zone_are_never_free(gateway_factory,
                                                        domino, pki):
    """Without server_timezone a local time could mean UTC-12 to UTC+14:
    each busy time is no data over all it could cover, and the answer's
    range (local 01:00 on the 5th to 01:00 on the 9th) is only sure from
    13:00 UTC on the 5th to 11:00 UTC on the 8th."""
    domino.local_zone = "Europe/Berlin"
    gateway = gateway_factory(extra=section(domino, pki))
    answers = ask(gateway, ["carol@domino.example"])
    assert answers[0][1] == "2.0"
    # carol's 10:00-11:00, 14:00-15:30 and 00:00-02:00 Berlin time.
    assert_same_periods(periods_of(answers[0][2]), {"BUSY-UNAVAILABLE": [
        ("20260105T000000Z", "20260105T230000Z"),
        ("20260106T000000Z", "20260107T033000Z"),
        ("20260108T100000Z", "20260109T000000Z")]})


# -- parallel, slow and broken answers ----------------------------------------


def test_calls_run_in_parallel_within_max_parallel(gateway_factory, pki,
                                                   servers):
    domino = servers(DominoServer(pki, people(5), delay=1.0))
    gateway = gateway_factory(extra=section(domino, pki,
                                            extra="max_parallel = 2\n"))
    names = ["user%02d@domino.example" % i for i in range(5)]
    answers = ask(gateway, names)
    assert [a[1] for a in answers] == ["2.0"] * 5
    for i, answer in enumerate(answers):
        assert_same_periods(periods_of(answer[2]), {"BUSY": [
            ("20260106T%02d0000Z" % i, "20260106T%02d3000Z" % i)]})
    assert len(domino.requests) == 5
    assert domino.peak == 2


def test_a_slow_answer_is_5_3_and_others_still_answer(gateway_factory,
                                                      domino, pki):
    domino.script["carol@domino.example"] = [("slow", 8)]
    gateway = gateway_factory(extra=section(domino, pki, timeout=1))
    response = post(gateway, ["carol@domino.example", "dave@domino.example"])
    answers = schedule_response(response)
    assert [a[1] for a in answers] == ["5.3", "2.0"]
    assert answers[0][2] is None
    assert "domino did not answer within 1 s" in response.text


def moment(date, clock, utc=True):
    return {"date": date, "time": clock, "utc": utc}


def answer(busy, start=moment("2026-01-05", "00:00:00"),
           end=moment("2026-01-09", "00:00:00")):
    return ("json", {"start": start, "end": end, "busyTimes": busy})


NINE = moment("2026-01-05", "09:00:00")
TEN = moment("2026-01-05", "10:00:00")
BROKEN = [
    "garbage",
    ("json", "<html><body>Domino Web Server</body></html>"),
    ("json", {"start": NINE, "end": TEN}),
    answer("none"),
    answer([{"start": {"date": "2026-01-05", "time": "09:00:00"},
             "end": TEN}]),
    answer([{"start": dict(NINE, utc="yes"), "end": TEN}]),
    answer([{"start": moment("05.01.2026", "09:00:00"), "end": TEN}]),
    answer([{"start": moment("2026-01-05", "9 o'clock"), "end": TEN}]),
    answer([{"start": TEN, "end": NINE}]),
    answer([NINE]),
    answer([], start=moment("2026-02-01", "00:00:00"),
           end=moment("2026-02-08", "00:00:00")),
]


def test_broken_answers_are_never_free(gateway, domino):
    """Each answer Domino's format does not allow fails carol, never
    reads as free, and leaves dave and the next lookup alone."""
    for behaviour in BROKEN:
        domino.script["carol@domino.example"] = [behaviour]
        answers = ask(gateway, ["carol@domino.example",
                                "dave@domino.example"])
        assert answers[0][1] == "5.3", (behaviour, answers)
        assert answers[0][2] is None, behaviour
        assert answers[1][1] == "2.0", behaviour
    answers = ask(gateway, ["carol@domino.example"])
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)


def test_an_answer_covering_part_of_the_window(gateway, domino):
    """Time outside the answer's start/end is no data; an answer without
    them covers what was asked; fractions of seconds are read."""
    domino.script["carol@domino.example"] = [
        answer([{"start": NINE, "end": TEN}],
               start=moment("2026-01-05", "06:00:00"),
               end=moment("2026-01-07", "00:00:00")),
        ("json", {"busyTimes": [{"start": moment("2026-01-06", "08:00"),
                                 "end": moment("2026-01-06",
                                               "08:30:00.00")}]})]
    answers = ask(gateway, ["carol@domino.example"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260105T090000Z", "20260105T100000Z")],
        "BUSY-UNAVAILABLE": [("20260105T000000Z", "20260105T060000Z"),
                             ("20260107T000000Z", "20260109T000000Z")]})
    answers = ask(gateway, ["carol@domino.example"])
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260106T080000Z", "20260106T083000Z")]})


# -- the section --------------------------------------------------------------


@pytest.mark.parametrize("change, named", [
    ("server_timezone = Mars/Olympus\n", "'server_timezone'"),
    ("server_timezone = Europe\n", "'server_timezone'"),
    ("auth = ntlm\n", "'auth'"),
    ("until = 30\n", "'until'"),
])
def test_the_section_is_checked(tmp_path, domino, pki, change, named):
    result = check_config(tmp_path, section(domino, pki) + change)
    assert result.returncode == 2, result.stderr
    assert "[provider:domino]" in result.stderr and named in result.stderr, \
        result.stderr
    assert check_config(tmp_path, section(
        domino, pki, extra="server_timezone = Europe/Berlin\n")
    ).returncode == 0


def test_the_example_section_passes_check_config(tmp_path):
    example = (ROOT / "config" / "examples" / "domino.ini").read_text()
    result = check_config(tmp_path, example)
    assert result.returncode == 0, result.stderr
