"""The admin's command line, run as an admin runs it: ``.venv/bin/fbgateway``
in a subprocess, on the ini file of a real gateway (its users' calendars
written over HTTP) with three providers: a CalDAV peer that answers, the
same peer with a wrong password, and a free/busy URL server that hangs.
"""

import datetime
import fcntl
import json
import os
import pty
import select
import stat
import subprocess
import termios
import time

import icalendar
import pytest
import requests

from conftest import ROOT, Gateway, free_port, stop, write_gateway_files
from emulators.caldav_outbox import ACCOUNT, CaldavPeer
from emulators.graph_server import GraphServer, Mailbox
from emulators.ifb_peer import IfbPeer
from emulators.webdav_freebusy import WebDavFolder
from redis_fixture import redis_server_fixture  # noqa: F401
from gateway.vfreebusy import freebusy_component_periods

FBGATEWAY = str(ROOT / ".venv" / "bin" / "fbgateway")
UTC = datetime.timezone.utc
WINDOW = ["--start", "2026-12-07", "--end", "2026-12-10", "--tz", "UTC"]
#: Every address kind: local busy, local free, foreign busy, a provider
#: refusing our credentials, one that hangs, a domain nobody serves.
ADDRESSES = ["alice@example.com", "bob@example.com", "carol@partner.example",
             "dave@corp.example", "erin@slow.example", "x@nowhere.example"]
ALICE = [("2026-12-07T09:00:00Z", "2026-12-07T10:00:00Z", "BUSY"),
         ("2026-12-08T13:00:00Z", "2026-12-08T15:00:00Z", "BUSY-TENTATIVE")]
CAROL = [("2026-12-07T10:00:00Z", "2026-12-07T11:30:00Z", "BUSY")]
#: Owners see their own calendars, nobody else anything: without the
#: admin's view, alice's busy time would be 3.8 to the CLI.
OWNER_ONLY = """\
[principal]
user: .+
collection: {user}
permissions: RW
[owner]
user: .+
collection: {user}/[^/]+
permissions: rw
"""


def run(*args, input=None, env=None, timeout=60):
    return subprocess.run([FBGATEWAY, *args], capture_output=True,
                          text=True, input=input, timeout=timeout,
                          env=dict(os.environ, **(env or {})), cwd=str(ROOT))


def event(uid, start, end, status="CONFIRMED"):
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n"
            "BEGIN:VEVENT\r\nUID:%s\r\nDTSTAMP:20261201T000000Z\r\n"
            "DTSTART:%s\r\nDTEND:%s\r\nSTATUS:%s\r\nSUMMARY:secret\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n" % (uid, start, end, status))


