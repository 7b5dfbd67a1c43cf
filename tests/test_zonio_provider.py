"""The ``zonio`` provider against an emulated Zonio Freebusy API over TLS.

A real gateway process (outbox POST) with a ``[provider:zonio]`` section
trusting the test CA through ``ca_file``; tests/emulators/zonio_server.py
answers as Zonio does: one address per GET, Unix seconds, busy and
tentative intervals that overlap, 404 for unknown users, 503 when it
timed out, the shared pool throttled with 429 and the private pool
chosen by a client certificate.
"""

import time

import pytest

from conftest import ROOT, check_config
from emulators.tls import Pki
from emulators.zonio_server import PREFIX, Interval, ZonioServer
from fbcheck import assert_same_periods, periods_of, schedule_response

WINDOW = ("20260105T000000Z", "20260109T000000Z")   # Monday to Friday
#: 1767571200 and 1767916800 as Unix seconds
WINDOW_SECONDS = {"start": ["1767571200"], "end": ["1767916800"]}
CAROL = [
    Interval("20260105T090000Z", "20260105T100000Z", "busy"),
    # tentative over busy: busy wins from 09:00 to 10:00
    Interval("20260105T093000Z", "20260105T110000Z", "tentative"),
    Interval("20260106T130000Z", "20260106T140000Z", "tentative"),
    # busy inside tentative: tentative before and after it
    Interval("20260107T143000Z", "20260107T170000Z", "tentative"),
    Interval("20260107T150000Z", "20260107T160000Z", "busy"),
    # outside the window
    Interval("20260201T090000Z", "20260201T100000Z", "busy"),
]
CAROL_PERIODS = {
    "BUSY": [("20260105T090000Z", "20260105T100000Z"),
             ("20260107T150000Z", "20260107T160000Z")],
    "BUSY-TENTATIVE": [("20260105T100000Z", "20260105T110000Z"),
                       ("20260106T130000Z", "20260106T140000Z"),
                       ("20260107T143000Z", "20260107T150000Z"),
                       ("20260107T160000Z", "20260107T170000Z")]}
DAVE = [Interval("20260105T120000Z", "20260105T130000Z", "busy")]
DAVE_PERIODS = {"BUSY": [("20260105T120000Z", "20260105T130000Z")]}


def calendars(extra=0):
    """carol, dave, and ``extra`` users user00.. busy for an hour each."""
    found = {"carol@zonio.example": CAROL, "dave@zonio.example": DAVE}
    for i in range(extra):
        found["user%02d@zonio.example" % i] = [Interval(
            "20260106T%02d0000Z" % i, "20260106T%02d3000Z" % i)]
    return found


def section(zonio, pki, timeout=5, extra=""):
    return ("[provider:zonio]\ntype = zonio\ndomains = zonio.example\n"
            "url = %s\nca_file = %s\ntimeout = %s\ncache_ttl = 0\n%s"
            % (zonio.url, pki.ca_file, timeout, extra))


def certificate(pki):
    return "client_cert = %s\nclient_key = %s\n" % (pki.client_cert,
                                                    pki.client_key)


def post(gateway, attendees, window=WINDOW):
    return gateway.outbox(attendees, window)


def ask(gateway, attendees, window=WINDOW):
    return schedule_response(post(gateway, attendees, window))


@pytest.fixture
def zonio(pki, servers):
    return servers(ZonioServer(pki, calendars()))


# -- the request and the answer ----------------------------------------------


def test_busy_wins_over_tentative_and_the_request_is_zonios(
        gateway_factory, zonio, pki):
    gateway = gateway_factory(extra=section(zonio, pki))
    response = post(gateway, ["carol@zonio.example", "dave@zonio.example"])
    answers = schedule_response(response)
    assert [a[1] for a in answers] == ["2.0", "2.0"]
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)
    assert_same_periods(periods_of(answers[1][2]), DAVE_PERIODS)
    # One GET per address, the window in Unix seconds, JSON accepted.
    assert sorted(r.raw_path for r in zonio.requests) == [
        "/freebusy/carol@zonio.example", "/freebusy/dave@zonio.example"]
    for call in zonio.requests:
        assert call.query == WINDOW_SECONDS
        assert call.headers["Accept"] == "application/json"
        assert "Authorization" not in call.headers
        assert (call.pool, call.certificate) == ("shared", None)
        assert call.status == 200


