"""The ``exchange2003`` provider against an emulated Exchange 2003 OWA.

Through the real gateway's outbox (tests/emulators/owa_freebusy.py is the
emulator): each fbdata digit, slots and clipping, recipients OWA leaves
out, no-data digits, the publishing horizon (OWA sends 0 past it), Basic,
NTLM and forms login, the IE User-Agent, splitting by the limits, slow and
broken answers.  Windows are relative to today, because the horizon is.
"""

import datetime

import pytest
import requests

from conftest import ROOT, check_config
from emulators.owa_freebusy import (FreeBusyStore, Mailbox, OwaFormsFreeBusy,
                                    OwaFreeBusy, OwaNtlm, month_start)
from fbcheck import assert_same_periods, periods_of, schedule_response
from icaldata import event, freebusy_request

UTC = datetime.timezone.utc
H = datetime.timedelta(hours=1)
M = datetime.timedelta(minutes=1)
NOW = datetime.datetime.now(UTC)
#: A day safely inside the published range: midnight two days ahead.
DAY = (NOW + datetime.timedelta(days=2)).replace(
    hour=0, minute=0, second=0, microsecond=0)
#: Where the emulated publisher stops (3 months from this month's start),
#: and where the gateway stops trusting it: 14 h earlier (UTC+14 has its
#: month boundary first).
HORIZON = month_start(NOW, 3)
TRUSTED = HORIZON - 14 * H
DOMAIN = "owa.example.net"
CAROL = "carol@" + DOMAIN
DAVE = "dave.jones@" + DOMAIN


def ical(moment):
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def iso(moment):
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def span(start, end):
    return (ical(start), ical(end))


def mailboxes():
    return [
        Mailbox(CAROL, "Carol Smith", events=[
            (DAY + 9 * H, DAY + 10 * H, "1"),
            (DAY + 10 * H, DAY + 11 * H + 30 * M, "2"),
            (DAY + 10 * H, DAY + 10 * H + 30 * M, "1"),   # busy wins
            (DAY + 12 * H + 40 * M, DAY + 12 * H + 50 * M, "2"),
            (DAY + 13 * H, DAY + 14 * H, "3"),
            (HORIZON - 24 * H, HORIZON - 23 * H, "2"),
            (HORIZON + 24 * H, HORIZON + 25 * H, "2")],   # unpublished
            no_data=[(DAY + 15 * H, DAY + 16 * H)]),
        # The directory spells it with capitals; OWA echoes that.
        Mailbox("Dave.Jones@" + DOMAIN, "Dave Jones", events=[
            (DAY + 8 * H, DAY + 9 * H, "2")]),
        Mailbox("erin@" + DOMAIN, "Erin", no_data=[
            (DAY - 400 * 24 * H, DAY + 400 * 24 * H)]),
    ]


CAROL_DAY = {
    "BUSY": [span(DAY + 10 * H, DAY + 11 * H + 30 * M),
             span(DAY + 12 * H + 30 * M, DAY + 13 * H)],
    "BUSY-TENTATIVE": [span(DAY + 9 * H, DAY + 10 * H)],
    "BUSY-UNAVAILABLE": [span(DAY + 13 * H, DAY + 14 * H),
                         span(DAY + 15 * H, DAY + 16 * H)]}
DAVE_DAY = {"BUSY": [span(DAY + 8 * H, DAY + 9 * H)]}


