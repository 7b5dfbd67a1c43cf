"""Only configured hosts, ever: hostile redirects and CalDAV hrefs.

A recording server on a port nobody configured stands for "another
host".  Foreign systems (an ifb read URL server, a CalDAV server with
Basic authentication) send the real gateway redirects and principal /
outbox hrefs that point there in every way parsers have been known to
read differently: backslashes, user information, percent-encoding,
``@`` in odd places, IPv6 and numeric host forms, scheme-relative
Locations, bad ports, whitespace, loops.  The recording server must see
no connection at all (so no credentials either), the attendee fails
alone (5.x), the answer is otherwise intact, and nothing crashes.
"""

import pytest

from emulators.caldav_outbox import ACCOUNT, CaldavPeer
from emulators.ifb_peer import IfbPeer, utc
from emulators.recorder import RecordingServer
from fbcheck import schedule_response
from icaldata import event, freebusy_request

WINDOW = ("20260105T000000Z", "20260109T000000Z")

#: {A}: the configured peer's port, {C}: the recording server's.
HOSTILE = [
    "http://127.0.0.1:{C}\\@127.0.0.1:{A}/freebusy/x.ifb",
    "http://127.0.0.1:{A}\\@127.0.0.1:{C}/freebusy/x.ifb",
    "http://127.0.0.1:{A}@127.0.0.1:{C}/x",
    "http://u:p@127.0.0.1:{A}/freebusy/carol@fb.example.net.ifb",
    "http://127.0.0.1:{A}%40127.0.0.1:{C}/x",
    "http://127.0.0.1%3A{C}/x",
    "//127.0.0.1:{C}/x",
    "http://127.0.0.1:{C}/x",
    "HTTP://127.0.0.1:{C}/x",
    "https://127.0.0.1:{C}/x",
    "http://LOCALHOST:{C}/x",
    "http://0x7f.0.0.1:{C}/x",
    "http://2130706433:{C}/x",
    "http://127.1:{C}/x",
    "http://[::ffff:127.0.0.1]:{C}/x",
    "http://127.0.0.1:{A}:{C}/x",
    "http://127.0.0.1:99999/x",
    "http://127.0.0.1:-{C}/x",
    "http://127.0.0.1:{C}\t/x",
    "http://127.0.0.1:{C}%09/x",
    "ftp://127.0.0.1:{C}/x",
    "http:127.0.0.1:{C}/x",
]


def fill(template, peer_port, recorder_port):
    return template.replace("{A}", str(peer_port)).replace(
        "{C}", str(recorder_port))


@pytest.fixture
def recorder():
    server = RecordingServer()
    yield server
    server.close()


def ask(gateway, attendees):
    response = gateway.post("/alice/.schedule-outbox/",
                            freebusy_request(attendees, *WINDOW), "alice",
                            timeout=120)
    assert response.status_code == 200, response.text
    return response, schedule_response(response)


def test_hostile_redirects_never_reach_another_port(gateway_factory,
                                                    recorder):
    peer = IfbPeer("calconnect", {
        "dave@fb.example.net": [(utc("20260105T120000Z"),
                                 utc("20260105T130000Z"), "BUSY")]})
    try:
        hostile = {}
        for n, template in enumerate(HOSTILE):
            address = "h%d@fb.example.net" % n
            hostile[address] = fill(template, peer.port, recorder.port)
            peer.script[address] = [("redirect", hostile[address])]
        # A redirect loop on the right host ends after a few hops.
        peer.script["loop@fb.example.net"] = [
            ("redirect", "/freebusy/loop@fb.example.net.ifb?start="
             "2026-01-05T00:00:00Z&end=2026-01-09T00:00:00Z")] * 10
        # "@" in the path of the configured host is just a path there.
        peer.script["path@fb.example.net"] = [
            ("redirect", "/freebusy/x@127.0.0.1:%d.ifb?start="
             "2026-01-05T00:00:00Z&end=2026-01-09T00:00:00Z"
             % recorder.port)]
        # The control: a redirect on the configured host is followed.
        peer.script["dave@fb.example.net"] = [
            ("redirect", "/freebusy/dave@fb.example.net.ifb?start="
             "2026-01-05T00:00:00Z&end=2026-01-09T00:00:00Z")]
        gateway = gateway_factory(extra=(
            "[provider:fb]\ntype = ifb\ndomains = fb.example.net\n"
            "url = %s\nwindow_params = calconnect\ntimeout = 5\n"
            "cache_ttl = 0\n" % peer.url_template()))
        gateway.put(gateway.mkcalendar("bob", "work") + "1.ics", event(
            "b1", "20260105T110000Z", "20260105T120000Z"), "bob")
        attendees = list(hostile) + [
            "loop@fb.example.net", "path@fb.example.net",
            "dave@fb.example.net", "bob@example.com"]
        response, answers = ask(gateway, attendees)
        statuses = {a[0][7:]: a[1] for a in answers}
        assert statuses["dave@fb.example.net"] == "2.0"
        assert statuses["bob@example.com"] == "2.0"
        for address, location in hostile.items():
            if location.startswith("http:127"):
                # urljoin reads it as a path on the configured host.
                assert statuses[address] == "3.7"
                continue
            assert statuses[address] == "5.1", (location, statuses[address])
        assert statuses["loop@fb.example.net"] == "5.1"
        assert "fb redirected too often" in response.text
        assert [r.path for r in peer.requests].count(
            "/freebusy/loop@fb.example.net.ifb") == 4
        assert statuses["path@fb.example.net"] != "2.0"
        assert recorder.connections == []
        assert str(recorder.port) not in response.text
        assert "Traceback" not in gateway.log()
        # Refusals are logged with the reason, once per call.
        assert "backslash in the URL" in gateway.log()
    finally:
        peer.close()


