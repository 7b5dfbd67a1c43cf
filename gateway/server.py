"""Running the gateway: start-up checks, logging, and the HTTP server.

``fbgateway serve`` runs the WSGI application on waitress.  Waitress reads
whole requests (headers and body, up to ``[server] max_content_length``)
in its single asynchronous front before a worker thread sees them, and
buffers whole answers, so a client that trickles its request, or never
sends one, costs a socket but no thread; the threads are all there for
requests that are complete, such as outbox POSTs waiting on a slow foreign
system.

How Radicale's ``[server]`` keys are read here:

- ``hosts``: every address listed (``host:port``, ``[::1]:port``; a name
  is every address it resolves to) is bound before anything starts;
- ``timeout``: seconds an idle connection is kept (waitress'
  ``channel_timeout``);
- ``max_content_length``: larger bodies get 413, whatever the method and
  whether the body is sent with a length or chunked;
- ``max_connections``: the least number of worker threads (``[gateway]
  threads`` may ask for more); open connections are bounded separately by
  ``[gateway] connection_limit``;
- ``ssl``: refused, because waitress has no TLS; a TLS reverse proxy goes
  in front.

With ``[gateway] workers = N`` above 1, ``serve`` binds the sockets, then
forks N worker processes that each run waitress on them (pre-fork, as
gunicorn does); this process only supervises (see :class:`Supervisor`).
Each worker builds its own application after the fork (threads and
Redis connections never cross it), so each has its own memory: parsed
calendars and per-caller request counts (``requests_per_minute`` is per
worker), and, unless ``[gateway] cache`` names a Redis they share
(docs/redis.md), its own answer cache and single flight.  Radicale's
storage is shared on disk, and every worker sees a change written
through another by its stat check.  ``threads`` and ``connection_limit``
are per worker.

Everything that can stop ``serve`` is checked by :func:`check` first, and
``check-config`` runs the same function, so both fail with the same one
line naming the file, the section and the key.
"""

import contextlib
import errno
import io
import logging
import os
import select
import signal
import socket
import threading
import time
from typing import (Any, Dict, Iterator, List, NamedTuple, Optional,
                    Tuple)

from gateway import config, metrics
from gateway.engine import disk_cache

logger = logging.getLogger(__name__)

#: Waitress' own bound for a request body when max_content_length is 0
#: (Radicale's "no limit"): a body is never unbounded.
UNLIMITED_BODY = 1 << 30
#: How far over max_content_length a body is still read, to answer 413
#: on a connection the client can read it from.
BODY_MARGIN = 1 << 20
#: Seconds an in-flight request may still take after SIGTERM, on top of
#: the [gateway] timeout of one lookup.
SHUTDOWN_GRACE = 5.0
#: Longest wait of the event loop, so a stop signal is seen this soon.
LOOP_SECONDS = 0.5
#: Radicale's level between info and warning, for start and stop lines.
LOG_LEVEL_NOTICE = 25


# -- logging -------------------------------------------------------------

def setup_logging(radicale_configuration) -> None:
    """Radicale's handler and format, at ``[logging] level``, for every
    logger of the process: Radicale's, the gateway's, the plugins' (ours
    and third parties') and the server's.

    Radicale's ``log.set_level`` only sets its own logger ("radicale");
    the others inherit from the root logger, which is set here too.
    """
    from radicale import log
    log.setup()
    log.set_level(radicale_configuration.get("logging", "level"),
                  radicale_configuration.get("logging", "backtrace_on_debug"),
                  radicale_configuration.get("logging", "trace_filter"))
    logging.getLogger().setLevel(logging.getLogger(log.LOGGER_NAME).level)


