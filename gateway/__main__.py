"""Command line: ``fbgateway serve --config FILE`` and friends.

``serve``, ``check-config`` and ``config-help`` are here; the admin's
tools (``query``, ``find``, ``check``, ``passwd``) are in gateway.cli,
``queue`` in gateway.cli_queue.
"""

import argparse
import os
import sys
from typing import List, Optional

from gateway import __version__, cli, cli_queue, config


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fbgateway", description="Free/busy gateway on Radicale")
    parser.add_argument("--version", action="version",
                        version="fbgateway %s" % __version__)
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
    cli.add_commands(commands)
    cli_queue.add_commands(commands)
    args = parser.parse_args(argv)

    if args.command == "config-help":
        from gateway.transport.provider import BUILTIN_TYPES
        print(config.help_text(BUILTIN_TYPES))
        return 0
    try:
        if hasattr(args, "run"):
            return args.run(args, args.parser)
        # Nothing is logged before the file is known to be good, so a
        # wrong file gives exactly one line on stderr.
        if args.command == "check-config":
            # What stops ``serve`` stops this too: the same checks.
            cli.check_config(args.config, bind_hosts=not args.no_bind)
            return 0
        gateway_config = config.load(args.config)
        from gateway import server
        from gateway.app import load_providers
        server.serve(gateway_config, load_providers(gateway_config))
    except config.ConfigError as e:
        print("fbgateway: configuration error: %s" % e, file=sys.stderr)
        return cli.EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # ``fbgateway query ... | head``: the reader has all it wants;
        # nothing more may be written, not even at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
