"""Credentials: how the shared HTTP client proves who the gateway is.

One ``Authenticator`` per provider, chosen by the ini keys of design.md
"Credentials" (``build`` reads them and refuses wrong combinations at
start-up).  ``HttpClient`` asks it for the headers of every request, asks
whether an answer refused them, and then sends the request once more with
a fresh credential; a second refusal is the provider's failure ("refused
the credentials").

- ``basic``, ``bearer``: fixed credentials, sent with every request; a 401
  goes back to the plugin as it is (nothing fresher exists).
- ``ntlm``: the NTLM handshake (requests-ntlm), per connection.
- ``form``: OWA forms login.  The session cookie is kept in the token
  store, so every worker thread (each has its own requests session) sends
  the one cookie; one thread logs in again when it is refused or expired.
- ``oauth2``: the client-credentials grant through msal at
  ``{authority}/{tenant}/oauth2/v2.0/token``.
- ``google``: a service account's JWT grant (google-auth), acting as
  ``subject`` (domain-wide delegation), at the key file's ``token_uri``.

Tokens and cookies live in a ``TokenStore`` (gateway.state) under the
provider's name and credential identity, with the moment they must be
replaced: 60 s, or a tenth of their lifetime if that is shorter, before
the foreign side says they expire.  One thread fetches while the others
wait for it (never past their deadline) and reuse its token.

Every token request goes through the provider's own ``HttpClient``: the
same pinned origins (the ``url``'s, plus the authority's or the
``token_uri``'s, nothing else, redirects included), the same CA file and
client certificate, the same deadline.  msal's instance discovery, which
would ask login.microsoftonline.com about any other authority, is off.
"""

import base64
import contextlib
import datetime
import json
import logging
import ssl
import threading
import time
import urllib.parse
from typing import Dict, Mapping, Optional, Sequence, Tuple

from gateway.config import AUTH_KINDS as KINDS
from gateway.model import Reason
from gateway.state import MemoryTokenStore, TokenStore
from gateway.transport.http import origin
from gateway.transport.lookup import LookupContext, ProviderError

logger = logging.getLogger(__name__)

#: The ini keys each kind uses; any other credential key is a mistake.
KIND_KEYS: Mapping[str, Tuple[str, ...]] = {
    "basic": ("username", "password"),
    "ntlm": ("username", "password"),
    "form": ("username", "password", "login_url"),
    "bearer": ("token",),
    "oauth2": ("tenant", "client_id", "client_secret", "authority", "scope"),
    "google": ("service_account_file", "subject", "scope"),
}
REQUIRED_KEYS: Mapping[str, Tuple[str, ...]] = {
    "basic": ("username",),
    "ntlm": ("username", "password"),
    "form": ("username", "password"),
    "bearer": ("token",),
    "oauth2": ("tenant", "client_id", "client_secret"),
    "google": ("service_account_file", "subject"),
}
CREDENTIAL_KEYS = tuple(sorted({k for keys in KIND_KEYS.values()
                                for k in keys}))
#: What a provider type accepts unless it says otherwise: the kinds that
#: end as an Authorization header any HTTP API can take (oauth2 is a
#: bearer token fetched by the gateway, e.g. behind Entra application
#: proxy).
DEFAULT_KINDS = ("basic", "bearer", "oauth2")
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_SCOPES = {"oauth2": "https://graph.microsoft.com/.default",
                  "google": "https://www.googleapis.com/auth/calendar.readonly"}
#: Where OWA 2003 takes forms logins (Zimbra's and DavMail's default).
OWA_LOGIN_PATH = "/exchweb/bin/auth/owaauth.dll"
OWA_LOGON_PAGE = "/exchweb/bin/auth/owalogon.asp"
#: A session cookie without an expiry is kept this long, or until refused.
COOKIE_LIFETIME = 8 * 3600.0
#: Hosts of Microsoft's own authorities (msal validates these itself).
MICROSOFT_AUTHORITY_HOSTS = ("login.microsoftonline.com",
                             "login.microsoftonline.us",
                             "login.chinacloudapi.cn",
                             "login.microsoftonline.de",
                             "login.windows.net", "login.microsoft.com",
                             "sts.windows.net")

