"""Credentials in the shared HTTP client (gateway/transport/auth.py).

Against real local servers (tests/emulators/): an identity provider over
TLS with a trustme CA that issues short-lived tokens (Entra's client
credentials as msal speaks them, Google's service-account JWT grant), a
resource server that takes only its live tokens (and can demand a client
certificate), a server that checks a real NTLM exchange (pyspnego's
acceptor), and OWA's forms login.  The provider's HttpClient is built as
the gateway builds it (ini file -> config.load -> load_providers) and
called in-process, since it is the transport; the last test runs a
gateway process with an ifb provider behind ``auth = oauth2``.
"""

import json
import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from emulators.ntlm_server import NtlmServer
from emulators.owa_forms import OwaForms
from emulators.tls import Pki
from emulators.token_endpoint import (GOOGLE_AUDIENCE, IdentityProvider,
                                      ProtectedResource)
from fbcheck import assert_same_periods, periods_of, schedule_response
from icaldata import freebusy_request
from gateway import config
from gateway.app import load_providers
from gateway.config import ConfigError
from gateway.model import Reason
from gateway.provider import Provider, ProviderError
from gateway.transport import auth
from gateway.transport.lookup import LookupContext

BASE = """\
[server]
hosts = 127.0.0.1:1
[auth]
type = none
[storage]
filesystem_folder = collections
[gateway]
domains = example.com
"""
ANY = "test_transport_auth:AnyAuthProvider"


class AnyAuthProvider(Provider):
    """A type that takes every auth kind (the built-in ones take fewer)."""

    AUTH_KINDS = auth.KINDS


def load_http(tmp_path, section: str, type_name: str = ANY):
    """The HttpClient of one ``[provider:corp]``, built by the gateway."""
    path = tmp_path / "gateway.ini"
    path.write_text(BASE + "[provider:corp]\ntype = %s\ndomains = "
                    "corp.example\n%s" % (type_name, section))
    return load_providers(config.load(str(path)))[0].http


def context(seconds: float = 20) -> LookupContext:
    return LookupContext(time.monotonic() + seconds)


def whoami(http):
    response = http.request("GET", "/whoami", context())
    assert response.status == 200, (response.status, response.text)
    return json.loads(response.body)


@pytest.fixture
def resource(pki, idp, servers):
    return servers(ProtectedResource(pki, idp))


def oauth2(idp, resource, pki, extra: str = "") -> str:
    return ("url = %s/\nauth = oauth2\nauthority = %s\ntenant = %s\n"
            "client_id = %s\nclient_secret = %s\nca_file = %s\n%s" % (
                resource.base, idp.authority, idp.tenant, idp.client_id,
                idp.client_secret, pki.ca_file, extra))


def bearer_tokens(resource):
    return [a for _, a, _ in resource.requests]


# -- oauth2: client credentials through msal ---------------------------------


def test_token_is_fetched_once_and_reused(tmp_path, pki, idp, resource):
    """msal asks the authority's OIDC discovery and token endpoint, through
    the pinned client: an instance discovery at login.microsoftonline.com
    would have been refused as another host and failed the call."""
    http = load_http(tmp_path, oauth2(idp, resource, pki))
    for _ in range(5):
        assert whoami(http) == {"kind": "oauth2", "subject": "app-1",
                                "client_cert": None}
    assert len(idp.token_requests) == 1
    kind, form = idp.token_requests[0]
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "https://graph.microsoft.com/.default"
    assert idp.discoveries == 1
    assert len(set(bearer_tokens(resource))) == 1
    assert resource.statuses() == [200] * 5


def test_token_is_refreshed_shortly_before_it_expires(tmp_path, pki, idp,
                                                      resource):
    idp.expires_in = 2      # replaced 0.2 s (a tenth) before it expires
    http = load_http(tmp_path, oauth2(idp, resource, pki))
    whoami(http)
    fetched = time.monotonic()
    whoami(http)
    assert len(idp.token_requests) == 1
    time.sleep(max(0.0, fetched + 1.9 - time.monotonic()))
    whoami(http)
    assert len(idp.token_requests) == 2
    first, second, third = bearer_tokens(resource)
    assert first == second != third
    assert 401 not in resource.statuses()   # never sent an expired token