def provider_sections(peer, hanging):
    caldav = ("[provider:%s]\ntype = caldav\ndomains = %s\nurl = %s/\n"
              "username = fed\npassword = %s\ntimeout = 2\ncache_ttl = 0\n")
    return (caldav % ("partner", "partner.example", peer.base, "fed-pw") +
            caldav % ("corp", "corp.example", peer.base, "wrong-pw") +
            "[provider:slow]\ntype = ifb\ndomains = slow.example\n"
            "url = %s\nwindow_params = calconnect\ntimeout = 1\n"
            % hanging.url_template())


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A gateway with alice's events (alice opted out), bob without any,
    and the three providers; stopped after the module."""
    peer = CaldavPeer({"carol@partner.example": [("20261207T100000Z",
                                                  "20261207T113000Z")]})
    peer.principal_hrefs["/"] = ACCOUNT
    hanging = IfbPeer("calconnect", {})
    for address in ("erin@slow.example", "postmaster@slow.example"):
        hanging.script[address] = ["hang"] * 20
    gateway = Gateway(tmp_path_factory.mktemp("site"),
                      {"alice": "alice-pw", "bob": "bob-pw"}, "example.com",
                      "freebusy_access = rights\n" +
                      provider_sections(peer, hanging), OWNER_ONLY)
    try:
        gateway.start()
        calendar = gateway.mkcalendar("alice", "work")
        gateway.put(calendar + "a.ics", event("a", "20261207T090000Z",
                                              "20261207T100000Z"), "alice")
        gateway.put(calendar + "b.ics", event(
            "b", "20261208T130000Z", "20261208T150000Z", "TENTATIVE"),
            "alice")
        response = gateway.proppatch(
            "/alice/", "<G:freebusy-opt-out xmlns:G=\"urn:freebusy-gateway\">"
            "true</G:freebusy-opt-out>", "alice")
        assert response.status_code == 207, response.text
        # bob's home exists once he has logged in
        assert gateway.request("PROPFIND", "/bob/", user="bob",
                               headers={"Depth": "0"}).status_code == 207
        yield gateway
    finally:
        gateway.stop()
        peer.close()
        hanging.close()


def periods(entry):
    return [(p["start"], p["end"], p["fbtype"]) for p in entry["periods"]]


# -- query ---------------------------------------------------------------

def test_query_json_is_each_address_as_the_admin_sees_it(site):
    result = run("query", "--config", str(site.config_path), "--format",
                 "json", *WINDOW, *ADDRESSES)
    assert result.returncode == 1, result.stderr     # some had no answer
    answer = {e["address"]: e for e in json.loads(result.stdout)}
    assert list(answer) == ADDRESSES
    assert [(a, answer[a]["status"]) for a in ADDRESSES] == [
        ("alice@example.com", "2.0"), ("bob@example.com", "2.0"),
        ("carol@partner.example", "2.0"), ("dave@corp.example", "3.8"),
        ("erin@slow.example", "5.3"), ("x@nowhere.example", "3.7")]
    # opted out and owner-only rights: the admin still sees her
    assert periods(answer["alice@example.com"]) == ALICE
    assert periods(answer["bob@example.com"]) == []
    assert periods(answer["carol@partner.example"]) == CAROL
    assert answer["dave@corp.example"]["reason"] == \
        "corp refused the credentials"
    assert "slow" in answer["erin@slow.example"]["reason"]
    for failed in ADDRESSES[3:]:
        assert answer[failed]["periods"] == []
    assert "secret" not in result.stdout


def test_the_admins_view_is_not_what_users_get(site):
    """The same gateway, asked by bob over the outbox: alice is no
    authority to him (owner-only rights, and she opted out)."""
    body = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
            "METHOD:REQUEST\r\nBEGIN:VFREEBUSY\r\nUID:q\r\n"
            "DTSTAMP:20261201T000000Z\r\nDTSTART:20261207T000000Z\r\n"
            "DTEND:20261210T000000Z\r\nORGANIZER:mailto:bob@example.com\r\n"
            "ATTENDEE:mailto:alice@example.com\r\nEND:VFREEBUSY\r\n"
            "END:VCALENDAR\r\n")
    response = site.post("/bob/.schedule-outbox/", body, "bob")
    assert response.status_code == 200
    assert "3.8;" in response.text and "FREEBUSY" not in response.text


def test_query_ics_is_one_calendar_that_never_shows_no_answer_as_free(site):
    result = run("query", "--config", str(site.config_path), "--format",
                 "ics", *WINDOW, *ADDRESSES)
    assert result.returncode == 1, result.stderr
    calendar = icalendar.Calendar.from_ical(result.stdout)
    assert str(calendar["METHOD"]) == "PUBLISH"
    components = calendar.walk("VFREEBUSY")
    found = {}
    for component in components:
        address = str(component["ORGANIZER"])[len("mailto:"):]
        assert component["DTSTART"].dt == datetime.datetime(2026, 12, 7,
                                                            tzinfo=UTC)
        assert component["DTEND"].dt == datetime.datetime(2026, 12, 10,
                                                          tzinfo=UTC)
        found[address] = (
            [(p.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
              p.end.strftime("%Y-%m-%dT%H:%M:%SZ"), p.fbtype)
             for p in freebusy_component_periods(component, UTC)],
            component.get("REQUEST-STATUS"))
    assert list(found) == ADDRESSES
    assert found["alice@example.com"] == (ALICE, None)
    assert found["bob@example.com"] == ([], None)
    assert found["carol@partner.example"] == (CAROL, None)
    whole = [("2026-12-07T00:00:00Z", "2026-12-10T00:00:00Z",
              "BUSY-UNAVAILABLE")]
    for address, code in (("dave@corp.example", "3.8"),
                          ("erin@slow.example", "5.3"),
                          ("x@nowhere.example", "3.7")):
        busy, status = found[address]
        assert busy == whole
        assert str(status).startswith(code + ";")
    assert "REQUEST-STATUS:3.8;No authority;corp refused the credentials" \
        in result.stdout


def grid_rows(text, day):
    """address -> cells of ``day``'s block of a grid."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(day))
    column = lines[start].index(" 00 ") + 1     # where the cells begin
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows[line[:column].strip()] = line[column:]
    return rows


