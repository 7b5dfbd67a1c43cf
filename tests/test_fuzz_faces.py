"""Seeded fuzzing of the other faces against the real application.

getSchedule (all three paths), findMeetingTimes, the read URL, the view,
EWS GetUserAvailability, Autodiscover, the push receiver and the
operational routes get mutated input: JSON fields dropped, replaced by
junk of every type (huge numbers, dates out of range, unknown zones, NUL
bytes, lone surrogates, long strings) or multiplied; query strings of
junk; SOAP and POX bodies cut and spliced; odd methods and content types;
logged in or anonymous.  For every case: never a 500 (nor 501, 505 ...),
except a SOAP Fault from the EWS route (SOAP 1.1 puts faults on HTTP
500), which must be a well-formed Fault; 502-504 only as a foreign
system's failure; no request longer than DEADLINE; and afterwards
the ordinary questions still get their ordinary answers.

In-process (tests/inprocess.py); about a second per seed;
FBGW_FUZZ_FACES sets the cases per seed (600).
"""

import json
import os
import random
from typing import List

import pytest
from lxml import etree

from fbcheck import periods_of
from icaldata import event
from inprocess import InProcessGateway
from test_ews_face import S, availability

CASES_PER_SEED = int(os.environ.get("FBGW_FUZZ_FACES", "600"))
DEADLINE = 20.0
SCHEDULE = {
    "schedules": ["alice@example.com", "bob@example.com", "x@fb.example"],
    "startTime": {"dateTime": "2026-12-07T00:00:00", "timeZone": "UTC"},
    "endTime": {"dateTime": "2026-12-09T00:00:00",
                "timeZone": "Pacific Standard Time"},
    "availabilityViewInterval": 30}
FIND = {
    "attendees": [
        {"type": "required", "emailAddress": {"address": "bob@example.com"}},
        {"type": "optional", "emailAddress": {"address": "x@fb.example"}}],
    "timeConstraint": {"activityDomain": "work", "timeslots": [{
        "start": {"dateTime": "2026-12-07T08:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-09T18:00:00", "timeZone": "UTC"}}]},
    "meetingDuration": "PT1H", "maxCandidates": 5,
    "minimumAttendeePercentage": 50, "isOrganizerOptional": False,
    "returnSuggestionReasons": True}
JUNK = (None, True, -1, 0, 1e308, -2 ** 70, "", "x" * 3000, "\x00",
        "2026-13-45T99:99:99", "2026-12-07T10:00:00", [], {},
        [1, {"a": None}], "P1Y", "PT0S", "-PT1H", "PT999999H", "mailto:",
        "alice@example.com", "\ud800", "9999-12-31T23:59:59",
        "0001-01-01T00:00:00", "Europe/Berlin", "Nowhere/Zone",
        "Pacific Standard Time", "x@fb.example", "a@b@c", "%00")
ADDRESSES = ("alice@example.com", "bob@example.com", "x@fb.example", "%00",
             "a%2F..%2F", "alice@example.com.ifb", "bob@example.com.vfb",
             "@", "x" * 300, "nobody@example.com", "%E2%80%AE")
PARAMETERS = ("start", "end", "period", "format", "attendees", "days", "tz",
              "duration", "date", "view", "x")
SPLICES = ("", "<", "&", "2026-13-01T00:00:00", "-999999", "<x>", "]]>",
           "Detailed", "\x00", "0", "99999999", "Bias", "</t:TimeWindow>")
OPERATIONAL = ("/.freebusy/health", "/.freebusy/metrics",
               "/.freebusy/openapi.json", "/.freebusy/", "/.freebusy",
               "/.freebusy/view/", "/EWS/Exchange.asmx", "/v1.0/",
               "/v1.0/users/x", "/autodiscover/autodiscover.xml")
EWS_BODY = availability(
    ["alice@example.com", "bob@example.com", "nobody@example.com",
     "x@fb.example"], "2026-12-07T00:00:00", "2026-12-09T00:00:00",
    view="DetailedMerged")
AUTODISCOVER = (
    "<?xml version='1.0'?><Autodiscover xmlns='http://schemas.microsoft.com"
    "/exchange/autodiscover/outlook/requestschema/2006'><Request>"
    "<EMailAddress>%s</EMailAddress><AcceptableResponseSchema>%s"
    "</AcceptableResponseSchema></Request></Autodiscover>")
BOB_BUSY = ("20261207T100000Z", "20261207T110000Z")
#: What a foreign system's failure may give one address's read URL (the
#: provider here is unreachable): not the client's doing, not a 500.
UPSTREAM = (502, 503, 504)