def test_answers_are_clipped_to_a_window_of_odd_seconds(gateway_factory,
                                                        zonio, pki):
    gateway = gateway_factory(extra=section(zonio, pki))
    answers = ask(gateway, ["carol@zonio.example"],
                  ("20260105T091507Z", "20260105T103000Z"))
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260105T091507Z", "20260105T100000Z")],
        "BUSY-TENTATIVE": [("20260105T100000Z", "20260105T103000Z")]})
    assert zonio.requests[0].query == {"start": ["1767604507"],
                                       "end": ["1767609000"]}


def test_unknown_users_are_3_7_and_a_503_is_5_3_timed_out(
        gateway_factory, zonio, pki):
    zonio.script["dave@zonio.example"] = ["503"]
    gateway = gateway_factory(extra=section(zonio, pki))
    response = post(gateway, ["carol@zonio.example", "nobody@zonio.example",
                              "dave@zonio.example"])
    answers = schedule_response(response)
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:carol@zonio.example", "2.0"),
        ("mailto:nobody@zonio.example", "3.7"),
        ("mailto:dave@zonio.example", "5.3")]
    assert answers[1][2] is None and answers[2][2] is None
    assert "3.7;Invalid calendar user;zonio does not know this user" in \
        response.text
    assert "zonio did not answer in time" in response.text
    assert "127.0.0.1" not in response.text
    assert sorted(zonio.statuses()) == [200, 404, 503]
    # A 503 is not remembered as a pause: dave is asked again, and answers.
    assert ask(gateway, ["dave@zonio.example"])[0][1] == "2.0"


HOSTILE = ["a%2f..%2f..@zonio.example", "..%2fadmin@zonio.example",
           "x;y=1@zonio.example", "carol%40evil.example@zonio.example",
           "c&start=0@zonio.example", "127.0.0.1:1@zonio.example"]


def test_an_address_stays_one_path_segment(gateway_factory, zonio, pki):
    gateway = gateway_factory(extra=section(zonio, pki))
    answers = ask(gateway, ["mailto:" + a for a in HOSTILE] +
                  ["carol@zonio.example"])
    assert [a[1] for a in answers] == ["3.7"] * len(HOSTILE) + ["2.0"]
    for call in zonio.requests:
        # One segment under /freebusy/ that decodes to the address asked,
        # the window untouched.
        assert call.raw_path.startswith(PREFIX)
        assert "/" not in call.raw_path[len(PREFIX):]
        assert call.query == WINDOW_SECONDS
    assert sorted(r.address for r in zonio.requests) == sorted(
        HOSTILE + ["carol@zonio.example"])


# -- pools: the client certificate, throttling, parallel calls ----------------


def test_the_client_certificate_selects_the_private_pool_in_parallel(
        gateway_factory, pki, servers):
    """Six attendees through the private pool: no throttling although the
    shared pool would take two, the certificate presented on every call,
    and never more calls at once than max_parallel."""
    zonio = servers(ZonioServer(pki, calendars(6), shared_limit=2,
                                shared_period=3600, delay=1.0))
    gateway = gateway_factory(extra=section(
        zonio, pki, extra=certificate(pki) + "max_parallel = 3\n"))
    names = ["user%02d@zonio.example" % i for i in range(6)]
    answers = ask(gateway, names)
    assert [a[1] for a in answers] == ["2.0"] * 6
    for i, answer in enumerate(answers):
        assert_same_periods(periods_of(answer[2]), {"BUSY": [
            ("20260106T%02d0000Z" % i, "20260106T%02d3000Z" % i)]})
    assert len(zonio.requests) == 6
    assert {(r.pool, r.certificate, r.status) for r in zonio.requests} == {
        ("private", "freebusy-gateway", 200)}
    assert 2 <= zonio.peak <= 3


