"""``hostlog``: the command line. Thin: parses arguments, calls the package."""

from __future__ import annotations

import argparse
import os
import sys

from hostlog import __version__
from hostlog.cli.spool_location import add_spool_location
from hostlog.errors import HostlogError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hostlog", description="A host log agent for Linux.")
    parser.add_argument("--version", action="version", version=f"hostlog {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    agent = sub.add_parser("agent", help="run the agent in the foreground")
    agent.add_argument("-c", "--config", metavar="FILE",
                       help="config file (default: the built-in default)")

    from hostlog.cli import ctl_cmd, key_cmd, logs_cmd, query_cmd, stats_cmd, tls_cmd
    query_cmd.add_parser(sub)
    stats_cmd.add_parser(sub)
    logs_cmd.add_parser(sub)
    ctl_cmd.add_parser(sub)
    tls_cmd.add_parser(sub)
    key_cmd.add_parser(sub)
    from hostlog.cli import patterns_cmd, rules_cmd
    rules_cmd.add_parser(sub)
    patterns_cmd.add_parser(sub)
    from hostlog.cli import report_cmd
    report_cmd.add_parser(sub)

    spool = sub.add_parser("spool", help="inspect a spool")
    spool_sub = spool.add_subparsers(dest="spool_command", metavar="ACTION", required=True)
    for name, text in (("verify", "check every frame; exit 1 on damage"),
                       ("stats", "segments, frames, records, bytes, compression, time range"),
                       ("rotate-key", "add a new key to the spool's key file (the agent writes new "
                                      "segments with it from its next start)")):
        p = spool_sub.add_parser(name, help=text)
        add_spool_location(p)
    from hostlog.cli import archive_cmd
    archive_cmd.add_parsers(spool_sub)  # archive, export, import

    config = sub.add_parser("config", help="check a config file")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = config_sub.add_parser("check", help="validate FILE and explain every error")
    check.add_argument("file", metavar="FILE")
    config_sub.add_parser("default", help="print the built-in default config as TOML")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "agent":
            from hostlog.agent.agent import run_agent
            return run_agent(args.config)
        if args.command == "query":
            from hostlog.cli import query_cmd
            return query_cmd.run(args)
        if args.command == "stats":
            return args.run_stats(args)
        if args.command == "report":
            return int(args.run_report(args))
        if args.command == "ctl":
            from hostlog.cli import ctl_cmd
            return ctl_cmd.run(args)
        if args.command == "tls":
            from hostlog.cli import tls_cmd
            return tls_cmd.run(args)
        if args.command == "key":
            from hostlog.cli import key_cmd
            return key_cmd.run(args)
        if args.command == "logs":
            from hostlog.cli import logs_cmd
            return logs_cmd.run(args)
        if args.command == "patterns":
            from hostlog.cli import patterns_cmd
            return patterns_cmd.run(args)
        if args.command == "rules":
            return int(args.run_rules(args))
        if args.command == "spool":
            from hostlog.cli import spool_cmd
            return spool_cmd.run(args)
        if args.command == "config":
            return config_command(args)
        parser.print_help()
        return 2
    except HostlogError as exc:
        print(f"hostlog: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader of our output went away (| head): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


def config_command(args: argparse.Namespace) -> int:
    from hostlog.config import ConfigError, default_config_toml, load_config

    if args.config_command == "default":
        sys.stdout.write(default_config_toml())
        return 0
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    names = ", ".join(s.name or "" for s in config.sources) or "none"
    print(f"{args.file}: OK ({len(config.sources)} sources: {names}; "
          f"{len(config.apps)} apps; spool {config.spool_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
