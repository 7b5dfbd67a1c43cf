"""The plugin guide's example is real and tested.

docs/plugins.md shows tests/thirdparty/acme_freebusy.py in full and the
ini section that configures it; these tests keep the page and the
module byte-identical, install the module the way its packaging file
(tests/thirdparty/pyproject.toml) registers it, and run the page's own
ini section through a real gateway against an emulator of Acme's API.
"""

import datetime
import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ROOT
from fbcheck import assert_same_periods, periods_of, schedule_response
from icaldata import freebusy_request

THIRDPARTY = ROOT / "tests" / "thirdparty"
MODULE = THIRDPARTY / "acme_freebusy.py"
GUIDE = ROOT / "docs" / "plugins.md"
TOKEN = "acme-token-from-the-admin-console"
ISO = "%Y-%m-%dT%H:%M:%SZ"


def blocks(language):
    return re.findall(r"^```%s\n(.*?)^```$" % language, GUIDE.read_text(),
                      re.S | re.M)


def test_the_page_shows_the_module_as_it_is():
    assert MODULE.read_text() in blocks("python"), \
        "docs/plugins.md must show tests/thirdparty/acme_freebusy.py in full"


def guide_section(url, **replace):
    """The page's ini section, with the emulator's url (and ``replace``)."""
    sections = [b for b in blocks("ini") if "type = acme\n" in b]
    assert len(sections) == 1
    text = re.sub(r"(?m)^url = .*$", "url = " + url, sections[0])
    for key, value in replace.items():
        text, count = re.subn(r"(?m)^%s = .*$" % key, "%s = %s" % (key, value),
                              text)
        assert count == 1, key
    return text


class AcmeAPI:
    """Acme's availability API as the module's docstring describes it:
    20 users and 31 days a call at most, whole 15-minute blocks only."""

    def __init__(self):
        self.calls = []          # (users, from, to)
        self.script = []         # (status, body) answered before the data
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(
                    int(self.headers["Content-Length"])))
                api.calls.append((body["users"], body["from"], body["to"]))
                if self.path != "/v2/workspaces/w-1234/availability":
                    return self.send(404, {"error": {"code": "not_found"}})
                if self.headers.get("Authorization") != "Bearer " + TOKEN:
                    return self.send(401, {"error": {"code": "bad_token"}})
                if api.script:
                    return self.send(*api.script.pop(0))
                start = datetime.datetime.strptime(body["from"], ISO)
                end = datetime.datetime.strptime(body["to"], ISO)
                if start.minute % 15 or end.minute % 15 or start.second or \
                        end.second or len(body["users"]) > 20 or \
                        end - start > datetime.timedelta(days=31):
                    return self.send(400, {"error": {"code": "bad_request"}})
                self.send(200, {"calendars": [
                    api.calendar(user, body["from"], body["to"])
                    for user in body["users"] if user != "gone@acme.example"]})

            def send(self, status, answer):
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/v2/" % self.server.server_port
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()

    @staticmethod
    def calendar(user, start, end):
        name = user.split("@")[0]
        if name in ("nobody", "secret"):
            return {"user": user,
                    "status": "not_found" if name == "nobody" else "private"}
        blocks = {
            "ann": [("2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z", "busy"),
                    ("2026-01-05T10:00:00+01:00", "2026-01-05T11:30:00+01:00",
                     "tentative"),
                    ("2026-01-06T00:00:00Z", "2026-01-07T00:00:00Z", "away"),
                    ("2026-01-08T09:00:00Z", "2026-01-08T17:00:00Z",
                     "elsewhere"),
                    # Spans the split at 31 days: stitched by the gateway.
                    ("2026-01-31T22:00:00Z", "2026-02-01T02:00:00Z", "busy")],
            "ben": [("2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z", "busy"),
                    ("2026-01-09T00:00:00Z", "2026-01-10T00:00:00Z",
                     "unknown")],
        }.get(name, [])
        return {"user": user, "status": "ok", "blocks": [
            {"from": s, "to": e, "show": show} for s, e, show in blocks
            if s < end and e > start]}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def acme():
    api = AcmeAPI()
    yield api
    api.close()


