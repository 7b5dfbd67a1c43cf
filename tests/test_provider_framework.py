"""The provider framework, seen from a third-party plugin.

tests/thirdparty/fbdemo_provider.py is loaded the two ways another
package would be: by dotted path and by the entry-point group
``freebusy_gateway.providers`` (a real .dist-info on the path).  Its API
is emulated by a local HTTP server that records every call, so the tests
see the fan-out split by the plugin's limits (2 addresses, 7 days), run
the calls in parallel, stitch periods across the pieces, retry on 429
with Retry-After, and keep one failing piece from spoiling other answers.
"""

import datetime
import json
import pathlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fbcheck import assert_same_periods, periods_of, schedule_response
from icaldata import freebusy_request

THIRDPARTY = pathlib.Path(__file__).resolve().parent / "thirdparty"
UTC = datetime.timezone.utc


class AvailabilityAPI:
    """The emulated JSON API: busy data per address, scripted failures."""

    def __init__(self, busy, api_key="k-123"):
        self.busy = busy          # {email: [(start, end, status)]}
        self.api_key = api_key
        self.calls = []           # (time, emails, start, end)
        self.throttle = {}        # email -> Retry-After values to send first
        self.delay = 0.0
        self.fail = set()         # emails whose call answers 500
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                api.calls.append((time.monotonic(), body["emails"],
                                  body["start"], body["end"]))
                if self.headers.get("X-Api-Key") != api.api_key:
                    return self._send(401, b"{}")
                for email in body["emails"]:
                    if api.throttle.get(email):
                        value = api.throttle[email].pop(0)
                        return self._send(429, b'{"error":"slow down"}',
                                          {"Retry-After": value})
                    if email in api.fail:
                        return self._send(500, b"oops")
                with api.lock:
                    api.in_flight += 1
                    api.most_in_flight = max(api.most_in_flight,
                                             api.in_flight)
                time.sleep(api.delay)
                with api.lock:
                    api.in_flight -= 1
                start = datetime.datetime.strptime(
                    body["start"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                end = datetime.datetime.strptime(
                    body["end"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                answer = {}
                for email in body["emails"]:
                    if email not in api.busy:
                        continue
                    answer[email] = [
                        {"start": s.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "end": e.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "status": status}
                        for s, e, status in api.busy[email]
                        if s < end and e > start]
                self._send(200, json.dumps(answer).encode())

            def _send(self, status, body, headers=None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/api/" % self.server.server_port
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def utc(text):
    return datetime.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC)


BUSY = {
    # Spans the 7-day boundary of the split (window starts Jan 1).
    "ann@api.example": [(utc("20260107T220000Z"), utc("20260108T020000Z"),
                         "busy"),
                        (utc("20260115T090000Z"), utc("20260115T100000Z"),
                         "tentative")],
    "ben@api.example": [(utc("20260102T090000Z"), utc("20260102T170000Z"),
                         "oof")],
    "cy@api.example": [(utc("20260119T090000Z"), utc("20260119T093000Z"),
                        "busy")],
    "di@api.example": [],
    "ed@api.example": [(utc("20260103T120000Z"), utc("20260103T130000Z"),
                        "busy")],
}


@pytest.fixture
def api():
    server = AvailabilityAPI(dict(BUSY))
    yield server
    server.close()


def section(api, type_name="fbdemo_provider", key="k-123", extra=""):
    return ("timeout = 20\n[provider:demo]\ntype = %s\ndomains = api.example"
            "\nurl = %s\napi_key = %s\ntimeout = 5\ncache_ttl = 0\n%s"
            % (type_name, api.url, key, extra))


def request(attendees, start="20260101T000000Z", end="20260120T000000Z"):
    return freebusy_request(attendees, start, end)


def start_gateway(gateway_factory, api, **kwargs):
    return gateway_factory(extra=section(api, **kwargs),
                           env={"PYTHONPATH": str(THIRDPARTY)})


def test_split_by_limits_and_stitched(gateway_factory, api):
    gateway = start_gateway(gateway_factory, api)
    people = ["ann@api.example", "ben@api.example", "cy@api.example",
              "di@api.example", "ed@api.example", "who@api.example"]
    answers = schedule_response(gateway.post(
        "/alice/.schedule-outbox/", request(people), "alice"))
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:%s" % p, "2.0") for p in people[:5]] + [
        ("mailto:who@api.example", "3.7")]
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260107T220000Z", "20260108T020000Z")],   # stitched
        "BUSY-TENTATIVE": [("20260115T090000Z", "20260115T100000Z")]})
    assert_same_periods(periods_of(answers[1][2]), {
        "BUSY-UNAVAILABLE": [("20260102T090000Z", "20260102T170000Z")]})
    assert_same_periods(periods_of(answers[2][2]), {
        "BUSY": [("20260119T090000Z", "20260119T093000Z")]})
    assert periods_of(answers[3][2]) == {}
    # 6 addresses in 3 calls of 2, each over 3 windows of at most 7 days.
    assert len(api.calls) == 9
    assert all(len(call[1]) <= 2 for call in api.calls)
    windows = sorted({(call[2], call[3]) for call in api.calls})
    assert windows == [("2026-01-01T00:00:00Z", "2026-01-08T00:00:00Z"),
                       ("2026-01-08T00:00:00Z", "2026-01-15T00:00:00Z"),
                       ("2026-01-15T00:00:00Z", "2026-01-20T00:00:00Z")]


def test_section_changes_the_types_limits(gateway_factory, api):
    """max_addresses and max_window_days in the section win over the
    type's defaults (2 addresses, 7 days): real tenants differ."""
    gateway = start_gateway(gateway_factory, api,
                            extra="max_addresses = 3\nmax_window_days = 4\n")
    people = ["ann@api.example", "ben@api.example", "cy@api.example",
              "di@api.example", "ed@api.example"]
    answers = schedule_response(gateway.post(
        "/alice/.schedule-outbox/", request(people, end="20260109T000000Z"),
        "alice"))
    assert [a[1] for a in answers] == ["2.0"] * 5
    assert sorted(len(call[1]) for call in api.calls) == [2, 2, 3, 3]
    assert sorted({(call[2], call[3]) for call in api.calls}) == [
        ("2026-01-01T00:00:00Z", "2026-01-05T00:00:00Z"),
        ("2026-01-05T00:00:00Z", "2026-01-09T00:00:00Z")]


def test_slotted_systems_get_whole_slots(gateway_factory, api):
    """A system that answers in 30-minute slots is asked for whole slots
    (within its 7-day limit), and the answer is clipped back."""
    gateway = gateway_factory(
        extra=section(api, extra="slot_minutes = 30\n"),
        env={"PYTHONPATH": str(THIRDPARTY)})
    answers = schedule_response(gateway.post(
        "/alice/.schedule-outbox/",
        request(["ann@api.example"], start="20260107T221000Z",
                end="20260115T094500Z"), "alice"))
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260107T221000Z", "20260108T020000Z")],
        "BUSY-TENTATIVE": [("20260115T090000Z", "20260115T094500Z")]})
    for _, _, start, end in api.calls:
        assert start[14:] in ("00:00Z", "30:00Z"), start
        assert end[14:] in ("00:00Z", "30:00Z"), end
        length = (datetime.datetime.strptime(end, "%Y-%m-%dT%H:%M:%SZ") -
                  datetime.datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ"))
        assert length <= datetime.timedelta(days=7)
    assert min(c[2] for c in api.calls) == "2026-01-07T22:00:00Z"
    assert max(c[3] for c in api.calls) == "2026-01-15T10:00:00Z"


def test_calls_run_in_parallel(gateway_factory, api):
    """Nine calls that take 0.5 s each are in flight together at the
    emulator, not one after another (bench/fanout_parallel.py measures the
    time this saves)."""
    api.delay = 0.5
    gateway = start_gateway(gateway_factory, api)
    people = ["ann@api.example", "ben@api.example", "cy@api.example",
              "di@api.example", "ed@api.example", "who@api.example"]
    schedule_response(gateway.post("/alice/.schedule-outbox/",
                                   request(people), "alice"))
    assert len(api.calls) == 9
    # Serial calls would never overlap (1 in flight at a time).
    assert api.most_in_flight >= 3, api.most_in_flight


@pytest.mark.parametrize("retry_after", ["1", "0.4"])
def test_429_with_retry_after_is_honoured(gateway_factory, api, retry_after):
    api.throttle["ben@api.example"] = [retry_after]
    gateway = start_gateway(gateway_factory, api)
    answers = schedule_response(gateway.post(
        "/alice/.schedule-outbox/",
        request(["ben@api.example"], end="20260105T000000Z"), "alice"))
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY-UNAVAILABLE": [("20260102T090000Z", "20260102T170000Z")]})
    assert len(api.calls) == 2
    waited = api.calls[1][0] - api.calls[0][0]
    assert waited >= float(retry_after) - 0.05


def test_429_beyond_the_deadline_fails_that_address_only(gateway_factory,
                                                         api):
    api.throttle["ben@api.example"] = ["3600"]
    gateway = start_gateway(gateway_factory, api)
    answers = schedule_response(gateway.post(
        "/alice/.schedule-outbox/",
        request(["ben@api.example", "alice@example.com"],
                end="20260105T000000Z"), "alice"))
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:ben@api.example", "5.3"),
        ("mailto:alice@example.com", "2.0")]
    assert len(api.calls) == 1     # no hammering


