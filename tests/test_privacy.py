"""Privacy probes: one policy on every face (design.md, "Who may see whose
free/busy").

Each rule is probed on the read URL, getSchedule at its three paths, the
free-busy-query REPORT, the outbox POST, EWS GetUserAvailability,
findMeetingTimes and the HTML view, through real gateway processes:
event details never leave; anonymous callers get 401 unless
``anonymous_freebusy = yes``, and then see unknown, opted-out and
foreign addresses exactly as a free local user and never make the
gateway ask a foreign system (an emulated one records every request);
an opted-out user is "no authority" to everyone but themselves; each
caller is held to ``requests_per_minute``.  JSON answers are checked
against the OpenAPI document too.
"""

import re

import pytest
import requests
from lxml import etree

from conftest import Gateway
from emulators.ifb_peer import IfbPeer, utc
from fbcheck import periods_of, schedule_response
from icaldata import PRIVATE_WORDS, event, freebusy_request
from test_ews_face import availability, mailbox_answers
from test_ews_face import post as ews_post
from test_getschedule_face import checked

WINDOW = ("20260105T000000Z", "20260109T000000Z")
READ_QUERY = "?start=2026-01-05T00:00:00Z&end=2026-01-09T00:00:00Z"
SCHEDULE = {"startTime": {"dateTime": "2026-01-05T00:00:00",
                          "timeZone": "UTC"},
            "endTime": {"dateTime": "2026-01-09T00:00:00", "timeZone": "UTC"},
            "availabilityViewInterval": 60}
SCHEDULE_PATHS = ("/.freebusy/getSchedule", "/v1.0/me/calendar/getSchedule",
                  "/v1.0/users/me/calendar/getSchedule")
FBQ = ('<?xml version="1.0"?><C:free-busy-query xmlns:C="urn:ietf:params:'
       'xml:ns:caldav"><C:time-range start="%s" end="%s"/>'
       '</C:free-busy-query>' % WINDOW)
SECRETS = PRIVATE_WORDS + ("secret-guest", "secret-uid")
OPT_OUT = ('<G:freebusy-opt-out xmlns:G="urn:freebusy-gateway">%s'
           '</G:freebusy-opt-out>')
USERS = {"alice": "alice-pw", "bob": "bob-pw", "olga": "olga-pw"}


@pytest.fixture(scope="module")
def peer():
    """The foreign system: it answers dave, and records who asked."""
    peer = IfbPeer("calconnect", {"dave@fb.example.net": [
        (utc("20260105T120000Z"), utc("20260105T130000Z"), "BUSY")]})
    yield peer
    peer.close()


def _start(directory, peer, extra=""):
    gateway = Gateway(
        directory, dict(USERS), "example.com",
        extra + "[provider:fb]\ntype = ifb\ndomains = fb.example.net\n"
        "url = %s\nwindow_params = calconnect\ncache_ttl = 0\n"
        % peer.url_template(), None)
    gateway.start()
    work = gateway.mkcalendar("alice", "work")
    gateway.put(work + "secret-uid.ics", event(
        "secret-uid", "20260105T090000Z", "20260105T100000Z",
        "ATTENDEE;CN=Guest:mailto:secret-guest@example.com\r\n"
        "ORGANIZER:mailto:alice@example.com\r\n"), "alice")
    gateway.put(gateway.mkcalendar("olga", "work") + "1.ics", event(
        "o1", "20260105T090000Z", "20260105T100000Z"), "olga")
    for user in ("bob", "olga"):        # principals exist (bob: no events)
        gateway.request("PROPFIND", "/%s/" % user, user=user,
                        headers={"Depth": "0"})
    assert gateway.proppatch("/olga/", OPT_OUT % "true",
                             "olga").status_code == 207
    return gateway


@pytest.fixture(scope="module")
def closed(tmp_path_factory, peer):
    """The default policy: anonymous callers are refused."""
    gateway = _start(tmp_path_factory.mktemp("closed"), peer)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def open_gateway(tmp_path_factory, peer):
    """``anonymous_freebusy = yes``."""
    gateway = _start(tmp_path_factory.mktemp("open"), peer,
                     "anonymous_freebusy = yes\n")
    yield gateway
    gateway.stop()


# -- the faces, asked the same question ---------------------------------------

def read_url(gateway, address, user):
    return gateway.request("GET", "/.freebusy/%s.ifb%s" % (address,
                                                           READ_QUERY),
                           user=user)


def get_schedule(gateway, addresses, user, path=SCHEDULE_PATHS[0]):
    auth = (user, gateway.users[user]) if user else None
    return checked(gateway, requests.post(
        gateway.url + path, json=dict(SCHEDULE, schedules=addresses),
        auth=auth, timeout=60))


def report(gateway, path, user):
    return gateway.request("REPORT", path, FBQ, user=user, headers={
        "Depth": "1", "Content-Type": "application/xml; charset=utf-8"})


