"""An identity provider and a resource server that wants its tokens.

``IdentityProvider`` speaks, over TLS (tests/emulators/tls.py):

- the Microsoft identity platform's client-credentials grant as msal
  calls it: ``GET /{tenant}/v2.0/.well-known/openid-configuration`` (OIDC
  discovery; ``token_endpoint`` can be pointed elsewhere) and
  ``POST /{tenant}/oauth2/v2.0/token`` with grant_type=client_credentials,
  client_id, client_secret and scope; wrong ones get Entra's
  ``invalid_client`` (401) or ``invalid_scope`` (400);
- Google's service-account JWT grant: ``POST /google/token`` with
  grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer and an RS256
  assertion whose signature, iss, sub, scope, aud, iat and exp it checks
  (``invalid_grant`` otherwise).  As at Google, ``aud`` must be
  https://oauth2.googleapis.com/token whatever URL the assertion is
  posted to (google-auth always writes that).

Tokens are random, live ``expires_in`` seconds (short in tests) and can
be revoked.  Every token request is recorded; ``delay`` holds each token
answer back so that concurrent callers overlap.

``ProtectedResource`` answers only requests carrying a live token of that
provider (401 with ``WWW-Authenticate: Bearer`` otherwise): free/busy read
URLs ``/freebusy/{address}.ifb`` in the CalConnect dialect, and
``/whoami`` saying which token (and which client certificate) it saw.
"""

import base64
import datetime
import json
import secrets
import threading
import time
import urllib.parse
from typing import Dict, List, Optional, Tuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from emulators import JsonPostHandler
from emulators.tls import HttpsServer, Pki