def test_one_failing_piece_fails_only_its_addresses(gateway_factory, api):
    api.fail.add("cy@api.example")
    gateway = start_gateway(gateway_factory, api)
    answers = schedule_response(gateway.post(
        "/alice/.schedule-outbox/",
        request(["ann@api.example", "ben@api.example", "cy@api.example"]),
        "alice"))
    statuses = {a[0]: a[1] for a in answers}
    assert statuses["mailto:ann@api.example"] == "2.0"
    assert statuses["mailto:ben@api.example"] == "2.0"
    # A partial answer (some windows missing) is never passed off as free.
    assert statuses["mailto:cy@api.example"] == "5.1"


def test_plugin_keys_are_validated(gateway_factory, api, tmp_path):
    import subprocess
    import sys
    from conftest import ROOT
    config = tmp_path / "bad.ini"
    config.write_text("[server]\nhosts = 127.0.0.1:1\n[auth]\ntype = none\n"
                      "[gateway]\ndomains = example.com\n" + section(
                          api).replace("api_key = k-123\n", ""))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config",
         str(config)], cwd=str(ROOT), capture_output=True, text=True,
        env={"PYTHONPATH": str(THIRDPARTY), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "[provider:demo]" in result.stderr
    assert "api_key" in result.stderr


def test_loaded_through_entry_point(gateway_factory, api, tmp_path):
    """A package that registers ``demo-api`` in the entry-point group."""
    dist = tmp_path / "site" / "fbdemo-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fbdemo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[freebusy_gateway.providers]\ndemo-api = fbdemo_provider:Provider\n")
    gateway = gateway_factory(
        extra=section(api, type_name="demo-api"),
        env={"PYTHONPATH": "%s:%s" % (tmp_path / "site", THIRDPARTY)})
    answers = schedule_response(gateway.post(
        "/alice/.schedule-outbox/",
        request(["ed@api.example"], end="20260105T000000Z"), "alice"))
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260103T120000Z", "20260103T130000Z")]})