#: The process's token store unless a caller passes another.
DEFAULT_TOKEN_STORE: TokenStore = MemoryTokenStore()


def refresh_margin(lifetime: float) -> float:
    """How long before its expiry a token is replaced."""
    return min(60.0, max(0.0, lifetime) / 10)


def refused_credentials(detail: str) -> ProviderError:
    """The foreign side does not accept our credentials.

    NO_AUTHORITY (3.8), as a plugin reports a 401 from a fixed password:
    the organizer cannot get this free/busy through the gateway until the
    admin fixes the credentials, so a "try later" 5.x would mislead; the
    public text says it is the gateway's credentials, not the attendee.
    """
    return ProviderError(Reason.NO_AUTHORITY, detail,
                         "refused the credentials")


# -- the authenticators -------------------------------------------------------


class Authenticator:
    """Credentials of one provider, applied by its HttpClient."""

    kind = ""

    def bind(self, client) -> None:
        """Called by the HttpClient that owns this authenticator: extra
        origins are allowed there, token requests go through it."""
        self.client = client
        for url in self.origins():
            client.allow_origin(url)

    def origins(self) -> Sequence[str]:
        """URLs whose origins this credential needs besides the ``url``."""
        return ()

    def headers(self, context: LookupContext) -> Dict[str, str]:
        """Headers for one request; may fetch a token first."""
        return {}

    def requests_auth(self):
        """A requests auth object for this thread (NTLM), or None."""
        return None

    def refused(self, response) -> bool:
        """Did the answer refuse a credential that a fresh one may fix?"""
        return False

    def renew(self, sent: Mapping[str, str], context: LookupContext) -> None:
        """Forget the credential sent in ``sent`` (if still current)."""

    def refused_again(self, response) -> ProviderError:
        return refused_credentials(
            "%s refused a fresh %s credential too (HTTP %d)" % (
                urllib.parse.urlsplit(response.url).netloc, self.kind,
                response.status))


class BasicAuth(Authenticator):
    kind = "basic"

    def __init__(self, username: str, password: str) -> None:
        self._header = "Basic " + base64.b64encode(
            ("%s:%s" % (username, password)).encode("utf-8")).decode("ascii")

    def headers(self, context):
        return {"Authorization": self._header}


class BearerAuth(Authenticator):
    kind = "bearer"

    def __init__(self, token: str) -> None:
        self._header = "Bearer " + token

    def headers(self, context):
        return {"Authorization": self._header}


class NtlmAuth(Authenticator):
    """NTLM is per connection: requests-ntlm answers the 401 challenge on
    the same connection; one auth object per thread (per session)."""

    kind = "ntlm"

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self._local = threading.local()

    def requests_auth(self):
        auth = getattr(self._local, "auth", None)
        if auth is None:
            from requests_ntlm import HttpNtlmAuth
            auth = self._local.auth = HttpNtlmAuth(self.username,
                                                   self.password)
        return auth


