"""The ``ews`` provider against an emulated Exchange availability service.

Through a real gateway process's outbox against tests/emulators/
ews_server.py: busy types and views, merged digits with no data, naive
and offset times, clipping, per-mailbox errors, the 100-mailbox and
42-day limits (the gateway's split and the plugin's own when Exchange
refuses), ErrorServerBusy back-off, Basic, NTLM, OAuth2 with
impersonation, slow and broken answers, working hours, bad sections.
"""

import base64
import datetime
import subprocess
import sys
import time
import zoneinfo

import pytest
import requests

from conftest import ROOT
from emulators.ews_server import EwsServer, Mailbox, utc
from emulators.tls import Pki
from emulators.token_endpoint import IdentityProvider
from fbcheck import (assert_same_periods, periods_of, schedule_response,
                     suggested_hours)

WINDOW = ("20260105T000000Z", "20260109T000000Z")
USERS = {"fbsync": "Secret-1"}


def carol():
    return Mailbox(events=[
        (utc("20260105T090000Z"), utc("20260105T100000Z"), "Busy"),
        (utc("20260105T110000Z"), utc("20260105T120000Z"), "Free"),
        (utc("20260105T150500Z"), utc("20260105T152000Z"), "Busy"),
        (utc("20260106T130000Z"), utc("20260106T143000Z"), "Tentative"),
        (utc("20260107T000000Z"), utc("20260108T000000Z"), "OOF"),
        (utc("20260108T090000Z"), utc("20260108T170000Z"),
         "WorkingElsewhere")])


#: carol's busy time read from events (exact times).
CAROL = {"BUSY": [("20260105T090000Z", "20260105T100000Z"),
                  ("20260105T150500Z", "20260105T152000Z")],
         "BUSY-TENTATIVE": [("20260106T130000Z", "20260106T143000Z")],
         "BUSY-UNAVAILABLE": [("20260107T000000Z", "20260108T000000Z")]}


def mailboxes():
    return {"carol@corp.example": carol(),
            "dave@corp.example": Mailbox(events=[
                (utc("20260105T120000Z"), utc("20260105T130000Z"),
                 "Busy")]),
            "erin@corp.example": Mailbox()}


@pytest.fixture
def ews(servers):
    def start(boxes=None, **kwargs):
        kwargs.setdefault("users", dict(USERS))
        return servers(EwsServer(mailboxes() if boxes is None else boxes,
                                 **kwargs))
    return start


def section(server, extra="", timeout=5, cache_ttl=0, credentials=None):
    return ("[provider:corp]\ntype = ews\ndomains = corp.example\n"
            "url = %s\ntimeout = %s\ncache_ttl = %s\n%s%s" % (
                server.url, timeout, cache_ttl,
                "username = fbsync\npassword = Secret-1\n"
                if credentials is None else credentials, extra))


def ask(gateway, attendees, window=WINDOW):
    return schedule_response(post(gateway, attendees, window))


def post(gateway, attendees, window=WINDOW):
    return gateway.outbox(attendees, window)


# -- what Exchange says, read right -------------------------------------------


@pytest.mark.parametrize("view", ["default", "DetailedMerged", "FreeBusy"])
def test_busy_types_from_events(gateway_factory, ews, view):
    """Busy, Tentative, OOF from events at their exact times; Free and
    WorkingElsewhere are free (even where the merged digits say 4);
    subjects never reach the answer; mailboxes matched by position."""
    server = ews()
    gateway = gateway_factory(extra=section(
        server, "" if view == "default" else "view = %s\n" % view))
    response = post(gateway, ["carol@corp.example", "dave@corp.example",
                              "erin@corp.example"])
    answers = schedule_response(response)
    assert [a[1] for a in answers] == ["2.0", "2.0", "2.0"]
    assert_same_periods(periods_of(answers[0][2]), CAROL)
    assert_same_periods(periods_of(answers[1][2]), {
        "BUSY": [("20260105T120000Z", "20260105T130000Z")]})
    assert periods_of(answers[2][2]) == {}          # free, and said so
    assert "Secret" not in response.text
    call, = server.calls
    assert call.view == ("FreeBusyMerged" if view == "default" else view)
    assert call.mailboxes == ["carol@corp.example", "dave@corp.example",
                              "erin@corp.example"]
    assert call.interval == 15 and call.bias == 0
    assert call.version == "Exchange2013"
    assert (call.start, call.end) == (utc(WINDOW[0]), utc(WINDOW[1]))


