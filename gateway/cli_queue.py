"""``fbgateway queue list|retry|purge``: the admin's view of the pushes
waiting to go out (docs/faces/push.md), as Zimbra's free/busy queue
commands give.  It opens the queue file ``[gateway] queue`` names, so it
works beside a running server (SQLite takes both)."""

import sys

from gateway import config


def add_commands(commands) -> None:
    queue = commands.add_parser(
        "queue", help="list, retry or purge the pushes waiting to go out",
        description="The push queue of the ini file's gateway: 'list' "
        "shows each waiting push (user, provider, attempts, when due, "
        "last error); 'retry' makes one (ID) or all due now; 'purge' "
        "drops one (ID) or all.")
    queue.add_argument("action", choices=("list", "retry", "purge"))
    queue.add_argument("id", metavar="ID", nargs="?",
                       help="one item (the first column of 'list')")
    queue.add_argument("--config", required=True, help="the ini file")
    queue.set_defaults(run=run_queue, parser=queue)


def run_queue(args, parser) -> int:
    if args.id is not None and (args.action == "list" or
                                not args.id.isdigit()):
        parser.error("ID is a number from 'queue list', for retry or purge")
    # Imported here: --version and passwd need none of the application.
    from gateway.app import open_queue
    from gateway.engine.push import queue_summary
    gateway_config = config.load(args.config)
    queue = open_queue(gateway_config)
    try:
        if args.action == "list":
            items = queue.items()
            if items:
                print(queue_summary(items))
            print("%d waiting" % len(items), file=sys.stderr)
            return 0
        count = getattr(queue, args.action)(args.id)
        print("%s: %d item%s" % (
            "due now" if args.action == "retry" else "purged", count,
            "" if count == 1 else "s"))
        return 0 if count or args.id is None else 1
    finally:
        queue.close()