def test_the_shared_pool_throttles_and_the_pause_is_remembered(
        gateway_factory, zonio, pki):
    """Without a certificate: two calls an hour, then 429 with a
    Retry-After beyond the deadline.  The third address is 5.3, the
    fourth is not even sent, and a later lookup fails fast."""
    zonio.shared_limit, zonio.shared_period = 2, 3600
    for i in range(2):
        zonio.calendars["user%02d@zonio.example" % i] = []
    gateway = gateway_factory(extra=section(zonio, pki,
                                            extra="max_parallel = 1\n"))
    response = post(gateway, ["carol@zonio.example", "dave@zonio.example",
                              "user00@zonio.example", "user01@zonio.example"])
    answers = schedule_response(response)
    assert [a[1] for a in answers] == ["2.0", "2.0", "5.3", "5.3"]
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)
    assert "zonio is throttling requests" in response.text
    assert "zonio asked for a pause" in response.text
    assert zonio.statuses() == [200, 200, 429]
    assert {r.pool for r in zonio.requests} == {"shared"}
    response = post(gateway, ["carol@zonio.example"])
    assert schedule_response(response)[0][1] == "5.3"
    assert "zonio asked for a pause" in response.text
    assert len(zonio.requests) == 3


def test_a_short_retry_after_is_waited_for(gateway_factory, zonio, pki):
    zonio.shared_limit, zonio.shared_period = 1, 1.0
    gateway = gateway_factory(extra=section(zonio, pki,
                                            extra="max_parallel = 1\n"))
    answers = ask(gateway, ["carol@zonio.example", "dave@zonio.example"])
    assert [a[1] for a in answers] == ["2.0", "2.0"]
    assert_same_periods(periods_of(answers[1][2]), DAVE_PERIODS)
    assert zonio.statuses() == [200, 429, 200]
    assert zonio.requests[2].time - zonio.requests[1].time >= 0.95


def handshake_failed(server) -> bool:
    """Whether the emulator saw a failed TLS handshake; its thread
    records one a moment after the client gave up on it."""
    deadline = time.monotonic() + 10
    while not server.server.handshake_errors and \
            time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(server.server.handshake_errors)


def test_certificates_zonio_does_not_take_fail_never_free(
        gateway_factory, pki, servers, tmp_path):
    """A certificate of another CA fails the handshake; an endpoint that
    requires a certificate refuses a gateway without one: 5.1, and no
    request reaches Zonio."""
    other = Pki(tmp_path / "other", name="other")
    zonio = servers(ZonioServer(pki, calendars()))
    gateway = gateway_factory(extra=section(zonio, pki,
                                            extra=certificate(other)))
    answers = ask(gateway, ["carol@zonio.example"])
    assert answers[0][1] == "5.1" and answers[0][2] is None
    assert zonio.requests == [] and handshake_failed(zonio)
    private_only = servers(ZonioServer(pki, calendars(), require_cert=True))
    gateway = gateway_factory(extra=section(private_only, pki))
    assert ask(gateway, ["carol@zonio.example"])[0][1] == "5.1"
    assert private_only.requests == [] and handshake_failed(private_only)


# -- slow and broken answers --------------------------------------------------


def test_a_slow_answer_is_5_3_and_others_still_answer(gateway_factory,
                                                      zonio, pki):
    zonio.script["carol@zonio.example"] = [("slow", 8)]
    gateway = gateway_factory(extra=section(zonio, pki, timeout=1))
    response = post(gateway, ["carol@zonio.example", "dave@zonio.example"])
    answers = schedule_response(response)
    assert [a[1] for a in answers] == ["5.3", "2.0"]
    assert answers[0][2] is None
    assert "zonio did not answer within 1 s" in response.text