@contextlib.contextmanager
def _no_logging() -> Iterator[None]:
    """Checks run before logging is set up: a wrong file gives one line,
    not whatever Radicale's backends log while they start."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


# -- start-up checks -----------------------------------------------------

def check(gateway_config: config.GatewayConfig, server: bool = True,
          bind_hosts: bool = True) -> List[socket.socket]:
    """Everything that would stop the server, as one ConfigError.

    ``server``: also what only ``fbgateway serve`` needs: no TLS asked
    for, and (with ``bind_hosts``) every address in ``[server] hosts``
    free: they are bound and the sockets returned, for :func:`serve` to
    use or the caller to close.  Nothing is created on disk.
    """
    path = gateway_config.path
    radicale = gateway_config.radicale
    if server and radicale.get("server", "ssl"):
        raise config.ConfigError(
            "%s: [server] key 'ssl': fbgateway serve has no TLS (its HTTP "
            "server, waitress, has none): set ssl = False and put a TLS "
            "reverse proxy (nginx, Apache, Caddy) in front" % path)
    _check_auth(path, radicale)
    _check_rights(path, radicale)
    _check_storage(path, radicale)
    return bind(path, radicale) if server and bind_hosts else []


def _readable_file(path: str, section: str, key: str, filename: str) -> None:
    try:
        with open(filename, "rb"):
            pass
    except OSError as e:
        raise config.ConfigError("%s: [%s] key %r: cannot read %r: %s" % (
            path, section, key, filename, e.strerror)) from None


def _start_backend(path: str, section: str, radicale) -> None:
    """Build Radicale's backend as the server will: what it refuses
    (a bad rights file, a missing hash module) is refused here."""
    module = __import__("radicale." + section, fromlist=["load"])
    try:
        with _no_logging():
            module.load(radicale)
    except Exception as e:
        type_ = radicale.get(section, "type")
        raise config.ConfigError("%s: [%s] key 'type': %r cannot start: %s"
                                 % (path, section, type_, " ".join(
                                     str(e).split()))) from None


#: htpasswd_encryption values that need a module Radicale imports lazily.
_HASH_MODULES = {"bcrypt": ("bcrypt", "radicale[bcrypt]"),
                 "argon2": ("argon2", "radicale[argon2]")}


def _check_auth(path: str, radicale) -> None:
    if radicale.get("auth", "type") == "htpasswd":
        _readable_file(path, "auth", "htpasswd_filename",
                       radicale.get("auth", "htpasswd_filename"))
        encryption = radicale.get("auth", "htpasswd_encryption")
        if encryption in _HASH_MODULES:
            module, extra = _HASH_MODULES[encryption]
            try:
                __import__(module)
            except ImportError:
                raise config.ConfigError(
                    "%s: [auth] key 'htpasswd_encryption': %r needs the "
                    "Python module %r, which is not installed (pip install "
                    "'%s')" % (path, encryption, module, extra)) from None
    _start_backend(path, "auth", radicale)


def _check_rights(path: str, radicale) -> None:
    if radicale.get("rights", "type") == "from_file":
        _readable_file(path, "rights", "file", radicale.get("rights", "file"))
    _start_backend(path, "rights", radicale)


def _check_storage(path: str, radicale) -> None:
    """The storage folder exists and is writable, or can be created."""
    if radicale.get("storage", "type") not in ("multifilesystem",
                                               "multifilesystem_nolock"):
        return
    folder = os.path.abspath(radicale.get("storage", "filesystem_folder"))
    existing = folder
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    problem = None
    if not os.path.isdir(existing):
        problem = "%r is not a folder" % existing
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = "%r is not writable" % existing
    if problem:
        raise config.ConfigError(
            "%s: [storage] key 'filesystem_folder': cannot %s %r: %s" % (
                path, "write" if existing == folder else "create", folder,
                problem))


def _show(sockaddr) -> str:
    host, port = sockaddr[:2]
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def bind(path: str, radicale) -> List[socket.socket]:
    """Bind every address of ``[server] hosts``; ConfigError if one is in
    use or not this machine's.  A name that resolves to several addresses
    (``localhost``) needs only one of them to be this machine's."""
    sockets: List[socket.socket] = []
    seen = set()
    try:
        hosts = radicale.get("server", "hosts")
        if not hosts:
            raise config.ConfigError("%s: [server] key 'hosts': no address "
                                     "to listen on" % path)
        for host, port in hosts:
            try:
                infos = socket.getaddrinfo(host or None, port, 0,
                                           socket.SOCK_STREAM, 0,
                                           socket.AI_PASSIVE)
            except socket.gaierror as e:
                raise config.ConfigError(
                    "%s: [server] key 'hosts': cannot resolve %r: %s" % (
                        path, host, e.strerror)) from None
            bound, unavailable = 0, None
            for family, type_, proto, _, sockaddr in infos:
                if family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                if (family, sockaddr[:2]) in seen:
                    bound += 1
                    continue
                sock = socket.socket(family, type_, proto)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                                    1)
                try:
                    sock.bind(sockaddr)
                except OSError as e:
                    sockets.remove(sock)
                    sock.close()
                    if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) \
                            and len(infos) > 1:
                        unavailable = e
                        continue
                    raise config.ConfigError(
                        "%s: [server] key 'hosts': cannot listen on %s: %s"
                        % (path, _show(sockaddr), e.strerror)) from None
                seen.add((family, sockaddr[:2]))
                bound += 1
            if not bound:
                raise config.ConfigError(
                    "%s: [server] key 'hosts': cannot listen on %s:%d: %s" % (
                        path, host, port, unavailable.strerror
                        if unavailable else "no address"))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