def test_merged_only_digits(gateway_factory, ews):
    """MergedOnly: whole 15-minute intervals; WorkingElsewhere written as
    4 cannot be told from no data there, so it is BUSY-UNAVAILABLE."""
    server = ews()
    gateway = gateway_factory(extra=section(server, "view = MergedOnly\n"))
    answers = ask(gateway, ["carol@corp.example"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260105T090000Z", "20260105T100000Z"),
                 ("20260105T150000Z", "20260105T153000Z")],
        "BUSY-TENTATIVE": [("20260106T130000Z", "20260106T143000Z")],
        "BUSY-UNAVAILABLE": [("20260107T000000Z", "20260108T000000Z"),
                             ("20260108T090000Z", "20260108T170000Z")]})


@pytest.mark.parametrize("view", ["default", "MergedOnly", "FreeBusy"])
def test_no_data_is_never_free(gateway_factory, ews, view):
    """Digit 4 (and NoData events) is BUSY-UNAVAILABLE beside real busy
    time; a mailbox with no data for the whole window is 5.3."""
    boxes = mailboxes()
    boxes["frank@corp.example"] = Mailbox(
        events=[(utc("20260105T090000Z"), utc("20260105T100000Z"), "Busy")],
        no_data=[(utc("20260106T000000Z"), utc("20260107T000000Z"))])
    boxes["gina@corp.example"] = Mailbox(
        no_data=[(utc("20260101T000000Z"), utc("20260201T000000Z"))])
    server = ews(boxes)
    gateway = gateway_factory(extra=section(
        server, "" if view == "default" else "view = %s\n" % view))
    answers = ask(gateway, ["frank@corp.example", "gina@corp.example",
                            "erin@corp.example"])
    assert [a[1] for a in answers] == ["2.0", "5.3", "2.0"]
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260105T090000Z", "20260105T100000Z")],
        "BUSY-UNAVAILABLE": [("20260106T000000Z", "20260107T000000Z")]})
    assert answers[1][2] is None
    assert periods_of(answers[2][2]) == {}


def test_a_view_with_no_data_of_its_own_is_5_3(gateway_factory, ews):
    """A mailbox that grants only a lower view answers with what it
    grants; a FreeBusyViewType None with Success is no data."""
    boxes = mailboxes()
    boxes["carol@corp.example"].max_view = "MergedOnly"
    server = ews(boxes)
    gateway = gateway_factory(extra=section(server))
    answers = ask(gateway, ["carol@corp.example"])
    assert answers[0][1] == "2.0"
    assert "BUSY" in periods_of(answers[0][2])
    # The interval of the 15:05-15:20 event: digits, not the event.
    assert ("20260105T150000Z", "20260105T153000Z") in \
        periods_of(answers[0][2])["BUSY"]


def test_empty_event_array_is_free(gateway_factory, ews):
    server = ews(empty_event_array=True)
    gateway = gateway_factory(extra=section(server, "view = FreeBusy\n"))
    answers = ask(gateway, ["erin@corp.example", "dave@corp.example"])
    assert [a[1] for a in answers] == ["2.0", "2.0"]
    assert periods_of(answers[0][2]) == {}


@pytest.mark.parametrize("zone", [None, "America/New_York", "Asia/Kolkata"])
def test_naive_and_offset_times_and_clipping(gateway_factory, ews, zone):
    """Naive times are in the request's zone (UTC as sent; the gateway
    process runs in Auckland time to catch local-time readings), times
    with an offset are read as written; events reaching past the window
    are clipped to it."""
    boxes = {"hank@corp.example": Mailbox(events=[
        (utc("20260104T220000Z"), utc("20260105T020000Z"), "Busy"),
        (utc("20260106T103000Z"), utc("20260106T114500Z"), "Tentative"),
        (utc("20260108T230000Z"), utc("20260109T030000Z"), "OOF")])}
    server = ews(boxes, time_zone=zoneinfo.ZoneInfo(zone) if zone else None)
    gateway = gateway_factory(extra=section(server),
                              env={"TZ": "Pacific/Auckland"})
    answers = ask(gateway, ["hank@corp.example"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260105T000000Z", "20260105T020000Z")],
        "BUSY-TENTATIVE": [("20260106T103000Z", "20260106T114500Z")],
        "BUSY-UNAVAILABLE": [("20260108T230000Z", "20260109T000000Z")]})


