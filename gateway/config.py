"""One ini file for Radicale and the gateway.

Radicale's own sections are handed to Radicale, which validates them; the
gateway's ``[gateway]`` and ``[provider:NAME]`` sections are checked against
the schema below.  The schema is data, as in Radicale's config.py: one
table gives types, defaults, validation, error messages and the admin
reference (``fbgateway config-help`` prints it; docs/admin.md is made from
it).  Any mistake stops start-up with one message naming file, section and
key.
"""

import configparser
import ipaddress
import os
import re
import urllib.parse
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from radicale import config as radicale_config

from gateway import radicale_compat
from gateway.workhours import WorkingHours

PROVIDER_PREFIX = "provider:"
#: Radicale [auth] keys whose default the gateway changes (see load):
#: Radicale checks the password on every request (a bcrypt hash, as
#: fbgateway passwd writes, costs about 250 ms) and, without
#: htpasswd_cache, reads the users file each time.  A changed password
#: counts within cache_successful_logins_expiry (15 s).
AUTH_DEFAULTS = {"cache_logins": "True", "htpasswd_cache": "True"}


class ConfigError(Exception):
    """A wrong ini file: the message names file, section and key."""


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9-]{1,63}\.)*[a-z0-9-]{1,63}$")


def domain_list(value: str) -> Tuple[str, ...]:
    """Comma or space separated DNS domains, lower-cased."""
    domains = tuple(d.lower() for d in re.split(r"[\s,]+", value) if d)
    if not domains:
        raise ValueError("name at least one domain")
    for domain in domains:
        if not _DOMAIN_RE.match(domain):
            raise ValueError("%r is not a domain name" % domain)
    return domains


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError("must be yes or no")


def http_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("must be an http:// or https:// URL")
    return value


#: ``auth =`` choices (design.md "Credentials"; gateway.transport.auth).
AUTH_KINDS = ("basic", "ntlm", "form", "bearer", "oauth2", "google")
#: Provider keys naming files; relative paths are relative to the ini file.
PROVIDER_FILE_KEYS = ("service_account_file", "client_cert", "client_key",
                      "ca_file")