def outbox(gateway, addresses, user):
    sender = user or "bob"
    return gateway.post("/%s/.schedule-outbox/" % sender, freebusy_request(
        addresses, *WINDOW, organizer="mailto:%s@example.com" % sender),
        user)


def every_face(gateway, owner, user):
    """{face: answer} for ``user`` asking about local user ``owner``."""
    address = owner + "@example.com"
    answers = {"read URL": read_url(gateway, address, user),
               "REPORT home": report(gateway, "/%s/" % owner, user),
               "REPORT calendar": report(gateway, "/%s/work/" % owner, user),
               "outbox": outbox(gateway, [address], user)}
    for path in SCHEDULE_PATHS:
        answers[path] = get_schedule(gateway, [address], user, path)
    return answers


def ews(gateway, address, user, view="DetailedMerged"):
    return ews_post(gateway, availability(
        [address], "2026-01-05T00:00:00Z", "2026-01-09T00:00:00Z", view),
        user=user)


def find_meeting_times(gateway, address, user):
    auth = (user, gateway.users[user]) if user else None
    return requests.post(gateway.url + "/.freebusy/findMeetingTimes", json={
        "attendees": [{"type": "required",
                       "emailAddress": {"address": address}}],
        "timeConstraint": {"activityDomain": "unrestricted", "timeslots": [{
            "start": {"dateTime": "2026-01-05T08:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-01-05T11:00:00", "timeZone": "UTC"}}]},
        "meetingDuration": "PT1H"}, auth=auth, timeout=60)


def view(gateway, address, user):
    return gateway.request(
        "GET", "/.freebusy/view?attendee=%s&start=2026-01-05&days=4&tz=UTC"
        % address, user=user)


def other_faces(gateway, owner, user):
    """{face: answer} of the faces that answer in their own shapes."""
    address = owner + "@example.com"
    return {"EWS": ews(gateway, address, user),
            "EWS Detailed": ews(gateway, address, user, "Detailed"),
            "findMeetingTimes": find_meeting_times(gateway, address, user),
            "view": view(gateway, address, user)}


# -- nothing but busy time ever leaves ----------------------------------------

@pytest.mark.parametrize("user", ["bob", "alice"])
def test_no_face_returns_summary_location_description_or_attendees(
        closed, user):
    for face, response in every_face(closed, "alice", user).items():
        assert response.status_code == 200, (face, response.text)
        text = response.text
        for secret in SECRETS:
            assert secret not in text, (face, secret)
        # ... while the busy time itself is there.
        assert "20260105T090000Z" in text or \
            '"dateTime":"2026-01-05T09:00:00.0000000"' in text.replace(
                " ", ""), (face, text)


@pytest.mark.parametrize("user", ["bob", "alice"])
def test_ews_finder_and_view_return_no_details_either(closed, user):
    answers = other_faces(closed, "alice", user)
    for face, response in answers.items():
        assert response.status_code == 200, (face, response.text)
        for secret in SECRETS:
            assert secret not in response.text, (face, secret)
    # ... while the busy time itself is there.
    assert mailbox_answers(answers["EWS"])[0]["merged"][18:20] == "22"
    assert "2026-01-05T09:00:00Z" in answers["view"].text
    slots = answers["findMeetingTimes"].json()["meetingTimeSuggestions"]
    states = {s["meetingTimeSlot"]["start"]["dateTime"][:16]:
              s["attendeeAvailability"][0]["availability"] for s in slots}
    # (alice as organizer of her own meeting is never offered her busy
    # hour at all)
    assert states.get("2026-01-05T09:00", "busy") == "busy", slots
    assert states["2026-01-05T08:00"] == "free", slots


def test_ews_finder_and_view_refuse_anonymous_callers(closed, peer):
    asked = len(peer.requests)
    for address in ("alice@example.com", "dave@fb.example.net"):
        answers = other_faces(closed, address.split("@")[0], None) \
            if address.endswith("example.com") else {
                "findMeetingTimes": find_meeting_times(closed, address, None),
                "view": view(closed, address, None)}
        for face, response in answers.items():
            assert response.status_code == 401, (face, response.text)
    assert len(peer.requests) == asked


def test_an_opted_out_user_is_no_authority_on_ews_finder_and_view(closed):
    answers = other_faces(closed, "olga", "bob")
    ews_answer = mailbox_answers(answers["EWS"])[0]
    assert ews_answer["code"] == "ErrorNoFreeBusyAccess", ews_answer
    suggestions = answers["findMeetingTimes"].json()["meetingTimeSuggestions"]
    assert all(a["availability"] == "unknown"
               for s in suggestions for a in s["attendeeAvailability"])
    assert 'data-state="error"' in answers["view"].text
    assert 'data-fbtype' not in answers["view"].text
    assert ews_answer["events"] == [] and not ews_answer["merged"]
    own = other_faces(closed, "olga", "olga")
    assert mailbox_answers(own["EWS"])[0]["merged"][18:20] == "22"