def test_query_grid_shows_half_hours_per_day(site):
    result = run("query", "--config", str(site.config_path), *WINDOW,
                 *ADDRESSES)
    assert result.returncode == 1, result.stderr
    assert "\x1b[" not in result.stdout      # not a terminal: no colours
    monday = grid_rows(result.stdout, "Mon 2026-12-07")
    assert monday["alice@example.com"] == "." * 18 + "##" + "." * 28
    assert monday["bob@example.com"] == "." * 48
    assert monday["carol@partner.example"] == "." * 20 + "###" + "." * 25
    assert monday["dave@corp.example"] == "(no answer: 3.8)"
    tuesday = grid_rows(result.stdout, "Tue 2026-12-08")
    assert tuesday["alice@example.com"] == "." * 26 + "~~~~" + "." * 18
    assert "Thu 2026-12-10" not in result.stdout     # the window ends
    status = {line.split()[0]: " ".join(line.split()[1:])
              for line in result.stdout.split("\n\n")[1].splitlines()}
    assert status["alice@example.com"] == "2.0 ok"
    assert status["x@nowhere.example"] == \
        "3.7 no local user or provider for domain nowhere.example"


def test_grid_days_follow_the_zone(site):
    """In Berlin (UTC+1 in December) alice's 09:00Z hour is 10:00-11:00,
    and the window's first hour, 00:00Z, starts at 01:00."""
    result = run("query", "--config", str(site.config_path), "--start",
                 "2026-12-07T00:00:00Z", "--end", "20261208T000000Z",
                 "--tz", "Europe/Berlin", "alice@example.com")
    assert result.returncode == 0, result.stderr
    monday = grid_rows(result.stdout, "Mon 2026-12-07")
    assert monday["alice@example.com"] == "  " + "." * 18 + "##" + "." * 26
    tuesday = grid_rows(result.stdout, "Tue 2026-12-08")
    assert tuesday["alice@example.com"] == ".." + " " * 46


def on_terminal(args, env=None):
    """Run with stdout on a pseudo-terminal; (exit code, output)."""
    master, slave = pty.openpty()
    process = subprocess.Popen([FBGATEWAY, *args], stdout=slave,
                               stderr=subprocess.PIPE, cwd=str(ROOT),
                               env=dict(os.environ, **(env or {})))
    os.close(slave)
    output = read_until_closed(master, process)
    return process.wait(30), output


def read_until_closed(master, process, deadline=30.0):
    chunks = []
    end = time.monotonic() + deadline
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:         # EIO: the other side closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
    finally:
        os.close(master)
    return b"".join(chunks).decode()


