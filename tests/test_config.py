"""The one ini file: a wrong file stops start-up with one clear message
naming file, section and key; the shipped files are valid.

Run as an admin would: the ``fbgateway`` command line in a subprocess.
"""

import os
import pathlib
import re
import socket
import subprocess
import sys

import pytest
import requests

from conftest import ROOT, free_port, wait_for_port, stop

BASE = """\
[server]
hosts = 127.0.0.1:%d
[auth]
type = none
[storage]
filesystem_folder = collections
[gateway]
domains = example.com
"""


def run(*args, timeout=60, env=None):
    return subprocess.run([sys.executable, "-m", "gateway", *args],
                          cwd=str(ROOT), capture_output=True, text=True,
                          timeout=timeout, env=env)


def write(tmp_path: pathlib.Path, text: str) -> str:
    path = tmp_path / "gateway.ini"
    path.write_text(text)
    return str(path)


def test_shipped_config_is_valid():
    # --no-bind: a gateway running on its port must not fail this test
    result = run("check-config", "--no-bind", "--config",
                 "config/gateway.ini")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_shipped_provider_examples_are_valid(tmp_path):
    examples = (ROOT / "config" / "examples" / "providers.ini").read_text()
    result = run("check-config", "--config",
                 write(tmp_path, BASE % free_port() + examples))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("addition,words", [
    ("cache_ttl = soon\n", ["[gateway]", "cache_ttl", "soon"]),
    ("timeout = 0\n", ["[gateway]", "timeout", "greater than 0"]),
    ("max_hops = -1\n", ["[gateway]", "max_hops"]),
    ("colour = blue\n", ["[gateway]", "unknown key", "colour"]),
    ("trusted_proxy = proxy.example\n", ["[gateway]", "trusted_proxy",
                                         "proxy.example"]),
    ("[provider:p]\ndomains = p.example\nurl = http://127.0.0.1:1/\n",
     ["[provider:p]", "missing required key", "type"]),
    ("[provider:p]\ntype = caldav\nurl = http://127.0.0.1:1/\n",
     ["[provider:p]", "domains"]),
    ("[provider:p]\ntype = caldav\ndomains = p.example\nurl = ftp://x/\n",
     ["[provider:p]", "url", "http"]),
    ("[provider:p]\ntype = nosuchplugin\ndomains = p.example\n"
     "url = http://127.0.0.1:1/\n", ["[provider:p]", "type", "nosuchplugin"]),
    ("[provider:p]\ntype = caldav\ndomains = example.com\n"
     "url = http://127.0.0.1:1/\n", ["[provider:p]", "domains",
                                     "example.com", "[gateway]"]),
    ("[provider:p]\ntype = caldav\ndomains = p.example\n"
     "url = http://127.0.0.1:1/\nmax_attendees = lots\n",
     ["[provider:p]", "max_attendees"]),
    ("[provider:p]\ntype = caldav\ndomains = p.example\n"
     "url = http://127.0.0.1:1/\nflavour = x\n",
     ["[provider:p]", "flavour"]),
    ("[provider:p]\ntype = ifb\ndomains = p.example\n"
     "url = http://127.0.0.1:1/fb.ifb\n", ["[provider:p]", "{address}"]),
    ("[provider:]\ntype = ifb\n", ["[provider:]", "name"]),
    ("[nonsense]\nx = 1\n", ["[nonsense]", "unknown section"]),
    ("[storage]\ntype = nosuchstorage\n", ["gateway.ini"]),
    ("domains = not a domain!\n", ["[gateway]", "domains"]),
    ("domains =\n", ["[gateway]", "domains", "at least one domain"]),
    ("no domains\n", ["[gateway]", "missing required key", "domains"]),
    ("threads = 0\n", ["[gateway]", "threads", "greater than 0"]),
    ("connection_limit = many\n", ["[gateway]", "connection_limit"]),
])
def test_bad_config_fails_with_one_clear_message(tmp_path, addition, words):
    text = BASE % free_port()
    if addition.startswith("[storage]"):
        text = text.replace("[storage]\nfilesystem_folder = collections\n",
                            addition)
    elif addition.startswith("domains"):
        text = text.replace("domains = example.com\n", addition)
    elif addition == "no domains\n":
        text = text.replace("domains = example.com\n", "")
    else:
        text += addition
    path = write(tmp_path, text)
    for command in ("check-config", "serve"):
        result = run(command, "--config", path)
        assert result.returncode == 2, (command, result.stdout,
                                        result.stderr)
        message = result.stderr.strip().splitlines()
        assert len(message) == 1, result.stderr
        assert message[0].startswith("fbgateway: configuration error: ")
        assert path in message[0]
        for word in words:
            assert word in message[0], message[0]


