"""``fbgateway serve``: the HTTP server in front of the application.

Real gateway processes on loopback ports: slow, idle and waiting clients
never stop other requests; SIGTERM and SIGINT stop the server cleanly,
letting a request in progress finish; ``[server] max_content_length`` is a
413 on every method, chunked bodies included; every address of ``[server]
hosts`` listens; ``[logging] level`` applies to the gateway's own loggers,
under ``serve`` and under another WSGI server through ``gateway.wsgi``.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import List

import pytest
import requests

from conftest import ROOT, Gateway, free_port, stop, wait_for_port
from emulators.ifb_peer import IfbPeer
from fbcheck import schedule_response
from icaldata import event, freebusy_request

USERS = {"alice": "alice-pw", "bob": "bob-pw"}
WINDOW = ("20260105T000000Z", "20260109T000000Z")
FREE_BUSY_QUERY = (
    '<?xml version="1.0" encoding="utf-8"?><C:free-busy-query '
    'xmlns:C="urn:ietf:params:xml:ns:caldav"><C:time-range '
    'start="%s" end="%s"/></C:free-busy-query>' % WINDOW)
PROMPT = 5.0


@pytest.fixture
def server_factory(tmp_path):
    """Gateways as conftest makes them, with ``server`` lines added to
    ``[server]`` and ``level`` as ``[logging] level``."""
    started: List[Gateway] = []

    def start(server: str = "", level: str = "warning", extra: str = "",
              more_hosts: str = "") -> Gateway:
        gateway = Gateway(tmp_path / ("gw%d" % len(started)), dict(USERS),
                          "example.com", extra, None)
        text = gateway.config_path.read_text()
        hosts = "hosts = 127.0.0.1:%d" % gateway.port
        assert hosts + "\n" in text and "level = warning\n" in text
        text = text.replace(hosts + "\n", "%s%s\n%s" % (
            hosts, more_hosts and ", " + more_hosts, server)).replace(
            "level = warning\n", "level = %s\n" % level)
        gateway.config_path.write_text(text)
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def peer():
    peers = []

    def start() -> IfbPeer:
        peers.append(IfbPeer("calconnect", {}))
        return peers[-1]

    yield start
    for one in peers:
        one.close()


def ifb_provider(peer: IfbPeer, timeout: float) -> str:
    return ("timeout = %s\n[provider:fb]\ntype = ifb\n"
            "domains = fb.example.net\nurl = %s\nwindow_params = calconnect\n"
            "timeout = %s\ncache_ttl = 0\n" % (
                timeout, peer.url_template(), timeout))


def outbox_post(gateway: Gateway, attendees, timeout: float = 60):
    return gateway.post("/alice/.schedule-outbox/",
                        freebusy_request(attendees, *WINDOW), "alice",
                        timeout=timeout)


def seed(gateway: Gateway) -> str:
    """alice has one event; the returned path is her calendar."""
    path = gateway.mkcalendar("alice", "work")
    gateway.put(path + "e.ics", event("e", "20260105T090000Z",
                                      "20260105T100000Z"), "alice")
    return path


def assert_answers_promptly(gateway: Gateway, calendar: str) -> None:
    """A REPORT, a PROPFIND and a GET from a fresh client, each within
    PROMPT seconds."""
    checks = [
        ("REPORT", "/alice/", FREE_BUSY_QUERY,
         {"Depth": "1", "Content-Type": "application/xml"}, 200,
         "FBTYPE=BUSY:20260105T090000Z/20260105T100000Z"),
        ("PROPFIND", "/alice/", None, {"Depth": "0"}, 207, "multistatus"),
        ("GET", calendar + "e.ics", None, {}, 200, "BEGIN:VEVENT"),
    ]
    for method, path, body, headers, status, text in checks:
        began = time.monotonic()
        response = gateway.request(method, path, body, user="alice",
                                   headers=headers, timeout=PROMPT)
        took = time.monotonic() - began
        assert response.status_code == status, (method, response.text)
        assert text in response.text, (method, response.text)
        assert took < PROMPT, (method, took)


class Trickler:
    """Connections that send a never-ending request one byte per tick
    (one thread drives them all), beside connections that send nothing."""

    def __init__(self, port: int, slow: int, idle: int,
                 tick: float = 0.5) -> None:
        self.request = (b"PROPFIND /alice/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"X-Padding: " + b"x" * 10000)
        self.slow = [socket.create_connection(("127.0.0.1", port), 5)
                     for _ in range(slow)]
        self.idle = [socket.create_connection(("127.0.0.1", port), 5)
                     for _ in range(idle)]
        self.sent = 0
        self.failures: List[BaseException] = []
        self.done = threading.Event()
        self.tick = tick
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(self.tick) and \
                self.sent < len(self.request):
            byte = self.request[self.sent:self.sent + 1]
            for sock in self.slow:
                try:
                    sock.sendall(byte)
                except OSError as e:
                    self.failures.append(e)
                    return
            self.sent += 1

    def close(self) -> None:
        self.done.set()
        self.thread.join(10)
        for sock in self.slow + self.idle:
            sock.close()


def test_slow_and_idle_clients_do_not_stop_other_requests(server_factory):
    gateway = server_factory()
    calendar = seed(gateway)
    trickler = Trickler(gateway.port, slow=12, idle=12)
    try:
        time.sleep(1.5)  # every connection is open and some bytes are in
        assert_answers_promptly(gateway, calendar)
        assert_answers_promptly(gateway, calendar)
        assert trickler.sent >= 2 and not trickler.failures
    finally:
        trickler.close()
    assert gateway.process.poll() is None


def test_outbox_posts_waiting_on_a_slow_system_do_not_stop_others(
        server_factory, peer):
    """12 POSTs wait on a hanging foreign system at once (more than
    Radicale's 8 connections); local requests still answer promptly."""
    slow_system = peer()
    attendees = ["hang%d@fb.example.net" % i for i in range(12)]
    for address in attendees:
        slow_system.script[address] = ["hang"]
    gateway = server_factory(extra=ifb_provider(slow_system, 8) +
                             "max_parallel = 12\n")
    calendar = seed(gateway)
    answers = {}

    def ask(address: str) -> None:
        answers[address] = outbox_post(gateway, [address])

    threads = [threading.Thread(target=ask, args=(a,), daemon=True)
               for a in attendees]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 6
        while len(slow_system.requests) < len(attendees) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        # all 12 POSTs are being answered at the same time
        assert len(slow_system.requests) == len(attendees)
        assert_answers_promptly(gateway, calendar)
    finally:
        for thread in threads:
            thread.join(60)
    for address in attendees:
        response = answers[address]
        assert response.status_code == 200, response.text
        assert [(a[0], a[1]) for a in schedule_response(response)] \
            == [("mailto:" + address, "5.3")]


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_cleanly(server_factory, signal_number):
    gateway = server_factory(level="info")
    seed(gateway)
    open_connection = socket.create_connection(("127.0.0.1", gateway.port))
    try:
        gateway.process.send_signal(signal_number)
        assert gateway.process.wait(10) == 0
    finally:
        open_connection.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gateway.port), 1).close()
    log = gateway.log()
    assert "Traceback" not in log, log
    assert "Stopping" in log, log


