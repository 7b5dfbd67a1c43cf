"""The engines: busy time of local calendars (Radicale's storage) and the
fan-out of one question over local users and foreign providers."""
