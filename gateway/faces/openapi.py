"""``GET /.freebusy/openapi.json``: the OpenAPI 3 document of the JSON routes.

The document is data here (a Python literal, so it installs with the
package and needs no file lookup): getSchedule at its three paths,
findMeetingTimes at its two (gateway.faces.finder answers them; their
shapes are Graph's and are described here so there is one document),
and this route itself.  The
tests validate every answer of the JSON routes, errors included, against
it, so it cannot drift from what the gateway does.
"""

import json

from gateway.faces import cors

PATH = "/.freebusy/openapi.json"


def _ref(name: str) -> dict:
    return {"$ref": "#/components/schemas/%s" % name}


def _json_body(schema: dict, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": schema}}}


def _graph_error(description: str) -> dict:
    return _json_body(_ref("ODataError"), description)


_CORS_HEADERS = {
    "Access-Control-Allow-Origin": {
        "description": "Present for origins listed in [gateway] "
        "cors_origins (or * when that lists *).",
        "schema": {"type": "string"}},
    "Vary": {"schema": {"type": "string"}},
}
_RETRY_AFTER = {"Retry-After": {
    "description": "Seconds until the caller may ask again.",
    "schema": {"type": "string", "pattern": "^[0-9]+$"}}}

#: Answers every JSON POST route can give besides its 200.
_COMMON_ERRORS = {
    "400": _graph_error("A missing or wrong field; the message names it."),
    "401": {"description": "No or failed credentials (HTTP Basic).  "
            "Anonymous callers get Graph's envelope; a failed login gets "
            "Radicale's plain-text answer.",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": _ref("ODataError")},
                        "text/plain": {"schema": {"type": "string"}}}},
    "404": _graph_error("Not one of the documented paths."),
    "413": _graph_error("The body is larger than 1 MiB."),
    "415": _graph_error("The body is not application/json."),
    "429": dict(_graph_error("Past [gateway] requests_per_minute for this "
                             "caller."), headers=_RETRY_AFTER),
}

_PREFER = {"name": "Prefer", "in": "header", "required": False,
           "description": 'outlook.timezone="Pacific Standard Time" (or an '
           "IANA name): times in the answer in that zone instead of UTC.",
           "schema": {"type": "string"}}

_PREFLIGHT = {
    "summary": "CORS preflight",
    "description": "Answered without credentials; the CORS headers are "
    "there only for origins listed in [gateway] cors_origins.",
    "security": [],
    "responses": {"204": {"description": "The methods, headers and origin "
                          "allowed.", "headers": dict(_CORS_HEADERS, **{
                              "Allow": {"schema": {"type": "string"}},
                              "Access-Control-Allow-Methods": {
                                  "schema": {"type": "string"}},
                              "Access-Control-Allow-Headers": {
                                  "schema": {"type": "string"}}})},
                  "404": _graph_error("Not one of the documented paths.")},
}


def _get_schedule(operation_id: str, parameters=()) -> dict:
    return {
        "post": {
            "operationId": operation_id,
            "summary": "Free/busy of several people, as Graph's "
                       "calendar/getSchedule",
            "description": "Busy, tentative and out-of-office times of "
            "local and foreign addresses (anonymous callers: local ones "
            "only).  Never a subject, location or attendee.",
            "parameters": list(parameters) + [_PREFER],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("ScheduleRequest")}}},
            "responses": dict(_COMMON_ERRORS, **{"200": {
                "description": "One scheduleInformation per schedule, in "
                "request order.",
                "headers": dict(_CORS_HEADERS, **{"Preference-Applied": {
                    "schema": {"type": "string"}}}),
                "content": {"application/json": {"schema": {
                    "type": "object", "required": ["value"],
                    "properties": {"value": {
                        "type": "array",
                        "items": _ref("ScheduleInformation")}}}}}}}),
        },
        "options": dict(_PREFLIGHT, operationId=operation_id + "Preflight",
                        parameters=list(parameters)),
    }


def _find_meeting_times(operation_id: str) -> dict:
    return {
        "post": {
            "operationId": operation_id,
            "summary": "Ranked meeting slots, as Graph's findMeetingTimes",
            "description": "The caller is the organizer.  activityDomain "
            "work (the default) keeps to each attendee's working hours; "
            "unrestricted ignores them.",
            "parameters": [_PREFER],
            "requestBody": {"required": True, "content": {
                "application/json": {
                    "schema": _ref("FindMeetingTimesRequest")}}},
            "responses": dict(_COMMON_ERRORS, **{"200": dict(_json_body(
                _ref("MeetingTimeSuggestionsResult"),
                "Suggestions, or none with emptySuggestionsReason."),
                headers=_CORS_HEADERS)}),
        },
        "options": dict(_PREFLIGHT, operationId=operation_id + "Preflight"),
    }