UTC = datetime.timezone.utc
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def service_account_key_file(path, email: str,
                             token_uri: Optional[str] = None,
                             register: Optional["IdentityProvider"] = None
                             ) -> str:
    """A Google service account key file as the Cloud console writes it
    (a new RSA key); its public key goes to ``register`` (the token
    endpoint), or nowhere for a key Google no longer knows."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if register is not None:
        register.service_accounts[email] = key.public_key()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "gateway-project",
        "private_key_id": "0123abcd", "client_email": email,
        "client_id": "109876543210", "token_uri": token_uri,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "universe_domain": "googleapis.com",
        "private_key": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode("ascii")}))
    return str(path)


class Issued:
    def __init__(self, kind: str, subject: str, lifetime: float) -> None:
        self.kind = kind
        self.subject = subject
        self.expires = time.time() + lifetime
        self.revoked = False


class IdentityProvider:
    """Entra-style client credentials and Google's JWT grant, over TLS."""

    def __init__(self, pki: Pki, tenant: str = "contoso.example",
                 client_id: str = "app-1", client_secret: str = "s3cret",
                 scope: str = "https://graph.microsoft.com/.default",
                 expires_in: int = 3600) -> None:
        self.tenant = tenant
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self.expires_in = expires_in
        #: seconds each token answer is held back
        self.delay = 0.0
        #: where OIDC discovery says the token endpoint is (None: here)
        self.token_endpoint: Optional[str] = None
        #: a Location the token endpoint redirects to (None: answer)
        self.redirect_token: Optional[str] = None
        #: a status OIDC discovery answers instead of its document
        self.discovery_failure: Optional[int] = None
        #: (status, body) the token endpoint answers instead of a token
        self.token_failure: Optional[Tuple[int, bytes]] = None
        #: Google service accounts: client_email -> public key
        self.service_accounts: Dict[str, object] = {}
        self.google_scope = "https://www.googleapis.com/auth/calendar.readonly"
        self.tokens: Dict[str, Issued] = {}
        #: (kind, form fields or JWT claims) of every token request
        self.token_requests: List[Tuple[str, Dict]] = []
        self.discoveries = 0
        self.errors: List[str] = []
        self._lock = threading.Lock()
        handler = type("Handler", (JsonPostHandler,), {"owner": self})
        self.server = HttpsServer(handler, pki.server_context())
        self.base = self.server.base

    @property
    def authority(self) -> str:
        return self.base

    @property
    def google_token_uri(self) -> str:
        return self.base + "/google/token"

    def close(self) -> None:
        self.server.close()

    def valid(self, token: str) -> Optional[Issued]:
        with self._lock:
            issued = self.tokens.get(token)
        if issued is None or issued.revoked or issued.expires <= time.time():
            return None
        return issued

    def revoke_all(self) -> None:
        with self._lock:
            for issued in self.tokens.values():
                issued.revoked = True

    def _issue(self, kind: str, subject: str) -> Dict:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = Issued(kind, subject, self.expires_in)
        return {"token_type": "Bearer", "expires_in": self.expires_in,
                "ext_expires_in": self.expires_in, "access_token": token}

    # -- serving ------------------------------------------------------------

    def handle(self, handler: JsonPostHandler) -> None:
        method, body = handler.command, handler.body or b""
        path = urllib.parse.urlsplit(handler.path).path
        tenant_prefix = "/%s/" % self.tenant
        if method == "GET" and path == tenant_prefix + \
                "v2.0/.well-known/openid-configuration":
            self.discoveries += 1
            if self.discovery_failure:
                return handler.send(self.discovery_failure, b"oops",
                                    "text/html")
            base = self.base + "/" + self.tenant
            return handler.send(200, {
                "issuer": "%s/v2.0" % base,
                "authorization_endpoint": base + "/oauth2/v2.0/authorize",
                "token_endpoint": self.token_endpoint or
                base + "/oauth2/v2.0/token",
                "jwks_uri": base + "/discovery/v2.0/keys",
                "response_types_supported": ["code", "token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"]})
        if method == "GET" and path.endswith(
                "/v2.0/.well-known/openid-configuration"):
            return handler.send(400, {
                "error": "invalid_tenant",
                "error_description": "AADSTS90002: Tenant not found."})
        if method == "POST" and path in (tenant_prefix + "oauth2/v2.0/token",
                                         "/google/token"):
            if self.redirect_token:
                return handler.send(307, b"", "text/plain",
                                    {"Location": self.redirect_token})
            if self.token_failure:
                self.token_requests.append(("failure", {}))
                return handler.send(self.token_failure[0],
                                    self.token_failure[1], "text/html")
            if self.delay:
                time.sleep(self.delay)
            form = dict(urllib.parse.parse_qsl(body.decode("utf-8")))
            if path == "/google/token":
                return self._google(handler, form)
            return self._client_credentials(handler, form)
        handler.send(404, {"error": "not_found"})

    def _client_credentials(self, handler, form: Dict) -> None:
        self.token_requests.append(("oauth2", form))
        if form.get("grant_type") != "client_credentials":
            return handler.send(400, {"error": "unsupported_grant_type"})
        if form.get("client_id") != self.client_id or \
                form.get("client_secret") != self.client_secret:
            return handler.send(401, {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret "
                "provided."})
        if form.get("scope") != self.scope:
            return handler.send(400, {
                "error": "invalid_scope",
                "error_description": "AADSTS1002012: The provided value for "
                "scope %s is not valid." % form.get("scope")})
        handler.send(200, self._issue("oauth2", form["client_id"]))

    def _google(self, handler, form: Dict) -> None:
        problem, claims = self._check_assertion(form)
        self.token_requests.append(("google", claims or form))
        if problem:
            self.errors.append(problem)
            return handler.send(400, {"error": "invalid_grant",
                                      "error_description": problem})
        handler.send(200, self._issue("google", claims["sub"]))

    def _check_assertion(self, form: Dict):
        if form.get("grant_type") != JWT_BEARER:
            return "grant_type is not jwt-bearer", None
        try:
            head, payload, signature = form["assertion"].split(".")
            header = json.loads(_b64decode(head))
            claims = json.loads(_b64decode(payload))
        except (KeyError, ValueError) as e:
            return "unreadable assertion: %s" % e, None
        if header.get("alg") != "RS256":
            return "alg is not RS256", claims
        key = self.service_accounts.get(claims.get("iss"))
        if key is None:
            return "unknown iss %r" % claims.get("iss"), claims
        try:
            key.verify(_b64decode(signature),
                       ("%s.%s" % (head, payload)).encode("ascii"),
                       padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return "bad signature", claims
        now = time.time()
        if claims.get("aud") != GOOGLE_AUDIENCE:
            return "aud %r is not %s" % (claims.get("aud"),
                                         GOOGLE_AUDIENCE), claims
        if claims.get("scope") != self.google_scope:
            return "scope %r not granted" % claims.get("scope"), claims
        if not claims.get("sub"):
            return "no sub: domain-wide delegation needs one", claims
        if not (now - 300 <= claims.get("iat", 0) <= now + 300 and
                claims.get("iat", 0) < claims.get("exp", 0) <=
                claims.get("iat", 0) + 3600):
            return "iat/exp out of range", claims
        return None, claims


class ProtectedResource:
    """Free/busy URLs and /whoami for holders of the provider's tokens."""

    def __init__(self, pki: Pki, idp: IdentityProvider,
                 busy: Optional[Dict[str, List[Tuple[str, str]]]] = None,
                 require_client_cert: bool = False) -> None:
        self.idp = idp
        self.busy = busy or {}
        #: answer every request 401, whatever token it carries
        self.refuse_all = False
        #: (path, Authorization header, status) of every request
        self.requests: List[Tuple[str, str, int]] = []
        handler = type("Handler", (JsonPostHandler,), {"owner": self})
        self.server = HttpsServer(handler, pki.server_context(
            require_client_cert))
        self.base = self.server.base

    def close(self) -> None:
        self.server.close()

    def statuses(self) -> List[int]:
        return [status for _, _, status in self.requests]

    def handle(self, handler: JsonPostHandler) -> None:
        split = urllib.parse.urlsplit(handler.path)
        authorization = handler.headers.get("Authorization", "")
        token = authorization[7:] if authorization.startswith("Bearer ") \
            else ""
        issued = self.idp.valid(token) if token else None
        if issued is None or self.refuse_all:
            self.requests.append((split.path, authorization, 401))
            return handler.send(401, b"Unauthorized", "text/plain", {
                "WWW-Authenticate": 'Bearer error="invalid_token"'})
        self.requests.append((split.path, authorization, 200))
        if split.path == "/whoami":
            peer = handler.connection.getpeercert() if hasattr(
                handler.connection, "getpeercert") else None
            subject = dict(x[0] for x in peer["subject"]) if peer else {}
            return handler.send(200, {"kind": issued.kind,
                                      "subject": issued.subject,
                                      "client_cert":
                                      subject.get("commonName")})
        if split.path.startswith("/freebusy/") and \
                split.path.endswith(".ifb"):
            return self._ifb(handler, urllib.parse.unquote(
                split.path[len("/freebusy/"):-4]), dict(
                    urllib.parse.parse_qsl(split.query)))
        handler.send(404, b"Not Found", "text/plain")

    def _ifb(self, handler, address: str, query: Dict) -> None:
        if address not in self.busy:
            return handler.send(404, b"Not Found", "text/plain")
        start = query["start"].replace("-", "").replace(":", "")
        end = query["end"].replace("-", "").replace(":", "")
        lines = ["BEGIN:VCALENDAR", "VERSION:2.0",
                 "PRODID:-//emulated protected ifb//EN", "METHOD:PUBLISH",
                 "BEGIN:VFREEBUSY", "ORGANIZER:mailto:%s" % address,
                 "DTSTAMP:20260101T000000Z", "DTSTART:%s" % start,
                 "DTEND:%s" % end]
        for busy_start, busy_end in self.busy[address]:
            lines.append("FREEBUSY;FBTYPE=BUSY:%s/%s" % (busy_start,
                                                         busy_end))
        lines += ["END:VFREEBUSY", "END:VCALENDAR", ""]
        handler.send(200, "\r\n".join(lines), "text/calendar; charset=utf-8")
