"""The ``datamap`` command: small utilities around the pipeline.

Every subcommand turns a :class:`~datamap.io.DatamapError` into one line on stderr and exit
code 2, as the stage scripts do.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from datamap.io import DatamapError

log = logging.getLogger("datamap")


def _compose(args: argparse.Namespace) -> int:
    from datamap.config import stale_params, write_params

    if args.check:
        message = stale_params(args.output, args.config_dir)
        if message:
            print(message, file=sys.stderr)
            return 1
        print(f"{args.output} is up to date with {args.config_dir}/")
        return 0
    path = write_params(args.output, args.config_dir, args.overrides)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datamap", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "compose",
        help="compose conf/ into params.yaml (run after editing conf/)",
        description="Compose the Hydra config tree into params.yaml exactly as "
        "`dvc exp run` does with hydra.enabled.",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.max_epochs=5")
    p.add_argument("--config-dir", default="conf")
    p.add_argument("--output", default="params.yaml")
    p.add_argument("--check", action="store_true",
                   help="only check that the file is fresh; exit 1 when stale")
    p.set_defaults(func=_compose)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


#: Modules add subcommands here (each a function taking the subparsers object).
_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DatamapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