def test_per_mailbox_errors_stay_with_their_mailbox(gateway_factory, ews):
    boxes = mailboxes()
    boxes["ivan@corp.example"] = Mailbox(error="ErrorNoFreeBusyAccess")
    boxes["jane@corp.example"] = Mailbox(
        error="ErrorFreeBusyGenerationFailed")
    server = ews(boxes)
    gateway = gateway_factory(extra=section(server))
    response = post(gateway, ["nobody@corp.example", "ivan@corp.example",
                              "jane@corp.example", "dave@corp.example"])
    answers = schedule_response(response)
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:nobody@corp.example", "3.7"),
        ("mailto:ivan@corp.example", "3.8"),
        ("mailto:jane@corp.example", "5.3"),
        ("mailto:dave@corp.example", "2.0")]
    assert_same_periods(periods_of(answers[3][2]), {
        "BUSY": [("20260105T120000Z", "20260105T130000Z")]})
    assert len(server.calls) == 1
    assert "127.0.0.1" not in response.text


# -- limits -----------------------------------------------------------------


def many_mailboxes(count):
    """user0..: each busy one distinct hour, so a mix-up shows."""
    start = utc("20260105T000000Z")
    return {"user%d@corp.example" % i: Mailbox(events=[
        (start + datetime.timedelta(hours=i),
         start + datetime.timedelta(hours=i, minutes=30), "Busy")])
        for i in range(count)}


def hour_of(i):
    start = utc("20260105T000000Z") + datetime.timedelta(hours=i)
    return (start.strftime("%Y%m%dT%H%M%SZ"),
            (start + datetime.timedelta(minutes=30)).strftime(
                "%Y%m%dT%H%M%SZ"))


def test_more_than_100_mailboxes_are_split(gateway_factory, ews):
    server = ews(many_mailboxes(150))
    gateway = gateway_factory(extra="max_attendees = 300\n" + section(
        server, timeout=20))
    attendees = ["user%d@corp.example" % i for i in range(150)]
    answers = ask(gateway, attendees, ("20260105T000000Z",
                                       "20260112T000000Z"))
    assert len(server.calls) == 2
    assert all(c.outcome == "ok" and len(c.mailboxes) <= 100
               for c in server.calls)
    assert sorted(a for c in server.calls for a in c.mailboxes) == \
        sorted(attendees)
    for i, answer in enumerate(answers):
        assert answer[1] == "2.0", answer
        assert_same_periods(periods_of(answer[2]), {"BUSY": [hour_of(i)]})


def test_windows_longer_than_42_days_are_split(gateway_factory, ews):
    boxes = {"kate@corp.example": Mailbox(events=[
        (utc("20260110T090000Z"), utc("20260110T100000Z"), "Busy"),
        (utc("20260220T090000Z"), utc("20260220T100000Z"), "Busy"),
        (utc("20260325T090000Z"), utc("20260325T100000Z"), "OOF")])}
    server = ews(boxes)
    gateway = gateway_factory(extra=section(server))
    answers = ask(gateway, ["kate@corp.example"],
                  ("20260101T000000Z", "20260401T000000Z"))
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260110T090000Z", "20260110T100000Z"),
                 ("20260220T090000Z", "20260220T100000Z")],
        "BUSY-UNAVAILABLE": [("20260325T090000Z", "20260325T100000Z")]})
    assert len(server.calls) == 3
    assert all(c.outcome == "ok" and c.days <= 42 for c in server.calls)
    assert min(c.start for c in server.calls) <= utc("20260101T000000Z")
    assert max(c.end for c in server.calls) >= utc("20260401T000000Z")