@pytest.fixture
def owa():
    started = []

    def start(**kwargs):
        server = OwaFreeBusy(mailboxes(), **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def provider(base, extra="", timeout=5, credentials="username = "
             "CORP\\fbsync\npassword = pw\n"):
    return ("[provider:corp]\ntype = exchange2003\ndomains = %s\n"
            "url = %s/public/\ntimeout = %s\ncache_ttl = 0\n%s%s"
            % (DOMAIN, base, timeout, credentials, extra))


def ask(gateway, attendees, start=DAY, end=DAY + 24 * H):
    return schedule_response(gateway.post(
        "/alice/.schedule-outbox/",
        freebusy_request(attendees, ical(start), ical(end)), "alice",
        timeout=120))


def statuses(answers):
    return [(a[0][len("mailto:"):], a[1]) for a in answers]


# -- the wire format ------------------------------------------------------


def test_each_digit_and_the_request_sent(gateway_factory, owa):
    server = owa()
    gateway = gateway_factory(extra=provider(server.base))
    answers = ask(gateway, [CAROL, DAVE])
    assert statuses(answers) == [(CAROL, "2.0"), (DAVE, "2.0")]
    assert_same_periods(periods_of(answers[0][2]), CAROL_DAY)
    assert_same_periods(periods_of(answers[1][2]), DAVE_DAY)
    assert len(server.requests) == 1        # both in one GET
    sent = server.requests[0]
    assert sent.path == "/public/"
    assert sent.get("cmd") == "freebusy"
    assert (sent.get("start"), sent.get("end")) == (
        iso(DAY), iso(DAY + 24 * H))          # UTC with Z, never naive
    assert sent.get("interval") == "15"
    assert sorted(sent.users) == ["SMTP:" + CAROL, "SMTP:" + DAVE]
    assert "MSIE" in sent.headers["User-Agent"]
    assert sent.headers["X-Freebusy-Gateway-Hops"] == "1"
    assert server.authorizations[-1].startswith("Basic ")


def test_the_emulator_gives_other_browsers_html(owa):
    """What the provider's User-Agent is for: without MSIE, OWA answers
    its HTML page, not the XML."""
    server = owa(auth=None)
    url = "%s/public/?cmd=freebusy&start=%s&end=%s&interval=15&u=SMTP:%s" % (
        server.base, iso(DAY), iso(DAY + H), CAROL)
    other = requests.get(url, headers={"User-Agent": "curl/8"}, timeout=10)
    assert other.status_code == 200 and other.text.startswith("<html>")
    ie = requests.get(url, headers={"User-Agent": "Mozilla/4.0 (compatible;"
                                    " MSIE 6.0; Windows NT 5.1)"},
                      timeout=10)
    assert 'xmlns:a="WM"' in ie.text and "<a:fbdata>0000" in ie.text


def test_a_naive_time_is_read_in_the_servers_zone(owa):
    """The time zone trap: a start without Z is Exchange's local time,
    so its digits are shifted (here by the emulated server's 5 hours)."""
    server = owa(auth=None)
    ie = {"User-Agent": "Mozilla/4.0 (compatible; MSIE 6.0)"}
    naive = requests.get("%s/public/" % server.base, headers=ie, params=[
        ("Cmd", "freebusy"), ("start", iso(DAY + 3 * H)[:-1]),
        ("endt", iso(DAY + 5 * H)[:-1]), ("interval", "60"),
        ("u", "SMTP:" + DAVE)], timeout=10)
    # 03:00 and 04:00 at UTC-5: 08:00 (busy) and 09:00 UTC.
    assert "<a:fbdata>20</a:fbdata>" in naive.text


def test_slots_and_clipping(gateway_factory, owa):
    """The window sent is widened to whole intervals; the answer is
    clipped back to the window asked for."""
    server = owa()
    gateway = gateway_factory(extra=provider(server.base))
    answers = ask(gateway, [CAROL], DAY + 9 * H + 50 * M,
                  DAY + 12 * H + 41 * M)
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [span(DAY + 10 * H, DAY + 11 * H + 30 * M),
                 span(DAY + 12 * H + 30 * M, DAY + 12 * H + 41 * M)],
        "BUSY-TENTATIVE": [span(DAY + 9 * H + 50 * M, DAY + 10 * H)]})
    sent = server.requests[0]
    assert (sent.get("start"), sent.get("end")) == (
        iso(DAY + 9 * H + 45 * M), iso(DAY + 12 * H + 45 * M))


