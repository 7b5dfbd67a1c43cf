"""Autodiscover (the POX form) at ``POST /autodiscover/autodiscover.xml``.

Exchange's ``Add-AvailabilityAddressSpace`` and Outlook ask where a
mailbox's web services are with the Outlook request schema
(``EMailAddress``, ``AcceptableResponseSchema`` .../outlook/responseschema/
2006a).  The answer's ``EXCH`` and ``EXPR`` protocols give the gateway's
EWS URL as ``EwsUrl`` and ``ASUrl`` (the availability service), and say
Basic over SSL or not.

The URL is ``[gateway] public_url`` when the configuration has that key;
otherwise it is what the WSGI server says the request was: its scheme
(``wsgi.url_scheme``), its ``Host`` header, else the server's own name
and port, then Radicale's base prefix (``X-Script-Name``/``SCRIPT_NAME``).
``X-Forwarded-*`` headers are not read here: waitress drops them unless
the peer is a trusted proxy, and then applies them itself.  The host is
checked (a host name or IP literal with an optional port), so the answer
is always a well-formed URL; a caller who forges ``Host`` only misleads
themselves.  Behind a TLS proxy, set ``public_url``.

Every address in a local domain gets the same answer: the URL does not
depend on the user, and no one can learn from it which users exist.
Other addresses get ErrorCode 500 ("cannot be found"), another response
schema 601, a malformed request 400 with ErrorCode 600.  Callers log in
as on the EWS face (401 unless ``anonymous_freebusy``; 429 past
``requests_per_minute``).
"""

import datetime
import logging
import re
from typing import Optional, Tuple
from urllib.parse import quote

from lxml import etree
from radicale.app import REQUEST_METHODS

from gateway import xmlsafe
from gateway.addresses import bare_address
from gateway.exchange_xml import EWS_PATH, sub
from gateway.faces import access

logger = logging.getLogger(__name__)

NS_REQUEST = ("http://schemas.microsoft.com/exchange/autodiscover/outlook/"
              "requestschema/2006")
NS_RESPONSE = ("http://schemas.microsoft.com/exchange/autodiscover/"
               "responseschema/2006")
NS_OUTLOOK = ("http://schemas.microsoft.com/exchange/autodiscover/outlook/"
              "responseschema/2006a")
PATH = "/autodiscover/autodiscover.xml"
PATHS = (PATH, "/Autodiscover/Autodiscover.xml",
         "/AutoDiscover/AutoDiscover.xml")
MAX_BODY_BYTES = 64 << 10
XML_TYPE = {"Content-Type": "text/xml; charset=utf-8"}

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(r"^(?:%s(?:\.%s)*\.?|\[[0-9A-Fa-f:.]{2,45}\])"
                   r"(?::(\d{1,5}))?$" % (_LABEL, _LABEL))


def register(registry) -> None:
    """POST answers; every other method gets 405."""
    for path in PATHS:
        registry.route(REQUEST_METHODS, path, _handle)


def _valid_host(value: Optional[str]) -> Optional[str]:
    value = (value or "").strip()
    match = _HOST.match(value)
    if match is None or (match.group(1) and not
                         0 < int(match.group(1)) < 65536):
        return None
    return value


def ews_url(app, request) -> str:
    """The gateway's EWS URL as its clients reach it (see module doc)."""
    configured = app.gateway_options.get("public_url")
    if configured:
        return str(configured).rstrip("/") + EWS_PATH
    environ = request.environ
    scheme = "https" if environ.get("wsgi.url_scheme") == "https" \
        else "http"
    host = _valid_host(environ.get("HTTP_HOST"))
    if host is None:
        name = environ.get("SERVER_NAME", "localhost")
        if ":" in name and not name.startswith("["):
            name = "[%s]" % name
        host = _valid_host("%s:%s" % (name, environ.get("SERVER_PORT",
                                                        "80"))) or \
            "localhost"
    return "%s://%s%s" % (scheme, host, quote(request.base_prefix + EWS_PATH,
                                              safe="/-._~"))


