"""CORS for the JSON routes: which web pages may call them from a browser.

``[gateway] cors_origins`` lists the origins an admin trusts.  A listed
origin gets its own name back in Access-Control-Allow-Origin with
credentials allowed, so a page there can send the user's Basic
credentials; ``*`` lets every origin read the answers but without
credentials (browsers then send no stored credentials, only an
Authorization header the page sets itself), because "any site may act as
the logged-in user" is never what an admin means.  Unlisted origins get
no CORS headers at all, so the browser withholds the answer.

Preflights (OPTIONS with Access-Control-Request-Method) are anonymous by
the Fetch standard, so they are answered before any login.
"""

from typing import Dict, Optional, Sequence

#: Request headers a page may send: credentials, the JSON body, Graph's
#: ``Prefer: outlook.timezone``.
ALLOWED_HEADERS = ("Authorization", "Content-Type", "Prefer")
#: Answer headers a page may read.
EXPOSED_HEADERS = ("Retry-After", "Preference-Applied")
#: Seconds a browser may keep a preflight's answer.
MAX_AGE = 600


def _allowed(app, origin: str) -> Optional[str]:
    """"credentials" for a listed origin, "any" under ``*``, else None."""
    listed = app.gateway_options.get("cors_origins") or ()
    if not origin:
        return None
    if origin.rstrip("/") in listed:
        return "credentials"
    if "*" in listed:
        return "any"
    return None


def headers(app, environ) -> Dict[str, str]:
    """CORS headers for an actual answer to ``environ``'s request."""
    origin = environ.get("HTTP_ORIGIN", "")
    kind = _allowed(app, origin)
    if kind is None:
        # The answer depends on Origin all the same: caches must know.
        return {"Vary": "Origin"} if app.gateway_options.get(
            "cors_origins") else {}
    found = {"Access-Control-Allow-Origin": origin if kind == "credentials"
             else "*",
             "Access-Control-Expose-Headers": ", ".join(EXPOSED_HEADERS),
             "Vary": "Origin"}
    if kind == "credentials":
        found["Access-Control-Allow-Credentials"] = "true"
    return found


def preflight(app, environ, methods: Sequence[str]) -> tuple:
    """The answer to OPTIONS on a JSON route (a preflight or a plain
    OPTIONS), in Radicale's (status, headers, body, xml) form."""
    allow = ", ".join(list(methods) + ["OPTIONS"])
    answer = {"Allow": allow}
    wanted = environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD", "")
    found = headers(app, environ)
    answer.update(found)
    if wanted and "Access-Control-Allow-Origin" in found:
        if wanted.upper() not in [m.upper() for m in methods]:
            # Not a method of this route: no permission to send it.
            return 204, {"Allow": allow, "Vary": "Origin"}, None, None
        answer.update({
            "Access-Control-Allow-Methods": allow,
            "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
            "Access-Control-Max-Age": str(MAX_AGE)})
    return 204, answer, None, None
