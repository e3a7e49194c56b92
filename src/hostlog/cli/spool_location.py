"""The options that name a spool (``-D``, ``-c``, ``--key-file``), shared by
``hostlog query`` and ``hostlog spool``."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_spool_location", "spool_location"]


def add_spool_location(p: argparse.ArgumentParser) -> None:
    p.add_argument("-D", "--directory", metavar="DIR",
                   help="spool directory (<state_dir>/spool; default: the agent's)")
    p.add_argument("-c", "--config", metavar="FILE", help="take the spool from this agent config")
    p.add_argument("--key-file", metavar="FILE",
                   help="key file (default: the one the spool records, else DIR/../spool.key)")


def spool_location(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """The spool directory and key file the options name."""
    key = Path(args.key_file) if args.key_file else None
    if args.directory:
        return Path(args.directory), key
    if not args.config:
        # the built-in default's spool, found without loading the config
        # schema; its key file is the one the spool records
        from hostlog.paths import builtin_state_dir
        return builtin_state_dir()[0] / "spool", key
    from hostlog.config import load_config

    config = load_config(args.config)
    return config.spool_dir, key or config.spool_key_file()