def _answer(status: int, root) -> Tuple:
    return status, XML_TYPE, xmlsafe.tostring(root), None


def _error(status: int, code: int, text: str, namespace: str) -> Tuple:
    root = etree.Element("{%s}Autodiscover" % NS_RESPONSE,
                         nsmap={None: NS_RESPONSE})
    response = sub(root, "{%s}Response" % namespace)
    error = sub(response, "{%s}Error" % namespace,
                Time=datetime.datetime.now(datetime.timezone.utc).strftime(
                    "%H:%M:%S.%f"))
    sub(error, "{%s}ErrorCode" % namespace, str(code))
    sub(error, "{%s}Message" % namespace, text)
    sub(error, "{%s}DebugData" % namespace)
    return _answer(status, root)


def _handle(app, request) -> Tuple:
    if request.path.lower() != PATH:
        return 404, {"Content-Type": "text/plain; charset=utf-8"}, \
            b"not found", None
    if request.environ.get("REQUEST_METHOD") != "POST":
        return 405, {"Content-Type": "text/plain; charset=utf-8",
                     "Allow": "POST"}, b"Autodiscover takes POST", None
    refused = access.refusal(app, request)
    if refused is not None:
        return refused
    try:
        length = int(request.environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if not 0 < length <= MAX_BODY_BYTES:
        return _error(400 if length <= MAX_BODY_BYTES else 413, 600,
                      "Invalid Request: a request body of at most %d bytes "
                      "is needed." % MAX_BODY_BYTES, NS_RESPONSE)
    body = request.environ["wsgi.input"].read(length)
    try:
        root = xmlsafe.parse(body, MAX_BODY_BYTES)
    except xmlsafe.XMLError as e:
        return _error(400, 600, "Invalid Request: %s" % e, NS_RESPONSE)
    address = root.findtext("{%s}Request/{%s}EMailAddress" % (
        NS_REQUEST, NS_REQUEST))
    schema = root.findtext("{%s}Request/{%s}AcceptableResponseSchema" % (
        NS_REQUEST, NS_REQUEST))
    if root.tag != "{%s}Autodiscover" % NS_REQUEST or not address or \
            not schema:
        return _error(400, 600, "Invalid Request: an Outlook Autodiscover "
                      "request with EMailAddress and "
                      "AcceptableResponseSchema is needed.", NS_RESPONSE)
    if schema.strip() != NS_OUTLOOK:
        return _error(200, 601, "Provider is not available: only the "
                      "Outlook response schema (%s) is served." % NS_OUTLOOK,
                      NS_RESPONSE)
    address = address.strip()[:320]
    mailto = "mailto:" + address
    if bare_address(mailto) is None or not access.is_local(app, mailto):
        return _error(200, 500, "The e-mail address cannot be found.",
                      NS_OUTLOOK)
    url = ews_url(app, request)
    root = etree.Element("{%s}Autodiscover" % NS_RESPONSE,
                         nsmap={None: NS_RESPONSE})
    response = etree.SubElement(root, "{%s}Response" % NS_OUTLOOK,
                                nsmap={None: NS_OUTLOOK})

    def o(parent, name, text=None):
        return sub(parent, "{%s}%s" % (NS_OUTLOOK, name), text)

    user = o(response, "User")
    o(user, "DisplayName", xmlsafe.text(address.rpartition("@")[0]))
    o(user, "AutoDiscoverSMTPAddress", xmlsafe.text(address))
    account = o(response, "Account")
    o(account, "AccountType", "email")
    o(account, "Action", "settings")
    for kind in ("EXCH", "EXPR"):
        protocol = o(account, "Protocol")
        o(protocol, "Type", kind)
        o(protocol, "ASUrl", url)
        o(protocol, "EwsUrl", url)
        if kind == "EXPR":
            o(protocol, "SSL", "On" if url.startswith("https:") else "Off")
            o(protocol, "AuthPackage", "Basic")
    logger.debug("Autodiscover for %r: %s", address, url)
    return _answer(200, root)
