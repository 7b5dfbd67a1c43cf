"""What every provider needs to reach a foreign system, written once: the
provider base class and loader, the HTTP client with its host pinning,
deadlines and retries, and the failures a call can end in."""
