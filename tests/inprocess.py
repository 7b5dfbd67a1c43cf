"""The real gateway application, called in-process through WSGI.

A fast test tier: no sockets and no server process.  ``InProcessGateway``
writes an ini file, htpasswd users and rights file into a folder, builds
``gateway.app.GatewayApplication`` from ``gateway.config.load`` exactly as
``fbgateway serve`` does, and calls it with hand-built WSGI environs (Basic
auth, Depth, Content-Type).  Answers are ``Answer``s: status, headers,
body.  Every call runs in a helper thread joined with a deadline, so a
request that hangs fails its test instead of hanging the run.

Use the ``inprocess_gateway`` fixture (users alice and bob) or the
``inprocess_factory`` fixture for other settings, e.g.
``inprocess_factory(reporting="max_freebusy_occurrence = 5")``.  Register
them in a test module with ``from inprocess import inprocess_gateway``
(pytest finds fixtures imported into a module), or build an
``InProcessGateway`` directly where a fixture does not fit (hypothesis
tests keep one per module).
"""

import base64
import io
import itertools
import logging
import pathlib
import sys
import threading
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

import pytest

from conftest import write_gateway_files
from gateway import config
from gateway.app import GatewayApplication

CALDAV = "urn:ietf:params:xml:ns:caldav"
#: Longest a single in-process request may take before its test fails.
DEFAULT_DEADLINE = 60.0
FREE_BUSY_QUERY = ('<?xml version="1.0" encoding="utf-8"?>'
                   '<C:free-busy-query xmlns:C="%s">'
                   '<C:time-range start="%%s" end="%%s"/>'
                   '</C:free-busy-query>' % CALDAV)

Body = Union[bytes, str, None]


class RequestHung(AssertionError):
    """A request did not finish within its deadline."""


class Answer(NamedTuple):
    """One WSGI answer.  ``status_code``/``content``/``text`` mirror
    requests' names so helpers such as fbcheck work on both tiers."""

    status: int
    reason: str
    headers: Dict[str, str]
    body: bytes
    #: Messages logged at ERROR or above while this request ran (the
    #: exception behind a 500 is there).
    errors: Tuple[str, ...] = ()

    @property
    def status_code(self) -> int:
        return self.status

    @property
    def content(self) -> bytes:
        return self.body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def header(self, name: str, default: Optional[str] = None
               ) -> Optional[str]:
        """A header by case-insensitive name."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return default


class _ErrorLog(logging.Handler):
    """ERROR records of Radicale and the gateway, by thread name."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: Dict[str, List[str]] = {}
        self.lock_ = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.lock_:
            self.records.setdefault(record.threadName, []).append(
                record.getMessage())

    def take(self, thread_name: str) -> Tuple[str, ...]:
        with self.lock_:
            return tuple(self.records.pop(thread_name, ()))


_error_log = _ErrorLog()
for _name in ("radicale", "gateway", "plugins"):
    logging.getLogger(_name).addHandler(_error_log)
_thread_numbers = itertools.count()


def call_with_deadline(function, deadline: float, what: str = "request",
                       name: Optional[str] = None):
    """``function()`` in a daemon thread; RequestHung after ``deadline``
    seconds (the thread cannot be stopped, but the test fails now)."""
    box: List = []

    def run():
        try:
            box.append((True, function()))
        except BaseException as e:  # re-raised in the caller's thread
            box.append((False, e))

    thread = threading.Thread(target=run, daemon=True, name=name or (
        "inprocess-%d" % next(_thread_numbers)))
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        raise RequestHung("%s took longer than %.0f s" % (what, deadline))
    ok, value = box[0]
    if not ok:
        raise value
    return value


def basic_auth(user: str, password: str) -> str:
    token = base64.b64encode(("%s:%s" % (user, password)).encode("utf-8"))
    return "Basic " + token.decode("ascii")


