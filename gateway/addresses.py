"""Calendar user addresses and local users, both ways, in one place.

``mailto:alice@example.com`` is the Radicale user ``alice`` when
``example.com`` is one of ``[gateway] domains``; every local user has one
address per local domain.  Local parts follow Radicale's own login rule
(``[auth] lc_username`` / ``uc_username``), so the address names the same
account its owner logs in as.  Every face and engine asks this module.
"""

from typing import Callable, List, Optional, Sequence


def bare_address(address: str) -> Optional[str]:
    """``mailto:Alice@Example.COM`` -> ``Alice@example.com``; None if not mail.

    The local part keeps its case (Radicale user names are case-sensitive),
    the domain is lower-cased.  Anything that could change a path or a
    query (``/``, ``\\``, ``?``, ``#``, whitespace) makes it no address.
    """
    value = address.strip()
    if value[:7].lower() != "mailto:":
        return None
    local, at, domain = value[7:].rpartition("@")
    if not at or not local or not domain or any(
            c in value for c in "/\\?#\r\n\t "):
        return None
    return "%s@%s" % (local, domain.lower())


def username_rule(configuration) -> Callable[[str], str]:
    """How Radicale turns a login into a user name, for address local
    parts: user@domain means the account that logs in as ``user``."""
    if configuration.get("auth", "lc_username"):
        return str.lower
    if configuration.get("auth", "uc_username"):
        return str.upper
    return str


class LocalUsers:
    """The local domains and the login rule: addresses <-> user names."""

    def __init__(self, domains: Sequence[str],
                 rule: Callable[[str], str] = str) -> None:
        self.domains = tuple(domains)
        self._domain_set = set(self.domains)
        self.rule = rule

    def user_of(self, address: str) -> Optional[str]:
        """The local user an address names, None when it is not local."""
        bare = bare_address(address)
        if bare is None:
            return None
        local, _, domain = bare.rpartition("@")
        return self.rule(local) if domain in self._domain_set else None

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self._domain_set

    def addresses_of(self, user: str) -> List[str]:
        """``mailto:`` addresses of ``user``, one per local domain."""
        return user_addresses(user, self.domains)


def user_addresses(user: str, domains: Sequence[str]) -> List[str]:
    return ["mailto:%s@%s" % (user, domain) for domain in domains]