def _auth_kind(value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in AUTH_KINDS:
        raise ValueError("must be one of %s" % ", ".join(AUTH_KINDS))
    return lowered


def _https_url(value: str) -> str:
    if not re.match(r"^https://[^/\s]+", value):
        raise ValueError("must be an https:// URL")
    return value.rstrip("/")


class Option(NamedTuple):
    """One ini key: its parser, default (None = required) and help."""

    parse: Callable[[str], Any]
    default: Optional[str]
    help: str


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _origin_list(value: str) -> Tuple[str, ...]:
    """Comma or space separated web origins, as browsers send them."""
    origins = tuple(o.rstrip("/") for o in re.split(r"[\s,]+", value) if o)
    for origin in origins:
        if origin != "*" and not re.match(
                r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$", origin):
            raise ValueError("%r is not an origin like "
                             "https://app.example.com" % origin)
    return origins


def _proxy_address(value: str) -> str:
    """The reverse proxy's IP address as waitress compares it (or *)."""
    value = value.strip()
    if value and value != "*":
        value = str(ipaddress.ip_address(value))
    return value


#: Most worker processes of ``fbgateway serve``.
MAX_WORKERS = 64


def _worker_count(value: str) -> int:
    number = int(value)
    if not 1 <= number <= MAX_WORKERS:
        raise ValueError("must be between 1 and %d" % MAX_WORKERS)
    return number


def _name_list(value: str) -> Tuple[str, ...]:
    """Comma or space separated account names."""
    return tuple(n for n in re.split(r"[\s,]+", value) if n)


def _public_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if value and not re.match(
            r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?(/[^\s?#]*)?$", value):
        raise ValueError("must be the gateway's URL as clients reach it, "
                         "like https://fb.example.com")
    return value


def _freebusy_access(value: str) -> str:
    if value.strip().lower() not in ("authenticated", "rights"):
        raise ValueError("must be authenticated or rights")
    return value.strip().lower()


#: URL schemes of a Redis server (``rediss``: over TLS).
REDIS_SCHEMES = ("redis", "rediss")


def redis_url(value: str) -> str:
    """A Redis server as the redis library reads it: redis:// or
    rediss://, an optional password, host, port and database number."""
    value = value.strip()
    try:
        split = urllib.parse.urlsplit(value)
        split.port
    except ValueError as e:
        raise ValueError("unreadable URL: %s" % e) from None
    if split.scheme.lower() not in REDIS_SCHEMES or not split.hostname:
        raise ValueError("must be a redis:// or rediss:// URL, like "
                         "redis://:PASSWORD@redis.example.com:6379/0")
    if not re.match(r"^/?[0-9]*$", split.path):
        raise ValueError("the path must be a database number, like /0")
    return value


def _queue_place(value: str) -> str:
    """A SQLite file's path, or a Redis URL."""
    if value.strip().lower().startswith(tuple(
            s + "://" for s in REDIS_SCHEMES)):
        return redis_url(value)
    if "://" in value:
        raise ValueError("must be a file path or a redis:// or rediss:// "
                         "URL")
    return value


def _redis_prefix(value: str) -> str:
    if not re.match(r"^[\x21-\x7e]{1,64}$", value):
        raise ValueError("1 to 64 printable ASCII characters, no spaces")
    return value


GATEWAY_SCHEMA: Dict[str, Option] = {
    "domains": Option(domain_list, None, "Mail domains of local users: "
                      "user@domain is the Radicale user 'user', for every "
                      "domain listed (all go into "
                      "calendar-user-address-set)."),
    "public_url": Option(_public_url, "", "The gateway's URL as clients "
                         "reach it (https://fb.example.com, with its path "
                         "behind a prefixing proxy); URLs it hands out "
                         "(Autodiscover's EwsUrl) start with it. Empty: "
                         "each request's scheme and Host."),
    "cache_ttl": Option(_non_negative_float, "300", "Seconds a foreign "
                        "answer may be reused; 0 turns caching off."),
    "timeout": Option(_positive_float, "10", "Overall deadline of one "
                      "lookup over all providers, seconds."),
    "max_window_days": Option(_positive_int, "1830", "Longest window a "
                              "free/busy request may ask for, in days; "
                              "longer ones get 400."),
    "max_attendees": Option(_positive_int, "100", "Most attendees one "
                            "outbox POST may name; the rest get 5.1."),
    "max_hops": Option(_positive_int, "2", "How many gateways a federated "
                       "request may pass; stops two peers looping."),
    "freebusy_access": Option(_freebusy_access, "authenticated", "Who sees "
                              "a local user's busy time: 'authenticated' "
                              "(every logged-in user, whatever the rights "
                              "file says) or 'rights' (Radicale's r or f "
                              "right on each calendar decides)."),
    "threads": Option(_positive_int, "32", "Requests answered at once by "
                      "fbgateway serve (at least [server] max_connections);"
                      " outbox POSTs hold one while foreign systems answer."),
    "connection_limit": Option(_positive_int, "1000", "Open connections "
                               "fbgateway serve keeps at most; idle or "
                               "slow ones cost no thread."),
    "anonymous_freebusy": Option(_boolean, "no", "yes: callers who do "
                                 "not log in see local users' busy periods "
                                 "on the /.freebusy/ and EWS faces (never "
                                 "foreign ones; an unknown or opted-out "
                                 "address looks free to them)."),
    "requests_per_minute": Option(_non_negative_int, "600", "Requests one "
                                  "caller (user, or address when "
                                  "anonymous) may make per minute on the "
                                  "/.freebusy/, Graph-path and EWS routes; "
                                  "more get 429. 0: no limit."),
    "cors_origins": Option(_origin_list, "", "Web origins (scheme://host"
                           "[:port]) whose pages may call the JSON routes "
                           "from a browser; empty: none."),
    "trusted_proxy": Option(_proxy_address, "", "IP address of the "
                            "reverse proxy (or load balancer) in front: "
                            "from it, X-Forwarded-For/-Proto/-Host/-Port "
                            "give each request's client address, scheme "
                            "and host (for anonymous callers' "
                            "requests_per_minute and Autodiscover); * "
                            "trusts every peer. Empty: headers dropped. "
                            "fbgateway serve only; under gunicorn use its "
                            "forwarded_allow_ips."),
    "trusted_proxy_count": Option(_positive_int, "1", "Proxies in a row "
                                  "in front whose X-Forwarded-For entries "
                                  "are trusted."),
    "default_working_hours": Option(WorkingHours.parse, "Mon-Fri 09:00-17:00 "
                                    "UTC", "Working hours of users who have "
                                    "none of their own (VAVAILABILITY or "
                                    "their system's): 'Mon-Fri 09:00-17:00 "
                                    "Europe/Berlin'."),
    "queue": Option(_queue_place, "", "Where pushes waiting to go out "
                    "are kept: a SQLite file (default: "
                    ".freebusy-push-queue.sqlite in [storage] "
                    "filesystem_folder), or a redis:// or rediss:// URL "
                    "that several gateway instances share "
                    "(docs/redis.md)."),
    "cache": Option(redis_url, "", "A redis:// or rediss:// URL (password"
                    " and database allowed) where several gateway "
                    "instances share foreign answers, throttling pauses, "
                    "tokens, peers' pushes and change signals "
                    "(docs/redis.md); empty: each process keeps its own."),
    "redis_prefix": Option(_redis_prefix, "fbgw:", "Start of every Redis "
                           "key and channel of this deployment, so that "
                           "several can share one Redis."),
    "push_window_days": Option(_positive_int, "60", "Days of free/busy "
                               "pushed out, from the start of today."),
    "push_republish_hours": Option(_positive_float, "24", "Every user is "
                                   "pushed again this often (the window "
                                   "slides even when nothing changes)."),
    "workers": Option(_worker_count, "1", "Processes fbgateway serve "
                      "answers requests in, all on the same listening "
                      "sockets (each with [gateway] threads threads and its "
                      "own caches); one per core uses the machine. A worker "
                      "that dies is replaced."),
    "metrics": Option(_boolean, "yes", "Serve Prometheus metrics at "
                      "/.freebusy/metrics (no user data in them); no: 404."),
    "metrics_users": Option(_name_list, "", "Local accounts that may read "
                            "the metrics (Basic login); empty: anyone who "
                            "reaches the URL."),
    "local_disk_cache": Option(_boolean, "yes", "Keep each calendar's "
                               "busy index on disk beside Radicale's item "
                               "cache (.Radicale.cache/freebusy/), so a "
                               "restart answers from it; no: nothing is "
                               "written or read."),
    "local_cache_size": Option(_positive_int, "500000", "How much the local "
                               "engine keeps of parsed objects and their "
                               "expansions, in cost units of about 400 "
                               "bytes (the default holds about 200 MB); "
                               "least recently used objects go first."),
}

PROVIDER_SCHEMA: Dict[str, Option] = {
    "type": Option(str, None, "Built-in name (a module in plugins/; "
                   "config-help lists them), a dotted Python path, or a "
                   "name registered in the entry-point group "
                   "freebusy_gateway.providers."),
    "domains": Option(domain_list, None, "Which addresses this provider "
                      "answers for."),
    "url": Option(http_url, "", "Base URL of the foreign system; the only "
                  "host this provider ever contacts."),
    "username": Option(str, "", "Account name at the foreign system."),
    "password": Option(str, "", "Password of that account."),
    "token": Option(str, "", "Bearer token, instead of username/password."),
    "auth": Option(_auth_kind, "", "How to log in: basic (default with a "
                   "username), ntlm, form (OWA forms login), bearer "
                   "(default with a token), oauth2 (client credentials), "
                   "google (service account)."),
    "tenant": Option(str, "", "auth = oauth2: directory tenant id or "
                     "domain."),
    "client_id": Option(str, "", "auth = oauth2: application (client) id."),
    "client_secret": Option(str, "", "auth = oauth2: client secret."),
    "authority": Option(_https_url, "", "auth = oauth2: identity platform, "
                        "default https://login.microsoftonline.com; tokens "
                        "from {authority}/{tenant}/oauth2/v2.0/token."),
    "scope": Option(str, "", "auth = oauth2 or google: scope asked for; "
                    "default per type (Graph's .default, Google's "
                    "calendar.freebusy)."),
    "service_account_file": Option(str, "", "auth = google: the service "
                                   "account's JSON key file."),
    "subject": Option(str, "", "auth = google: the user the service "
                      "account acts as (domain-wide delegation)."),
    "login_url": Option(str, "", "auth = form: where credentials are "
                        "posted; default {url's host}"
                        "/exchweb/bin/auth/owaauth.dll."),
    "client_cert": Option(str, "", "TLS client certificate (PEM), with any "
                          "auth."),
    "client_key": Option(str, "", "Its private key (PEM), if not in "
                         "client_cert."),
    "ca_file": Option(str, "", "Trust this CA bundle (PEM) for this "
                      "provider's hosts instead of the system's."),
    "timeout": Option(_positive_float, "5", "Seconds one call may take."),
    "cache_ttl": Option(_non_negative_float, "", "Seconds an answer may "
                        "be reused; empty means [gateway] cache_ttl."),
    "verify_tls": Option(_boolean, "yes", "Check the server's TLS "
                         "certificate."),
    "push_accounts": Option(_name_list, "", "Local accounts that may push "
                            "free/busy for this provider's domains (PUT "
                            "/.freebusy/ADDRESS): lookups in the pushed "
                            "window are then answered from the push."),
    "max_parallel": Option(_positive_int, "8", "Calls to this provider "
                           "in flight at once; more wait their turn (and "
                           "time out at the deadline), so one slow system "
                           "cannot take the threads the others need."),
    "max_addresses": Option(_positive_int, "", "Most addresses one call "
                            "may carry; empty means the type's default "
                            "(the service's documented limit)."),
    "max_window_days": Option(_positive_float, "", "Longest window one "
                              "call may ask for, in days; empty means the "
                              "type's default.  Tenants differ, so both "
                              "can be changed here."),
}


class ProviderConfig(NamedTuple):
    name: str
    options: Dict[str, Any]
    #: keys the common schema does not know; the plugin checks them.
    extra: Dict[str, str]


class GatewayConfig(NamedTuple):
    path: str
    radicale: radicale_config.Configuration
    gateway: Dict[str, Any]
    providers: List[ProviderConfig]


def _parse_section(path: str, section: str, raw: Dict[str, str],
                   schema: Dict[str, Option], allow_extra: bool
                   ) -> Tuple[Dict[str, Any], Dict[str, str]]:
    values, extra = {}, {}
    for key, raw_value in raw.items():
        if key not in schema:
            if allow_extra:
                extra[key] = raw_value
                continue
            raise ConfigError("%s: [%s] unknown key %r (known: %s)" % (
                path, section, key, ", ".join(sorted(schema))))
    for key, option in schema.items():
        raw_value = raw.get(key, option.default)
        if raw_value is None:
            raise ConfigError("%s: [%s] missing required key %r (%s)" % (
                path, section, key, option.help))
        try:
            values[key] = option.parse(raw_value) if raw_value != "" or \
                option.parse in (str, domain_list) else None
        except ValueError as e:
            raise ConfigError("%s: [%s] bad value for %r: %r: %s" % (
                path, section, key, _shown(key, raw_value), e)) from None
    return values, extra


#: Keys whose values are secrets, or URLs that may carry one.
SECRET_KEYS = ("password", "token", "client_secret", "cache", "queue")


def _shown(key: str, value: str) -> str:
    """A value as an error message may show it: secrets hidden, and the
    password of a URL (redis://:pw@host) replaced."""
    if key in ("password", "token", "client_secret"):
        return "***"
    if key in SECRET_KEYS:
        return re.sub(r"(://[^/@]*:)[^/@]*@", r"\1***@", value)
    return value


def load(path: str) -> GatewayConfig:
    """Read and check the whole file; raise ConfigError on any mistake."""
    parser = configparser.RawConfigParser()
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as e:
        raise ConfigError("%s: cannot read: %s" % (path, e.strerror)) from None
    except configparser.Error as e:
        raise ConfigError("%s: not an ini file: %s" % (
            path, str(e).replace("\n", " "))) from None
    radicale_sections: Dict[str, Dict[str, str]] = {}
    gateway_raw: Dict[str, str] = {}
    providers: List[ProviderConfig] = []
    base = os.path.dirname(os.path.abspath(path))
    for section in parser.sections():
        raw = dict(parser.items(section))
        if section in radicale_config.DEFAULT_CONFIG_SCHEMA:
            radicale_sections[section] = raw
        elif section == "gateway":
            gateway_raw = raw
        elif section.startswith(PROVIDER_PREFIX):
            name = section[len(PROVIDER_PREFIX):].strip()
            if not name:
                raise ConfigError("%s: [%s] provider section needs a name, "
                                  "as in [provider:corp]" % (path, section))
            options, extra = _parse_section(path, section, raw,
                                            PROVIDER_SCHEMA, True)
            for key in PROVIDER_FILE_KEYS:
                if options.get(key):
                    options[key] = os.path.join(
                        base, os.path.expanduser(options[key]))
            providers.append(ProviderConfig(name, options, extra))
        else:
            raise ConfigError("%s: [%s] unknown section (Radicale's sections,"
                              " [gateway] and [provider:NAME] are known)" % (
                                  path, section))
    gateway, _ = _parse_section(path, "gateway", gateway_raw,
                                GATEWAY_SCHEMA, False)
    _resolve_relative_paths(radicale_sections, base)
    auth = radicale_sections.setdefault("auth", {})
    for key, value in AUTH_DEFAULTS.items():
        auth.setdefault(key, value)
    radicale = radicale_config.load()
    try:
        radicale.update(radicale_sections, path)
    except Exception as e:
        raise ConfigError("%s: %s" % (path, e)) from None
    try:
        radicale_compat.check_plugins(radicale)
    except ValueError as e:
        raise ConfigError("%s: %s" % (path, e)) from None
    seen: Dict[str, str] = {d: "[gateway]" for d in gateway["domains"]}
    for provider in providers:
        for domain in provider.options["domains"]:
            if domain in seen:
                raise ConfigError(
                    "%s: [provider:%s] key 'domains': %r is already served "
                    "by %s" % (path, provider.name, domain, seen[domain]))
            seen[domain] = "[provider:%s]" % provider.name
    return GatewayConfig(path, radicale, gateway, providers)


def _resolve_relative_paths(sections: Dict[str, Dict[str, str]],
                            base: str) -> None:
    """Make Radicale's file paths relative to the ini file's folder.

    So that config/gateway.ini works from any current directory.
    """
    for section, raw in sections.items():
        schema = radicale_config.DEFAULT_CONFIG_SCHEMA.get(section, {})
        for key, value in raw.items():
            option = schema.get(key)
            if (option and option.get("type") is radicale_config.filepath
                    and value and not os.path.isabs(
                        os.path.expanduser(value))):
                raw[key] = os.path.join(base, value)


def help_text(provider_types=()) -> str:
    """The admin reference of the gateway's keys, from the schema, and the
    built-in provider types that exist."""
    lines = []
    width = max(len(k) for k in list(GATEWAY_SCHEMA) + list(PROVIDER_SCHEMA))
    for title, schema in (("[gateway]", GATEWAY_SCHEMA),
                          ("[provider:NAME]", PROVIDER_SCHEMA)):
        lines.append(title)
        for key, option in schema.items():
            default = ("required" if option.default is None else
                       "default %r" % option.default)
            lines.append("  %-*s %s (%s)" % (width, key, option.help,
                                             default))
        lines.append("")
    if provider_types:
        lines.append("Built-in provider types: %s" % ", ".join(
            provider_types))
        lines.append("")
    return "\n".join(lines)
