"""Command line: ``fbgateway serve --config FILE`` and friends."""

import argparse
import sys
from typing import List, Optional

from gateway import config


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fbgateway", description="Free/busy gateway on Radicale")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the server")
    serve_cmd.add_argument("--config", required=True, help="the ini file")
    check_cmd = commands.add_parser("check-config",
                                    help="check the ini file and exit")
    check_cmd.add_argument("--config", required=True)
    check_cmd.add_argument(
        "--no-bind", action="store_true",
        help="do not check that [server] hosts are free (for the file of "
             "a server that is running)")
    commands.add_parser("config-help", help="print the gateway's ini keys")
    args = parser.parse_args(argv)

    if args.command == "config-help":
        from gateway.transport.provider import BUILTIN_TYPES
        print(config.help_text(BUILTIN_TYPES))
        return 0
    try:
        # Nothing is logged before the file is known to be good, so a
        # wrong file gives exactly one line on stderr.
        gateway_config = config.load(args.config)
        from gateway import server
        from gateway.app import load_providers
        providers = load_providers(gateway_config)
        if args.command == "check-config":
            # What stops ``serve`` stops this too: the same checks.
            for sock in server.check(gateway_config,
                                     bind_hosts=not args.no_bind):
                sock.close()
            print("%s: OK" % args.config)
            return 0
        server.serve(gateway_config, providers)
    except config.ConfigError as e:
        print("fbgateway: configuration error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
