#!/usr/bin/env python3
"""A private Cyrus IMAP 3.6 CalDAV server on loopback, for benchmarks.

Debian's ``cyrus-imapd`` and ``cyrus-caldav`` (installed with apt-get
when missing; run as root).  Everything lives under one folder: its own
imapd.conf and cyrus.conf, mail spool, SASL password database and pid
file; the system's Cyrus configuration and service are not touched.  The
master process runs in the foreground as a child of the caller, so it is
stopped by its own pid.  Users log in with Basic (SASL PLAIN from
sasldb); their addresses are ``mailto:<user>@<domain>``; calendars live at
``/dav/calendars/user/<user>/<calendar>/``, the outbox at ``.../Outbox/``.

As a library: ``Cyrus(folder, {"alice": "pw"}).start()`` ... ``stop()``.
From the shell:

    .venv/bin/python bench/cyrus.py start --folder /tmp/cyrus \
        --http-port 8108 alice:alicepw bob:bobpw
    .venv/bin/python bench/cyrus.py stop --folder /tmp/cyrus
"""

import argparse
import concurrent.futures
import imaplib
import itertools
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

from common import Reporting, basic, free_port, fresh_request, \
    wait_for_port

PACKAGES = ("cyrus-imapd", "cyrus-caldav", "cyrus-admin", "sasl2-bin",
            "libsasl2-modules", "libsasl2-modules-db")
MASTER = "/usr/sbin/cyrmaster"
ADMIN, ADMIN_PASSWORD = "cyrus", "cyrus-admin-pw"
#: Parallel PUTs when loading a calendar (Cyrus forks an httpd per
#: connection, up to the maxchild below).
PUT_THREADS = 8
MAX_HTTPD = 24

IMAPD_CONF = """configdirectory: {base}/lib
defaultpartition: default
partition-default: {base}/spool
sievedir: {base}/sieve
proc_path: {base}/run/proc
mboxname_lockpath: {base}/run/lock
lmtpsocket: {base}/run/socket/lmtp
idlesocket: {base}/run/socket/idle
notifysocket: {base}/run/socket/notify
hashimapspool: true
altnamespace: no
unixhierarchysep: no
servername: localhost
admins: {admin}
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {base}/etc/sasldb2
sasl_mech_list: PLAIN LOGIN
sasl_auto_transition: no
autocreate_quota: 0
httpmodules: caldav freebusy
httpallowcompress: no
caldav_allowscheduling: on
caldav_create_default: yes
caldav_create_sched: yes
caldav_realm: bench
calendar_user_address_set: {domain}
syslog_prefix: cyrus-bench
"""

CYRUS_CONF = """START {{
  recover    cmd="ctl_cyrusdb -C {base}/etc/imapd.conf -r"
}}
SERVICES {{
{imap_service}
{http_service}
}}
EVENTS {{
  checkpoint cmd="ctl_cyrusdb -C {base}/etc/imapd.conf -c" period=30
}}
DAEMON {{
}}
"""
#: One entry of cyrus.conf's SERVICES: one line (no continuation lines).
SERVICE = ('  {name} cmd="{name}d -C {base}/etc/imapd.conf" '
           'listen="127.0.0.1:{port}" prefork=0 maxchild={children}')


