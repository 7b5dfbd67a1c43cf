"""The faces: the formats the gateway answers free/busy questions in.

Each face turns a request into a window and addresses, asks an engine, and
renders the answer.  Faces import the model and engines and the faces'
shared helpers (access: the one access policy; cors; graphjson: Graph's
JSON conventions; readurl's address and window parsing), never another
face's handlers.

A face tells the assembly what it answers by registering it, as Xandikos
registers its reports by name: ``register(registry)`` in the face's module
adds REPORT handlers by the body's root element and routes by path prefix
and method.  The assembly (gateway.app) lists the face modules and
dispatches; adding a face is one module and one line there.

Handlers get ``(app, request)`` and return Radicale's answer tuple
``(status, headers, body, xml)``.
"""

from typing import Callable, Dict, List, NamedTuple, Optional, Tuple


class Request(NamedTuple):
    """What a handler needs of one HTTP request, authentication done."""

    environ: dict
    base_prefix: str
    path: str
    #: the authenticated user, "" when anonymous
    user: str
    user_groups: set
    #: the parsed XML body (REPORT handlers only)
    root: object = None


Handler = Callable[[object, Request], Tuple]


class Route(NamedTuple):
    methods: Tuple[str, ...]
    prefix: str
    handler: Handler


class Registry:
    """REPORTs by root element and routes by path prefix."""

    def __init__(self) -> None:
        self.reports: Dict[str, Handler] = {}
        self.routes: List[Route] = []

    def report(self, root_tag: str, handler: Handler) -> None:
        """Answer REPORTs whose body's root element is ``root_tag``
        (Clark notation)."""
        if root_tag in self.reports:
            raise ValueError("REPORT %s registered twice" % root_tag)
        self.reports[root_tag] = handler

    def route(self, methods, prefix: str, handler: Handler) -> None:
        """Answer ``methods`` on paths starting with ``prefix`` (a path
        from the server root, like ``/.freebusy/``)."""
        self.routes.append(Route(tuple(m.upper() for m in methods), prefix,
                                 handler))
        # Longest prefix first, so the most specific route wins.
        self.routes.sort(key=lambda r: -len(r.prefix))

    def find_route(self, method: str, path: str) -> Optional[Route]:
        for route in self.routes:
            if _under(path, route.prefix) and method in route.methods:
                return route
        return None

    def has_prefix(self, path: str) -> bool:
        return any(_under(path, r.prefix) for r in self.routes)


def _under(path: str, prefix: str) -> bool:
    """Prefixes end at a path segment: ``/.freebusy/view`` is not a
    prefix of ``/.freebusy/viewer@example.com`` (a read URL)."""
    return path == prefix or path.startswith(
        prefix if prefix.endswith("/") else prefix + "/")