@pytest.mark.parametrize("style", ["fault", "response"])
def test_limits_exchange_enforces_below_the_configured_ones(
        gateway_factory, ews, style):
    """The section allows 62 days and 150 mailboxes (Exchange Online's
    window), the server 42 and 100: the plugin halves what was refused
    and asks again, and keeps the smaller limits for the next lookup."""
    boxes = many_mailboxes(120)
    boxes["user0@corp.example"].events.append(
        (utc("20260225T090000Z"), utc("20260225T100000Z"), "Tentative"))
    server = ews(boxes, too_big_style=style)
    gateway = gateway_factory(extra="max_attendees = 300\n" + section(
        server, "max_window_days = 62\nmax_addresses = 150\n", timeout=20))
    attendees = ["user%d@corp.example" % i for i in range(120)]
    window = ("20260105T000000Z", "20260305T000000Z")     # 59 days
    answers = ask(gateway, attendees, window)
    refused = [c for c in server.calls if c.outcome != "ok"]
    assert {c.outcome for c in refused} == {
        "ErrorMailboxDataArrayTooBig", "ErrorTimeIntervalTooBig"} or \
        refused[0].outcome == "ErrorMailboxDataArrayTooBig"
    assert all(len(c.mailboxes) <= 100 and c.days <= 42
               for c in server.answered())
    for i, answer in enumerate(answers):
        assert answer[1] == "2.0", answer
        expected = {"BUSY": [hour_of(i)]}
        if i == 0:
            expected["BUSY-TENTATIVE"] = [("20260225T090000Z",
                                           "20260225T100000Z")]
        assert_same_periods(periods_of(answer[2]), expected)
    # Each address and moment asked for exactly once by the answered calls.
    for address in attendees:
        spans = sorted((c.start, c.end) for c in server.answered()
                       if address in c.mailboxes)
        assert spans[0][0] <= utc(window[0]) and \
            spans[-1][1] >= utc(window[1])
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    # Learnt: the next lookup is not refused again.
    before = len(server.calls)
    answers = ask(gateway, attendees, window)
    assert all(a[1] == "2.0" for a in answers)
    assert all(c.outcome == "ok" for c in server.calls[before:])


# -- throttling, slowness, broken answers -----------------------------------


def test_server_busy_back_off_is_remembered(gateway_factory, ews):
    server = ews()
    server.script = [("busy", 300000)]
    gateway = gateway_factory(extra=section(server))
    response = post(gateway, ["carol@corp.example"])
    answers = schedule_response(response)
    assert answers[0][1] == "5.3" and answers[0][2] is None
    assert "corp is throttling requests" in response.text
    assert len(server.calls) == 1
    # The pause is remembered: nothing is sent until it is over.
    gateway.mkcalendar("bob", "work")
    response = post(gateway, ["dave@corp.example", "bob@example.com"])
    answers = schedule_response(response)
    assert [a[1] for a in answers] == ["5.3", "2.0"]
    assert "corp asked for a pause" in response.text
    assert len(server.calls) == 1


def test_a_short_back_off_is_waited_out_once(gateway_factory, ews):
    server = ews()
    server.script = [("busy", 700)]
    gateway = gateway_factory(extra=section(server))
    answers = ask(gateway, ["carol@corp.example"])
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), CAROL)
    first, second = server.calls
    assert first.outcome == "busy" and second.outcome == "ok"
    assert second.time - first.time >= 0.6


def test_busy_twice_fails_without_a_third_call(gateway_factory, ews):
    server = ews()
    server.script = [("busy", 200), ("busy", 200), ("busy", 200)]
    gateway = gateway_factory(extra=section(server))
    answers = ask(gateway, ["carol@corp.example"])
    assert answers[0][1] == "5.3"
    assert len(server.calls) == 2


def test_slow_answer_past_the_deadline(gateway_factory, ews):
    server = ews()
    server.script = [("slow", 4)]
    gateway = gateway_factory(extra=section(server, timeout=1))
    gateway.put(gateway.mkcalendar("bob", "work") + "1.ics",
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
                "BEGIN:VEVENT\r\nUID:b\r\nDTSTAMP:20260101T000000Z\r\n"
                "DTSTART:20260105T080000Z\r\nDTEND:20260105T083000Z\r\n"
                "END:VEVENT\r\nEND:VCALENDAR\r\n", "bob")
    response = post(gateway, ["carol@corp.example", "bob@example.com"])
    answers = schedule_response(response)
    assert [a[1] for a in answers] == ["5.3", "2.0"]
    assert answers[0][2] is None
    assert "corp did not answer" in response.text