def test_grid_has_colours_on_a_terminal_unless_no_color(site):
    args = ["query", "--config", str(site.config_path), *WINDOW,
            "alice@example.com"]
    code, output = on_terminal(args, env={"NO_COLOR": ""})
    assert code == 0
    assert "\x1b[31m#\x1b[0m" in output      # busy in red
    code, output = on_terminal(args, env={"NO_COLOR": "1"})
    assert code == 0
    assert "\x1b[" not in output and "##" in output


def ini_beside(site, name, section):
    """The site's ini file plus ``section``, written beside it (so the
    same users, rights and storage); its path."""
    path = site.directory / name
    path.write_text(site.config_path.read_text().replace(
        "[provider:partner]", section + "\n[provider:partner]"))
    return path


def test_no_data_shows_as_such_never_as_free(site, servers):
    """A free/busy URL server asked a day at a time, whose first day's
    answer is garbage: that day is no data (BUSY-UNAVAILABLE in JSON,
    "?" in the grid), the other days are its real answer."""
    kolab = servers(IfbPeer("calconnect", {"frank@kolab.example": [(
        datetime.datetime(2026, 12, 8, 9, tzinfo=UTC),
        datetime.datetime(2026, 12, 8, 10, tzinfo=UTC), "BUSY")]}))
    kolab.script["frank@kolab.example"] = ["garbage"]
    path = ini_beside(site, "kolab.ini", (
        "[provider:kolab]\ntype = ifb\ndomains = kolab.example\n"
        "url = %s\nwindow_params = calconnect\nmax_window_days = 1\n"
        "max_parallel = 1\n" % kolab.url_template()))
    result = run("query", "--config", str(path), "--format", "json",
                 *WINDOW, "frank@kolab.example")
    assert result.returncode == 0, result.stderr
    [answer] = json.loads(result.stdout)
    assert answer["status"] == "2.0"
    assert answer["nodata"] == [{"start": "2026-12-07T00:00:00Z",
                                 "end": "2026-12-08T00:00:00Z"}]
    assert periods(answer) == [
        ("2026-12-07T00:00:00Z", "2026-12-08T00:00:00Z", "BUSY-UNAVAILABLE"),
        ("2026-12-08T09:00:00Z", "2026-12-08T10:00:00Z", "BUSY")]
    kolab.script["frank@kolab.example"] = ["garbage"]
    result = run("query", "--config", str(path), *WINDOW,
                 "frank@kolab.example")
    assert result.returncode == 0, result.stderr
    assert "frank@kolab.example  2.0 ok, no data for part of the window" \
        in result.stdout
    assert grid_rows(result.stdout, "Mon 2026-12-07")[
        "frank@kolab.example"] == "?" * 48
    assert grid_rows(result.stdout, "Tue 2026-12-08")[
        "frank@kolab.example"] == "." * 18 + "##" + "." * 28


def test_query_publishes_nothing(site, servers):
    """A provider that takes pushes makes a server publish every local
    user at start; the admin's query, built from the same file, must
    not: it only reads."""
    folder = servers(WebDavFolder())
    path = ini_beside(site, "publishing.ini", (
        "[provider:dav]\ntype = ifb\ndomains = dav.example\n"
        "url = %s/fb/{address}.ifb\npublish_url = %s/fb/{address}.ifb\n"
        % (folder.base, folder.base)))
    result = run("query", "--config", str(path), *WINDOW,
                 "erin@slow.example", "alice@example.com")
    assert result.returncode == 1, result.stderr   # erin's 1 s time-out
    time.sleep(0.5)
    assert folder.attempts == []


@pytest.mark.parametrize("args,words", [
    (["--start", "next tuesday"], ["not a time", "next tuesday"]),
    (["--start", "2026-12-10", "--end", "2026-12-07"], ["end", "after"]),
    (["--tz", "Mars/Olympus"], ["unknown time zone"]),
    (["--format", "xml"], ["invalid choice"]),
    (["--start", "2026-01-01", "--end", "2031-12-31"], ["longer than"]),
])
def test_bad_arguments_are_one_clear_line_and_exit_2(site, args, words):
    result = run("query", "--config", str(site.config_path), *args,
                 "alice@example.com")
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("fbgateway query: error:"), result.stderr
    for word in words:
        assert word in last, last