def test_interval_key(gateway_factory, owa):
    server = owa()
    gateway = gateway_factory(extra=provider(server.base,
                                             "interval = 60\n"))
    answers = ask(gateway, [CAROL], DAY + 12 * H, DAY + 13 * H + 30 * M)
    assert answers[0][1] == "2.0"
    # 12:40-12:50 busy makes the whole hour busy at 60-minute digits.
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [span(DAY + 12 * H, DAY + 13 * H)],
        "BUSY-UNAVAILABLE": [span(DAY + 13 * H, DAY + 13 * H + 30 * M)]})
    sent = server.requests[0]
    assert sent.get("interval") == "60"
    assert (sent.get("start"), sent.get("end")) == (
        iso(DAY + 12 * H), iso(DAY + 14 * H))


def test_a_missing_recipient_is_unknown_beside_good_ones(gateway_factory,
                                                          owa):
    server = owa()
    gateway = gateway_factory(extra=provider(server.base))
    response = gateway.post("/alice/.schedule-outbox/", freebusy_request(
        ["nobody@" + DOMAIN, CAROL, DAVE], ical(DAY), ical(DAY + 24 * H)),
        "alice")
    answers = schedule_response(response)
    assert statuses(answers) == [("nobody@" + DOMAIN, "3.7"),
                                 (CAROL, "2.0"), (DAVE, "2.0")]
    assert answers[0][2] is None
    assert_same_periods(periods_of(answers[1][2]), CAROL_DAY)
    assert "corp does not know this user" in response.text
    assert "127.0.0.1" not in response.text
    assert len(server.requests[0].users) == 3


def test_unknown_users_answered_with_4s_are_no_data(gateway_factory, owa):
    """Some servers list unknown recipients with all 4s (DavMail's
    'unknown attendee'): no data, never free."""
    server = owa(unknown_users="nodata")
    gateway = gateway_factory(extra=provider(server.base))
    answers = ask(gateway, ["nobody@" + DOMAIN, CAROL])
    assert statuses(answers) == [("nobody@" + DOMAIN, "5.3"),
                                 (CAROL, "2.0")]
    assert answers[0][2] is None


def test_a_window_of_digit_4_is_no_data(gateway_factory, owa):
    server = owa()
    gateway = gateway_factory(extra=provider(server.base))
    answers = ask(gateway, ["erin@" + DOMAIN, DAVE])
    assert statuses(answers) == [("erin@" + DOMAIN, "5.3"), (DAVE, "2.0")]
    assert answers[0][2] is None


def test_a_short_fbdata_leaves_the_rest_no_data(gateway_factory, owa):
    server = owa()
    server.script = ["truncate"]
    gateway = gateway_factory(extra=provider(server.base))
    answers = ask(gateway, [DAVE])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [span(DAY + 8 * H, DAY + 9 * H)],
        "BUSY-UNAVAILABLE": [span(DAY + 12 * H, DAY + 24 * H)]})


# -- the publishing horizon -----------------------------------------------


@pytest.mark.parametrize("past_horizon", ["0", "4"])
def test_past_the_horizon_is_no_data_even_when_owa_sends_0(
        gateway_factory, owa, past_horizon):
    server = owa(past_horizon=past_horizon)
    gateway = gateway_factory(extra=provider(server.base))
    start, end = HORIZON - 48 * H, HORIZON + 48 * H
    answers = ask(gateway, [CAROL], start, end)
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [span(HORIZON - 24 * H, HORIZON - 23 * H)],
        "BUSY-UNAVAILABLE": [span(TRUSTED, end)]})
    fbdata = server.requests[0]
    assert fbdata.get("end") == iso(end)     # asked; OWA sent 0s


def test_a_window_wholly_past_the_horizon_is_no_data(gateway_factory, owa):
    server = owa()
    gateway = gateway_factory(extra=provider(server.base))
    answers = ask(gateway, [CAROL, DAVE], HORIZON + 24 * H,
                  HORIZON + 72 * H)
    assert statuses(answers) == [(CAROL, "5.3"), (DAVE, "5.3")]
    assert answers[0][2] is None and answers[1][2] is None
    # Also the last hours the publisher's zone may not have published.
    answers = ask(gateway, [DAVE], TRUSTED, HORIZON)
    assert answers[0][1] == "5.3"