def install() -> None:
    """apt-get the packages that are missing, without starting Debian's
    own cyrus-imapd service (it would listen on every address)."""
    missing = [p for p in PACKAGES if subprocess.run(
        ["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return
    policy = "/usr/sbin/policy-rc.d"
    added = not os.path.exists(policy)
    if added:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends"]
                       + missing, check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    finally:
        if added:
            os.remove(policy)


class Cyrus(Reporting):
    """One private Cyrus instance under ``folder``."""

    kind = "cyrus"

    def __init__(self, folder: str, users: Dict[str, str],
                 domain: str = "example.com",
                 http_port: Optional[int] = None) -> None:
        self.base = os.path.abspath(folder)
        self.users = users
        self.domain = domain
        self.port = http_port or 0
        self.imap_port = 0
        self.process: Optional[subprocess.Popen] = None
        self._log = None

    # -- life cycle ------------------------------------------------------

    def start(self) -> None:
        """Set the folder up on first use, then run the master."""
        install()
        fresh = not os.path.exists(os.path.join(self.base, "etc",
                                                "imapd.conf"))
        self.port = self.port or free_port()
        self.imap_port = free_port()
        if fresh:
            self._create_folders()
            self._add_users()
        self._write_config()
        self._run_master()
        if fresh:
            self._create_mailboxes()

    def stop(self) -> None:
        """SIGTERM to the master (it stops its httpd and imapd children)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _create_folders(self) -> None:
        letters = "abcdefghijklmnopqrstuvwxyz"
        folders = ["etc", "sieve", "run/proc", "run/lock", "run/socket",
                   "log", "spool/stage."]
        folders += ["lib/%s" % d for d in ("db", "proc", "socket", "log",
                                           "msg", "ptclient")]
        folders += ["lib/%s/%s" % (d, c) for d in ("user", "quota", "lock")
                    for c in letters]
        folders += ["spool/%s" % c for c in letters]
        for folder in folders:
            os.makedirs(os.path.join(self.base, folder), exist_ok=True)
        # Cyrus runs as its own user: every folder above must be passable.
        path = self.base
        while path != "/":
            os.chmod(path, os.stat(path).st_mode | 0o055)
            path = os.path.dirname(path)

    def _add_users(self) -> None:
        database = os.path.join(self.base, "etc", "sasldb2")
        for user, password in [(ADMIN, ADMIN_PASSWORD)] + list(
                self.users.items()):
            subprocess.run(["saslpasswd2", "-f", database, "-u", "localhost",
                            "-p", "-c", user], input=password.encode(),
                           check=True)
        subprocess.run(["chown", "-R", "cyrus:mail", self.base], check=True)
        os.chmod(database, 0o640)

    def _write_config(self) -> None:
        values = dict(base=self.base, admin=ADMIN, domain=self.domain)
        values.update(
            imap_service=SERVICE.format(name="imap", base=self.base,
                                        port=self.imap_port, children=4),
            http_service=SERVICE.format(name="http", base=self.base,
                                        port=self.port, children=MAX_HTTPD))
        for name, template in (("imapd.conf", IMAPD_CONF),
                               ("cyrus.conf", CYRUS_CONF)):
            with open(os.path.join(self.base, "etc", name), "w") as f:
                f.write(template.format(**values))

    def _run_master(self) -> None:
        self._log = open(os.path.join(self.base, "log", "master.log"), "ab")
        etc = os.path.join(self.base, "etc")
        self.process = subprocess.Popen(
            [MASTER, "-C", os.path.join(etc, "imapd.conf"), "-M",
             os.path.join(etc, "cyrus.conf"), "-p",
             os.path.join(self.base, "run", "master.pid")],
            stdout=self._log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.process, "cyrus master")

    def _create_mailboxes(self) -> None:
        """Each user's INBOX over IMAP as the admin; the first DAV request
        of a user then creates their calendar home, Inbox and Outbox."""
        imap = imaplib.IMAP4("127.0.0.1", self.imap_port)
        imap.login(ADMIN, ADMIN_PASSWORD)
        for user in self.users:
            kind, answer = imap.create("user." + user)
            if kind != "OK":
                raise RuntimeError("cyrus: cannot create user.%s: %s" % (
                    user, answer))
        imap.logout()
        for user in self.users:
            _, status, data = fresh_request(
                self.port, "PROPFIND", "/dav/calendars/user/%s/" % user, "",
                {"Depth": "1", "Authorization": self._auth(user)})
            if status != 207:
                raise RuntimeError("cyrus: no calendar home for %s: %d %s"
                                   % (user, status, data[:200]))

    # -- requests, in the gateway's path shapes ----------------------------

    def dav(self, path: str) -> str:
        """``/user/calendar/`` (Radicale's shape) -> Cyrus's path; the
        outbox ``/user/.schedule-outbox/`` -> ``.../user/Outbox/``."""
        parts = [p for p in path.strip("/").split("/") if p]
        if parts[1:] == [".schedule-outbox"]:
            parts[1] = "Outbox"
        return "/dav/calendars/user/%s/" % "/".join(parts)

    def _auth(self, user: str) -> str:
        return basic(user, self.users[user])

    @staticmethod
    def owner(path: str) -> str:
        return path.strip("/").split("/")[0]

    def request(self, method: str, path: str, body: str = "",
                headers: Optional[Dict[str, str]] = None,
                user: Optional[str] = None) -> Tuple[float, bytes]:
        headers = dict(headers or {}, Authorization=self._auth(
            user or self.owner(path)))
        elapsed, status, data = fresh_request(self.port, method,
                                              self.dav(path), body, headers)
        if status != 200:
            raise RuntimeError("cyrus %s %s: %d %s" % (
                method, path, status, data[:300]))
        return elapsed, data


    def store(self, calendars: Dict[str, Dict[str, str]]) -> List[str]:
        """MKCALENDAR each ``{path: {name: text}}``, then PUT every object
        over PUT_THREADS connections, calendars interleaved (Cyrus locks
        one calendar per PUT); the names Cyrus refused, with its reason."""
        for path in calendars:
            _, status, data = fresh_request(
                self.port, "MKCALENDAR", self.dav(path), "",
                {"Authorization": self._auth(self.owner(path))})
            if status != 201:
                raise RuntimeError("cyrus MKCALENDAR %s: %d %s" % (
                    path, status, data[:200]))

        def put(item: Tuple[str, str, str]) -> Optional[str]:
            path, name, text = item
            _, status, data = fresh_request(
                self.port, "PUT", self.dav(path) + name, text,
                {"Authorization": self._auth(self.owner(path)),
                 "Content-Type": "text/calendar; charset=utf-8"})
            return None if status in (201, 204) else "%s%s: %d %s" % (
                path, name, status, data[:200].decode("utf-8", "replace"))

        queues = [[(path, name, text) for name, text in objects.items()]
                  for path, objects in calendars.items()]
        interleaved = [item for row in itertools.zip_longest(*queues)
                       for item in row if item is not None]
        with concurrent.futures.ThreadPoolExecutor(PUT_THREADS) as pool:
            return [r for r in pool.map(put, interleaved) if r]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--folder", required=True)
    parser.add_argument("--http-port", type=int, default=8108)
    parser.add_argument("--domain", default="example.com")
    parser.add_argument("users", nargs="*", help="user:password ...")
    args = parser.parse_intermixed_args()
    pid_file = os.path.join(args.folder, "run", "master.pid")
    if args.action == "stop":
        try:
            with open(pid_file) as f:
                pid = int(f.read().split()[0])
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            print("cyrus: not running (no master in %s)" % pid_file)
            return 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                print("cyrus: stopped master %d" % pid)
                return 0
            time.sleep(0.2)
        print("cyrus: master %d still running" % pid)
        return 1
    users = dict(u.split(":", 1) for u in args.users)
    cyrus = Cyrus(args.folder, users, args.domain, args.http_port)
    cyrus.start()
    # The master keeps running when this script ends; ``stop`` ends it.
    cyrus.process = None
    print("cyrus: CalDAV on http://127.0.0.1:%d/ (master pid %s)" % (
        cyrus.port, open(pid_file).read().strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