# -- anonymous callers --------------------------------------------------------

def test_anonymous_callers_are_refused_by_default(closed, peer):
    asked = len(peer.requests)
    for address in ("alice@example.com", "dave@fb.example.net"):
        response = read_url(closed, address, None)
        assert response.status_code == 401, response.text
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        for path in SCHEDULE_PATHS:
            response = get_schedule(closed, [address], None, path)
            assert response.status_code == 401, (path, response.text)
            assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert report(closed, "/alice/", None).status_code == 401
    assert outbox(closed, ["alice@example.com"], None).status_code == 401
    assert len(peer.requests) == asked


def _without_identity(text):
    """A VFREEBUSY without the lines that name the address or the moment
    it was made: what is left must not tell addresses apart."""
    return [line for line in text.splitlines()
            if not re.match(r"^(UID|DTSTAMP|ORGANIZER)[:;]", line)]


HIDDEN = ["nobody@example.com", "olga@example.com", "dave@fb.example.net",
          "x@nowhere.example"]


def test_anonymous_read_url_shows_local_busy_time_and_hides_the_rest(
        open_gateway, peer):
    asked = len(peer.requests)
    alice = read_url(open_gateway, "alice@example.com", None)
    assert alice.status_code == 200, alice.text
    assert periods_of(alice.text) == {
        "BUSY": [("20260105T090000Z", "20260105T100000Z")]}
    for secret in SECRETS:
        assert secret not in alice.text
    free = read_url(open_gateway, "bob@example.com", None)
    assert free.status_code == 200 and periods_of(free.text) == {}
    for address in HIDDEN:
        response = read_url(open_gateway, address, None)
        assert response.status_code == free.status_code, address
        assert response.headers["Content-Type"] == \
            free.headers["Content-Type"]
        assert _without_identity(response.text) == \
            _without_identity(free.text), address
    assert len(peer.requests) == asked


def test_anonymous_get_schedule_shows_hidden_addresses_as_free(
        open_gateway, peer):
    asked = len(peer.requests)
    for path in SCHEDULE_PATHS:
        response = get_schedule(open_gateway,
                                ["alice@example.com", "bob@example.com"] +
                                HIDDEN, None, path)
        assert response.status_code == 200, response.text
        value = response.json()["value"]
        assert "2" in value[0]["availabilityView"]
        free = dict(value[1], scheduleId=None)
        for entry in value[2:]:
            assert dict(entry, scheduleId=None) == free, entry["scheduleId"]
        for secret in SECRETS:
            assert secret not in response.text
    assert len(peer.requests) == asked


def test_anonymous_callers_still_cannot_use_report_or_outbox(open_gateway):
    assert report(open_gateway, "/alice/", None).status_code == 401
    assert report(open_gateway, "/alice/work/", None).status_code == 401
    assert outbox(open_gateway, ["alice@example.com"], None
                  ).status_code == 401


def test_authenticated_callers_get_a_clear_unknown(open_gateway, peer):
    assert read_url(open_gateway, "nobody@example.com", "bob"
                    ).status_code == 404
    assert read_url(open_gateway, "x@nowhere.example", "bob"
                    ).status_code == 404
    value = get_schedule(open_gateway, ["nobody@example.com"], "bob"
                         ).json()["value"][0]
    assert value["error"]["responseCode"] == "ErrorMailRecipientNotFound"
    answers = schedule_response(outbox(open_gateway, ["nobody@example.com"],
                                       "bob"))
    assert answers[0][1] == "3.7"
    # ... and authenticated callers do reach the foreign system.
    asked = len(peer.requests)
    dave = read_url(open_gateway, "dave@fb.example.net", "bob")
    assert dave.status_code == 200
    assert periods_of(dave.text) == {
        "BUSY": [("20260105T120000Z", "20260105T130000Z")]}
    assert len(peer.requests) == asked + 1


# -- opting out ---------------------------------------------------------------

def assert_refused_everywhere(gateway, owner, user):
    answers = every_face(gateway, owner, user)
    assert answers["read URL"].status_code == 403
    assert answers["REPORT home"].status_code == 403
    assert answers["REPORT calendar"].status_code == 403
    assert schedule_response(answers["outbox"])[0][1] == "3.8"
    for path in SCHEDULE_PATHS:
        entry = answers[path].json()["value"][0]
        assert entry["error"]["responseCode"] == "ErrorNoFreeBusyAccess"
        assert "workingHours" not in entry
    for face, response in answers.items():
        assert "20260105T090000Z" not in response.text, face
        assert "2026-01-05T09:00:00" not in response.text, face