BROKEN = [
    "garbage",
    ("json", {"start": "2026-01-05T09:00:00Z"}),
    ("json", "<html><body>Maintenance</body></html>"),
    ("json", [{"start": "2026-01-05T09:00:00", "end": "2026-01-05T10:00:00",
               "type": "busy"}]),
    ("json", [{"start": "monday", "end": "2026-01-05T10:00:00Z",
               "type": "busy"}]),
    ("json", [{"start": "2026-01-05T10:00:00Z",
               "end": "2026-01-05T09:00:00Z", "type": "busy"}]),
    ("json", ["busy"]),
    ("status", 500),
    ("status", 400),
]


def test_broken_answers_are_never_free(gateway_factory, zonio, pki):
    """Each answer Zonio's format does not allow fails carol, never
    reads as free, and leaves dave and the next lookup alone."""
    gateway = gateway_factory(extra=section(zonio, pki))
    for behaviour in BROKEN:
        zonio.script["carol@zonio.example"] = [behaviour]
        answers = ask(gateway, ["carol@zonio.example", "dave@zonio.example"])
        assert answers[0][1].startswith("5."), (behaviour, answers)
        assert answers[0][2] is None, behaviour
        assert answers[1][1] == "2.0", behaviour
    answers = ask(gateway, ["carol@zonio.example"])
    assert_same_periods(periods_of(answers[0][2]), CAROL_PERIODS)


def test_other_types_and_offsets_are_read(gateway_factory, zonio, pki):
    """Offsets and fractions are read; a type Zonio does not document is
    no data over its span (BUSY-UNAVAILABLE), never free; an empty list
    is free."""
    zonio.script["carol@zonio.example"] = [("json", [
        {"start": "2026-01-05T10:00:00+01:00",
         "end": "2026-01-05T10:00:00.5Z", "type": "busy"},
        {"start": "2026-01-06T09:00:00Z", "end": "2026-01-06T10:00:00Z",
         "type": "away"}])]
    zonio.script["dave@zonio.example"] = [("json", [])]
    gateway = gateway_factory(extra=section(zonio, pki))
    answers = ask(gateway, ["carol@zonio.example", "dave@zonio.example"])
    assert [a[1] for a in answers] == ["2.0", "2.0"]
    periods = periods_of(answers[0][2])
    assert periods["BUSY-UNAVAILABLE"] == [("20260106T090000Z",
                                            "20260106T100000Z")]
    assert periods["BUSY"][0][0] == "20260105T090000Z"
    assert periods["BUSY"][0][1] in ("20260105T100000Z", "20260105T100001Z")
    assert periods_of(answers[1][2]) == {}


# -- the section --------------------------------------------------------------


@pytest.mark.parametrize("change, named", [
    ("username = a\npassword = b\n", "'auth'"),
    ("token = t\n", "'auth'"),
    ("client_key = {key}\n", "'client_key'"),
    ("client_cert = {cert}\nurl = http://127.0.0.1:1/freebusy\n",
     "'client_cert'"),
    ("interval = 15\n", "'interval'"),
])
def test_the_section_is_checked(tmp_path, zonio, pki, change, named):
    text = section(zonio, pki)
    if "url = " in change:
        text = text.replace("url = %s\n" % zonio.url, "")
    result = check_config(tmp_path, text + change.format(
        key=pki.client_key, cert=pki.client_cert))
    assert result.returncode == 2, result.stderr
    assert "[provider:zonio]" in result.stderr and named in result.stderr, \
        result.stderr
    assert check_config(tmp_path, section(zonio, pki) + certificate(pki)
                        ).returncode == 0


def test_the_example_sections_pass_check_config(tmp_path, pki):
    example = (ROOT / "config" / "examples" / "zonio.ini").read_text()
    result = check_config(tmp_path, example)
    assert result.returncode == 0, result.stderr
    # The commented private-pool section, with real files for its keys.
    private = "\n".join(line[2:] for line in example[example.index(
        "# [provider:"):].splitlines()) + "\n"
    private = private.replace("/etc/fbgateway/zonio-client.pem",
                              pki.client_cert).replace(
        "/etc/fbgateway/zonio-client.key", pki.client_key)
    result = check_config(tmp_path, private)
    assert result.returncode == 0, (result.stderr, private)
