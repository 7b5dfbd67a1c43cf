"""Receiving a peer's push: ``PUT /.freebusy/<address>`` (design.md, "Push
to a peer gateway").

A peer (another gateway, or anything that PUTs .ifb files) sends one
VFREEBUSY for one of its own addresses, authenticated as a local account
that the ``[provider:NAME]`` serving that address's domain lists in
``push_accounts``.  Lookups of the address inside the pushed window are
then answered from it, without asking the peer, until its DTEND or the
section's ``cache_ttl``, whichever comes first.  A push whose DTSTAMP is
older than the one kept (a repeat of a push that was in flight when its
sender crashed) is acknowledged and dropped.
"""

import logging
import time
from http import client

from radicale import httputils

from gateway import vfreebusy
from gateway.engine.fanout import pushed_key
from gateway.faces import readurl
from gateway.model import normalize

logger = logging.getLogger(__name__)

PREFIX = readurl.PREFIX


def register(registry) -> None:
    registry.route(("PUT",), PREFIX, receive)


def _text(status: int, text: str):
    return status, {"Content-Type": "text/plain; charset=utf-8"}, \
        text.encode("utf-8"), None


def receive(app, request):
    if not request.user:
        return httputils.NOT_ALLOWED        # 401 with WWW-Authenticate
    try:
        bare = readurl.address_of(request.path)
    except readurl.BadParameter as e:
        return _text(client.BAD_REQUEST, str(e))
    kind, target = app.fanout.route("mailto:" + bare)
    if kind != "provider":
        return _text(client.FORBIDDEN, "%s is not served by a provider "
                     "here; only a peer's own addresses can be pushed" %
                     bare)
    if request.user not in target.options.get("push_accounts", ()):
        return _text(client.FORBIDDEN, "%s may not push for %s" % (
            request.user, target.name))
    body = app._read_body(request.environ)
    try:
        periods, covered, stamp = vfreebusy.parse_published(body)
    except vfreebusy.PeerDataError as e:
        return _text(client.BAD_REQUEST, "not a VFREEBUSY: %s" % (
            str(e)[:200],))
    if stamp is None:
        return _text(client.BAD_REQUEST, "not a VFREEBUSY: VFREEBUSY "
                     "without DTSTAMP")
    if covered is None:
        return _text(client.BAD_REQUEST, "the VFREEBUSY needs DTSTART and "
                     "DTEND: they say what the push covers")
    ttl = target.options.get("cache_ttl")
    ttl = app.gateway_options["cache_ttl"] if ttl is None else ttl
    expires = min(covered.end.timestamp(), time.time() + ttl)
    kept = app.fanout.pushed.put(
        pushed_key(target, bare.lower()), covered.start, covered.end,
        normalize(periods, covered), stamp.timestamp(), expires)
    logger.info("Push for %s from %s (%s): %s", bare, request.user,
                target.name, "kept" if kept else "older than the one kept")
    return client.NO_CONTENT, {}, b"", None