class CachedAuth(Authenticator):
    """A credential fetched when first needed and shared by all threads
    through the token store, refreshed by one thread at a time."""

    header = "Authorization"
    prefix = "Bearer "

    def __init__(self, store: TokenStore, key: str) -> None:
        self.store = store
        self.key = key

    def fetch(self, context: LookupContext) -> Tuple[str, float]:
        """A new credential and its lifetime in seconds."""
        raise NotImplementedError

    def current(self, context: LookupContext) -> str:
        entry = self.store.get(self.key)
        if entry is not None:
            return entry[0]
        with self._refreshing(context):
            entry = self.store.get(self.key)   # another thread's, meanwhile
            if entry is not None:
                return entry[0]
            value, lifetime = self.fetch(context)
            self.store.put(self.key, value, time.time() + lifetime
                           - refresh_margin(lifetime))
            logger.debug("%s: new %s credential, valid %.0f s", self.key,
                         self.kind, lifetime)
            return value

    def headers(self, context):
        return {self.header: self.prefix + self.current(context)}

    def refused(self, response) -> bool:
        return response.status == 401

    def renew(self, sent, context) -> None:
        value = sent.get(self.header, "")[len(self.prefix):]
        with self._refreshing(context):
            entry = self.store.get(self.key)
            if entry is not None and entry[0] == value:
                self.store.drop(self.key)

    @contextlib.contextmanager
    def _refreshing(self, context: LookupContext):
        lock = self.store.refresh_lock(self.key)
        if not hasattr(lock, "acquire"):
            with lock:
                yield
            return
        left = context.deadline - time.monotonic()
        if left <= 0 or not lock.acquire(timeout=left):
            raise ProviderError(Reason.TIMED_OUT, "no %s credential before "
                                "the deadline (another thread was still "
                                "fetching it)" % self.kind,
                                "did not answer in time")
        try:
            yield
        finally:
            lock.release()


class OAuth2Auth(CachedAuth):
    """Client credentials through msal, its HTTP through the HttpClient."""

    kind = "oauth2"

    def __init__(self, store, key, authority: str, tenant: str,
                 client_id: str, client_secret: str, scope: str) -> None:
        super().__init__(store, key)
        self.authority = authority.rstrip("/")
        self.tenant = tenant
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self._app = None
        #: the lookup context of the token request under way (msal calls
        #: our HTTP adapter without one); set under the refresh lock.
        self._context: Optional[LookupContext] = None

    def origins(self):
        return (self.authority,)

    def fetch(self, context):
        import msal
        self._context = context
        try:
            if self._app is None:
                host = urllib.parse.urlsplit(self.authority).hostname or ""
                try:
                    self._app = msal.ConfidentialClientApplication(
                        self.client_id, client_credential=self.client_secret,
                        authority="%s/%s" % (self.authority, self.tenant),
                        http_client=_MsalHttp(self),
                        instance_discovery=False,
                        validate_authority=host in MICROSOFT_AUTHORITY_HOSTS)
                except ValueError as e:     # 4xx: no such tenant
                    raise refused_credentials(
                        "%s/%s: tenant discovery failed: %s" % (
                            self.authority, self.tenant, e)) from None
                except msal.exceptions.MsalError as e:
                    raise ProviderError(
                        Reason.UNAVAILABLE, "%s/%s: tenant discovery "
                        "failed: %s" % (self.authority, self.tenant, e),
                        "could not get an access token") from None
            # Our token store is the cache: msal must ask the endpoint.
            self._app.remove_tokens_for_client()
            try:
                result = self._app.acquire_token_for_client([self.scope])
            except (msal.exceptions.MsalError, ValueError, KeyError,
                    TypeError) as e:
                # an HTTP error, or an answer that is no token response
                raise ProviderError(
                    Reason.UNAVAILABLE, "token endpoint of %s/%s: %s: %s" % (
                        self.authority, self.tenant, type(e).__name__, e),
                    "could not get an access token") from None
        finally:
            self._context = None
        if "access_token" not in result:
            error = result.get("error", "")
            detail = "token endpoint of %s/%s: %s: %s" % (
                self.authority, self.tenant, error,
                result.get("error_description", ""))
            if error in ("invalid_client", "unauthorized_client",
                         "invalid_grant", "invalid_scope",
                         "invalid_request", "invalid_resource"):
                raise refused_credentials(detail)
            raise ProviderError(Reason.UNAVAILABLE, detail,
                                "could not get an access token")
        return result["access_token"], float(result.get("expires_in", 3600))