_DATETIME_TZ = {
    "type": "object",
    "description": "A wall-clock time in a zone (Windows or IANA name); "
    "PascalCase DateTime/TimeZone accepted in requests.",
    "properties": {
        "dateTime": {"type": "string",
                     "example": "2026-12-01T09:00:00.0000000"},
        "timeZone": {"type": "string", "example": "Pacific Standard Time"},
    },
}

_SCHEMAS = {
    "DateTimeTimeZone": _DATETIME_TZ,
    "ODataError": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"},
                           "message": {"type": "string"}}}}},
    "ScheduleRequest": {
        "type": "object",
        "description": "camelCase; the PascalCase names (Schedules, "
        "StartTime, EndTime, AvailabilityViewInterval) are accepted too.",
        "anyOf": [{"required": ["schedules", "startTime", "endTime"]},
                  {"required": ["Schedules", "StartTime", "EndTime"]}],
        "properties": {
            "schedules": {"type": "array", "minItems": 1,
                          "items": {"type": "string", "format": "email"}},
            "startTime": _ref("DateTimeTimeZone"),
            "endTime": _ref("DateTimeTimeZone"),
            "availabilityViewInterval": {
                "description": "Minutes per availabilityView digit "
                "(5 to 1440, default 30); a numeric string is accepted.",
                "oneOf": [{"type": "integer", "minimum": 5,
                           "maximum": 1440},
                          {"type": "string", "pattern": "^[0-9]+$"}]},
        },
    },
    "ScheduleItem": {
        "type": "object", "required": ["status", "start", "end"],
        "additionalProperties": False,
        "description": "A busy span and nothing else: never a subject, "
        "location or attendee.",
        "properties": {
            "status": {"type": "string",
                       "enum": ["busy", "tentative", "oof"]},
            "start": _ref("DateTimeTimeZone"),
            "end": _ref("DateTimeTimeZone"),
        },
    },
    "WorkingHours": {
        "type": "object",
        "required": ["daysOfWeek", "startTime", "endTime", "timeZone"],
        "properties": {
            "daysOfWeek": {"type": "array", "items": {
                "type": "string", "enum": [
                    "monday", "tuesday", "wednesday", "thursday", "friday",
                    "saturday", "sunday"]}},
            "startTime": {"type": "string", "example": "09:00:00.0000000"},
            "endTime": {"type": "string", "example": "17:00:00.0000000"},
            "timeZone": {"type": "object", "required": ["name"],
                         "properties": {"name": {"type": "string"}}},
        },
    },
    "FreeBusyError": {
        "type": "object", "required": ["message", "responseCode"],
        "properties": {
            "message": {"type": "string"},
            "responseCode": {"type": "string", "enum": [
                "ErrorMailRecipientNotFound", "ErrorNoFreeBusyAccess",
                "ErrorProxyRequestProcessingFailed", "ErrorTimeoutExpired",
                "ErrorServerBusy", "ErrorFreeBusyGenerationFailed"]}}},
    "ScheduleInformation": {
        "type": "object", "required": ["scheduleId"],
        "description": "Either the free/busy (availabilityView, "
        "scheduleItems, workingHours) or an error for this schedule.",
        "additionalProperties": False,
        "properties": {
            "scheduleId": {"type": "string"},
            "availabilityView": {
                "type": "string", "pattern": "^[0-3]*$",
                "description": "One digit per availabilityViewInterval: 0 "
                "free, 1 tentative, 2 busy (no data too), 3 out of office."},
            "scheduleItems": {"type": "array",
                              "items": _ref("ScheduleItem")},
            "workingHours": _ref("WorkingHours"),
            "error": _ref("FreeBusyError"),
        },
    },
    # -- findMeetingTimes (Graph's shapes; answered by the finder face) --
    "EmailAddress": {
        "type": "object", "required": ["address"],
        "properties": {"address": {"type": "string"},
                       "name": {"type": "string"}}},
    "AttendeeBase": {
        "type": "object", "required": ["emailAddress"],
        "properties": {
            "type": {"type": "string",
                     "enum": ["required", "optional", "resource"]},
            "emailAddress": _ref("EmailAddress")}},
    "TimeSlot": {
        "type": "object", "required": ["start", "end"],
        "properties": {"start": _ref("DateTimeTimeZone"),
                       "end": _ref("DateTimeTimeZone")}},
    "FindMeetingTimesRequest": {
        "type": "object",
        "properties": {
            "attendees": {"type": "array", "items": _ref("AttendeeBase")},
            "timeConstraint": {
                "type": "object",
                "properties": {
                    "activityDomain": {"type": "string", "enum": [
                        "work", "personal", "unrestricted", "unknown"]},
                    "timeslots": {"type": "array",
                                  "items": _ref("TimeSlot")}}},
            "meetingDuration": {"type": "string", "example": "PT1H",
                                "description": "ISO 8601 duration."},
            "maxCandidates": {"type": "integer", "minimum": 1},
            "minimumAttendeePercentage": {"type": "number", "minimum": 0,
                                          "maximum": 100},
            "isOrganizerOptional": {"type": "boolean"},
            "returnSuggestionReasons": {"type": "boolean"},
        },
    },
    "AttendeeAvailability": {
        "type": "object",
        "properties": {
            "attendee": _ref("AttendeeBase"),
            "availability": {"type": "string", "enum": [
                "free", "tentative", "busy", "oof", "workingElsewhere",
                "unknown"]}}},
    "MeetingTimeSuggestion": {
        "type": "object",
        "properties": {
            "confidence": {"type": "number"},
            "organizerAvailability": {"type": "string"},
            "suggestionReason": {"type": "string"},
            "meetingTimeSlot": _ref("TimeSlot"),
            "attendeeAvailability": {
                "type": "array", "items": _ref("AttendeeAvailability")}}},
    "MeetingTimeSuggestionsResult": {
        "type": "object",
        "properties": {
            "emptySuggestionsReason": {"type": "string"},
            "meetingTimeSuggestions": {
                "type": "array", "items": _ref("MeetingTimeSuggestion")}}},
}