def test_an_address_must_be_an_address(site):
    result = run("query", "--config", str(site.config_path), "alice")
    assert result.returncode == 2
    assert "not an address: 'alice'" in result.stderr


def test_default_window_is_the_coming_week_from_this_hour(site):
    result = run("query", "--config", str(site.config_path), "--format",
                 "ics", "bob@example.com")
    assert result.returncode == 0, result.stderr
    component = icalendar.Calendar.from_ical(result.stdout).walk(
        "VFREEBUSY")[0]
    now = datetime.datetime.now(UTC)
    start, end = component["DTSTART"].dt, component["DTEND"].dt
    assert start.minute == start.second == 0
    assert datetime.timedelta(0) <= now - start < datetime.timedelta(
        hours=1, minutes=1)
    assert end - start == datetime.timedelta(days=7)


def test_a_bad_config_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "gateway.ini"
    path.write_text("[gateway]\ndomains = example.com\ntimeout = never\n")
    for command in (["query", "alice@example.com"], ["check"]):
        result = run(command[0], "--config", str(path), *command[1:])
        assert result.returncode == 2, (command, result.stdout)
        assert result.stderr.count("\n") == 1, result.stderr
        assert "timeout" in result.stderr and "never" in result.stderr


# -- find ----------------------------------------------------------------

MONDAY = ["--start", "2026-12-07T09:00:00Z", "--end", "2026-12-07T17:00:00Z",
          "--tz", "UTC"]


def test_find_json_is_the_findmeetingtimes_answer(site):
    """Alice is busy 09-10, carol 10-11:30: the first hour all three are
    free is 11:30; dave (credentials refused) is unknown, never free."""
    result = run("find", "--config", str(site.config_path), "--duration",
                 "PT1H", "--max-candidates", "3", "--format", "json",
                 "--optional", "dave@corp.example", *MONDAY,
                 "alice@example.com", "bob@example.com",
                 "carol@partner.example")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["emptySuggestionsReason"] == ""
    slots = answer["meetingTimeSuggestions"]
    assert [s["meetingTimeSlot"]["start"] for s in slots] == [
        {"dateTime": "2026-12-07T%s:00.0000000" % t, "timeZone": "UTC"}
        for t in ("11:30", "12:30", "13:30")]
    assert slots[0]["meetingTimeSlot"]["end"]["dateTime"] == \
        "2026-12-07T12:30:00.0000000"
    assert [(a["attendee"]["emailAddress"]["address"], a["attendee"]["type"],
             a["availability"]) for a in slots[0]["attendeeAvailability"]] \
        == [("alice@example.com", "required", "free"),
            ("bob@example.com", "required", "free"),
            ("carol@partner.example", "required", "free"),
            ("dave@corp.example", "optional", "unknown")]
    assert slots[0]["confidence"] == pytest.approx(87.25)


def test_find_keeps_to_working_hours_unless_unrestricted(site):
    args = ["find", "--config", str(site.config_path), "--duration", "PT1H",
            "--start", "2026-12-07", "--end", "2026-12-08", "--tz", "UTC",
            "--max-candidates", "1", "alice@example.com"]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == \
        "  1. Mon 2026-12-07 10:00-11:00 UTC  100%  alice@example.com free"
    # named again as optional: still one required attendee
    result = run(*args, "--optional", "Alice@EXAMPLE.com")
    assert result.stdout.splitlines()[1].endswith("  alice@example.com free")
    result = run(*args, "--unrestricted")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith(
        "  1. Mon 2026-12-07 00:00-01:00 UTC")