class _MsalHttp:
    """msal's ``http_client``: every call through the provider's
    HttpClient (pinned origins, CA file, client certificate, deadline)."""

    def __init__(self, auth: OAuth2Auth) -> None:
        self._auth = auth

    def _call(self, method, url, params, data, headers):
        context = self._auth._context
        if context is None:    # msal calling outside a fetch: refuse
            raise ProviderError(Reason.UNAVAILABLE, "msal called %s outside "
                                "a token request" % url)
        response = self._auth.client.request(
            method, url, context, headers=dict(headers or {}), data=data,
            params=params, auth=False)
        return _MsalResponse(response)

    def post(self, url, params=None, data=None, headers=None, **kwargs):
        return self._call("POST", url, params, data, headers)

    def get(self, url, params=None, headers=None, **kwargs):
        return self._call("GET", url, params, None, headers)

    def close(self) -> None:
        pass


class _MsalResponse:
    def __init__(self, response) -> None:
        self.status_code = response.status
        self.text = response.text
        self.headers = dict(response.headers)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise ProviderError(Reason.UNAVAILABLE, "identity platform "
                                "answered HTTP %d" % self.status_code,
                                "could not get an access token")


class GoogleAuth(CachedAuth):
    """A service account with domain-wide delegation, acting as subject."""

    kind = "google"

    def __init__(self, store, key, info: Dict, subject: str,
                 scope: str) -> None:
        super().__init__(store, key)
        from google.oauth2 import service_account
        self.token_uri = info["token_uri"]
        self._credentials = service_account.Credentials.\
            from_service_account_info(info, scopes=[scope]).with_subject(
                subject)

    def origins(self):
        return (self.token_uri,)

    def fetch(self, context):
        from google.auth import exceptions
        try:
            self._credentials.refresh(_GoogleRequest(self.client, context))
        except exceptions.RefreshError as e:
            raise refused_credentials("token_uri %s refused the service "
                                      "account: %s" % (self.token_uri, e)
                                      ) from None
        except exceptions.GoogleAuthError as e:
            raise ProviderError(Reason.UNAVAILABLE, "token_uri %s: %s: %s" % (
                self.token_uri, type(e).__name__, e),
                "could not get an access token") from None
        expiry = self._credentials.expiry     # naive UTC
        now = datetime.datetime.now(datetime.timezone.utc).replace(
            tzinfo=None)
        lifetime = (expiry - now).total_seconds() if expiry else 3600.0
        return self._credentials.token, lifetime


class _GoogleRequest:
    """google.auth.transport.Request over the provider's HttpClient."""

    def __init__(self, client, context: LookupContext) -> None:
        self._client = client
        self._context = context

    def __call__(self, url, method="GET", body=None, headers=None,
                 timeout=None, **kwargs):
        response = self._client.request(method, url, self._context,
                                        headers=dict(headers or {}),
                                        data=body, auth=False)
        return _GoogleResponse(response)


class _GoogleResponse:
    def __init__(self, response) -> None:
        self.status = response.status
        self.headers = response.headers
        self.data = response.body