def test_twenty_threads_wait_for_one_token_request(tmp_path, pki, idp,
                                                   resource):
    idp.delay = 0.5
    http = load_http(tmp_path, oauth2(idp, resource, pki))
    barrier = threading.Barrier(20)
    answers, errors = [], []

    def call():
        barrier.wait()
        try:
            answers.append(whoami(http)["kind"])
        except Exception as e:      # reported below
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert answers == ["oauth2"] * 20
    assert len(idp.token_requests) == 1
    assert len(set(bearer_tokens(resource))) == 1


def test_a_401_gets_a_fresh_token_and_one_retry(tmp_path, pki, idp,
                                                resource):
    http = load_http(tmp_path, oauth2(idp, resource, pki))
    whoami(http)
    idp.revoke_all()
    whoami(http)
    assert resource.statuses() == [200, 401, 200]
    assert len(idp.token_requests) == 2
    first, refused, fresh = bearer_tokens(resource)
    assert first == refused != fresh


def test_a_second_401_is_refused_credentials(tmp_path, pki, idp, resource):
    http = load_http(tmp_path, oauth2(idp, resource, pki))
    resource.refuse_all = True
    with pytest.raises(ProviderError) as caught:
        http.request("GET", "/whoami", context())
    assert caught.value.reason == Reason.NO_AUTHORITY
    assert caught.value.public == "refused the credentials"
    assert resource.statuses() == [401, 401]
    assert len(idp.token_requests) == 2


def test_a_refused_client_secret_is_refused_credentials(tmp_path, pki, idp,
                                                        resource):
    http = load_http(tmp_path, oauth2(idp, resource, pki))
    idp.client_secret = "rotated"
    with pytest.raises(ProviderError) as caught:
        http.request("GET", "/whoami", context())
    assert caught.value.reason == Reason.NO_AUTHORITY
    assert "invalid_client" in caught.value.detail
    assert resource.requests == []


def test_a_failing_discovery_is_unavailable_until_it_works(
        tmp_path, pki, idp, resource):
    idp.discovery_failure = 500
    http = load_http(tmp_path, oauth2(idp, resource, pki))
    with pytest.raises(ProviderError) as caught:
        http.request("GET", "/whoami", context())
    assert caught.value.reason == Reason.UNAVAILABLE
    idp.discovery_failure = None
    assert whoami(http)["kind"] == "oauth2"
    assert idp.discoveries == 2


def test_an_unknown_tenant_is_refused_credentials(tmp_path, pki, idp,
                                                  resource):
    http = load_http(tmp_path, oauth2(idp, resource, pki).replace(
        "tenant = %s" % idp.tenant, "tenant = other.example"))
    with pytest.raises(ProviderError) as caught:
        http.request("GET", "/whoami", context())
    assert caught.value.reason == Reason.NO_AUTHORITY
    assert resource.requests == []


@pytest.mark.parametrize("status", [500, 200])
def test_a_token_endpoint_answering_garbage_is_unavailable(
        tmp_path, pki, idp, resource, status):
    http = load_http(tmp_path, oauth2(idp, resource, pki))
    idp.token_failure = (status, b"<html>Service error</html>")
    with pytest.raises(ProviderError) as caught:
        http.request("GET", "/whoami", context())
    assert caught.value.reason == Reason.UNAVAILABLE
    assert caught.value.public == "could not get an access token"
    assert idp.token_requests == [("failure", {})]
    assert resource.requests == []