class InProcessGateway:
    """A GatewayApplication with its own folder, users and storage."""

    def __init__(self, directory: pathlib.Path,
                 users: Optional[Dict[str, str]] = None,
                 domains: str = "example.com", extra: str = "",
                 rights: Optional[str] = None, reporting: str = "",
                 deadline: float = DEFAULT_DEADLINE) -> None:
        """``extra`` follows the [gateway] section (more keys, more
        sections); ``reporting`` is the body of Radicale's [reporting]."""
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.users = users or {"alice": "alice-pw", "bob": "bob-pw"}
        self.deadline = deadline
        # No 1 s pause after a 5xx: the tests count them instead.
        self.config_path = write_gateway_files(
            self.directory, self.users, rights, domains, extra,
            server="delay_on_error = 0\n", reporting=reporting)
        self.config = config.load(str(self.config_path))
        # Tests need no fsync (Radicale's private option, not in the ini).
        self.config.radicale.update(
            {"storage": {"_filesystem_fsync": "False"}}, "tests",
            privileged=True)
        self.app = GatewayApplication(self.config)

    # -- raw WSGI ---------------------------------------------------------

    def environ(self, method: str, path: str, body: bytes = b"",
                user: Optional[str] = None,
                headers: Optional[Dict[str, str]] = None,
                password: Optional[str] = None) -> Dict:
        path, _, query = path.partition("?")
        environ = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "gateway.test",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "gateway.test",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)),
        }
        if user is not None:
            environ["HTTP_AUTHORIZATION"] = basic_auth(
                user, self.users[user] if password is None else password)
        for name, value in (headers or {}).items():
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = value
            else:
                environ["HTTP_" + key] = value
        return environ

    def call(self, environ: Dict) -> Answer:
        """Run the application on ``environ`` (no deadline)."""
        started: List[Tuple[str, List[Tuple[str, str]]]] = []

        def start_response(status, headers, exc_info=None):
            started.append((status, headers))
            return lambda data: None

        chunks = self.app(environ, start_response)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()
        status, headers = started[-1]
        code, _, reason = status.partition(" ")
        return Answer(int(code), reason, dict(headers), body)

    def request(self, method: str, path: str, body: Body = None,
                user: Optional[str] = None,
                headers: Optional[Dict[str, str]] = None,
                deadline: Optional[float] = None,
                password: Optional[str] = None) -> Answer:
        if isinstance(body, str):
            body = body.encode("utf-8")
        environ = self.environ(method, path, body or b"", user, headers,
                               password)
        name = "inprocess-%d" % next(_thread_numbers)
        try:
            answer = call_with_deadline(
                lambda: self.call(environ),
                self.deadline if deadline is None else deadline,
                "%s %s" % (method, path), name)
        finally:
            errors = _error_log.take(name)
        return answer._replace(errors=errors)

    # -- CalDAV helpers ---------------------------------------------------

    def mkcalendar(self, user: str, name: str, properties: str = "") -> str:
        path = "/%s/%s/" % (user, name)
        body = None
        if properties:
            body = ('<?xml version="1.0" encoding="utf-8"?>'
                    '<C:mkcalendar xmlns:D="DAV:" xmlns:C="%s">'
                    '<D:set><D:prop>%s</D:prop></D:set></C:mkcalendar>'
                    % (CALDAV, properties))
        answer = self.request("MKCALENDAR", path, body, user=user)
        assert answer.status == 201, (answer.status, answer.text)
        return path

    def put(self, path: str, ics: Body, user: str,
            content_type: str = "text/calendar; charset=utf-8",
            check: bool = True, **kwargs) -> Answer:
        answer = self.request("PUT", path, ics, user=user,
                              headers={"Content-Type": content_type},
                              **kwargs)
        if check:
            assert answer.status in (201, 204), (answer.status, answer.text)
        return answer

    def store_file(self, collection: str, name: str, text: str) -> None:
        """Write an item file straight into a collection's folder, as a
        sync tool or another program would (no PUT checks): written
        aside and renamed in place, as Radicale itself does."""
        folder = self.directory / "collections" / "collection-root" / \
            collection.strip("/")
        aside = folder / (".tmp-" + name)
        aside.write_text(text, encoding="utf-8")
        aside.replace(folder / name)

    def delete(self, path: str, user: str) -> Answer:
        answer = self.request("DELETE", path, user=user)
        assert answer.status in (200, 204), (answer.status, answer.text)
        return answer

    def report(self, path: str, body: Body, user: str,
               depth: Optional[str] = "1",
               content_type: str = "application/xml; charset=utf-8",
               **kwargs) -> Answer:
        headers = {"Content-Type": content_type}
        if depth is not None:
            headers["Depth"] = depth
        return self.request("REPORT", path, body, user=user,
                            headers=headers, **kwargs)

    def freebusy(self, path: str, start: str, end: str, user: str = "alice",
                 **kwargs) -> Answer:
        """A free-busy-query REPORT for ``[start, end)`` (iCalendar UTC
        form, e.g. 20260105T000000Z)."""
        return self.report(path, FREE_BUSY_QUERY % (start, end), user,
                           **kwargs)

    def post(self, path: str, body: Body, user: str,
             content_type: str = "text/calendar; charset=utf-8",
             **kwargs) -> Answer:
        return self.request("POST", path, body, user=user,
                            headers={"Content-Type": content_type}, **kwargs)


@pytest.fixture
def inprocess_factory(tmp_path):
    """Build in-process gateways: ``inprocess_factory(reporting=...)``."""
    built = []

    def build(**kwargs) -> InProcessGateway:
        gateway = InProcessGateway(tmp_path / ("inproc%d" % len(built)),
                                   **kwargs)
        built.append(gateway)
        return gateway

    return build


@pytest.fixture
def inprocess_gateway(inprocess_factory) -> InProcessGateway:
    """One in-process gateway with users alice and bob at example.com."""
    return inprocess_factory()
