"""The ``mrp-gpu`` command line, one module per family of commands.

``prune`` and ``apply`` (:mod:`.prune`), ``train``, ``finetune`` and ``eval``
(:mod:`.train`), ``analyze``, ``check``, ``models`` and ``bench`` (:mod:`.inspect`); the
config flags come from :mod:`.options`.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import MRPError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__
    from . import inspect, prune, train

    parser = argparse.ArgumentParser(prog="mrp-gpu", description="Maximum Redundancy Pruning of neural networks.")
    parser.add_argument("--version", action="version", version=f"mrp-gpu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    train.register(sub)
    prune.register(sub)
    inspect.register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "out", None) and args.command in ("prune", "apply") and not getattr(args, "print_config", 0):
            from ..io import check_output_dir

            check_output_dir(args.out, force=args.force)  # before any work, not after it
        return args.func(args)
    except MRPError as e:
        print(f"mrp-gpu {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        atomic = args.command in ("prune", "apply")  # outputs appear whole or not at all
        print(f"mrp-gpu {args.command}: interrupted" + (f"; nothing was written to {args.out}" if atomic else ""),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