_ID = {"name": "id", "in": "path", "required": True,
       "description": "A user id or address as in Graph; one path "
       "segment.  It grants nothing: the logged-in caller's rights decide.",
       "schema": {"type": "string"}}

DOCUMENT = {
    "openapi": "3.0.3",
    "info": {
        "title": "Freebusy Gateway JSON routes",
        "version": "1",
        "description": "Free/busy in Microsoft Graph's shapes.  Every "
        "route answers for local addresses and, through the providers, "
        "foreign ones (anonymous callers, when [gateway] "
        "anonymous_freebusy allows them: local ones only).",
    },
    "servers": [{"url": "/"}],
    "security": [{"basic": []}],
    "paths": {
        "/.freebusy/getSchedule": _get_schedule("getSchedule"),
        "/v1.0/me/calendar/getSchedule": _get_schedule("meGetSchedule"),
        "/v1.0/users/{id}/calendar/getSchedule": _get_schedule(
            "userGetSchedule", [_ID]),
        "/.freebusy/findMeetingTimes": _find_meeting_times(
            "findMeetingTimes"),
        "/v1.0/me/findMeetingTimes": _find_meeting_times(
            "meFindMeetingTimes"),
        PATH: {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {"200": dict(_json_body(
                    {"type": "object"}, "The OpenAPI 3 document."),
                    headers=_CORS_HEADERS)},
            },
            "options": dict(_PREFLIGHT, operationId="openapiPreflight"),
        },
    },
    "components": {
        "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
        "schemas": _SCHEMAS,
    },
}

_BODY = json.dumps(DOCUMENT, indent=1, sort_keys=True).encode("utf-8")


def register(registry) -> None:
    registry.route(("GET", "HEAD"), PATH, handle)
    registry.route(("OPTIONS",), PATH, options)


def _exact(request) -> bool:
    return request.path.rstrip("/") == PATH


def handle(app, request) -> tuple:
    """The document, to anyone: it says how to ask, nothing about whom."""
    if not _exact(request):
        return 404, {"Content-Type": "text/plain; charset=utf-8"}, \
            b"no such route", None
    headers = {"Content-Type": "application/json; charset=utf-8"}
    headers.update(cors.headers(app, request.environ))
    return 200, headers, _BODY, None


def options(app, request) -> tuple:
    if not _exact(request):
        return 404, {"Content-Type": "text/plain; charset=utf-8"}, \
            b"no such route", None
    return cors.preflight(app, request.environ, ("GET",))