def test_missing_file_is_a_clear_error(tmp_path):
    result = run("serve", "--config", str(tmp_path / "nothing.ini"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_config_help_lists_every_key():
    result = run("config-help")
    assert result.returncode == 0
    for key in ("domains", "cache_ttl", "timeout", "max_window_days",
                "max_attendees", "max_hops", "type", "url", "verify_tls"):
        assert key in result.stdout


def test_relative_paths_are_relative_to_the_ini_file(tmp_path):
    """Started from another directory, storage lands beside the ini."""
    port = free_port()
    path = write(tmp_path, BASE % port)
    log = tmp_path / "log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", path],
            cwd="/", stdout=out, stderr=subprocess.STDOUT,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    try:
        wait_for_port(port, process, log)
        response = requests.request(
            "MKCALENDAR", "http://127.0.0.1:%d/someone/cal/" % port,
            auth=("someone", "x"), timeout=30)
        assert response.status_code == 201, response.text
        assert (tmp_path / "collections" / "collection-root" / "someone" /
                "cal").is_dir()
    finally:
        stop(process)


# -- what stops ``serve`` stops ``check-config``: files, modules, ports ----

USERS_SECTION = """\
[auth]
type = htpasswd
htpasswd_filename = users
htpasswd_encryption = %s
"""
#: bcrypt hash of "alice-pw" (htpasswd -B), checked by bcrypt at login.
ALICE_BCRYPT = "$2b$04$S9.bQrAtjn3b3xyjlrGj4.U18n7bRGU3UzYPW1pqSEVhKYLHnX8KS"


def with_users(tmp_path, encryption="plain", line="alice:alice-pw\n"):
    (tmp_path / "users").write_text(line)
    return (BASE % free_port()).replace("[auth]\ntype = none\n",
                                        USERS_SECTION % encryption)


def assert_both_refuse(path, words, env=None):
    """check-config and serve stop with the same one line (exit 2)."""
    lines = []
    for command in ("check-config", "serve"):
        result = run(command, "--config", path, env=env)
        assert result.returncode == 2, (command, result.stdout,
                                        result.stderr)
        message = result.stderr.strip().splitlines()
        assert len(message) == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr
        assert message[0].startswith("fbgateway: configuration error: %s: "
                                     % path), message[0]
        for word in words:
            assert word in message[0], message[0]
        lines.append(message[0])
    assert lines[0] == lines[1], lines


def test_missing_htpasswd_file(tmp_path):
    text = with_users(tmp_path).replace("htpasswd_filename = users",
                                        "htpasswd_filename = nobody")
    assert_both_refuse(write(tmp_path, text), [
        "[auth]", "htpasswd_filename", str(tmp_path / "nobody"),
        "No such file"])


def test_missing_rights_file(tmp_path):
    text = with_users(tmp_path) + "[rights]\ntype = from_file\nfile = nope\n"
    assert_both_refuse(write(tmp_path, text), [
        "[rights]", "'file'", str(tmp_path / "nope"), "No such file"])


def test_unreadable_rights_file_content(tmp_path):
    (tmp_path / "rights").write_text("[rule]\nuser: .*\n")
    text = with_users(tmp_path) + "[rights]\ntype = from_file\nfile = rights\n"
    assert_both_refuse(write(tmp_path, text), ["[rights]", "from_file"])


def test_bcrypt_without_the_bcrypt_module(tmp_path):
    """Run with a ``bcrypt`` that cannot be imported, as on a machine
    without it: both commands refuse; with the real module, both accept."""
    shadow = tmp_path / "shadow" / "bcrypt"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ImportError('no bcrypt on this machine')\n")
    path = write(tmp_path, with_users(tmp_path, "bcrypt",
                                      "alice:%s\n" % ALICE_BCRYPT))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path / "shadow"), str(ROOT)]))
    assert_both_refuse(path, ["[auth]", "htpasswd_encryption", "bcrypt",
                              "not installed"], env=env)
    result = run("check-config", "--config", path)
    assert result.returncode == 0, result.stderr


def test_bcrypt_hashes_log_in(tmp_path):
    """The bcrypt the shipped config recommends is installed and works."""
    port = free_port()
    path = write(tmp_path, with_users(tmp_path, "bcrypt",
                                      "alice:%s\n" % ALICE_BCRYPT))
    text = pathlib.Path(path).read_text()
    text = re.sub(r"hosts = 127\.0\.0\.1:\d+",
                  "hosts = 127.0.0.1:%d" % port, text)
    pathlib.Path(path).write_text(text)
    log = tmp_path / "log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", path],
            cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process, log)
        url = "http://127.0.0.1:%d/alice/" % port
        good = requests.request("PROPFIND", url, auth=("alice", "alice-pw"),
                                headers={"Depth": "0"}, timeout=30)
        assert good.status_code == 207, good.text
        bad = requests.request("PROPFIND", url, auth=("alice", "wrong"),
                               headers={"Depth": "0"}, timeout=30)
        assert bad.status_code == 401
    finally:
        stop(process)


def test_storage_folder_that_cannot_be_created(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    text = (BASE % free_port()).replace(
        "filesystem_folder = collections",
        "filesystem_folder = afile/collections")
    assert_both_refuse(write(tmp_path, text), [
        "[storage]", "filesystem_folder", "create",
        str(tmp_path / "afile"), "not a folder"])
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        path = write(tmp_path, BASE % port)
        assert_both_refuse(path, ["[server]", "hosts",
                                  "127.0.0.1:%d" % port, "in use"])
        # a running server's own file: checked without the ports
        result = run("check-config", "--no-bind", "--config", path)
        assert result.returncode == 0, result.stderr


def test_second_address_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        text = (BASE % free_port()).replace(
            "\n[auth]", ", 127.0.0.1:%d\n[auth]" % port, 1)
        assert_both_refuse(write(tmp_path, text), [
            "[server]", "hosts", "127.0.0.1:%d" % port])


def test_ssl_is_refused_with_the_way_out(tmp_path):
    text = (BASE % free_port()).replace("[auth]", "ssl = True\n[auth]", 1)
    assert_both_refuse(write(tmp_path, text), ["[server]", "ssl",
                                               "TLS", "proxy"])


def test_check_config_creates_nothing(tmp_path):
    path = write(tmp_path, BASE % free_port())
    result = run("check-config", "--config", path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "collections").exists()
