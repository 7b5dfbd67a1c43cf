"""Fixtures that start real servers on loopback ports.

Every test talks HTTP to a real ``fbgateway serve`` process (or a real
Xandikos, or an emulator of a foreign system); nothing is called
in-process.  Servers are stopped by their own process id.
"""

import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time
from typing import Dict, Iterable, Optional

import pytest
import requests

from icaldata import freebusy_request

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = pathlib.Path(__file__).resolve().parent / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log_path,
                  timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited with %s:\n%s" % (
                process.returncode, pathlib.Path(log_path).read_text()))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    process.terminate()
    raise RuntimeError("server did not listen on %d:\n%s" % (
        port, pathlib.Path(log_path).read_text()))


def stop(process: subprocess.Popen) -> None:
    """Stop a server by its own pid: SIGTERM, then SIGKILL if it hangs."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def write_gateway_files(directory: pathlib.Path, users: Dict[str, str],
                        rights: Optional[str], domains: str, extra: str,
                        server: str = "", auth: str = "",
                        reporting: str = "") -> pathlib.Path:
    """The users, rights and ini files of a test gateway; the ini's path.

    ``server`` and ``auth`` are more lines of Radicale's [server] and
    [auth], ``reporting`` the body of [reporting]; ``extra`` follows the
    [gateway] section (more keys, more sections)."""
    (directory / "users").write_text(
        "".join("%s:%s\n" % item for item in users.items()))
    (directory / "rights").write_text(
        rights or (ROOT / "config" / "rights").read_text())
    path = directory / "gateway.ini"
    path.write_text(
        "[server]\n%s\n[auth]\ntype = htpasswd\nhtpasswd_filename = users"
        "\nhtpasswd_encryption = plain\ndelay = 0\n%s\n"
        "[rights]\ntype = from_file\nfile = rights\n\n"
        "[storage]\nfilesystem_folder = collections\n\n"
        "[logging]\nlevel = warning\n\n%s"
        "[gateway]\ndomains = %s\n" % (
            server, auth, "[reporting]\n%s\n\n" % reporting
            if reporting else "", domains) + textwrap.dedent(extra))
    return path


def check_config(tmp_path: pathlib.Path, text: str
                 ) -> subprocess.CompletedProcess:
    """``fbgateway check-config --no-bind`` on a minimal ini followed by
    ``text`` (provider sections): how a plugin's config errors reach the
    admin, without starting a server."""
    path = tmp_path / "check.ini"
    path.write_text("[server]\nhosts = 127.0.0.1:1\n[auth]\ntype = none\n"
                    "[storage]\nfilesystem_folder = collections\n"
                    "[gateway]\ndomains = example.com\n" + text)
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--no-bind",
         "--config", str(path)], cwd=str(ROOT), capture_output=True,
        text=True, timeout=60)


class Gateway:
    """A running gateway with its own ini file, users and storage."""

    def __init__(self, directory: pathlib.Path, users: Dict[str, str],
                 domains: str, extra: str, rights: Optional[str],
                 auth: str = "", port: Optional[int] = None,
                 env: Optional[Dict[str, str]] = None) -> None:
        self.directory = directory
        self.env = dict(os.environ, **(env or {}))
        self.users = users
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        directory.mkdir(parents=True, exist_ok=True)
        self.config_path = write_gateway_files(
            directory, users, rights, domains, extra,
            server="hosts = 127.0.0.1:%d\n" % self.port, auth=auth)
        self.log_path = directory / "server.log"
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "Gateway":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve",
                 "--config", str(self.config_path)],
                cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
                env=self.env)
        wait_for_port(self.port, self.process, self.log_path)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def log(self) -> str:
        return self.log_path.read_text()

    # -- HTTP helpers -------------------------------------------------

    def request(self, method: str, path: str, body=None,
                user: Optional[str] = None, headers=None,
                **kwargs) -> requests.Response:
        if isinstance(body, str):
            body = body.encode("utf-8")
        auth = None
        if user is not None:
            auth = (user, self.users[user])
        return requests.request(method, self.url + path, data=body,
                                auth=auth, headers=headers or {},
                                timeout=kwargs.pop("timeout", 60), **kwargs)

    def mkcalendar(self, user: str, name: str, properties: str = "") -> str:
        path = "/%s/%s/" % (user, name)
        body = None
        if properties:
            body = ('<?xml version="1.0" encoding="utf-8"?>'
                    '<C:mkcalendar xmlns:D="DAV:" '
                    'xmlns:C="urn:ietf:params:xml:ns:caldav">'
                    '<D:set><D:prop>%s</D:prop></D:set></C:mkcalendar>'
                    % properties)
        response = self.request("MKCALENDAR", path, body, user=user)
        assert response.status_code == 201, (response.status_code,
                                             response.text)
        return path

    def proppatch(self, path: str, prop: str, user: str,
                  action: str = "set") -> requests.Response:
        """PROPPATCH one ``<D:prop>`` content (D: and C: prefixes bound)."""
        return self.request(
            "PROPPATCH", path,
            '<?xml version="1.0" encoding="utf-8"?><D:propertyupdate '
            'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            '<D:%s><D:prop>%s</D:prop></D:%s></D:propertyupdate>'
            % (action, prop, action), user=user)

    def put(self, path: str, ics, user: str) -> requests.Response:
        response = self.request(
            "PUT", path, ics, user=user,
            headers={"Content-Type": "text/calendar; charset=utf-8"})
        assert response.status_code in (201, 204), (response.status_code,
                                                    response.text)
        return response

    def load(self, user: str, calendar: str, files: Iterable[pathlib.Path],
             properties: str = "") -> str:
        """Create a calendar and PUT every file into it."""
        path = self.mkcalendar(user, calendar, properties)
        for file in files:
            self.put(path + file.stem + ".ics", file.read_bytes(), user)
        return path

    def report(self, path: str, body, user: str,
               depth: Optional[str] = "1") -> requests.Response:
        headers = {"Content-Type": "application/xml; charset=utf-8"}
        if depth is not None:
            headers["Depth"] = depth
        return self.request("REPORT", path, body, user=user, headers=headers)

    def post(self, path: str, ics, user: str,
             content_type: str = "text/calendar; charset=utf-8",
             **kwargs) -> requests.Response:
        return self.request("POST", path, ics, user=user,
                            headers={"Content-Type": content_type}, **kwargs)

    def outbox(self, attendees, window, user: str = "alice",
               timeout: float = 120) -> requests.Response:
        """``user``'s outbox POST of a VFREEBUSY request for
        ``attendees`` over ``window`` (two iCalendar UTC times)."""
        return self.post("/%s/.schedule-outbox/" % user,
                         freebusy_request(attendees, *window), user,
                         timeout=timeout)


@pytest.fixture
def gateway_factory(tmp_path):
    """Start gateways: ``gateway_factory(users={...}, extra="...")``."""
    started = []

    def start(users: Optional[Dict[str, str]] = None,
              domains: str = "example.com", extra: str = "",
              rights: Optional[str] = None, name: Optional[str] = None,
              auth: str = "", port: Optional[int] = None,
              env: Optional[Dict[str, str]] = None) -> Gateway:
        """``extra`` follows the [gateway] section; ``auth`` goes into
        Radicale's [auth] section."""
        gateway = Gateway(tmp_path / (name or "gw%d" % len(started)),
                          users or {"alice": "alice-pw", "bob": "bob-pw"},
                          domains, extra, rights, auth, port, env)
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module")
def calendars():
    """One in-process gateway for a module's property tests, a new
    calendar per example (test_engine_properties.Calendars)."""
    from test_engine_properties import Calendars
    made = Calendars()
    yield made
    made.folder.cleanup()