@pytest.mark.parametrize("how", ["discovery", "redirect"])
def test_a_token_endpoint_on_another_host_is_refused(tmp_path, pki, idp,
                                                     resource, servers, how):
    """Only the url's and the authority's origins: OIDC discovery naming
    another token endpoint, or the token endpoint redirecting there, gets
    nothing sent to it (a real Entra tenant there would issue tokens)."""
    elsewhere = servers(IdentityProvider(pki))
    token_url = "%s/%s/oauth2/v2.0/token" % (elsewhere.base, idp.tenant)
    if how == "discovery":
        idp.token_endpoint = token_url
    else:
        idp.redirect_token = token_url
    http = load_http(tmp_path, oauth2(idp, resource, pki))
    with pytest.raises(ProviderError) as caught:
        http.request("GET", "/whoami", context())
    assert caught.value.reason == Reason.UNAVAILABLE
    assert "not a configured host" in caught.value.detail
    assert elsewhere.token_requests == []
    assert resource.requests == []


# -- TLS: ca_file and client certificates -------------------------------------


def test_ca_file_is_trusted_and_the_environment_is_not(
        tmp_path, pki, idp, resource, monkeypatch):
    """REQUESTS_CA_BUNDLE (which the machine sets) names another CA: the
    provider's ca_file still decides, for the token endpoint too."""
    other = Pki(tmp_path / "other", "other")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", other.ca_file)
    monkeypatch.setenv("CURL_CA_BUNDLE", other.ca_file)
    http = load_http(tmp_path, oauth2(idp, resource, pki))
    assert whoami(http)["kind"] == "oauth2"
    # The other CA as ca_file: nothing verifies, not even the token call.
    http = load_http(tmp_path, oauth2(idp, resource, other))
    with pytest.raises(ProviderError) as caught:
        http.request("GET", "/whoami", context())
    assert caught.value.public == "could not be reached securely (TLS failed)"
    # Without ca_file the system's store is used: the test CA is not in it.
    http = load_http(tmp_path, "url = %s/\nauth = bearer\ntoken = t\n"
                     % resource.base)
    with pytest.raises(ProviderError) as caught:
        http.request("GET", "/whoami", context())
    assert caught.value.public == "could not be reached securely (TLS failed)"


@pytest.mark.parametrize("files", ["separate", "combined", "none"])
def test_client_certificate(tmp_path, pki, idp, servers, files):
    resource = servers(ProtectedResource(pki, idp, require_client_cert=True))
    extra = {"separate": "client_cert = %s\nclient_key = %s\n" % (
        pki.client_cert, pki.client_key),
        "combined": "client_cert = %s\n" % pki.client_combined,
        "none": ""}[files]
    http = load_http(tmp_path, oauth2(idp, resource, pki, extra))
    if files == "none":
        with pytest.raises(ProviderError) as caught:
            http.request("GET", "/whoami", context())
        assert caught.value.reason == Reason.UNAVAILABLE
        assert resource.requests == []
        # The server's thread records the failed handshake a moment after
        # the client gave up on it.
        deadline = time.monotonic() + 10
        while not resource.server.handshake_errors and \
                time.monotonic() < deadline:
            time.sleep(0.02)
        assert resource.server.handshake_errors
    else:
        assert whoami(http) == {"kind": "oauth2", "subject": "app-1",
                                "client_cert": "freebusy-gateway"}


# -- google: service account with domain-wide delegation ----------------------


def service_account(tmp_path, idp, email="fb@project.iam.example"):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    idp.service_accounts[email] = key.public_key()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "project",
        "private_key_id": "k1", "client_email": email,
        "client_id": "1234", "token_uri": idp.google_token_uri,
        "private_key": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode("ascii")}))
    return path


def test_google_service_account_acts_as_subject(tmp_path, pki, idp,
                                                resource):
    key_file = service_account(tmp_path, idp)
    http = load_http(tmp_path, "url = %s/\nauth = google\n"
                     "service_account_file = sa.json\n"
                     "subject = admin@corp.example\nca_file = %s\n"
                     % (resource.base, pki.ca_file))
    assert key_file.parent == tmp_path    # relative to the ini file
    for _ in range(3):
        assert whoami(http) == {"kind": "google",
                                "subject": "admin@corp.example",
                                "client_cert": None}
    assert idp.errors == []
    assert len(idp.token_requests) == 1
    kind, claims = idp.token_requests[0]
    assert kind == "google"
    assert claims["iss"] == "fb@project.iam.example"
    assert claims["sub"] == "admin@corp.example"
    assert claims["scope"] == \
        "https://www.googleapis.com/auth/calendar.readonly"
    assert claims["aud"] == GOOGLE_AUDIENCE     # as Google wants it