def test_find_without_a_slot_says_why_and_exits_1(site):
    result = run("find", "--config", str(site.config_path), "--duration",
                 "PT1H", "--format", "json", "--start",
                 "2026-12-07T09:00:00Z", "--end", "2026-12-07T10:00:00Z",
                 "alice@example.com")
    assert result.returncode == 1, result.stderr
    answer = json.loads(result.stdout)
    assert answer["meetingTimeSuggestions"] == []
    assert answer["emptySuggestionsReason"] == "attendeesUnavailable"


@pytest.mark.parametrize("args,words", [
    (["--duration", "an hour"], ["--duration", "ISO 8601"]),
    (["--duration", "P2D"], ["longer than the window"]),
    (["--duration", "PT1H", "--minimum", "120"], ["--minimum"]),
    (["--duration", "PT1H", "--start", "2026-01-01", "--end",
      "2026-06-01"], ["longer than 62 days"]),
])
def test_find_bad_arguments_exit_2(site, args, words):
    result = run("find", "--config", str(site.config_path), *MONDAY[:4],
                 *args, "alice@example.com")
    assert result.returncode == 2, result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("fbgateway find: error:"), result.stderr
    for word in words:
        assert word in last, last


# -- check ---------------------------------------------------------------

def test_check_reports_each_provider(site):
    started = time.monotonic()
    result = run("check", "--no-bind", "--config", str(site.config_path))
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("config OK: ")
    assert "3 providers (partner, corp, slow)" in lines[0]
    assert "listening on http://127.0.0.1:%d/" % site.port in lines[0]
    assert lines[1] == "partner: ok"
    assert lines[2].startswith("corp: failing: refused the credentials")
    assert "401" in lines[2]
    assert lines[3].startswith("slow: failing: did not answer within 1 s")
    assert len(lines) == 4
    # each asked at once, each within its own timeout
    assert took < 20


