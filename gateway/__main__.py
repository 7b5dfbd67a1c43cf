"""Command line: ``fbgateway serve --config FILE`` and friends."""

import argparse
import logging
import signal
import socket
import sys
from typing import List, Optional

from gateway import config

logger = logging.getLogger("gateway")


def serve(gateway_config: config.GatewayConfig) -> None:
    """Run on Radicale's own HTTP server until SIGTERM or SIGINT.

    Threads, TLS, connection limits and clean shutdown are Radicale's own.
    """
    from radicale import log

    from gateway import radicale_compat
    from gateway.app import GatewayApplication, load_providers

    # Plugins are loaded before anything starts, so a wrong provider
    # section fails like any other configuration error.
    providers = load_providers(gateway_config)
    log.setup()
    radicale_config = gateway_config.radicale
    log.set_level(radicale_config.get("logging", "level"),
                  radicale_config.get("logging", "backtrace_on_debug"),
                  radicale_config.get("logging", "trace_filter"))
    shutdown_in, shutdown_out = socket.socketpair()

    def on_signal(signal_number, frame) -> None:
        shutdown_in.close()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    radicale_compat.serve_application(
        radicale_config, lambda: GatewayApplication(gateway_config, providers),
        shutdown_out)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fbgateway", description="Free/busy gateway on Radicale")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the server")
    serve_cmd.add_argument("--config", required=True, help="the ini file")
    check_cmd = commands.add_parser("check-config",
                                    help="check the ini file and exit")
    check_cmd.add_argument("--config", required=True)
    commands.add_parser("config-help", help="print the gateway's ini keys")
    args = parser.parse_args(argv)

    if args.command == "config-help":
        print(config.help_text())
        return 0
    try:
        # Nothing is logged before the file is known to be good, so a
        # wrong file gives exactly one line on stderr.
        gateway_config = config.load(args.config)
        if args.command == "check-config":
            from gateway.app import load_providers
            load_providers(gateway_config)
            print("%s: OK" % args.config)
            return 0
        serve(gateway_config)
    except config.ConfigError as e:
        print("fbgateway: configuration error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
