"""Who may see whose free/busy, and what anonymous callers learn.

``[gateway] freebusy_access = authenticated`` (the default): every
authenticated local user sees every local user's busy time, whatever
Radicale's rights type says (``owner_only`` included); ``= rights``:
Radicale's ``r`` or ``f`` right on each calendar decides.  The outbox
POST and the free-busy-query REPORT apply it alike.  An admin is a user
like any other: under ``rights`` the rights file gives them what they see.

Anonymous requests to anything that needs a login are 401 with Radicale's
WWW-Authenticate, whether the user, calendar or event exists or not.
"""

import subprocess
import sys

import pytest

from conftest import ROOT, Gateway
from fbcheck import assert_same_periods, periods_of, schedule_response
from icaldata import event, freebusy_request

FBQ = ('<?xml version="1.0"?><C:free-busy-query xmlns:C="urn:ietf:params:'
       'xml:ns:caldav"><C:time-range start="20260105T000000Z" '
       'end="20260106T000000Z"/></C:free-busy-query>')
ALICE_BUSY = {"BUSY": [("20260105T090000Z", "20260105T100000Z")]}
PRIVATE = ("[root]\nuser: .+\ncollection:\npermissions: R\n"
           "[owner]\nuser: .+\ncollection: {user}(/.*)?\n"
           "permissions: RWrw\n")


@pytest.fixture
def started(tmp_path):
    """Start gateways with any [rights] section: ``started(rights_type,
    extra)``; ``rights_type`` None keeps the fixture's from_file rights."""
    gateways = []

    def start(rights_type=None, extra="", rights=None):
        gateway = Gateway(tmp_path / ("gw%d" % len(gateways)),
                          {"alice": "alice-pw", "bob": "bob-pw",
                           "admin": "admin-pw"}, "example.com", extra,
                          rights)
        if rights_type:
            text = gateway.config_path.read_text()
            assert "type = from_file\nfile = rights\n" in text
            gateway.config_path.write_text(text.replace(
                "type = from_file\nfile = rights\n",
                "type = %s\n" % rights_type))
        gateways.append(gateway)
        gateway.start()
        gateway.put(gateway.mkcalendar("alice", "work") + "1.ics", event(
            "a1", "20260105T090000Z", "20260105T100000Z"), "alice")
        for user in ("bob", "admin"):
            gateway.request("PROPFIND", "/%s/" % user, user=user,
                            headers={"Depth": "0"})
        return gateway

    yield start
    for gateway in gateways:
        gateway.stop()


def ask(gateway, user="bob"):
    return schedule_response(gateway.post(
        "/%s/.schedule-outbox/" % user, freebusy_request(
            ["alice@example.com"], "20260105T000000Z", "20260106T000000Z",
            organizer="mailto:%s@example.com" % user), user))


def test_owner_only_rights_and_the_default_policy(started):
    gateway = started("owner_only")
    answers = ask(gateway)
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), ALICE_BUSY)
    report = gateway.report("/alice/", FBQ, "bob")
    assert report.status_code == 200, report.text
    assert_same_periods(periods_of(report.text), ALICE_BUSY)


def test_owner_only_rights_and_freebusy_access_rights(started):
    gateway = started("owner_only", "freebusy_access = rights\n")
    answers = ask(gateway)
    assert answers[0][1] == "3.8"
    assert answers[0][2] is None
    assert gateway.report("/alice/", FBQ, "bob").status_code in (403, 404)
    # alice herself still sees her own busy time.
    assert ask(gateway, "alice")[0][1] == "2.0"


def test_a_rights_file_without_f_and_the_default_policy(started):
    gateway = started(rights=PRIVATE)
    answers = ask(gateway)
    assert answers[0][1] == "2.0"
    assert_same_periods(periods_of(answers[0][2]), ALICE_BUSY)


def test_admin_under_freebusy_access_rights(started):
    """No admin role of its own: a rights rule gives the admin account the
    f right everywhere, and only that account sees alice."""
    rights = PRIVATE + ("[admin]\nuser: admin\ncollection: [^/]+/[^/]+\n"
                        "permissions: f\n")
    gateway = started(extra="freebusy_access = rights\n", rights=rights)
    assert ask(gateway, "admin")[0][1] == "2.0"
    assert_same_periods(periods_of(ask(gateway, "admin")[0][2]), ALICE_BUSY)
    assert ask(gateway, "bob")[0][1] == "3.8"


def test_unknown_policy_stops_start_up(tmp_path):
    config = tmp_path / "bad.ini"
    config.write_text("[server]\nhosts = 127.0.0.1:1\n[auth]\ntype = none\n"
                      "[gateway]\ndomains = example.com\n"
                      "freebusy_access = everyone\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config",
         str(config)], cwd=str(ROOT), capture_output=True, text=True)
    assert result.returncode != 0
    assert "freebusy_access" in result.stderr


# -- anonymous callers --------------------------------------------------

EXISTING = ["/alice/", "/alice/work/", "/alice/work/1.ics",
            "/alice/.schedule-outbox/", "/alice/.schedule-inbox/"]
MISSING = ["/ghost/", "/alice/nothing/", "/alice/work/none.ics",
           "/ghost/.schedule-outbox/", "/ghost/work/"]
METHODS = [
    ("REPORT", FBQ, {"Depth": "1",
                     "Content-Type": "application/xml; charset=utf-8"}),
    ("PROPFIND", None, {"Depth": "0"}),
    ("GET", None, {}),
    ("POST", freebusy_request(["alice@example.com"], "20260105T000000Z",
                              "20260106T000000Z"),
     {"Content-Type": "text/calendar"}),
    ("PROPPATCH", "<x/>", {}),
    ("MKCALENDAR", None, {}),
    ("DELETE", None, {}),
]


@pytest.mark.parametrize("method,body,headers", METHODS,
                         ids=[m[0] for m in METHODS])
def test_anonymous_cannot_tell_existing_from_missing(started, method, body,
                                                     headers):
    gateway = started()
    answers = set()
    for path in EXISTING + MISSING:
        response = gateway.request(method, path, body, headers=headers)
        assert response.status_code == 401, (path, response.status_code)
        assert response.headers["WWW-Authenticate"].startswith(
            "Basic realm="), path
        answers.add((response.status_code, response.content,
                     response.headers.get("Content-Type")))
    assert len(answers) == 1, answers
    # Nothing was changed or deleted on the way.
    assert ask(gateway)[0][1] == "2.0"