class Fuzzer:
    """One seed's cases against one gateway."""

    def __init__(self, gateway: InProcessGateway, seed: int) -> None:
        self.gateway = gateway
        self.rng = random.Random(seed)
        self.found: List[str] = []

    def junk(self):
        return self.rng.choice(JUNK)

    def mutate(self, value):
        rng = self.rng
        if isinstance(value, dict):
            out = {}
            for key, inner in value.items():
                roll = rng.random()
                if roll < 0.1:
                    continue
                out[key] = self.junk() if roll < 0.3 else self.mutate(inner)
            if rng.random() < 0.1:
                out[rng.choice(["x", "Schedules", "", "\x00"])] = self.junk()
            return out
        if isinstance(value, list):
            items = [self.mutate(x) for x in value if rng.random() > 0.1]
            if rng.random() < 0.2:
                items = items * rng.randrange(1, 60)
            if rng.random() < 0.1:
                items.append(self.junk())
            return items
        return self.junk() if rng.random() < 0.3 else value

    def query(self) -> str:
        parts = []
        for name in PARAMETERS:
            if self.rng.random() < 0.5:
                value = self.junk()
                parts.append("%s=%s" % (name, "" if value is None else
                                        str(value)[:200]))
        return "&".join(parts).replace(" ", "%20").replace("#", "%23")

    def spliced(self, text: str) -> str:
        for _ in range(self.rng.randrange(1, 4)):
            a = self.rng.randrange(len(text))
            b = min(len(text), a + self.rng.randrange(0, 40))
            text = text[:a] + self.rng.choice(SPLICES) + text[b:]
        return text

    def json_body(self, template) -> bytes:
        if self.rng.random() < 0.15:
            return bytes(self.rng.randrange(256)
                         for _ in range(self.rng.randrange(0, 200)))
        return json.dumps(self.mutate(template)).encode("utf-8",
                                                        "surrogatepass")

    # -- one case ------------------------------------------------------

    def case(self) -> None:
        rng = self.rng
        user = rng.choice(["alice", "alice", None])
        kind = rng.randrange(8)
        json_type = {"Content-Type": rng.choice([
            "application/json", "application/json", "text/plain",
            "application/json; charset=latin-1"])}
        if kind == 0:
            self.ask("POST", rng.choice([
                "/.freebusy/getSchedule", "/v1.0/me/calendar/getSchedule",
                "/v1.0/users/bob@example.com/calendar/getSchedule",
                "/v1.0/users/%00/calendar/getSchedule"]),
                self.json_body(SCHEDULE), user, dict(
                    json_type, Prefer=rng.choice([
                        'outlook.timezone="Nowhere"',
                        'outlook.timezone="Tokyo Standard Time"', ""])))
        elif kind == 1:
            self.ask("POST", rng.choice(["/.freebusy/findMeetingTimes",
                                         "/v1.0/me/findMeetingTimes"]),
                     self.json_body(FIND), user, json_type)
        elif kind == 2:
            self.ask("GET", "/.freebusy/%s?%s" % (rng.choice(ADDRESSES),
                                                  self.query()), None, user)
        elif kind == 3:
            self.ask("GET", "/.freebusy/view?%s" % self.query(), None, user)
        elif kind == 4:
            self.ask("POST", rng.choice(["/EWS/Exchange.asmx",
                                         "/ews/exchange.asmx"]),
                     self.spliced(EWS_BODY), user,
                     {"Content-Type": "text/xml; charset=utf-8"})
        elif kind == 5:
            self.ask("POST", "/autodiscover/autodiscover.xml",
                     self.spliced(AUTODISCOVER % (
                         rng.choice(ADDRESSES), rng.choice([
                             "http://schemas.microsoft.com/exchange/"
                             "autodiscover/outlook/responseschema/2006a",
                             "", "x"]))), user, {"Content-Type": "text/xml"})
        elif kind == 6:
            self.ask(rng.choice(["GET", "OPTIONS", "HEAD", "DELETE",
                                 "PROPFIND", "POST"]),
                     rng.choice(OPERATIONAL), None, user,
                     {"Origin": "http://evil.example",
                      "Access-Control-Request-Method": "POST"})
        else:
            self.ask("PUT", "/.freebusy/%s" % rng.choice(ADDRESSES),
                     self.spliced(event("p", "20261207T000000Z",
                                        "20261207T010000Z")).replace(
                         "VEVENT", rng.choice(["VEVENT", "VFREEBUSY"])),
                     user, {"Content-Type": "text/calendar"})

    def ask(self, method, path, body, user, headers=None) -> None:
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogatepass")
        answer = self.gateway.request(method, path, body, user,
                                      headers=headers or {})
        if answer.status_code < 500 or answer.status_code in UPSTREAM:
            return
        if answer.status_code == 500 and "/ews/" in path.lower():
            try:
                root = etree.fromstring(answer.content)
                fault = root.find("{%s}Body/{%s}Fault" % (S, S))
            except etree.XMLSyntaxError:
                fault = None
            if fault is not None and fault.findtext("faultcode"):
                return
        self.found.append("%s %s %r -> %d %s" % (
            method, path[:120], (body or b"")[:200], answer.status_code,
            answer.text[:300]))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    gateway = InProcessGateway(
        tmp_path_factory.mktemp("fuzz-faces"), deadline=DEADLINE,
        extra="anonymous_freebusy = yes\nrequests_per_minute = 0\n"
        "[provider:fb]\ntype = ifb\ndomains = fb.example\n"
        "url = http://127.0.0.1:9/{address}\ntimeout = 1\n"
        "push_accounts = alice\n")
    path = gateway.mkcalendar("bob", "work")
    gateway.put(path + "b.ics", event("b", *BOB_BUSY), "bob")
    return gateway


@pytest.mark.parametrize("seed", range(5))
def test_fuzzed_faces_never_fail_the_server(gateway, seed):
    fuzzer = Fuzzer(gateway, seed)
    for _ in range(CASES_PER_SEED):
        fuzzer.case()
    assert not fuzzer.found, "\n".join(fuzzer.found[:10])
    # Still the ordinary answers.
    answer = gateway.request(
        "GET", "/.freebusy/bob@example.com?start=2026-12-07T00:00:00Z"
        "&end=2026-12-08T00:00:00Z", None, "alice")
    assert answer.status_code == 200, answer.text
    assert periods_of(answer.content) == {"BUSY": [BOB_BUSY]}
    answer = gateway.request("POST", "/.freebusy/getSchedule", json.dumps(
        SCHEDULE).encode(), "alice",
        headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert [s["scheduleId"] for s in json.loads(answer.text)["value"]] == \
        SCHEDULE["schedules"]