def test_google_refused_assertion_is_refused_credentials(tmp_path, pki, idp,
                                                         resource):
    service_account(tmp_path, idp)
    idp.google_scope = "https://www.googleapis.com/auth/calendar"
    http = load_http(tmp_path, "url = %s/\nauth = google\n"
                     "service_account_file = sa.json\n"
                     "subject = admin@corp.example\nca_file = %s\n"
                     % (resource.base, pki.ca_file))
    with pytest.raises(ProviderError) as caught:
        http.request("GET", "/whoami", context())
    assert caught.value.reason == Reason.NO_AUTHORITY
    assert "invalid_grant" in caught.value.detail
    assert resource.requests == []


# -- NTLM ---------------------------------------------------------------------


@pytest.fixture
def ntlm(tmp_path, monkeypatch, servers):
    users = tmp_path / "ntlm-users"
    users.write_text("CORP:fbsync:Secret-1\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(users))
    return servers(NtlmServer())


def test_ntlm_handshake_on_one_connection(tmp_path, ntlm):
    http = load_http(tmp_path, "url = %s/\nauth = ntlm\n"
                     "username = CORP\\fbsync\npassword = Secret-1\n"
                     % ntlm.base)
    response = http.request("POST", "/EWS/Exchange.asmx", context(),
                            data=b"<soap/>")
    assert response.status == 200, response.text
    assert response.text == "hello CORP\\fbsync"
    assert ntlm.authenticated == ["CORP\\fbsync"]
    legs = [(leg, status) for _, leg, status in ntlm.legs]
    assert legs == [("none", 401), ("negotiate", 401),
                    ("authenticate", 200)]
    # NEGOTIATE and AUTHENTICATE on the same connection, as NTLM needs.
    assert ntlm.legs[1][0] == ntlm.legs[2][0]


def test_ntlm_wrong_password_is_the_plugins_401(tmp_path, ntlm):
    http = load_http(tmp_path, "url = %s/\nauth = ntlm\n"
                     "username = CORP\\fbsync\npassword = wrong\n"
                     % ntlm.base)
    response = http.request("GET", "/", context())
    assert response.status == 401
    assert ntlm.authenticated == []
    assert [leg for _, leg, _ in ntlm.legs] == ["none", "negotiate",
                                                "authenticate"]


# -- OWA forms login ----------------------------------------------------------


def run_threads(count, target):
    barrier = threading.Barrier(count)
    results, errors = [], []

    def call():
        barrier.wait()
        try:
            results.append(target())
        except Exception as e:      # reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results, errors


@pytest.mark.parametrize("expiry", ["logon redirect", "440"])
def test_forms_login_cookie_is_shared_and_renewed(tmp_path, servers, expiry):
    owa = servers(OwaForms())
    owa.login_delay = 0.3
    if expiry == "440":
        owa.timeout_status = 440
    http = load_http(tmp_path, "url = %s/public/\nauth = form\n"
                     "username = CORP\\fbsync\npassword = pw\n" % owa.base)

    def freebusy():
        return http.request("GET", "/public/?cmd=freebusy&u=SMTP:a@corp",
                            context()).status

    statuses, errors = run_threads(20, freebusy)
    assert errors == [] and statuses == [200] * 20
    assert len(owa.logins) == 1
    login = owa.logins[0]
    assert (login["username"], login["password"]) == ("CORP\\fbsync", "pw")
    assert login["destination"] == owa.base + "/public/"
    assert all(live for path, live in owa.requests)
    owa.expire_sessions()
    seen = len(owa.requests)
    statuses, errors = run_threads(20, freebusy)
    assert errors == [] and statuses == [200] * 20
    assert len(owa.logins) == 2          # one thread logged in again
    # The free/busy GETs only: the login's own redirect lands on /public/
    # too (followed with GET, as browsers do).
    after = [live for path, live in owa.requests[seen:]
             if "cmd=freebusy" in path]
    assert after.count(True) == 20       # each thread at most one refusal
    assert 1 <= after.count(False) <= 20


def test_forms_login_refused(tmp_path, servers):
    owa = servers(OwaForms())
    http = load_http(tmp_path, "url = %s/public/\nauth = form\n"
                     "username = CORP\\fbsync\npassword = nope\n" % owa.base)
    with pytest.raises(ProviderError) as caught:
        http.request("GET", "/public/?cmd=freebusy", context())
    assert caught.value.reason == Reason.NO_AUTHORITY
    assert caught.value.public == "refused the credentials"
    assert len(owa.logins) == 1
    assert owa.requests == []


# -- start-up checks ----------------------------------------------------------


def write_key_file(tmp_path, text):
    (tmp_path / "key.json").write_text(text)
    return "service_account_file = key.json\n"


@pytest.mark.parametrize("section,words", [
    ("auth = kerberos\n", ["'auth'", "kerberos", "basic"]),
    ("auth = oauth2\nclient_id = a\nclient_secret = b\n",
     ["'tenant'", "oauth2"]),
    ("tenant = t\nclient_id = a\n", ["'client_secret'", "oauth2"]),
    ("auth = oauth2\ntenant = t\nclient_id = a\nclient_secret = b\n"
     "authority = http://login.corp.example\n", ["'authority'", "https"]),
    ("auth = oauth2\ntenant = t\nclient_id = a\nclient_secret = b\n"
     "token = x\n", ["'token'", "oauth2"]),
    ("username = u\ntoken = t\n", ["'auth'", "username", "token"]),
    ("auth = bearer\n", ["'token'", "bearer"]),
    ("client_key = key.pem\n", ["'client_key'", "client_cert"]),
    ("client_cert = missing.pem\n", ["'client_cert'", "missing.pem"]),
    ("ca_file = missing.pem\n", ["'ca_file'", "missing.pem"]),
    ("ca_file = gateway.ini\n", ["'ca_file'", "no usable CA"]),
    ("ca_file = CA\nverify_tls = no\n", ["'ca_file'", "verify_tls"]),
    ("auth = google\nsubject = a@corp.example\n",
     ["'service_account_file'", "google"]),
    ("auth = google\nsubject = a@corp.example\n"
     "service_account_file = none.json\n",
     ["'service_account_file'", "none.json"]),
    ("auth = google\nsubject = a@corp.example\nKEY{not json\n",
     ["'service_account_file'", "not JSON"]),
    ("auth = google\nsubject = a@corp.example\nKEY"
     '{"type": "authorized_user"}\n', ["'service_account_file'",
                                       "service account"]),
    ("auth = google\nsubject = a@corp.example\nKEY"
     '{"type": "service_account", "client_email": "a@b", "token_uri": '
     '"https://oauth2.example/token", "private_key": "garbage"}\n',
     ["'service_account_file'", "private key"]),
    ("auth = google\nKEYVALID\n", ["'subject'", "google"]),
    ("auth = form\nusername = u\npassword = p\n"
     "login_url = https://elsewhere.example/owaauth.dll\n",
     ["'login_url'", "host"]),
    ("auth = form\nusername = u\n", ["'password'", "form"]),
])
def test_wrong_credentials_stop_start_up(tmp_path, pki, section, words):
    if "KEYVALID" in section:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        section = section.replace("KEYVALID", write_key_file(
            tmp_path, json.dumps({
                "type": "service_account", "client_email": "a@b",
                "token_uri": "https://oauth2.example/token",
                "private_key": key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption()).decode()})).rstrip("\n"))
    elif "KEY" in section:
        before, _, text = section.partition("KEY")
        section = before + write_key_file(tmp_path, text.rstrip("\n"))
    section = section.replace("= CA\n", "= %s\n" % pki.ca_file)
    with pytest.raises(ConfigError) as caught:
        load_http(tmp_path, "url = https://corp.example/\n" + section)
    message = str(caught.value)
    assert "gateway.ini: [provider:corp] " in message
    for word in words:
        assert word in message, message