class FormAuth(CachedAuth):
    """OWA forms login: POST the credentials, keep the session cookie.

    The cookie is shared by all threads through the token store; an
    answer that sends us back to the logon page (or 401/440) means it
    expired, and one thread logs in again.
    """

    kind = "form"
    header = "Cookie"
    prefix = ""

    def __init__(self, store, key, url: str, login_url: str,
                 username: str, password: str) -> None:
        super().__init__(store, key)
        parts = urllib.parse.urlsplit(url)
        self.destination = urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, parts.path or "/", "", ""))
        self.login_url = login_url or urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, OWA_LOGIN_PATH, "", ""))
        self.username = username
        self.password = password
        self._login_pages = {OWA_LOGON_PAGE,
                             urllib.parse.urlsplit(self.login_url).path}

    def refused(self, response) -> bool:
        return response.status in (401, 440) or \
            urllib.parse.urlsplit(response.url).path in self._login_pages

    def fetch(self, context):
        jar = self.client.session_cookies()
        jar.clear()
        response = self.client.request(
            "POST", self.login_url, context, auth=False,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            data=urllib.parse.urlencode({
                "destination": self.destination, "flags": "0",
                "forcedownlevel": "0", "trusted": "0",
                "username": self.username, "password": self.password,
                "SubmitCreds": "Log On", "isUtf8": "1"}).encode("utf-8"))
        host = urllib.parse.urlsplit(self.destination).hostname or ""
        cookies = [c for c in jar if _domain_matches(host, c.domain)]
        jar.clear()
        if response.status in (401, 403, 440) or not cookies or \
                urllib.parse.urlsplit(response.url).path in self._login_pages:
            raise refused_credentials("forms login at %s refused %s (HTTP "
                                      "%d at %s)" % (
                                          self.login_url, self.username,
                                          response.status, response.url))
        expiries = [c.expires - time.time() for c in cookies if c.expires]
        lifetime = min(expiries) if expiries else COOKIE_LIFETIME
        return "; ".join("%s=%s" % (c.name, c.value) for c in cookies), \
            lifetime


def _domain_matches(host: str, domain: str) -> bool:
    domain = domain.lstrip(".").lower()
    return not domain or host == domain or host.endswith("." + domain)


# -- from ini keys -----------------------------------------------------------


def kind_of(options: Mapping) -> Optional[str]:
    """The auth kind the keys ask for: ``auth``, else implied by them."""
    if options.get("auth"):
        if options["auth"] not in KINDS:
            raise ValueError("key 'auth': must be one of %s"
                             % ", ".join(KINDS))
        return options["auth"]
    implied = []
    if options.get("username"):
        implied.append(("username", "basic"))
    if options.get("token"):
        implied.append(("token", "bearer"))
    for key in ("tenant", "client_id", "client_secret"):
        if options.get(key):
            implied.append((key, "oauth2"))
            break
    if options.get("service_account_file"):
        implied.append(("service_account_file", "google"))
    if len(implied) > 1:
        raise ValueError("key 'auth': %s imply different credentials; say "
                         "which with auth = %s" % (
                             " and ".join(k for k, _ in implied),
                             " or ".join(kind for _, kind in implied)))
    return implied[0][1] if implied else None


