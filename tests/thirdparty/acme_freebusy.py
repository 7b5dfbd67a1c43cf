"""Acme Calendar: free/busy from its JSON availability API.

``POST {url}/workspaces/{workspace}/availability`` with
``{"users": [...], "from": ISO, "to": ISO}`` answers, for up to 20 users
and 31 days a call, in 15-minute blocks:
``{"calendars": [{"user": ..., "status": "ok", "blocks": [{"from": ...,
"to": ..., "show": "busy"}]}]}``.  Own key: ``workspace`` (required).
The common keys ``max_addresses`` and ``max_window_days`` change the
limits.  Credentials: ``token`` (bearer) or ``auth = oauth2``.
"""

import datetime
import json
import urllib.parse

from gateway.provider import (BUSY, BUSY_TENTATIVE, BUSY_UNAVAILABLE,
                              LookupResult, Option, Period, ProviderError,
                              RateLimited, Reason, no_data)
from gateway.provider import Provider as BaseProvider

#: Acme's "show" values.  Working elsewhere is free time (None); a span
#: Acme marks "unknown", or with any value not listed here, is no data:
#: BUSY-UNAVAILABLE, as the model writes no data, never free.
SHOW = {"busy": BUSY, "tentative": BUSY_TENTATIVE,
        "away": BUSY_UNAVAILABLE, "elsewhere": None}
#: Acme's per-user statuses other than "ok"; any other is no data.
STATUS = {"not_found": Reason.UNKNOWN_USER, "private": Reason.NO_AUTHORITY}


def _workspace(value):
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(value):
    """``2026-01-07T22:00:00Z`` or ``...+01:00``: an aware datetime."""
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")


def _result(entry, window):
    """One user's entry of Acme's answer as a LookupResult."""
    status = entry.get("status")
    if status != "ok":
        return LookupResult.failed(STATUS.get(status, Reason.NO_DATA),
                                   "Acme said %r" % (status,))
    periods = []
    for block in entry["blocks"]:
        fbtype = SHOW.get(block["show"], BUSY_UNAVAILABLE)
        if fbtype is not None:
            periods.append(Period(_time(block["from"]), _time(block["to"]),
                                  fbtype))
    return LookupResult.busy(periods, window)


class Provider(BaseProvider):
    """One POST per call; the gateway splits by the limits below."""

    max_addresses = 20                      # Acme's limits per call
    max_window = datetime.timedelta(days=31)
    slot = datetime.timedelta(minutes=15)   # Acme answers in whole blocks
    per_asker = False                       # asked as our account, always
    AUTH_KINDS = ("bearer", "oauth2")
    AUTH_SCOPES = {"oauth2": "api://acme-calendar/.default"}
    OPTIONS = {"workspace": Option(_workspace, None, "Acme workspace id.")}

    def __init__(self, name, options, extra, http):
        super().__init__(name, options, extra, http)
        self.endpoint = "%s/workspaces/%s/availability" % (
            options["url"].rstrip("/"),
            urllib.parse.quote(extra["workspace"], safe=""))

    def lookup(self, addresses, window, context):
        response = self.http.request(
            "POST", self.endpoint, context,
            headers={"Content-Type": "application/json"},
            data=json.dumps({"users": list(addresses),
                             "from": _iso(window.start),
                             "to": _iso(window.end)}).encode("utf-8"))
        if response.status == 401:
            raise ProviderError(Reason.NO_AUTHORITY, "POST %s answered 401"
                                % response.url, "refused the credentials")
        try:
            answer = json.loads(response.body)
        except ValueError:
            answer = None
        error = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(error, dict) and error.get("code") == "server_busy":
            try:
                pause = float(error["retry_after_ms"]) / 1000
            except (KeyError, TypeError, ValueError):
                pause = None
            raise RateLimited(pause, "Acme is busy: %.200s" % response.text)
        if response.status != 200:
            raise ProviderError(Reason.UNAVAILABLE, "POST %s answered %d: "
                                "%.200s" % (response.url, response.status,
                                            response.text),
                                "answered HTTP %d" % response.status)
        if not isinstance(answer, dict) or \
                not isinstance(answer.get("calendars"), list):
            raise ProviderError(Reason.NO_DATA, "POST %s: not an answer: "
                                "%.200s" % (response.url, response.text))
        results = no_data(addresses, "not in Acme's answer")
        for entry in answer["calendars"]:
            user = str(entry.get("user", "")).lower() \
                if isinstance(entry, dict) else ""
            if user in results:
                try:
                    results[user] = _result(entry, window)
                except (KeyError, TypeError, ValueError, AttributeError) as e:
                    results[user] = LookupResult.failed(
                        Reason.NO_DATA, "unreadable entry: %r" % (e,))
        return results