def test_a_type_refuses_kinds_it_does_not_take(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_http(tmp_path, "url = https://fb.corp.example/{address}.ifb\n"
                  "auth = ntlm\nusername = u\npassword = p\n", "ifb")
    message = str(caught.value)
    assert "[provider:corp] key 'auth'" in message
    assert "'ifb' does not take ntlm" in message


def test_start_up_contacts_nobody(tmp_path, pki):
    """Tokens are fetched when first needed: an authority that does not
    answer is no start-up error (the first lookup reports it)."""
    http = load_http(tmp_path, "url = https://127.0.0.1:1/\nauth = oauth2\n"
                     "authority = https://127.0.0.1:2\ntenant = t\n"
                     "client_id = a\nclient_secret = b\nca_file = %s\n"
                     % pki.ca_file)
    assert http.verify == pki.ca_file
    with pytest.raises(ProviderError) as caught:
        http.request("GET", "/", context(5))
    assert caught.value.reason == Reason.UNAVAILABLE


def test_relative_files_are_relative_to_the_ini(tmp_path, pki):
    (tmp_path / "ca.pem").write_bytes(open(pki.ca_file, "rb").read())
    http = load_http(tmp_path, "url = https://corp.example/\nca_file = "
                     "ca.pem\nauth = bearer\ntoken = t\n")
    assert http.verify == str(tmp_path / "ca.pem")


# -- through a gateway process ------------------------------------------------


def test_ifb_provider_with_oauth2_end_to_end(gateway_factory, tmp_path, pki,
                                            idp, servers):
    resource = servers(ProtectedResource(pki, idp, busy={
        "carol@corp.example": [("20260105T090000Z", "20260105T100000Z")]}))
    other = Pki(tmp_path / "other", "other")
    gateway = gateway_factory(
        extra="[provider:corp]\ntype = ifb\ndomains = corp.example\n"
        "url = %s/freebusy/{address}.ifb\ncache_ttl = 0\nauth = oauth2\n"
        "authority = %s\ntenant = %s\nclient_id = %s\nclient_secret = %s\n"
        "ca_file = %s\n" % (resource.base, idp.authority, idp.tenant,
                            idp.client_id, idp.client_secret, pki.ca_file),
        env={"REQUESTS_CA_BUNDLE": other.ca_file})
    for _ in range(2):
        answers = schedule_response(gateway.post(
            "/alice/.schedule-outbox/", freebusy_request(
                ["carol@corp.example"], "20260105T000000Z",
                "20260106T000000Z"), "alice", timeout=60))
        assert answers[0][1] == "2.0", answers
        assert_same_periods(periods_of(answers[0][2]), {
            "BUSY": [("20260105T090000Z", "20260105T100000Z")]})
    assert len(idp.token_requests) == 1
    assert resource.statuses() == [200, 200]
    # The token expires: the gateway fetches the next one itself.
    idp.revoke_all()
    answers = schedule_response(gateway.post(
        "/alice/.schedule-outbox/", freebusy_request(
            ["carol@corp.example"], "20260105T000000Z", "20260106T000000Z"),
        "alice", timeout=60))
    assert answers[0][1] == "2.0", answers
    assert len(idp.token_requests) == 2
    # A refused client secret reads "corp refused the credentials".
    idp.client_secret = "rotated"
    idp.revoke_all()
    response = gateway.post("/alice/.schedule-outbox/", freebusy_request(
        ["carol@corp.example"], "20260105T000000Z", "20260106T000000Z"),
        "alice", timeout=60)
    answers = schedule_response(response)
    assert answers[0][1] == "3.8", answers
    assert "corp refused the credentials" in response.text
    assert idp.base.split("//")[1] not in response.text