def _readable(key: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ValueError("key %r: cannot read %s: %s" % (
            key, path, e.strerror)) from None


def _tls_files(options: Mapping, url: str):
    """``(verify, cert)`` for requests, the files checked now."""
    ca_file, cert, key = (options.get("ca_file"), options.get("client_cert"),
                          options.get("client_key"))
    verify = options.get("verify_tls", True)
    if key and not cert:
        raise ValueError("key 'client_key': needs client_cert")
    if ca_file:
        _readable("ca_file", ca_file)
        if not verify:
            raise ValueError("key 'ca_file': cannot be used with verify_tls "
                             "= no")
        try:
            ssl.create_default_context(cafile=ca_file)
        except (ssl.SSLError, ValueError) as e:
            raise ValueError("key 'ca_file': %s holds no usable CA "
                             "certificate: %s" % (ca_file, e)) from None
        verify = ca_file
    if cert:
        _readable("client_cert", cert)
        if key:
            _readable("client_key", key)
        if not url.lower().startswith("https://"):
            raise ValueError("key 'client_cert': needs an https:// url")
        try:
            ssl.create_default_context().load_cert_chain(cert, key or None)
        except (ssl.SSLError, ValueError) as e:
            raise ValueError("key %r: not a certificate with its private key "
                             "(PEM): %s" % ("client_key" if key else
                                            "client_cert", e)) from None
    return verify, ((cert, key) if key else cert) if cert else None


def _service_account(path: str) -> Dict:
    _readable("service_account_file", path)
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError("key 'service_account_file': %s is not JSON: %s"
                         % (path, e)) from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ValueError("key 'service_account_file': %s is not a service "
                         "account key (\"type\": \"service_account\")" % path)
    for field in ("client_email", "private_key", "token_uri"):
        if not isinstance(info.get(field), str) or not info[field]:
            raise ValueError("key 'service_account_file': %s has no %r"
                             % (path, field))
    if not info["token_uri"].lower().startswith(("https://", "http://")):
        raise ValueError("key 'service_account_file': token_uri %r is not "
                         "an http(s) URL" % info["token_uri"])
    return info


def build(name: str, options: Mapping, *,
          accepted: Sequence[str] = DEFAULT_KINDS,
          scopes: Optional[Mapping[str, str]] = None,
          store: Optional[TokenStore] = None,
          type_name: str = ""
          ) -> Tuple[Optional[Authenticator], object, object]:
    """``(authenticator or None, verify, cert)`` from a provider's keys.

    ``accepted`` are the kinds its type takes, ``scopes`` its default
    scopes by kind.  ValueError("key 'x': ...") for any mistake.
    """
    store = store or DEFAULT_TOKEN_STORE
    url = options.get("url") or ""
    kind = kind_of(options)
    if kind is not None and kind not in accepted:
        raise ValueError("key 'auth': type %r does not take %s credentials "
                         "(it takes %s)" % (type_name, kind,
                                            ", ".join(accepted) or "none"))
    for key in CREDENTIAL_KEYS:
        if options.get(key) and (kind is None or key not in KIND_KEYS[kind]):
            raise ValueError("key %r: not used %s" % (
                key, "without credentials" if kind is None else
                "with auth = %s (it uses %s)" % (
                    kind, ", ".join(KIND_KEYS[kind]))))
    for key in REQUIRED_KEYS.get(kind, ()):
        if not options.get(key):
            raise ValueError("key %r: required with auth = %s" % (key, kind))
    verify, cert = _tls_files(options, url)
    scope = options.get("scope") or dict(DEFAULT_SCOPES, **(scopes or {})
                                         ).get(kind, "")
    if kind is None:
        return None, verify, cert
    if kind == "basic":
        return BasicAuth(options["username"], options.get("password") or ""
                         ), verify, cert
    if kind == "bearer":
        return BearerAuth(options["token"]), verify, cert
    if kind == "ntlm":
        return NtlmAuth(options["username"], options["password"]), verify, \
            cert
    if kind == "form":
        login_url = options.get("login_url") or ""
        if login_url and origin(login_url) != origin(url):
            raise ValueError("key 'login_url': must be on the url's host "
                             "and port")
        if not url:
            raise ValueError("key 'url': required with auth = form")
        return FormAuth(store, "%s|form|%s|%s" % (name, login_url or url,
                                                  options["username"]),
                        url, login_url, options["username"],
                        options["password"]), verify, cert
    if kind == "oauth2":
        authority = options.get("authority") or DEFAULT_AUTHORITY
        if not authority.lower().startswith("https://"):
            raise ValueError("key 'authority': must be an https:// URL")
        if "/" in options["tenant"].strip("/"):
            raise ValueError("key 'tenant': a tenant id or domain, not a "
                             "path")
        return OAuth2Auth(store, "%s|oauth2|%s|%s|%s|%s" % (
            name, authority, options["tenant"], options["client_id"], scope),
            authority, options["tenant"].strip("/"), options["client_id"],
            options["client_secret"], scope), verify, cert
    path = options["service_account_file"]
    info = _service_account(path)
    try:
        auth = GoogleAuth(store, "%s|google|%s|%s|%s|%s" % (
            name, info["token_uri"], info["client_email"],
            options["subject"], scope),
            info, options["subject"], scope)
    except (ValueError, TypeError) as e:
        raise ValueError("key 'service_account_file': %s: unusable private "
                         "key: %s" % (path, e)) from None
    return auth, verify, cert