@pytest.fixture
def site(tmp_path):
    """An installed acme-freebusy: a .dist-info whose entry point is the
    one tests/thirdparty/pyproject.toml declares."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((THIRDPARTY / "pyproject.toml").read_text())
    points = project["project"]["entry-points"]["freebusy_gateway.providers"]
    assert points == {"acme": "acme_freebusy:Provider"}
    dist = tmp_path / "site" / "acme_freebusy-1.0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: %s\n"
                                   "Version: %s\n" % (
                                       project["project"]["name"],
                                       project["project"]["version"]))
    (dist / "entry_points.txt").write_text(
        "[freebusy_gateway.providers]\n" + "".join(
            "%s = %s\n" % item for item in points.items()))
    return {"PYTHONPATH": "%s:%s" % (tmp_path / "site", THIRDPARTY)}


def ask(gateway, attendees, start, end):
    response = gateway.post("/alice/.schedule-outbox/", freebusy_request(
        attendees, start, end), "alice")
    return response, schedule_response(response)


def test_the_example_through_a_gateway(gateway_factory, acme, site):
    gateway = gateway_factory(extra="timeout = 20\n" + guide_section(
        acme.url), env=site)
    people = ["ann@acme.example", "ben@acme.example", "cy@acme.example",
              "nobody@acme.example", "secret@acme.example",
              "gone@acme.example"]
    # 40 days from 00:07: two calls of at most 31 days, on whole blocks.
    response, answers = ask(gateway, people, "20260101T000700Z",
                            "20260210T000000Z")
    assert [(a[0][7:], a[1]) for a in answers] == [
        ("ann@acme.example", "2.0"),
        ("ben@acme.example", "2.0"),      # "unknown": BUSY-UNAVAILABLE
        ("cy@acme.example", "2.0"),
        ("nobody@acme.example", "3.7"),
        ("secret@acme.example", "3.8"),
        ("gone@acme.example", "5.3")]     # left out by Acme: no data
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260105T090000Z", "20260105T100000Z"),
                 ("20260131T220000Z", "20260201T020000Z")],
        "BUSY-TENTATIVE": [("20260105T090000Z", "20260105T103000Z")],
        "BUSY-UNAVAILABLE": [("20260106T000000Z", "20260107T000000Z")]})
    assert_same_periods(periods_of(answers[1][2]), {
        "BUSY": [("20260105T090000Z", "20260105T100000Z")],
        "BUSY-UNAVAILABLE": [("20260109T000000Z", "20260110T000000Z")]})
    assert periods_of(answers[2][2]) == {}
    assert "acme gave no usable answer" in response.text
    assert "acme does not know this user" in response.text
    assert len(acme.calls) == 2
    assert sorted((c[1], c[2]) for c in acme.calls) == [
        ("2026-01-01T00:00:00Z", "2026-01-31T23:45:00Z"),
        ("2026-01-31T23:30:00Z", "2026-02-10T00:00:00Z")]


def test_split_by_the_sections_max_addresses(gateway_factory, acme, site):
    gateway = gateway_factory(extra=guide_section(
        acme.url, max_addresses="2"), env=site)
    people = ["p%d@acme.example" % i for i in range(5)]
    _, answers = ask(gateway, people, "20260105T000000Z", "20260106T000000Z")
    assert [a[1] for a in answers] == ["2.0"] * 5
    assert sorted(len(c[0]) for c in acme.calls) == [1, 2, 2]


def test_a_refused_token_is_no_authority(gateway_factory, acme, site):
    gateway = gateway_factory(extra=guide_section(
        acme.url, token="expired"), env=site)
    response, answers = ask(gateway, ["ann@acme.example"],
                            "20260105T000000Z", "20260106T000000Z")
    assert answers[0][1] == "3.8"
    assert "acme refused the credentials" in response.text
    assert "expired" not in response.text and "127.0.0.1" not in response.text


def test_a_throttle_in_the_body_is_remembered(gateway_factory, acme, site):
    acme.script.append((500, {"error": {"code": "server_busy",
                                        "retry_after_ms": 60000}}))
    gateway = gateway_factory(extra=guide_section(acme.url), env=site)
    for public in ("acme is throttling requests (retry after 60 s)",
                   "acme asked for a pause (retry after 60 s)"):
        response, answers = ask(gateway, ["ann@acme.example"],
                                "20260105T000000Z", "20260106T000000Z")
        assert answers[0][1] == "5.3"
        assert public in response.text
    assert len(acme.calls) == 1       # the second lookup did not call


def test_other_failures_fail_the_call(gateway_factory, acme, site):
    acme.script.append((502, "<html>bad gateway</html>"))
    gateway = gateway_factory(extra=guide_section(acme.url), env=site)
    response, answers = ask(gateway, ["ann@acme.example", "ben@acme.example"],
                            "20260105T000000Z", "20260106T000000Z")
    assert [a[1] for a in answers] == ["5.1", "5.1"]
    assert "acme answered HTTP 502" in response.text


@pytest.mark.parametrize("change, named", [
    ({"token": None, "username": "me"}, "does not take basic"),
    ({"workspace": None}, "'workspace'"),
    ({"max_addresses": "0"}, "'max_addresses'"),
])
def test_the_section_is_checked(tmp_path, site, change, named):
    text = guide_section("https://api.acme.example/v2/")
    for key, value in change.items():
        text = re.sub(r"(?m)^%s = .*\n" % key, "", text)
        if value is not None:
            text += "%s = %s\n" % (key, value)
    config = tmp_path / "gw.ini"
    config.write_text("[server]\nhosts = 127.0.0.1:1\n[auth]\ntype = none\n"
                      "[gateway]\ndomains = example.com\n" + text)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--no-bind",
         "--config", str(config)], cwd=str(ROOT), capture_output=True,
        text=True, env=dict(site, PATH="/usr/bin:/bin"))
    assert result.returncode == 2, result.stderr
    assert "[provider:acme]" in result.stderr and named in result.stderr, \
        result.stderr


def test_the_page_section_passes_check_config(tmp_path, site):
    config = tmp_path / "gw.ini"
    config.write_text("[server]\nhosts = 127.0.0.1:1\n[auth]\ntype = none\n"
                      "[gateway]\ndomains = example.com\n" + guide_section(
                          "https://api.acme.example/v2/"))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--no-bind",
         "--config", str(config)], cwd=str(ROOT), capture_output=True,
        text=True, env=dict(site, PATH="/usr/bin:/bin"))
    assert result.returncode == 0, result.stderr