def test_a_request_in_progress_finishes_after_sigterm(server_factory, peer):
    slow_system = peer()
    slow_system.script["slow@fb.example.net"] = ["hang"]
    gateway = server_factory(extra=ifb_provider(slow_system, 3))
    assert_a_post_in_progress_finishes_after_sigterm(gateway, slow_system)


def assert_a_post_in_progress_finishes_after_sigterm(
        gateway: Gateway, slow_system: IfbPeer, wait: float = 10) -> None:
    """An outbox POST waiting on ``slow_system`` (which hangs for
    slow@fb.example.net) when SIGTERM comes: no new connection is taken,
    the POST gets its whole answer, the server exits 0 within ``wait``."""
    answer = {}
    thread = threading.Thread(target=lambda: answer.setdefault(
        "response", outbox_post(gateway, ["slow@fb.example.net",
                                          "alice@example.com"])),
        daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not slow_system.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slow_system.requests
    gateway.process.send_signal(signal.SIGTERM)
    # no new connections once the signal is seen
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", gateway.port), 1).close()
        except OSError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("still accepting connections after SIGTERM")
    thread.join(30)
    response = answer["response"]
    assert response.status_code == 200, response.text
    assert [(a[0], a[1]) for a in schedule_response(response)] == [
        ("mailto:slow@fb.example.net", "5.3"),
        ("mailto:alice@example.com", "2.0")]
    assert gateway.process.wait(wait) == 0


# -- [server] max_content_length ----------------------------------------

LIMIT = 2000
BIG = 50000


def big_xml(root: str) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?><D:%s xmlns:D="DAV:" '
            'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>'
            '<D:displayname>%s</D:displayname></D:prop></D:set></D:%s>' % (
                root, "x" * BIG, root))


def big_body(method: str) -> str:
    if method == "PUT":
        return event("big", "20260105T090000Z", "20260105T100000Z",
                     "COMMENT:%s\r\n" % ("x" * BIG))
    if method == "POST":
        return freebusy_request(["bob@example.com"] * 1000, *WINDOW)
    if method == "REPORT":
        return FREE_BUSY_QUERY.replace("</C:free-busy-query>",
                                       "<!-- %s --></C:free-busy-query>"
                                       % ("x" * BIG))
    return big_xml("propertyupdate" if method == "PROPPATCH" else "propfind")