def test_before_the_published_range_is_no_data(gateway_factory, owa):
    server = owa()
    gateway = gateway_factory(extra=provider(server.base))
    first = month_start(NOW)
    answers = ask(gateway, [DAVE], first - 72 * H, first - 24 * H)
    assert answers[0][1] == "5.3"


def test_publish_months_moves_the_horizon(gateway_factory, owa):
    server = owa(publish_months=1)
    gateway = gateway_factory(extra=provider(server.base,
                                             "publish_months = 1\n"))
    one = month_start(NOW, 1)
    answers = ask(gateway, [DAVE], one + 48 * H, one + 72 * H)
    assert answers[0][1] == "5.3"
    answers = ask(gateway, [DAVE], one - 14 * H - 24 * H, one)
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY-UNAVAILABLE": [span(one - 14 * H, one)]})


# -- authentication -------------------------------------------------------


def test_basic_refused_is_no_authority(gateway_factory, owa):
    server = owa(password="other")
    gateway = gateway_factory(extra=provider(server.base))
    answers = ask(gateway, [CAROL])
    assert answers[0][1] == "3.8"
    assert server.requests == []


@pytest.fixture
def ntlm_users(tmp_path, monkeypatch):
    users = tmp_path / "ntlm-users"
    users.write_text("CORP:fbsync:Secret-1\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(users))


@pytest.mark.parametrize("password,status", [("Secret-1", "2.0"),
                                             ("wrong", "3.8")])
def test_ntlm(gateway_factory, ntlm_users, password, status):
    server = OwaNtlm(FreeBusyStore(mailboxes()))
    try:
        gateway = gateway_factory(extra=provider(
            server.base, credentials="auth = ntlm\nusername = CORP\\fbsync\n"
            "password = %s\n" % password))
        answers = ask(gateway, [CAROL, DAVE])
        assert [a[1] for a in answers] == [status, status]
        if status == "2.0":
            assert_same_periods(periods_of(answers[0][2]), CAROL_DAY)
            assert server.authenticated == ["CORP\\fbsync"]
            assert "MSIE" in server.store.requests[0].headers["User-Agent"]
        else:
            assert server.store.requests == []
        legs = [leg for _, leg, _ in server.legs]
        assert legs[:3] == ["none", "negotiate", "authenticate"]
    finally:
        server.close()


FORMS = "auth = form\nusername = CORP\\fbsync\npassword = %s\n"


@pytest.mark.parametrize("expiry", ["logon redirect", "440"])
def test_forms_login_shared_and_renewed(gateway_factory, expiry):
    server = OwaFormsFreeBusy(FreeBusyStore(mailboxes()))
    if expiry == "440":
        server.timeout_status = 440
    try:
        gateway = gateway_factory(extra=provider(
            server.base, "max_addresses = 1\n", credentials=FORMS % "pw"))
        # Three recipients: three calls in parallel, one login.
        answers = ask(gateway, [CAROL, DAVE, "nobody@" + DOMAIN])
        assert statuses(answers) == [(CAROL, "2.0"), (DAVE, "2.0"),
                                     ("nobody@" + DOMAIN, "3.7")]
        assert_same_periods(periods_of(answers[0][2]), CAROL_DAY)
        assert len(server.logins) == 1
        assert server.logins[0]["destination"] == server.base + "/public/"
        assert len(server.store.requests) == 3
        server.expire_sessions()
        answers = ask(gateway, [DAVE])
        assert answers[0][1] == "2.0"
        assert_same_periods(periods_of(answers[0][2]), DAVE_DAY)
        assert len(server.logins) == 2
        assert len(server.store.requests) == 4
    finally:
        server.close()


def test_forms_login_refused(gateway_factory):
    server = OwaFormsFreeBusy(FreeBusyStore(mailboxes()))
    try:
        gateway = gateway_factory(extra=provider(
            server.base, credentials=FORMS % "nope"))
        answers = ask(gateway, [CAROL])
        assert answers[0][1] == "3.8"
        assert server.store.requests == []
    finally:
        server.close()


# -- limits ----------------------------------------------------------------


def test_many_recipients_are_split(gateway_factory, owa):
    server = owa()
    gateway = gateway_factory(extra=provider(server.base))
    others = ["u%02d@%s" % (i, DOMAIN) for i in range(58)]
    answers = ask(gateway, [CAROL, DAVE] + others)
    assert [a[1] for a in answers] == ["2.0", "2.0"] + ["3.7"] * 58
    assert sorted(len(r.users) for r in server.requests) == [10, 50]


def test_section_limits_split_recipients_and_windows(gateway_factory, owa):
    server = owa()
    gateway = gateway_factory(extra=provider(
        server.base, "max_addresses = 2\nmax_window_days = 1\n"))
    start, end = DAY - 24 * H, DAY + 48 * H
    answers = ask(gateway, [CAROL, DAVE, "erin@" + DOMAIN], start, end)
    # erin is all 4s in every part: each part fails, so erin fails.
    assert statuses(answers) == [(CAROL, "2.0"), (DAVE, "2.0"),
                                 ("erin@" + DOMAIN, "5.3")]
    assert_same_periods(periods_of(answers[0][2]), CAROL_DAY)
    # Parts of at most a day once widened to whole slots: 23.5 h each.
    assert len(server.requests) == 2 * 4
    for sent in server.requests:
        assert len(sent.users) <= 2
        length = datetime.datetime.strptime(
            sent.get("end"), "%Y-%m-%dT%H:%M:%SZ") - \
            datetime.datetime.strptime(sent.get("start"),
                                       "%Y-%m-%dT%H:%M:%SZ")
        assert length <= 24 * H


# -- slow and broken answers -------------------------------------------------


def test_a_slow_answer_times_out_and_others_still_answer(gateway_factory,
                                                         owa):
    server = owa()
    server.script = ["hang"]
    gateway = gateway_factory(extra=provider(server.base, timeout=1))
    gateway.put(gateway.mkcalendar("bob", "work") + "1.ics", event(
        "b", ical(DAY + 8 * H), ical(DAY + 9 * H)), "bob")
    answers = ask(gateway, [CAROL, "bob@example.com", DAVE])
    assert statuses(answers) == [(CAROL, "5.3"), ("bob@example.com", "2.0"),
                                 (DAVE, "5.3")]
    assert answers[0][2] is None
    answers = ask(gateway, [CAROL])           # the next call is fine
    assert answers[0][1] == "2.0"


@pytest.mark.parametrize("behaviour", ["garbage", "html", "wrong-namespace",
                                       "500"])
def test_broken_answers_are_never_free(gateway_factory, owa, behaviour):
    server = owa()
    server.script = [behaviour]
    gateway = gateway_factory(extra=provider(server.base))
    answers = ask(gateway, [CAROL, DAVE])
    assert [a[1][:2] for a in answers] == ["5.", "5."], answers
    assert answers[0][2] is None and answers[1][2] is None
    answers = ask(gateway, [CAROL])
    assert answers[0][1] == "2.0"


# -- configuration -----------------------------------------------------------


def test_the_example_section_is_valid(tmp_path):
    example = (ROOT / "config" / "examples" / "exchange2003.ini").read_text()
    result = check_config(tmp_path, example)
    assert result.returncode == 0, result.stderr


BASIC = "username = CORP\\fbsync\npassword = pw\n"


@pytest.mark.parametrize("addition,words", [
    ("interval = 0\n" + BASIC, ["interval", "between 1 and 1440"]),
    ("interval = soon\n" + BASIC, ["interval"]),
    ("publish_months = 40\n" + BASIC, ["publish_months",
                                        "between 1 and 36"]),
    ("token = t\n", ["does not take bearer"]),
    ("auth = oauth2\ntenant = t\nclient_id = c\nclient_secret = s\n",
     ["does not take oauth2"]),
])
def test_bad_keys_stop_start_up(tmp_path, addition, words):
    result = check_config(tmp_path, provider(
        "https://owa.corp.example", addition, credentials=""))
    assert result.returncode == 2
    for word in words:
        assert word in result.stderr, result.stderr
