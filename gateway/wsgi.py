"""WSGI entry point for production servers (gunicorn, uWSGI, mod_wsgi).

``application`` is built from the ini file named in FBGATEWAY_CONFIG, the
same file ``fbgateway serve --config`` takes, after the same checks of its
files (what only ``serve`` uses, ``[server] hosts`` and ``ssl``, is the
WSGI server's business here).  ``[logging] level`` applies to Radicale's,
the gateway's and the plugins' loggers, and ``[server]
max_content_length`` to every request body, chunked ones included.
"""

import os

from gateway import config, server
from gateway.app import GatewayApplication, load_providers


def create_application(path: str):
    gateway_config = config.load(path)
    providers = load_providers(gateway_config)
    server.check(gateway_config, server=False)
    server.setup_logging(gateway_config.radicale)
    return server.limit_request_body(
        GatewayApplication(gateway_config, providers),
        gateway_config.radicale.get("server", "max_content_length"))


application = create_application(os.environ.get("FBGATEWAY_CONFIG",
                                                "/etc/fbgateway/gateway.ini"))