def assert_served_everywhere(gateway, owner, user):
    for face, response in every_face(gateway, owner, user).items():
        assert response.status_code == 200, (face, response.text)
        if face == "outbox":
            assert schedule_response(response)[0][1] == "2.0"
        elif face in SCHEDULE_PATHS:
            assert "2" in response.json()["value"][0]["availabilityView"]
        else:
            assert periods_of(response.text) == {
                "BUSY": [("20260105T090000Z", "20260105T100000Z")]}, face


def opt_out_value(gateway, user):
    response = gateway.request(
        "PROPFIND", "/%s/" % user, '<?xml version="1.0"?><D:propfind '
        'xmlns:D="DAV:" xmlns:G="urn:freebusy-gateway"><D:prop>'
        '<G:freebusy-opt-out/></D:prop></D:propfind>', user=user,
        headers={"Depth": "0"})
    assert response.status_code == 207, response.text
    for propstat in etree.fromstring(response.content).iter(
            "{DAV:}propstat"):
        if " 200 " in propstat.findtext("{DAV:}status"):
            found = propstat.find(
                "{DAV:}prop/{urn:freebusy-gateway}freebusy-opt-out")
            if found is not None:
                return found.text or ""
    return None


def test_opt_out_on_every_face_and_back_in(closed):
    assert opt_out_value(closed, "olga") == "true"
    assert_refused_everywhere(closed, "olga", "bob")
    assert_served_everywhere(closed, "olga", "olga")
    try:
        assert closed.proppatch("/olga/", OPT_OUT % "false",
                                "olga").status_code == 207
        assert_served_everywhere(closed, "olga", "bob")
        assert closed.proppatch("/olga/", OPT_OUT % "true",
                                "olga").status_code == 207
        assert_refused_everywhere(closed, "olga", "bob")
        assert closed.proppatch("/olga/", OPT_OUT % "", "olga",
                                action="remove").status_code == 207
        assert opt_out_value(closed, "olga") is None
        assert_served_everywhere(closed, "olga", "bob")
    finally:
        closed.proppatch("/olga/", OPT_OUT % "true", "olga")


def test_only_the_user_can_opt_themselves_out(closed):
    response = closed.proppatch("/alice/", OPT_OUT % "true", "bob")
    assert response.status_code in (403, 404), response.text
    assert_served_everywhere(closed, "alice", "bob")


# -- a request limit per caller -----------------------------------------------

def test_each_caller_is_held_to_requests_per_minute(gateway_factory):
    gateway = gateway_factory(users=dict(USERS),
                              extra="requests_per_minute = 3\n"
                              "anonymous_freebusy = yes\n")
    answers = [read_url(gateway, "bob@example.com", "bob"),
               get_schedule(gateway, ["bob@example.com"], "bob",
                            SCHEDULE_PATHS[1]),
               get_schedule(gateway, ["bob@example.com"], "bob",
                            SCHEDULE_PATHS[2])]
    assert [a.status_code for a in answers] == [200, 200, 200]
    refused = [read_url(gateway, "bob@example.com", "bob")] + [
        get_schedule(gateway, ["bob@example.com"], "bob", path)
        for path in SCHEDULE_PATHS]
    for response in refused:
        assert response.status_code == 429, response.text
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert refused[1].json()["error"]["code"] == "TooManyRequests"
    # Another caller has a limit of their own, anonymous callers one per
    # address.
    assert read_url(gateway, "bob@example.com", "alice").status_code == 200
    assert read_url(gateway, "bob@example.com", None).status_code == 200


def test_behind_a_trusted_proxy_anonymous_callers_are_counted_apart(
        gateway_factory):
    """From ``trusted_proxy`` (here the test's own loopback address),
    X-Forwarded-For names the caller; the same header from anyone else
    is dropped, so a caller cannot pick a fresh budget."""
    def ask(gateway, forwarded):
        return gateway.request("GET", "/.freebusy/bob@example.com",
                               headers={"X-Forwarded-For": forwarded})

    proxied = gateway_factory(users=dict(USERS), name="proxied", extra=(
        "requests_per_minute = 2\nanonymous_freebusy = yes\n"
        "trusted_proxy = 127.0.0.1\n"))
    assert [ask(proxied, "192.0.2.1").status_code for _ in range(3)] == \
        [200, 200, 429]
    assert ask(proxied, "192.0.2.2").status_code == 200
    # Only the proxy's own entry (the last) counts: a client's forged
    # entries before it do not.
    assert ask(proxied, "203.0.113.9, 192.0.2.1").status_code == 429

    direct = gateway_factory(users=dict(USERS), name="direct", extra=(
        "requests_per_minute = 2\nanonymous_freebusy = yes\n"))
    assert [ask(direct, "192.0.2.%d" % i).status_code
            for i in range(3)] == [200, 200, 429]
