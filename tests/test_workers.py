"""``[gateway] workers = N``: ``fbgateway serve`` in N processes.

A real gateway with two workers on a loopback port.  Which worker holds a
connection is read from the operating system (/proc: the server side of
the client's TCP connection, and the process holding that socket), so
the gateway exposes nothing about its processes.  Checked: both workers
answer; a change written through one is in the other's next answer (the
local engine's stat check, not a shared memory); SIGTERM to the
supervisor stops every worker, after the request in progress; a killed
worker is replaced and serves; workers stop by themselves when their
supervisor is killed; a bad worker count is one configuration error.
In process (the supervisor forking a stand-in for waitress): a worker
killed while starting is started again, one that fails while starting
fails ``serve``.
"""

import base64
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, Optional, Set, Tuple

import pytest

from gateway import server

from conftest import ROOT, Gateway, wait_for_port
from emulators.ifb_peer import IfbPeer
from fbcheck import periods_of
from icaldata import event
from test_server import assert_a_post_in_progress_finishes_after_sigterm

USERS = {"alice": "alice-pw", "bob": "bob-pw"}
WINDOW = ("20260105T000000Z", "20260112T000000Z")
FREE_BUSY_QUERY = (
    '<?xml version="1.0" encoding="utf-8"?><C:free-busy-query '
    'xmlns:C="urn:ietf:params:xml:ns:caldav"><C:time-range '
    'start="%s" end="%s"/></C:free-busy-query>' % WINDOW)
SERVE = [sys.executable, "-m", "gateway"]
#: Fresh connections tried before giving up on reaching a given worker.
ATTEMPTS = 60


class WorkersGateway(Gateway):
    """A conftest gateway (ini with ``workers = 2``), started once both
    workers run."""

    def start(self) -> "WorkersGateway":
        """Started once the supervisor says both workers listen (the port
        accepts connections as soon as it is bound, before any worker);
        that line is a notice, so the log level is info."""
        ini = self.config_path.read_text()
        self.config_path.write_text(ini.replace("level = warning",
                                                "level = info", 1))
        super().start()
        deadline = time.monotonic() + 60
        while "Listening on" not in self.log() and \
                time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            time.sleep(0.05)
        assert "Listening on" in self.log(), self.log()
        assert len(self.workers()) == 2, self.log()
        return self

    def workers(self) -> Set[int]:
        return children(self.process.pid)


@pytest.fixture
def gateway(tmp_path):
    started = []

    def start(extra: str = "") -> WorkersGateway:
        gateway = WorkersGateway(tmp_path / ("gw%d" % len(started)),
                                 dict(USERS), "example.com",
                                 "workers = 2\n" + extra, None)
        started.append(gateway)
        return gateway.start()

    yield start
    for one in started:
        one.stop()


# -- what the operating system says ---------------------------------------

