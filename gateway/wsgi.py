"""WSGI entry point for production servers (gunicorn, uWSGI, mod_wsgi).

``application`` is built from the ini file named in FBGATEWAY_CONFIG, the
same file ``fbgateway serve --config`` takes.
"""

import os

from gateway import config
from gateway.app import GatewayApplication


def create_application(path: str) -> GatewayApplication:
    from radicale import log
    log.setup()
    gateway_config = config.load(path)
    radicale_config = gateway_config.radicale
    log.set_level(radicale_config.get("logging", "level"),
                  radicale_config.get("logging", "backtrace_on_debug"),
                  radicale_config.get("logging", "trace_filter"))
    return GatewayApplication(gateway_config)


application = create_application(os.environ.get("FBGATEWAY_CONFIG",
                                                "/etc/fbgateway/gateway.ini"))