# -- request bodies ------------------------------------------------------

def _too_large(start_response) -> List[bytes]:
    body = b"Request body too large\n"
    start_response("413 Request Entity Too Large", [
        ("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def limit_request_body(application, max_content_length: int):
    """WSGI middleware: bodies over ``max_content_length`` get 413 on every
    method, before authentication or the application sees them.

    A body with a Content-Length is judged by it; one without (chunked,
    under servers that pass it through, as gunicorn does) is read up to
    one byte over the limit and handed on with its length, which Radicale
    needs to read it at all.  Waitress already refuses both itself; this
    keeps the limit for every WSGI server.
    """
    limit = max_content_length if max_content_length > 0 else UNLIMITED_BODY

    def limited(environ, start_response):
        raw_length = environ.get("CONTENT_LENGTH") or ""
        if raw_length.strip():
            try:
                length = int(raw_length)
            except ValueError:
                length = -1
            if length < 0:
                body = b"Bad Content-Length\n"
                start_response("400 Bad Request", [
                    ("Content-Type", "text/plain"),
                    ("Content-Length", str(len(body)))])
                return [body]
            if length > limit:
                return _too_large(start_response)
        elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            stream, chunks, size = environ["wsgi.input"], [], 0
            while size <= limit:
                chunk = stream.read(min(65536, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > limit:
                return _too_large(start_response)
            body = b"".join(chunks)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return application(environ, start_response)

    return limited


# -- the server ----------------------------------------------------------

def settings(gateway_config: config.GatewayConfig) -> Dict[str, Any]:
    """Waitress' settings from the ini file (see the module docstring)."""
    radicale = gateway_config.radicale
    options = gateway_config.gateway
    threads = max(radicale.get("server", "max_connections"),
                  options["threads"])
    max_content_length = radicale.get("server", "max_content_length")
    result = {
        "threads": threads,
        "connection_limit": max(options["connection_limit"], threads),
        "channel_timeout": max(1, int(round(radicale.get("server",
                                                         "timeout")))),
        # Bodies a little over the limit are read whole and refused by
        # limit_request_body, so the client, still sending, reads its 413
        # instead of a reset connection; far over it, waitress refuses at
        # once (from Content-Length, or as the chunks pass its bound) and
        # closes the connection.
        "max_request_body_size": (max_content_length + BODY_MARGIN
                                  if max_content_length > 0
                                  else UNLIMITED_BODY),
        # poll(), not select(): select() cannot watch more than 1024 sockets
        "asyncore_use_poll": True,
        "ident": "fbgateway",
    }
    if options["trusted_proxy"]:
        # Waitress rewrites REMOTE_ADDR, wsgi.url_scheme and HTTP_HOST
        # from the trusted proxy's headers and drops them from others.
        result.update(
            trusted_proxy=options["trusted_proxy"],
            trusted_proxy_count=options["trusted_proxy_count"],
            trusted_proxy_headers={"x-forwarded-for", "x-forwarded-proto",
                                   "x-forwarded-host", "x-forwarded-port"},
            clear_untrusted_proxy_headers=True)
    return result


def _raise_file_limit(wanted: int) -> None:
    """Let the process open enough sockets for connection_limit."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            new = wanted if hard == resource.RLIM_INFINITY else min(hard,
                                                                    wanted)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ImportError, ValueError, OSError):
        pass


def serve(gateway_config: config.GatewayConfig,
          providers: Optional[list] = None) -> None:
    """Check, then run until SIGTERM or SIGINT: in this process, or, with
    ``[gateway] workers`` above 1, in that many worker processes (see
    :class:`Supervisor`).

    On a signal the listening sockets close at once; requests already
    being answered get up to ``[gateway] timeout`` + 5 seconds to finish,
    idle and half-sent connections are closed, and the function returns.
    """
    from gateway.app import load_providers

    # Plugins are loaded before anything starts, so a wrong provider
    # section fails like any other configuration error.
    if providers is None:
        providers = load_providers(gateway_config)
    sockets = check(gateway_config)
    try:
        setup_logging(gateway_config.radicale)
        count = worker_count(gateway_config)
        if count == 1:
            run_waitress(gateway_config, providers, sockets)
        else:
            Supervisor(gateway_config, providers, sockets, count).run()
    finally:
        for sock in sockets:
            sock.close()


class Worker(NamedTuple):
    """What a worker process knows of its place: its number (1..N), its
    parent's pid (gone: stop) and the pipe to say it is listening on."""

    number: int
    parent: int
    ready_fd: Optional[int]


def run_waitress(gateway_config: config.GatewayConfig, providers: list,
                 sockets: List[socket.socket],
                 worker: Optional[Worker] = None) -> None:
    """Serve on ``sockets`` with waitress until SIGTERM or SIGINT (or, in
    a worker, until its parent is gone), then stop gracefully."""
    from waitress import server as waitress_server
    from waitress import wasyncore

    from gateway.app import GatewayApplication

    # The application is built here, in the process that serves: its
    # threads (push worker, reaper, pools) cannot cross a fork.
    application = limit_request_body(
        GatewayApplication(gateway_config, providers),
        gateway_config.radicale.get("server", "max_content_length"))
    options = settings(gateway_config)
    _raise_file_limit(options["connection_limit"] + options["threads"] + 64)
    http_server = waitress_server.create_server(
        application, sockets=sockets, **options)
    if worker is None:
        addresses = ", ".join("http://%s/" % _show(s.getsockname())
                              for s in sockets)
        logger.log(LOG_LEVEL_NOTICE,
                   "Listening on %s (waitress: %d threads, %d open "
                   "connections at most)", addresses, options["threads"],
                   options["connection_limit"])
    else:
        logger.info("Worker %d (pid %d) listening", worker.number,
                    os.getpid())
    socket_map = getattr(http_server, "map", None) or http_server._map
    listeners = [d for d in list(socket_map.values())
                 if isinstance(d, waitress_server.BaseWSGIServer)]
    stopping = threading.Event()

    def on_signal(signal_number, frame) -> None:
        # Only a flag: the loop below looks at it at least every
        # LOOP_SECONDS, and no exception lands in the middle of waitress.
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    if worker is not None:
        # The supervisor blocks them to wait for them; here the handlers
        # take over, and a signal that came early is delivered now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SUPERVISOR_SIGNALS)
        if worker.ready_fd is not None:
            os.write(worker.ready_fd, b"1")
            os.close(worker.ready_fd)
    try:
        while not stopping.is_set():
            wasyncore.loop(timeout=LOOP_SECONDS, map=socket_map,
                           use_poll=True, count=1)
            if worker is not None and os.getppid() != worker.parent:
                logger.warning("Worker %d: the supervisor is gone; "
                               "stopping", worker.number)
                break
        logger.log(LOG_LEVEL_NOTICE if worker is None else logging.INFO,
                   "Stopping: no new connections; finishing the requests "
                   "in progress")
        for listener in listeners:
            # dispatcher.close: the socket only, the trigger stays usable
            wasyncore.dispatcher.close(listener)
        deadline = time.monotonic() + gateway_config.gateway["timeout"] + \
            SHUTDOWN_GRACE
        while time.monotonic() < deadline:
            channels = [d for d in list(socket_map.values())
                        if isinstance(d, waitress_server.HTTPChannel)]
            if not channels:
                break
            for channel in channels:
                if not channel.requests and not channel.total_outbufs_len:
                    channel.will_close = True
            wasyncore.loop(timeout=LOOP_SECONDS, map=socket_map,
                           use_poll=True, count=1)
        http_server.task_dispatcher.shutdown(timeout=1)
    finally:
        wasyncore.close_all(socket_map)
        for signal_number, handler in previous.items():
            signal.signal(signal_number, handler)


# -- worker processes ------------------------------------------------------

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SUPERVISOR_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
#: Seconds the first workers get to build the application and listen.
STARTUP_SECONDS = 60.0
#: Starts of one worker that a signal may end before ``serve`` gives up.
STARTUP_ATTEMPTS = 3
#: A worker that lived this long before it died is restarted at once;
#: one that died sooner waits 1, 2, 4 ... RESTART_DELAY_MAX seconds, so a
#: worker that cannot run does not spin.
STABLE_SECONDS = 10.0
RESTART_DELAY_MAX = 30.0


def worker_count(gateway_config: config.GatewayConfig) -> int:
    return gateway_config.gateway["workers"]


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return "killed by %s" % signal.Signals(number).name
        except ValueError:
            return "killed by signal %d" % number
    return "exit status %d" % os.waitstatus_to_exitcode(status)


class Supervisor:
    """Pre-fork: this process binds the sockets (``check`` did), forks
    ``count`` workers that each run waitress on them, and only watches.

    The kernel hands each new connection to one worker.  A worker that
    dies is replaced (after a pause if it died young); SIGTERM or SIGINT
    closes the listening sockets, sends SIGTERM to every worker, waits
    for their requests to finish (``[gateway] timeout`` + 5 s, then
    SIGKILL) and returns.  A worker whose supervisor is gone stops by
    itself.  The supervisor runs no thread, so forking is safe; it waits
    for signals with them blocked (``sigtimedwait``), so none is lost.
    """

    def __init__(self, gateway_config: config.GatewayConfig,
                 providers: list, sockets: List[socket.socket],
                 count: int) -> None:
        self.gateway_config = gateway_config
        self.providers = providers
        self.sockets = sockets
        self.count = count
        #: pid -> (worker number, start time)
        self.workers: Dict[int, Tuple[int, float]] = {}
        #: worker number -> when to start it again
        self.restarts: Dict[int, float] = {}
        #: worker number -> how many times in a row it died young
        self.quick_deaths: Dict[int, int] = {}
        #: read ends of readiness pipes, closed in every later worker
        self._pipes: List[int] = []

    def run(self) -> None:
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK,
                                               SUPERVISOR_SIGNALS)
        try:
            self._start_all()
            options = settings(self.gateway_config)
            logger.log(
                LOG_LEVEL_NOTICE, "Listening on %s (%d worker processes, "
                "each waitress with %d threads and %d open connections at "
                "most)", ", ".join("http://%s/" % _show(s.getsockname())
                                   for s in self.sockets),
                self.count, options["threads"], options["connection_limit"])
            self._watch()
        finally:
            self._stop_all()
            # A signal that came while stopping must not be delivered
            # (and kill this process) when the mask is restored.
            while signal.sigpending() & SUPERVISOR_SIGNALS:
                signal.sigtimedwait(SUPERVISOR_SIGNALS, 0)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)

    def _fork(self, number: int, ready: bool) -> Tuple[int, Optional[int]]:
        """Start worker ``number``: its pid and, with ``ready``, the read
        end of a pipe that gets one byte once it listens (EOF if it
        dies first)."""
        read_fd, write_fd = os.pipe() if ready else (None, None)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                for fd in self._pipes + ([read_fd] if ready else []):
                    os.close(fd)
                run_waitress(self.gateway_config, self.providers,
                             self.sockets, Worker(number, parent, write_fd))
                status = 0
            except BaseException:
                logger.exception("Worker %d failed", number)
            finally:
                # os._exit skips atexit: the busy indexes computed last
                # are written now, so the next start finds them.
                try:
                    disk_cache.flush_all()
                except Exception:
                    logger.exception("Worker %d: indexes not written",
                                     number)
                logging.shutdown()
                os._exit(status)
        if ready:
            os.close(write_fd)
            self._pipes.append(read_fd)
        self.workers[pid] = (number, time.monotonic())
        return pid, read_fd

    def _start_all(self) -> None:
        """Fork every worker and wait until each listens.  One that exits
        first fails ``serve`` (its own error, such as a bad setting, is in
        the log and would recur); one killed by a signal while starting
        (the OOM killer, an admin) is started again, up to
        ``STARTUP_ATTEMPTS`` times, as gunicorn halts only on a boot
        error."""
        waiting: Dict[int, Tuple[int, int]] = {}
        attempts: Dict[int, int] = {}
        try:
            for number in range(1, self.count + 1):
                pid, read_fd = self._fork(number, ready=True)
                waiting[read_fd] = (pid, number)
            deadline = time.monotonic() + STARTUP_SECONDS
            while waiting:
                left = deadline - time.monotonic()
                readable = select.select(list(waiting), [], [], left)[0] \
                    if left > 0 else []
                if not readable:
                    raise SystemExit(
                        "fbgateway: %d worker(s) did not start within %d s"
                        % (len(waiting), STARTUP_SECONDS))
                for fd in readable:
                    pid, number = waiting.pop(fd)
                    if not os.read(fd, 1):
                        _, status = os.waitpid(pid, 0)
                        del self.workers[pid]
                        self._pipes.remove(fd)
                        os.close(fd)
                        attempts[number] = attempts.get(number, 1) + 1
                        if os.WIFSIGNALED(status) and \
                                attempts[number] <= STARTUP_ATTEMPTS:
                            logger.warning(
                                "Worker %d (pid %d) %s while starting; "
                                "starting it again", number, pid,
                                _describe(status))
                            pid, read_fd = self._fork(number, ready=True)
                            waiting[read_fd] = (pid, number)
                            continue
                        raise SystemExit(
                            "fbgateway: worker %d stopped while starting "
                            "(%s); its error is in the log" % (
                                number, _describe(status)))
        finally:
            for fd in self._pipes:
                os.close(fd)
            self._pipes = []

    def _watch(self) -> None:
        """Replace workers that end, until SIGTERM or SIGINT."""
        while True:
            now = time.monotonic()
            wait = min([LOOP_SECONDS] + [max(0.0, due - now)
                                         for due in self.restarts.values()])
            info = signal.sigtimedwait(SUPERVISOR_SIGNALS, wait)
            if info is not None and info.si_signo in STOP_SIGNALS:
                logger.log(LOG_LEVEL_NOTICE, "Stopping: no new "
                           "connections; %d workers finish the requests in "
                           "progress", len(self.workers))
                return
            for pid, number, status, lived in self._reap():
                quick = 0 if lived >= STABLE_SECONDS else \
                    self.quick_deaths.get(number, 0) + 1
                self.quick_deaths[number] = quick
                delay = min(RESTART_DELAY_MAX, 2.0 ** (quick - 1)) \
                    if quick else 0.0
                self.restarts[number] = time.monotonic() + delay
                logger.warning("Worker %d (pid %d) ended after %.0f s (%s);"
                               " starting another in %.0f s", number, pid,
                               lived, _describe(status), delay)
            now = time.monotonic()
            for number, due in list(self.restarts.items()):
                if due > now:
                    continue
                try:
                    pid, _ = self._fork(number, ready=False)
                except OSError as e:
                    logger.error("Cannot start worker %d: %s", number, e)
                    self.restarts[number] = now + RESTART_DELAY_MAX
                    continue
                del self.restarts[number]
                logger.log(LOG_LEVEL_NOTICE, "Worker %d started again "
                           "(pid %d)", number, pid)

    def _reap(self) -> List[Tuple[int, int, int, float]]:
        """Workers that ended: [(pid, number, wait status, seconds lived)]."""
        ended = []
        for pid in list(self.workers):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                number, started = self.workers.pop(pid)
                metrics.process_ended(pid)
                ended.append((pid, number, status,
                              time.monotonic() - started))
        return ended

    def _stop_all(self) -> None:
        """SIGTERM to every worker; they finish their requests in
        ``[gateway] timeout`` + 5 s or are killed."""
        for sock in self.sockets:
            # The workers close their copies on SIGTERM; once all are
            # closed, new connections are refused.
            sock.close()
        self.restarts.clear()
        for pid in self.workers:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.gateway_config.gateway[
            "timeout"] + SHUTDOWN_GRACE + 2 * LOOP_SECONDS
        while self.workers and time.monotonic() < deadline:
            signal.sigtimedwait(SUPERVISOR_SIGNALS, min(
                LOOP_SECONDS, max(0.0, deadline - time.monotonic())))
            for pid, number, status, _ in self._reap():
                if status:
                    logger.warning("Worker %d (pid %d) stopped with %s",
                                   number, pid, _describe(status))
        for pid, (number, _) in list(self.workers.items()):
            _signal(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            del self.workers[pid]
            metrics.process_ended(pid)
            logger.warning("Worker %d (pid %d) did not stop in time; "
                           "killed", number, pid)
        logger.log(LOG_LEVEL_NOTICE, "Stopped")


def _signal(pid: int, signal_number: int) -> None:
    try:
        os.kill(pid, signal_number)
    except ProcessLookupError:
        pass