CRASHING_PLUGIN = '''
from gateway.provider import Provider as Base


class Provider(Base):
    """A plugin with a bug: it raises what it should have caught."""

    def lookup(self, addresses, window, context):
        raise KeyError("internal-detail-of-the-plugin")
'''


def test_a_crashing_plugin_is_named_not_its_exception(gateway_factory, api,
                                                     tmp_path):
    """The asker reads which provider failed; the exception's class and
    text go to the log once, with the traceback and the provider's name."""
    (tmp_path / "plugins_dir").mkdir()
    (tmp_path / "plugins_dir" / "crashing_provider.py").write_text(
        CRASHING_PLUGIN)
    gateway = gateway_factory(
        extra=section(api) + "[provider:broken]\ntype = crashing_provider\n"
        "domains = broken.example\nurl = %s\n" % api.url,
        env={"PYTHONPATH": "%s:%s" % (tmp_path / "plugins_dir", THIRDPARTY)})
    response = gateway.post("/alice/.schedule-outbox/", request(
        ["x@broken.example", "ed@api.example"], end="20260105T000000Z"),
        "alice")
    answers = schedule_response(response)
    assert [(a[0], a[1]) for a in answers] == [
        ("mailto:x@broken.example", "5.1"), ("mailto:ed@api.example", "2.0")]
    assert "5.1;Could not deliver;broken failed with an internal error" in \
        response.text
    for leak in ("KeyError", "internal-detail", "Traceback"):
        assert leak not in response.text
    log = gateway.log()
    assert log.count("Provider broken raised") == 1, log
    assert "internal-detail-of-the-plugin" in log