def caldav_section(name, url, extra=""):
    return ("[provider:%s]\ntype = caldav\ndomains = %s.example\nurl = %s\n"
            "username = fed\npassword = fed-pw\ntimeout = 5\ncache_ttl = 0\n"
            "%s" % (name, name, url, extra))


def test_hostile_principal_and_outbox_hrefs_get_no_credentials(
        gateway_factory, recorder):
    """A CalDAV peer (Basic auth on every request) answers discovery with
    principal or outbox hrefs pointing elsewhere: the provider's
    credentials go nowhere but the configured host."""
    peer = CaldavPeer({})
    outbox_peer = CaldavPeer({"carol@bad-outbox.example": []})
    try:
        sections = [caldav_section("good", peer.base + "/good/")]
        peer.principal_hrefs["/good/"] = ACCOUNT
        peer.busy["carol@good.example"] = [("20260105T090000Z",
                                            "20260105T100000Z")]
        names = []
        for n, template in enumerate(HOSTILE):
            name = "p%d" % n
            names.append(name)
            peer.principal_hrefs["/%s/" % name] = fill(
                template, peer.port, recorder.port)
            peer.busy["carol@%s.example" % name] = []
            sections.append(caldav_section(name, "%s/%s/" % (peer.base,
                                                             name)))
        outbox_peer.principal_hrefs["/o/"] = ACCOUNT
        outbox_peer.outbox_href = "http://127.0.0.1:%d\\@127.0.0.1:%d%s" \
            "outbox/" % (recorder.port, outbox_peer.port, ACCOUNT)
        sections.append(caldav_section("bad-outbox",
                                       outbox_peer.base + "/o/"))
        gateway = gateway_factory(extra="timeout = 20\n" + "".join(sections))
        response, answers = ask(gateway, [
            "carol@good.example", "alice@example.com",
            "carol@bad-outbox.example"] + [
                "carol@%s.example" % name for name in names])
        statuses = {a[0][7:]: a[1] for a in answers}
        assert statuses.pop("carol@good.example") == "2.0"
        assert statuses.pop("alice@example.com") == "2.0"
        for address, status in statuses.items():
            assert status.startswith("5."), (address, status)
        assert recorder.connections == []
        # The peers saw discovery, and no outbox POST went anywhere else.
        assert outbox_peer.posts == []
        assert "Traceback" not in gateway.log()
    finally:
        peer.close()
        outbox_peer.close()


def test_connections_check_their_host_behind_the_url_check(recorder):
    """Defence in depth, in-process: even with the URL check taken away,
    the client's connections refuse a host:port outside its origins
    before a socket opens."""
    import time

    from gateway.transport.http import HttpClient
    from gateway.transport.lookup import LookupContext, ProviderError

    allowed = RecordingServer()
    try:
        client = HttpClient(allowed.base + "/", 5, username="u",
                            password="p")
        client._checked_url = lambda url, params: url
        with pytest.raises(ProviderError) as failure:
            client.request("GET", recorder.base + "/x",
                           LookupContext(time.monotonic() + 5))
        assert "not a configured host" in failure.value.detail
        assert recorder.connections == []
        # The same client reaches its own origin.
        response = client.request("GET", allowed.base + "/x",
                                  LookupContext(time.monotonic() + 5))
        assert response.status == 200
        assert len(allowed.connections) == 1
    finally:
        allowed.close()


@pytest.mark.parametrize("url,same_as", [
    ("HTTP://Example.ORG/x", "http://example.org/"),
    ("http://example.org:80/", "http://example.org/"),
    ("https://example.org:443/a?b", "https://example.org/"),
    ("http://[::1]:8080/", "http://[::1]:8080/x"),
])
def test_origins_compare_normalised(url, same_as):
    from gateway.transport.http import origin
    assert origin(url) == origin(same_as)


@pytest.mark.parametrize("url", [
    "http://example.org:443/", "https://example.org/", "http://example.org:0/",
    "http://example.org./",
])
def test_other_ports_and_forms_are_other_origins(url):
    from gateway.transport.http import origin
    assert origin(url) != origin("http://example.org/")
