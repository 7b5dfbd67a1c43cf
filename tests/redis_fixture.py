"""A real redis-server (Debian's package, scripts/install-redis) for the
tests that share state through Redis: each test gets its own server on a
free loopback port with a temporary folder, stopped by its pid.  Tests
stop and start it again on the same port (an outage), or kill it.

Import the fixtures into a test module: ``from redis_fixture import
redis_server_fixture  # noqa: F401`` (the fixture's name is
``redis_server``; the function's differs, so that test arguments do not
shadow an import).
"""

import pathlib
import shutil
import subprocess
import time
from typing import List, Optional

import pytest

from conftest import ROOT, free_port, stop, wait_for_port


def _redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        subprocess.run([str(ROOT / "scripts" / "install-redis")], check=True,
                       stdout=subprocess.DEVNULL, timeout=600)
        found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("redis-server is not installed and "
                           "scripts/install-redis could not install it")
    return found


class RedisServer:
    """One redis-server process on 127.0.0.1 with its own folder.

    ``durable``: append-only file fsynced at every write, so a restart
    keeps what was written (the queue's Redis in docs/redis.md);
    otherwise nothing is saved, as the brief's set-up asks.
    ``password``: requirepass.  ``tls``: a Pki (tests/emulators/tls.py)
    whose server certificate it serves on the port (rediss://)."""

    def __init__(self, directory: pathlib.Path, durable: bool = False,
                 password: str = "", tls=None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.durable = durable
        self.password = password
        self.tls = tls
        self.log_path = directory / "redis.log"
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        """As the ini's ``cache =`` takes it (with TLS, the test CA as
        redis-py reads it from the query)."""
        auth = ":%s@" % self.password if self.password else ""
        if self.tls is None:
            return "redis://%s127.0.0.1:%d/0" % (auth, self.port)
        return "rediss://%s127.0.0.1:%d/0?ssl_ca_certs=%s" % (
            auth, self.port, self.tls.ca_file)

    def _command(self) -> List[str]:
        command = [_redis_server_binary(), "--bind", "127.0.0.1",
                   "--dir", str(self.directory), "--save", "",
                   "--logfile", str(self.log_path)]
        if self.tls is None:
            command += ["--port", str(self.port)]
        else:
            cert = self.directory / "server.pem"
            key = self.directory / "server.key"
            self.tls.server.cert_chain_pems[0].write_to_path(str(cert))
            self.tls.server.private_key_pem.write_to_path(str(key))
            command += ["--port", "0", "--tls-port", str(self.port),
                        "--tls-cert-file", str(cert),
                        "--tls-key-file", str(key),
                        "--tls-ca-cert-file", str(self.tls.ca_file),
                        "--tls-auth-clients", "no"]
        if self.durable:
            command += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            command += ["--appendonly", "no"]
        if self.password:
            command += ["--requirepass", self.password]
        return command

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT, cwd=str(self.directory))
        wait_for_port(self.port, self.process, self.log_path)
        deadline = time.monotonic() + 20
        while True:     # loading an append-only file answers LOADING
            try:
                self.client().ping()
                return self
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM by its pid, as an admin's restart does."""
        if self.process is not None:
            stop(self.process)
            self.process = None

    def client(self):
        import redis
        return redis.Redis.from_url(self.url, socket_timeout=5)


@pytest.fixture(name="redis_server")
def redis_server_fixture(tmp_path):
    """A started RedisServer, stopped after the test."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(name="redis_factory")
def redis_factory_fixture(tmp_path):
    """More RedisServers: ``redis_factory(durable=True, ...)``."""
    started = []

    def start(**kwargs) -> RedisServer:
        server = RedisServer(tmp_path / ("redis%d" % len(started)), **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