TARGETS = {"REPORT": "/alice/", "PROPFIND": "/alice/work/",
           "PROPPATCH": "/alice/work/", "PUT": "/alice/work/big.ics",
           "POST": "/alice/.schedule-outbox/"}


def displayname(gateway: Gateway) -> str:
    response = gateway.request(
        "PROPFIND", "/alice/work/",
        '<D:propfind xmlns:D="DAV:"><D:prop><D:displayname/></D:prop>'
        '</D:propfind>', user="alice", headers={"Depth": "0"})
    assert response.status_code == 207, response.text
    return response.text


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_bodies_over_max_content_length_get_413_and_change_nothing(
        server_factory, chunked):
    gateway = server_factory("max_content_length = %d\n" % LIMIT)
    seed(gateway)
    # a body under the limit is answered as usual
    small = gateway.request("PROPPATCH", "/alice/work/", big_xml(
        "propertyupdate").replace("x" * BIG, "Work"), user="alice")
    assert small.status_code == 207, small.text
    before = displayname(gateway)
    assert "Work" in before
    for method, path in TARGETS.items():
        body = big_body(method).encode("utf-8")
        assert len(body) > LIMIT
        data = iter([body[i:i + 1000] for i in range(0, len(body), 1000)]) \
            if chunked else body
        response = requests.request(
            method, gateway.url + path, data=data,
            auth=("alice", USERS["alice"]), timeout=30,
            headers={"Content-Type": "text/calendar" if method in (
                "PUT", "POST") else "application/xml", "Depth": "1"})
        assert response.status_code == 413, (method, response.status_code,
                                             response.text)
    assert gateway.request("GET", TARGETS["PUT"], user="alice"
                           ).status_code == 404
    assert displayname(gateway) == before
    assert gateway.process.poll() is None


def test_hosts_lists_every_address_to_listen_on(server_factory):
    other = free_port()
    addresses = ["127.0.0.1:%d" % other]
    if socket.has_ipv6:
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", 0))
            addresses.append("[::1]:%d" % free_port())
        except OSError:
            pass  # no IPv6 loopback here: the two IPv4 ports still count
    gateway = server_factory(more_hosts=", ".join(addresses))
    assert "hosts = 127.0.0.1:%d, 127.0.0.1:%d" % (gateway.port, other) \
        in gateway.config_path.read_text()
    for address in ["127.0.0.1:%d" % gateway.port] + addresses:
        response = requests.request(
            "PROPFIND", "http://%s/alice/" % address,
            auth=("alice", USERS["alice"]), headers={"Depth": "0"},
            timeout=30)
        assert response.status_code == 207, (address, response.text)


# -- [logging] level -----------------------------------------------------

REFUSED = "Refused outbox POST by"


def refuse_a_post(url: str) -> None:
    """An outbox POST the gateway refuses (ORGANIZER not alice's), which
    gateway/app.py logs at info."""
    response = requests.post(
        url + "/alice/.schedule-outbox/",
        data=freebusy_request(["bob@example.com"], *WINDOW,
                              organizer="mailto:mallory@example.org"),
        auth=("alice", USERS["alice"]),
        headers={"Content-Type": "text/calendar"}, timeout=30)
    assert response.status_code == 403, response.text


@pytest.mark.parametrize("level,shown", [("info", True), ("warning", False)])
def test_logging_level_applies_to_the_gateway_loggers(server_factory, level,
                                                      shown):
    gateway = server_factory(level=level)
    refuse_a_post(gateway.url)
    stop(gateway.process)
    log = gateway.log()
    assert (REFUSED in log) is shown, log
    assert ("Listening on http://127.0.0.1:%d/" % gateway.port in log) \
        is shown, log
    if shown:
        line = next(line for line in log.splitlines() if REFUSED in line)
        # Radicale's format: [time] [pid/thread] [LEVEL] message
        assert "] [INFO] " in line, line


def test_wsgi_entry_point_under_another_server(tmp_path):
    """gateway.wsgi:application under waitress' own command line: logging
    level and max_content_length apply there too."""
    gateway = Gateway(tmp_path / "wsgi", dict(USERS), "example.com", "",
                      None)
    text = gateway.config_path.read_text()
    text = text.replace("level = warning", "level = info").replace(
        "[server]\n", "[server]\nmax_content_length = %d\n" % LIMIT)
    gateway.config_path.write_text(text)
    with open(gateway.log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "waitress",
             "--listen=127.0.0.1:%d" % gateway.port,
             "gateway.wsgi:application"],
            cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, FBGATEWAY_CONFIG=str(gateway.config_path)))
    try:
        wait_for_port(gateway.port, process, gateway.log_path)
        seed(gateway)
        response = gateway.request("PUT", TARGETS["PUT"], big_body("PUT"),
                                   user="alice")
        assert response.status_code == 413, response.text
        refuse_a_post(gateway.url)
    finally:
        stop(process)
    assert REFUSED in gateway.log(), gateway.log()
