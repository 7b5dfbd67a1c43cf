"""A third-party provider plugin, as another package would ship it.

It speaks a small JSON availability API (POST /availability with
``{"emails": [...], "start": ISO, "end": ISO}``, answer
``{"email": [{"start": ISO, "end": ISO, "status": "busy"|"tentative"}]}``)
and declares tight limits (2 addresses, 7 days per call), so the tests can
watch the gateway's fan-out split and stitch.  It uses only the public
plugin interface: gateway.provider and the HTTP client it is given.
It sends an API key of its own (``api_key``, as ``X-Api-Key``) because
its emulator wants one; a real plugin leaves credentials to the
transport and declares AUTH_KINDS (see acme_freebusy.py, the example of
docs/plugins.md).
"""

import datetime
import json

from gateway.provider import (BUSY, BUSY_TENTATIVE, BUSY_UNAVAILABLE,
                              LookupResult, Option, Period, ProviderError,
                              Reason)
from gateway.provider import Provider as BaseProvider

STATUS = {"busy": BUSY, "tentative": BUSY_TENTATIVE,
          "oof": BUSY_UNAVAILABLE}


def _iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str) -> datetime.datetime:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)


class Provider(BaseProvider):
    max_addresses = 2
    max_window = datetime.timedelta(days=7)
    OPTIONS = {"api_key": Option(str, None, "Key sent as X-Api-Key."),
               "slot_minutes": Option(int, "0", "Answers come in slots of "
                                      "this many minutes (0: exact).")}

    def __init__(self, name, options, extra, http):
        super().__init__(name, options, extra, http)
        if extra["slot_minutes"]:
            self.slot = datetime.timedelta(minutes=extra["slot_minutes"])

    def lookup(self, addresses, window, context):
        response = self.http.request(
            "POST", "availability", context,
            headers={"Content-Type": "application/json",
                     "X-Api-Key": self.extra["api_key"]},
            data=json.dumps({"emails": list(addresses),
                             "start": _iso(window.start),
                             "end": _iso(window.end)}).encode())
        if response.status != 200:
            raise ProviderError(Reason.UNAVAILABLE,
                                "API answered %d" % response.status)
        try:
            answer = json.loads(response.body)
            results = {}
            for address in addresses:
                if address not in answer:
                    results[address] = LookupResult.failed(
                        Reason.UNKNOWN_USER, "unknown to the API")
                    continue
                results[address] = LookupResult.busy([
                    Period(_parse(item["start"]), _parse(item["end"]),
                           STATUS[item["status"]])
                    for item in answer[address]], window)
            return results
        except (ValueError, KeyError, TypeError) as e:
            raise ProviderError(Reason.NO_DATA, "bad answer: %s" % e)