@pytest.fixture
def gateway(gateway_factory) -> Gateway:
    """One gateway with users alice and bob at example.com."""
    return gateway_factory()


@pytest.fixture
def xandikos_factory(tmp_path):
    """Start real Xandikos servers (its defaults: principal /user/ with a
    calendar, inbox and outbox; no auth).  ``email`` becomes the
    principal's calendar user address."""
    started = []

    def start(email: str = "user@xandikos.example.org") -> str:
        port = free_port()
        directory = tmp_path / ("xandikos%d" % len(started))
        log = tmp_path / ("xandikos%d.log" % len(started))
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "xandikos", "--defaults",
                 "-d", str(directory), "--listen-address", "127.0.0.1",
                 "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT,
                env=dict(os.environ, EMAIL=email))
        started.append(process)
        wait_for_port(port, process, log)
        return "http://127.0.0.1:%d" % port

    yield start
    for process in started:
        stop(process)


@pytest.fixture
def servers():
    """Emulators to close after the test: ``servers(Emulator(...))``."""
    started = []

    def start(server):
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def pki(tmp_path):
    """A test CA (trustme) with server and client certificates."""
    from emulators.tls import Pki
    return Pki(tmp_path / "pki")


@pytest.fixture
def idp(pki, servers):
    """An OAuth2/OIDC identity provider over TLS (tokens for oauth2 and
    google credentials)."""
    from emulators.token_endpoint import IdentityProvider
    return servers(IdentityProvider(pki))


def conformance_case(name: str) -> pathlib.Path:
    return DATA / "conformance" / name


def pytest_configure(config):
    # Servers inherit nothing from the developer's proxy settings.
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        os.environ.pop(key, None)
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
