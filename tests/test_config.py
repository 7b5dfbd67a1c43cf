"""The one ini file: a wrong file stops start-up with one clear message
naming file, section and key; the shipped files are valid.

Run as an admin would: the ``fbgateway`` command line in a subprocess.
"""

import pathlib
import subprocess
import sys

import pytest

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


def run(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "gateway", *args],
                          cwd=str(ROOT), capture_output=True, text=True,
                          timeout=timeout)


def write(tmp_path: pathlib.Path, text: str) -> str:
    path = tmp_path / "gateway.ini"
    path.write_text(text)
    return str(path)


def test_shipped_config_is_valid():
    result = run("check-config", "--config", "config/gateway.ini")
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
])
def test_bad_config_fails_with_one_clear_message(tmp_path, addition, words):
    text = BASE % free_port()
    if addition.startswith("[storage]"):
        text = text.replace("[storage]\nfilesystem_folder = collections\n",
                            addition)
    elif addition.startswith("domains"):
        text = text.replace("domains = example.com\n", addition)
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
        import requests
        response = requests.request(
            "MKCALENDAR", "http://127.0.0.1:%d/someone/cal/" % port,
            auth=("someone", "x"), timeout=30)
        assert response.status_code == 201, response.text
        assert (tmp_path / "collections" / "collection-root" / "someone" /
                "cal").is_dir()
    finally:
        stop(process)
