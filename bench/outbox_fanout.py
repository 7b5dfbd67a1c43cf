#!/usr/bin/env python3
"""One outbox POST over several slow providers: parallel, not serial.

Starts N free/busy URL servers that each take --delay seconds to answer,
a gateway with one ``ifb`` provider per server, and times a POST whose
attendees live on all of them, against a POST for the slowest one alone.
A serial gateway would need about N times as long; the ratio printed is
(all providers) / (slowest alone), ideally close to 1.

Usage:  .venv/bin/python bench/outbox_fanout.py [--providers 4] [--delay 1]
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def slow_server(delay: float) -> ThreadingHTTPServer:
    """A CalConnect free/busy URL server that answers after ``delay``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            query = dict(urllib.parse.parse_qsl(
                urllib.parse.urlsplit(self.path).query))
            start = query["start"].replace("-", "").replace(":", "")
            end = query["end"].replace("-", "").replace(":", "")
            time.sleep(delay)
            body = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//slow//EN\r\n"
                    "BEGIN:VFREEBUSY\r\nDTSTART:%s\r\nDTEND:%s\r\n"
                    "FREEBUSY:20260105T100000Z/20260105T110000Z\r\n"
                    "END:VFREEBUSY\r\nEND:VCALENDAR\r\n" % (start, end)
                    ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/calendar")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, attendees) -> float:
    body = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\n"
            "METHOD:REQUEST\r\nBEGIN:VFREEBUSY\r\nUID:bench\r\n"
            "DTSTAMP:20260101T000000Z\r\nDTSTART:20260105T000000Z\r\n"
            "DTEND:20260112T000000Z\r\nORGANIZER:mailto:alice@example.com\r\n"
            + "".join("ATTENDEE:mailto:%s\r\n" % a for a in attendees) +
            "END:VFREEBUSY\r\nEND:VCALENDAR\r\n")
    began = time.perf_counter()
    response = requests.post(
        "http://127.0.0.1:%d/alice/.schedule-outbox/" % port, data=body,
        auth=("alice", "alice"), timeout=120,
        headers={"Content-Type": "text/calendar"})
    elapsed = time.perf_counter() - began
    if response.status_code != 200 or response.text.count("2.0;") != len(
            attendees):
        raise RuntimeError("POST failed: %d %s" % (response.status_code,
                                                   response.text[:500]))
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=4)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    servers = [slow_server(args.delay) for _ in range(args.providers)]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fbfanout-") as tmp:
        with open(os.path.join(tmp, "users"), "w") as f:
            f.write("alice:alice\n")
        config = os.path.join(tmp, "gateway.ini")
        with open(config, "w") as f:
            f.write("[server]\nhosts = 127.0.0.1:%d\n[auth]\ntype = htpasswd"
                    "\nhtpasswd_filename = users\nhtpasswd_encryption = plain"
                    "\ndelay = 0\n[storage]\nfilesystem_folder = collections"
                    "\n[logging]\nlevel = warning"
                    "\n[gateway]\ndomains = example.com\ntimeout = 30\n" %
                    port)
            for n, server in enumerate(servers):
                f.write("[provider:slow%d]\ntype = ifb\ndomains = "
                        "slow%d.example.net\nurl = http://127.0.0.1:%d/"
                        "freebusy/{address}.ifb\ntimeout = 10\ncache_ttl = 0"
                        "\n" % (n, n, server.server_port))
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", config],
            cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            everyone = ["user@slow%d.example.net" % n
                        for n in range(args.providers)]
            post(port, everyone[:1])             # warm up the connections
            alone = statistics.median(post(port, everyone[:1])
                                      for _ in range(args.repeat))
            together = statistics.median(post(port, everyone)
                                         for _ in range(args.repeat))
        finally:
            process.terminate()
            process.wait(15)
    for server in servers:
        server.shutdown()
    serial = args.providers * alone
    print("%d providers answering after %.2f s each:"
          % (args.providers, args.delay))
    print("  slowest alone      %6.3f s" % alone)
    print("  all %d in one POST  %6.3f s  (x%.2f of alone; serial would be "
          "about %.3f s, x%.1f)" % (args.providers, together,
                                    together / alone, serial,
                                    serial / together))
    return 0


if __name__ == "__main__":
    sys.exit(main())