def test_check_passes_when_every_provider_answers(tmp_path, servers):
    peer = servers(CaldavPeer({}))
    peer.principal_hrefs["/"] = ACCOUNT
    path = write_gateway_files(
        tmp_path, {"alice": "alice-pw"}, None, "example.com",
        "[provider:partner]\ntype = caldav\ndomains = partner.example\n"
        "url = %s/\nusername = fed\npassword = fed-pw\n" % peer.base,
        server="hosts = 127.0.0.1:%d\n" % free_port())
    result = run("check", "--config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[1:] == ["partner: ok"]
    # it asked the peer one question, about an address of its domain
    assert any(method == "POST" for method, _ in peer.requests)
    assert peer.posts[-1][1] == ["postmaster@partner.example"]


def test_check_says_why_a_host_cannot_be_reached(tmp_path, pki, servers):
    """A closed port and a TLS server whose CA is not trusted: the
    innermost cause in a line, not urllib3's pool and object dumps."""
    tls = servers(GraphServer(pki, {}))
    path = write_gateway_files(
        tmp_path, {"alice": "alice-pw"}, None, "example.com",
        "[provider:closed]\ntype = ifb\ndomains = closed.example\n"
        "url = http://127.0.0.1:%d/{address}\n\n"
        "[provider:untrusted]\ntype = ifb\ndomains = untrusted.example\n"
        "url = %s/{address}\n" % (free_port(), tls.base),
        server="hosts = 127.0.0.1:%d\n" % free_port())
    result = run("check", "--config", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    closed, untrusted = result.stdout.splitlines()[1:]
    assert closed.startswith("closed: failing: is unreachable (GET http")
    assert closed.endswith(": [Errno 111] Connection refused)"), closed
    assert untrusted.startswith("untrusted: failing: could not be reached "
                                "securely (TLS failed)"), untrusted
    assert "certificate verify failed" in untrusted
    assert "object at 0x" not in result.stdout
    assert "Pool(" not in result.stdout


def test_check_pings_each_redis_without_its_password(tmp_path,
                                                      redis_server):
    closed = "redis://:s3cret@127.0.0.1:%d/0" % free_port()
    path = write_gateway_files(
        tmp_path, {"alice": "alice-pw"}, None, "example.com",
        "cache = %s\nqueue = %s\n" % (redis_server.url, closed),
        server="hosts = 127.0.0.1:%d\n" % free_port())
    result = run("check", "--config", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    cache, queue = result.stdout.splitlines()[1:]
    assert cache == "redis (cache): ok"
    assert queue.startswith("redis (queue): failing: ConnectionError at "
                            "redis://127.0.0.1:"), queue
    assert "s3cret" not in result.stdout + result.stderr


def test_check_fetches_each_token_first(tmp_path, pki, idp, servers):
    """Graph with client credentials: the right secret is ok (its
    mailbox lookup of postmaster@ is "unknown user" at Graph), a wrong
    one is reported from the token endpoint's refusal."""
    graph = servers(GraphServer(pki, {"finder@corp.example": Mailbox([])},
                                idp=idp))
    section = ("[provider:%s]\ntype = graph\ndomains = %s\nurl = %s\n"
               "ca_file = %s\nmailbox = finder@corp.example\nauth = oauth2\n"
               "authority = %s\ntenant = %s\nclient_id = %s\n"
               "client_secret = %s\n")
    path = write_gateway_files(
        tmp_path, {"alice": "alice-pw"}, None, "example.com",
        section % ("corp", "corp.example", graph.url, pki.ca_file,
                   idp.authority, idp.tenant, idp.client_id,
                   idp.client_secret) +
        section % ("old", "old.example", graph.url, pki.ca_file,
                   idp.authority, idp.tenant, idp.client_id, "expired"),
        server="hosts = 127.0.0.1:%d\n" % free_port())
    result = run("check", "--config", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "corp: ok"
    assert lines[2].startswith("old: failing: refused the credentials")
    assert "invalid_client: AADSTS7000215" in lines[2]
    assert sorted(form["client_secret"] for _, form in idp.token_requests) \
        == ["expired", idp.client_secret]
    [call] = graph.requests         # the bad one never got that far
    assert call.body["schedules"] == ["postmaster@corp.example"]


def test_check_config_says_what_it_found(tmp_path):
    port = free_port()
    path = write_gateway_files(tmp_path, {"alice": "alice-pw"}, None,
                               "example.com", "",
                               server="hosts = 127.0.0.1:%d\n" % port)
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "config OK: %s: 0 providers, listening on " \
        "http://127.0.0.1:%d/\n" % (path, port)


def test_version():
    result = run("--version")
    assert result.returncode == 0
    from gateway import __version__
    assert result.stdout.strip() == "fbgateway %s" % __version__


# -- passwd --------------------------------------------------------------

def test_passwd_writes_a_bcrypt_line_a_real_gateway_accepts(tmp_path):
    gateway = Gateway(tmp_path / "gw", {"alice": "old-pw", "bob": "bob-pw"},
                      "example.com", "", None)
    users = gateway.directory / "users"
    users.write_text("# accounts\nalice:old-pw\nbob:bob-pw\n")
    os.chmod(users, 0o640)
    result = run("passwd", str(users), "alice", "--stdin",
                 input="new pässword\n")
    assert result.returncode == 0, result.stderr
    lines = users.read_text().splitlines()
    assert lines[0] == "# accounts" and lines[2] == "bob:bob-pw"
    assert lines[1].startswith("alice:$2b$") and len(lines[1]) == 66
    assert stat.S_IMODE(users.stat().st_mode) == 0o640   # kept
    result = run("passwd", str(users), "carol", "--stdin",
                 input="carol-pw\n")
    assert result.returncode == 0, result.stderr
    assert "carol added" in result.stderr
    assert users.read_text().count("\n") == 4
    config = gateway.config_path.read_text()
    gateway.config_path.write_text(config.replace(
        "htpasswd_encryption = plain", "htpasswd_encryption = autodetect"))
    gateway.start()
    try:
        def status(user, password):
            return requests.request(
                "PROPFIND", gateway.url + "/%s/" % user,
                auth=(user.encode(), password.encode("utf-8")),
                headers={"Depth": "0"}, timeout=30).status_code
        assert status("alice", "new pässword") == 207
        assert status("alice", "old-pw") == 401
        assert status("carol", "carol-pw") == 207
        assert status("bob", "bob-pw") == 207
    finally:
        gateway.stop()


def test_passwd_creates_a_file_only_its_owner_reads(tmp_path):
    users = tmp_path / "new-users"
    result = run("passwd", str(users), "alice", "--stdin", input="pw-1\n")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    assert users.read_text().startswith("alice:$2b$")
    assert list(tmp_path.iterdir()) == [users]      # no temporary left


def test_passwd_through_a_link_replaces_its_target(tmp_path):
    (tmp_path / "etc").mkdir()
    target = tmp_path / "etc" / "users"
    target.write_text("bob:bob-pw\n")
    link = tmp_path / "users"
    link.symlink_to(target)
    result = run("passwd", str(link), "alice", "--stdin", input="pw-1\n")
    assert result.returncode == 0, result.stderr
    assert link.is_symlink()
    lines = target.read_text().splitlines()
    assert lines[0] == "bob:bob-pw" and lines[1].startswith("alice:$2b$")


@pytest.mark.parametrize("user,password,code,words", [
    ("al:ice", "pw", 2, ["may not contain ':'"]),
    ("alice", "", 1, ["empty"]),
    ("alice", "x" * 73, 1, ["longer than 72 bytes"]),
])
def test_passwd_refuses_what_cannot_work(tmp_path, user, password, code,
                                         words):
    users = tmp_path / "users"
    users.write_text("alice:old\n")
    result = run("passwd", str(users), user, "--stdin",
                 input=password + "\n")
    assert result.returncode == code, result.stderr
    for word in words:
        assert word in result.stderr
    assert "Traceback" not in result.stderr
    assert users.read_text() == "alice:old\n"


def _prompted(users, answers):
    """Run passwd on a terminal of its own (getpass reads /dev/tty) and
    type ``answers`` at its prompts; (exit code, what the terminal
    showed)."""
    master, slave = pty.openpty()

    def own_terminal():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [FBGATEWAY, "passwd", str(users), "alice"], stdin=slave,
        stdout=slave, stderr=slave, cwd=str(ROOT), start_new_session=True,
        preexec_fn=own_terminal)
    os.close(slave)
    shown = b""
    try:
        for prompt, answer in zip((b"New password", b"Again"), answers):
            end = time.monotonic() + 30
            while prompt not in shown and time.monotonic() < end:
                if select.select([master], [], [], 0.5)[0]:
                    shown += os.read(master, 4096)
            assert prompt in shown, shown
            os.write(master, answer.encode() + b"\n")
        shown += read_until_closed(master, process).encode()
    finally:
        stop(process)
    return process.returncode, shown.decode()


def test_passwd_asks_twice_without_echo(tmp_path):
    users = tmp_path / "users"
    code, shown = _prompted(users, ["tty-secret", "tty-secret"])
    assert code == 0, shown
    assert "tty-secret" not in shown
    assert users.read_text().startswith("alice:$2b$")
    code, shown = _prompted(users, ["one", "other"])
    assert code == 1
    assert "the two passwords differ" in shown


def test_passwd_replaces_the_file_whole(tmp_path):
    """The file is replaced whole: a reader never sees half of it."""
    users = tmp_path / "users"
    users.write_text("".join("user%d:pw\n" % i for i in range(2000)))
    inode = users.stat().st_ino
    result = run("passwd", str(users), "user1000", "--stdin", input="x\n")
    assert result.returncode == 0
    assert users.stat().st_ino != inode     # renamed over, not rewritten
    text = users.read_text().splitlines()
    assert len(text) == 2000 and text[1000].startswith("user1000:$2b$")
    assert text[999] == "user999:pw" and text[1001] == "user1001:pw"