@pytest.mark.parametrize("behaviour", [
    "garbage", "html", "html500", "truncated", "short", "notsoap",
    "doctype", ("fault", "ErrorInternalServerError")])
def test_broken_answers_are_never_free(gateway_factory, ews, behaviour):
    server = ews()
    server.script = [behaviour]
    gateway = gateway_factory(extra=section(server))
    answers = ask(gateway, ["carol@corp.example", "erin@corp.example"])
    for answer in answers:
        assert answer[1].startswith("5."), (behaviour, answer)
        assert answer[2] is None
    # Nothing of it was cached or kept: the next lookup is answered.
    answers = ask(gateway, ["carol@corp.example", "erin@corp.example"])
    assert [a[1] for a in answers] == ["2.0", "2.0"]


# -- credentials --------------------------------------------------------------


def test_basic_credentials(gateway_factory, ews):
    server = ews()
    gateway = gateway_factory(extra=section(server))
    assert ask(gateway, ["dave@corp.example"])[0][1] == "2.0"
    assert server.calls[0].user == "fbsync"
    assert server.calls[0].impersonated is None
    server.users["fbsync"] = "rotated"
    response = post(gateway, ["carol@corp.example"])
    assert schedule_response(response)[0][1] == "3.8"
    assert "corp refused the credentials" in response.text
    assert len(server.calls) == 1