def children(parent: int) -> Set[int]:
    """Live (not zombie) processes whose parent is ``parent``."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def holder(server_port: int, client_port: int, pids: Set[int]
           ) -> Optional[int]:
    """Which of ``pids`` holds the server side of the loopback TCP
    connection from ``client_port`` to ``server_port``."""
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == server_port and \
                    int(fields[2].split(":")[1], 16) == client_port:
                inode = fields[9]
    if inode is None:
        return None
    target = "socket:[%s]" % inode
    for pid in pids:
        try:
            descriptors = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in descriptors:
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == target:
                    return pid
            except OSError:
                continue
    return None


# -- a client that keeps its one connection --------------------------------

class Connection:
    """One HTTP connection as ``user``, and the worker that accepted it.

    Never reopened: Radicale's answers without a body (PUT, DELETE) close
    the connection, and a new one may reach another worker."""

    def __init__(self, gateway: WorkersGateway, user: str) -> None:
        self.gateway = gateway
        self.http = http.client.HTTPConnection("127.0.0.1", gateway.port,
                                               timeout=60)
        self.http.connect()
        self.client_port = self.http.sock.getsockname()[1]
        self.auth = "Basic " + base64.b64encode(
            ("%s:%s" % (user, USERS[user])).encode()).decode()
        self.open = True
        deadline = time.monotonic() + 5
        self.worker = None
        while self.worker is None and time.monotonic() < deadline:
            self.worker = holder(gateway.port, self.client_port,
                                 gateway.workers())
        assert self.worker is not None, "no worker accepted the connection"

    def request(self, method: str, path: str, body: str = "",
                headers: Optional[Dict[str, str]] = None
                ) -> Tuple[int, Dict[str, str], bytes]:
        assert self.open
        assert holder(self.gateway.port, self.client_port,
                      self.gateway.workers()) == self.worker
        self.http.request(method, path, body.encode(), dict(
            headers or {}, Authorization=self.auth))
        response = self.http.getresponse()
        answer = (response.status, dict(response.getheaders()),
                  response.read())
        if response.will_close:
            self.close()
        # Nothing in an answer tells which process wrote it.
        assert str(self.worker) not in repr(answer[1])
        return answer

    def busy(self, path: str = "/alice/") -> Set[Tuple[str, str]]:
        status, _, body = self.request(
            "REPORT", path, FREE_BUSY_QUERY,
            {"Depth": "1", "Content-Type": "application/xml"})
        assert status == 200, body
        return set(periods_of(body).get("BUSY", []))

    def close(self) -> None:
        self.open = False
        self.http.close()


def connection_to(gateway: WorkersGateway, pid: Optional[int] = None,
                  other_than: Optional[int] = None) -> Connection:
    """A fresh connection accepted by worker ``pid`` (or by any worker
    but ``other_than``), trying up to ATTEMPTS connections."""
    for _ in range(ATTEMPTS):
        connection = Connection(gateway, "alice")
        if (pid is None or connection.worker == pid) and \
                connection.worker != other_than:
            return connection
        connection.close()
    pytest.fail("no connection reached worker %s in %d tries (workers %s)"
                % (pid or "other than %s" % other_than, ATTEMPTS,
                   gateway.workers()))


E1 = ("20260105T090000Z", "20260105T100000Z")
E2 = ("20260107T140000Z", "20260107T153000Z")


def test_both_workers_answer_and_see_each_others_writes(gateway):
    gw = gateway()
    calendar = gw.mkcalendar("alice", "work")
    gw.put(calendar + "e1.ics", event("e1", *E1), "alice")
    one = connection_to(gw)
    other = connection_to(gw, other_than=one.worker)
    assert {one.worker, other.worker} == gw.workers()
    # each worker reads the calendar once and keeps it in memory
    assert one.busy() == {E1}
    assert other.busy() == {E1}
    assert other.busy(calendar) == {E1}

    def write(worker: int, method: str, name: str, text: str = "") -> int:
        connection = connection_to(gw, pid=worker)
        status, _, body = connection.request(
            method, calendar + name, text,
            {"Content-Type": "text/calendar; charset=utf-8"})
        connection.close()
        return status

    # a new event, written through one worker ...
    assert write(one.worker, "PUT", "e2.ics", event("e2", *E2)) == 201
    # ... is in the other's next answer, on its kept connection
    assert other.busy() == {E1, E2}
    assert other.busy(calendar) == {E1, E2}
    # and the other way round: a deletion, then a replacement
    assert write(other.worker, "DELETE", "e1.ics") == 200
    assert one.busy() == {E2}
    moved = ("20260108T080000Z", "20260108T083000Z")
    assert write(other.worker, "PUT", "e2.ics", event("e2", *moved)) == 204
    assert one.busy() == {moved}
    assert other.busy() == {moved}
    one.close()
    other.close()


def test_sigterm_stops_every_worker(gateway):
    gw = gateway()
    workers = gw.workers()
    idle = socket.create_connection(("127.0.0.1", gw.port))
    try:
        gw.process.send_signal(signal.SIGTERM)
        assert gw.process.wait(15) == 0
    finally:
        idle.close()
    assert not any(alive(pid) for pid in workers)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gw.port), 1).close()
    # every worker ended cleanly and in time; none was started again
    log = gw.log()
    for trouble in ("Traceback", "ended after", "stopped with",
                    "did not stop in time", "started again"):
        assert trouble not in log, log


def test_a_killed_worker_is_replaced_and_serves(gateway):
    gw = gateway()
    victim = min(gw.workers())
    survivor = max(gw.workers())
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        workers = gw.workers()
        if len(workers) == 2 and victim not in workers:
            break
        time.sleep(0.1)
    workers = gw.workers()
    assert len(workers) == 2 and victim not in workers and \
        survivor in workers, (workers, gw.log())
    replacement = (workers - {survivor}).pop()
    wait_for_port(gw.port, gw.process, gw.log_path)
    connection = connection_to(gw, pid=replacement)
    assert connection.busy() == set()
    connection.close()
    assert "ended after" in gw.log() and "killed by SIGKILL" in gw.log()
    assert gw.process.poll() is None


def test_workers_stop_when_their_supervisor_is_killed(gateway):
    gw = gateway()
    workers = gw.workers()
    gw.process.kill()
    gw.process.wait(5)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers), gw.log()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gw.port), 1).close()
    assert "the supervisor is gone" in gw.log()


def test_a_request_in_progress_finishes_when_the_supervisor_stops(gateway):
    peer = IfbPeer("calconnect", {})
    peer.script["slow@fb.example.net"] = ["hang"]
    try:
        gw = gateway(
            "timeout = 3\n[provider:fb]\ntype = ifb\ndomains = "
            "fb.example.net\nurl = %s\nwindow_params = calconnect\n"
            "timeout = 3\ncache_ttl = 0\n" % peer.url_template())
        assert_a_post_in_progress_finishes_after_sigterm(gw, peer, wait=15)
    finally:
        peer.close()


@pytest.mark.parametrize("value", ["0", "two", "65"])
def test_a_bad_worker_count_is_one_configuration_error(tmp_path, value):
    path = tmp_path / "gateway.ini"
    path.write_text("[server]\nhosts = 127.0.0.1:1\n[auth]\ntype = none\n"
                    "[storage]\nfilesystem_folder = collections\n"
                    "[gateway]\ndomains = example.com\nworkers = %s\n"
                    % value)
    done = subprocess.run(SERVE + ["serve", "--config", str(path)],
                          cwd=str(ROOT), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done
    assert done.stderr.strip().splitlines() == [
        "fbgateway: configuration error: %s: [gateway] bad value for "
        "'workers': %r: %s" % (path, value, "must be between 1 and 64"
                               if value != "two" else
                               "invalid literal for int() with base 10: "
                               "'two'")], done.stderr


# -- starting, in process ---------------------------------------------------

def start_workers(monkeypatch, tmp_path, child) -> server.Supervisor:
    """A supervisor whose workers run ``child(number, worker, marker)``
    in place of waitress; ``marker`` is a per-worker file a child may
    use to remember an earlier start."""
    def run_waitress(gateway_config, providers, sockets, worker):
        child(worker.number, worker, tmp_path / ("started-%d" % worker.number))
    monkeypatch.setattr(server, "run_waitress", run_waitress)
    return server.Supervisor(None, [], [], 2)


def ready_then_exit(worker) -> None:
    os.write(worker.ready_fd, b"1")
    os.close(worker.ready_fd)


def reap(supervisor: server.Supervisor) -> None:
    for pid in list(supervisor.workers):
        os.waitpid(pid, 0)
        del supervisor.workers[pid]


def assert_start_fails(supervisor: server.Supervisor, words: str) -> None:
    try:
        with pytest.raises(SystemExit, match=words):
            supervisor._start_all()
    finally:
        reap(supervisor)


def test_a_worker_killed_while_starting_is_started_again(
        monkeypatch, tmp_path, caplog):
    def child(number, worker, marker):
        if number == 1 and not marker.exists():
            marker.write_text("once")
            os.kill(os.getpid(), signal.SIGKILL)
        ready_then_exit(worker)

    supervisor = start_workers(monkeypatch, tmp_path, child)
    supervisor._start_all()
    try:
        assert sorted(n for n, _ in supervisor.workers.values()) == [1, 2]
        assert "Worker 1" in caplog.text and "killed by SIGKILL while " \
            "starting; starting it again" in caplog.text
    finally:
        reap(supervisor)


def test_a_worker_killed_at_every_start_fails_serve(monkeypatch, tmp_path):
    def child(number, worker, marker):
        if number == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        ready_then_exit(worker)

    assert_start_fails(start_workers(monkeypatch, tmp_path, child),
                       "worker 2 stopped while starting \\(killed by "
                       "SIGKILL\\)")


def test_a_worker_failing_while_starting_fails_serve_at_once(
        monkeypatch, tmp_path):
    def child(number, worker, marker):
        if number == 1:
            with open(str(marker) + ".%d" % os.getpid(), "w"):
                pass
            raise RuntimeError("bad setting")
        ready_then_exit(worker)

    assert_start_fails(start_workers(monkeypatch, tmp_path, child),
                       "worker 1 stopped while starting \\(exit status "
                       "1\\)")
    # Started once: its own error would recur.
    assert len(list(tmp_path.glob("started-1.*"))) == 1
