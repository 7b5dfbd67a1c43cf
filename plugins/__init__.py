"""Provider plugins: one module per foreign system.

Each module holds one ``Provider`` subclass (gateway.provider) and nothing
else; HTTP, retries, limits, caching and time zones come from gateway/.
"""