@pytest.fixture
def ntlm_users(tmp_path, monkeypatch):
    users = tmp_path / "ntlm-users"
    users.write_text("CORP:fbsync:Secret-1\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(users))


def test_ntlm_credentials(gateway_factory, ews, ntlm_users):
    server = ews(auth="ntlm")
    gateway = gateway_factory(extra=section(
        server, credentials="auth = ntlm\nusername = CORP\\fbsync\n"
        "password = Secret-1\n"))
    answers = ask(gateway, ["carol@corp.example", "dave@corp.example"])
    assert [a[1] for a in answers] == ["2.0", "2.0"]
    assert_same_periods(periods_of(answers[0][2]), CAROL)
    assert [c.user for c in server.calls] == ["CORP\\fbsync"]
    assert [scheme for _, scheme, _ in server.requests] == [
        "", "NTLM", "NTLM"]
    wrong = gateway_factory(extra=section(
        server, credentials="auth = ntlm\nusername = CORP\\fbsync\n"
        "password = wrong\n"))
    response = post(wrong, ["carol@corp.example"])
    assert schedule_response(response)[0][1] == "3.8"
    assert len(server.calls) == 1


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


def online(servers, pki, expires_in=3600):
    idp = servers(IdentityProvider(
        pki, scope="https://outlook.office365.com/.default",
        expires_in=expires_in))
    server = servers(EwsServer(mailboxes(), auth="bearer", idp=idp,
                               impersonable=["erin@corp.example"],
                               tls_context=pki.server_context()))
    return idp, server


def oauth2(idp, pki, mailbox="erin@corp.example"):
    return ("auth = oauth2\nauthority = %s\ntenant = %s\nclient_id = %s\n"
            "client_secret = %s\nca_file = %s\n%s" % (
                idp.authority, idp.tenant, idp.client_id, idp.client_secret,
                pki.ca_file, "mailbox = %s\n" % mailbox if mailbox else ""))


def test_oauth2_impersonates_the_mailbox(gateway_factory, servers, pki):
    idp, server = online(servers, pki)
    gateway = gateway_factory(extra=section(
        server, credentials=oauth2(idp, pki)))
    for _ in range(2):
        answers = ask(gateway, ["carol@corp.example", "dave@corp.example"])
        assert [a[1] for a in answers] == ["2.0", "2.0"]
        assert_same_periods(periods_of(answers[0][2]), CAROL)
    assert len(idp.token_requests) == 1
    assert idp.token_requests[0][1]["scope"] == \
        "https://outlook.office365.com/.default"
    for call in server.calls:
        assert call.impersonated == "erin@corp.example"
        assert call.anchor == "erin@corp.example"
        assert call.outcome == "ok"
    # The token expires on the server's side during the run: renewed.
    idp.revoke_all()
    answers = ask(gateway, ["carol@corp.example"])
    assert answers[0][1] == "2.0"
    assert len(idp.token_requests) == 2
    assert [s for _, _, s in server.requests][-2:] == [401, 200]


def test_oauth2_token_lifetime_runs_out(gateway_factory, servers, pki):
    """A short-lived token is replaced before it expires, without a 401."""
    idp, server = online(servers, pki, expires_in=2)
    gateway = gateway_factory(extra=section(
        server, credentials=oauth2(idp, pki)))
    assert ask(gateway, ["carol@corp.example"])[0][1] == "2.0"
    time.sleep(2.2)
    assert ask(gateway, ["dave@corp.example"])[0][1] == "2.0"
    assert len(idp.token_requests) == 2
    assert 401 not in [s for _, _, s in server.requests]


def test_oauth2_impersonation_refused(gateway_factory, servers, pki):
    idp, server = online(servers, pki)
    gateway = gateway_factory(extra=section(
        server, credentials=oauth2(idp, pki, mailbox="dave@corp.example")))
    response = post(gateway, ["carol@corp.example"])
    assert schedule_response(response)[0][1] == "3.8"
    assert server.calls[0].outcome == "ErrorImpersonateUserDenied"


def test_emulator_refuses_app_only_calls_without_impersonation(
        servers, pki):
    """What the plugin must avoid, seen from the emulator's side."""
    idp, server = online(servers, pki)
    token = requests.post(
        "%s/%s/oauth2/v2.0/token" % (idp.base, idp.tenant),
        data={"grant_type": "client_credentials",
              "client_id": idp.client_id,
              "client_secret": idp.client_secret,
              "scope": "https://outlook.office365.com/.default"},
        verify=pki.ca_file, timeout=10).json()["access_token"]
    body = REQUEST
    answer = requests.post(server.url, data=body, verify=pki.ca_file,
                           timeout=10, headers={
                               "Authorization": "Bearer " + token,
                               "Content-Type": "text/xml; charset=utf-8"})
    assert answer.status_code == 500
    assert b"ErrorInvalidExchangeImpersonationHeaderData" in answer.content
    answer = requests.post(server.url, data=body, verify=pki.ca_file,
                           timeout=10, headers={
                               "Authorization": "Basic " +
                               base64.b64encode(b"a:b").decode(),
                               "Content-Type": "text/xml; charset=utf-8"})
    assert answer.status_code == 401


#: exchangelib's request (foreign-apis.md section 1), as a client sends it.
REQUEST = b"""<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"
 xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
  <s:Header><t:RequestServerVersion Version="Exchange2016"/></s:Header>
  <s:Body><m:GetUserAvailabilityRequest>
      <t:TimeZone><t:Bias>-60</t:Bias>
        <t:StandardTime><t:Bias>0</t:Bias><t:Time>03:00:00</t:Time>
        <t:DayOrder>5</t:DayOrder><t:Month>10</t:Month>
        <t:DayOfWeek>Sunday</t:DayOfWeek></t:StandardTime>
        <t:DaylightTime><t:Bias>-60</t:Bias><t:Time>02:00:00</t:Time>
        <t:DayOrder>5</t:DayOrder><t:Month>3</t:Month>
        <t:DayOfWeek>Sunday</t:DayOfWeek></t:DaylightTime></t:TimeZone>
      <m:MailboxDataArray><t:MailboxData>
          <t:Email><t:Address>carol@corp.example</t:Address>
          <t:RoutingType>SMTP</t:RoutingType></t:Email>
          <t:AttendeeType>Required</t:AttendeeType>
          <t:ExcludeConflicts>0</t:ExcludeConflicts>
      </t:MailboxData></m:MailboxDataArray>
      <t:FreeBusyViewOptions><t:TimeWindow>
        <t:StartTime>2026-01-05T08:00:00</t:StartTime>
        <t:EndTime>2026-01-05T18:00:00</t:EndTime></t:TimeWindow>
        <t:MergedFreeBusyIntervalInMinutes>30
        </t:MergedFreeBusyIntervalInMinutes>
        <t:RequestedView>DetailedMerged</t:RequestedView>
      </t:FreeBusyViewOptions>
  </m:GetUserAvailabilityRequest></s:Body></s:Envelope>"""


def test_emulator_reads_naive_times_in_the_request_zone(ews):
    """Bias -60 (Central Europe, winter): 08:00 local is 07:00 UTC, and
    carol's 09:00 UTC meeting comes back as 10:00 local."""
    server = ews(auth="basic")
    answer = requests.post(server.url, data=REQUEST, timeout=10, headers={
        "Authorization": "Basic " + base64.b64encode(
            b"fbsync:Secret-1").decode(),
        "Content-Type": "text/xml; charset=utf-8"})
    assert answer.status_code == 200, answer.text
    call, = server.calls
    assert (call.start, call.end) == (utc("20260105T070000Z"),
                                      utc("20260105T170000Z"))
    assert b"<StartTime>2026-01-05T10:00:00</StartTime>" in answer.content
    assert b"<MergedFreeBusy" in answer.content


# -- working hours ------------------------------------------------------------


@pytest.mark.parametrize("enabled", [False, True])
def test_working_hours(gateway_factory, ews, enabled):
    """Working hours 08:00-17:00 Monday to Friday, Central European time
    (UTC+1 in January): outside them BUSY-UNAVAILABLE when asked for."""
    boxes = {"lena@corp.example": Mailbox(
        events=[(utc("20260105T090000Z"), utc("20260105T100000Z"), "Busy")],
        working_hours=(-60, [("Monday Tuesday Wednesday Thursday Friday",
                              480, 1020)]))}
    server = ews(boxes)
    gateway = gateway_factory(extra=section(
        server, "working_hours = yes\n" if enabled else ""))
    answers = ask(gateway, ["lena@corp.example"],
                  ("20260105T000000Z", "20260107T000000Z"))
    assert answers[0][1] == "2.0"
    expected = {"BUSY": [("20260105T090000Z", "20260105T100000Z")]}
    if enabled:
        expected["BUSY-UNAVAILABLE"] = [
            ("20260105T000000Z", "20260105T070000Z"),
            ("20260105T160000Z", "20260106T070000Z"),
            ("20260106T160000Z", "20260107T000000Z")]
    assert_same_periods(periods_of(answers[0][2]), expected)
    # Either way the finder meets lena within her own hours (07-16 UTC)
    # and alice within the default ones (09-17 UTC): 09:00 to 15:00 (the
    # 09:00 slot with lena busy, as Graph also proposes), never 16:00.
    assert suggested_hours(gateway, ["lena@corp.example"],
                           "2026-01-05T06:00:00", "2026-01-05T20:00:00") == \
        ["%02d:00" % hour for hour in range(9, 16)]


# -- configuration ------------------------------------------------------------


@pytest.mark.parametrize("keys,words", [
    ("auth = oauth2\ntenant = t\nclient_id = c\nclient_secret = s\n",
     ["mailbox", "oauth2"]),
    ("username = u\npassword = p\nview = Everything\n", ["view"]),
    ("username = u\npassword = p\ninterval = 3\n", ["interval"]),
    ("username = u\npassword = p\nmailbox = not an address\n", ["mailbox"]),
    ("auth = form\nusername = u\npassword = p\n", ["'ews' does not take "
                                                   "form"]),
    ("username = u\npassword = p\nworking_hours = maybe\n",
     ["working_hours"]),
])
def test_section_errors(tmp_path, keys, words):
    config = tmp_path / "gateway.ini"
    config.write_text("[server]\nhosts = 127.0.0.1:1\n[auth]\ntype = none\n"
                      "[gateway]\ndomains = example.com\n[provider:corp]\n"
                      "type = ews\ndomains = corp.example\n"
                      "url = https://mail.corp.example/EWS/Exchange.asmx\n"
                      + keys)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--no-bind",
         "--config", str(config)], cwd=str(ROOT), capture_output=True,
        text=True)
    assert result.returncode == 2, result.stderr
    assert "[provider:corp]" in result.stderr
    for word in words:
        assert word in result.stderr


def test_example_section_loads(tmp_path):
    example = (ROOT / "config" / "examples" / "ews.ini").read_text()
    config = tmp_path / "gateway.ini"
    config.write_text("[server]\nhosts = 127.0.0.1:1\n[auth]\ntype = none\n"
                      "[gateway]\ndomains = example.com\n" + example)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--no-bind",
         "--config", str(config)], cwd=str(ROOT), capture_output=True,
        text=True)
    assert result.returncode == 0, result.stderr
