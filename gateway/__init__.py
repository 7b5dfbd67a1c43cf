"""Freebusy Gateway: free/busy across calendar systems, on Radicale.

Layers, bottom up: ``model`` (periods, FBTYPE, merging) -> engines
(``local`` for Radicale's calendars, ``fanout`` over provider plugins) ->
``faces`` (CalDAV REPORT and scheduling, read URL, ...) -> ``app`` (the
WSGI assembly around Radicale) -> ``__main__`` (the CLI).
"""

__version__ = "0.1.0"
