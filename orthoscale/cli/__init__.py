"""The commands a user types: ``orthoscale <command> [arguments…]`` (or ``python -m orthoscale <command> …``).

Each command is a module here with ``run(args) -> exit code`` and a ``HELP`` text; this one dispatches, answers
``--help``, and maps every configuration error to exit code 2 with one line naming the key (:func:`guarded`).
``python -m orthoscale.sweep …`` is kept as an alias of ``orthoscale sweep …``. Run as a program (:func:`entry`),
a command ends its process as soon as its work is durable (:func:`leave`).
"""
from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "sweep": "run a scaling study (Hydra overrides; -m for one study per combination)",
    "rerun": "one trial exactly as configured (the line every child run carries), logged as its own run",
    "sync": "replay a study's durable results into MLflow (after an outage)",
    "report": "re-render a study's table, laws and plots from its MLflow record alone",
    "paper": "the paper's MNIST experiments (four studies), the basin (δ and scale) and global studies, and their "
             "Markdown report",
}


def overview() -> str:
    lines = ["usage: orthoscale <command> [arguments…]   (or: python -m orthoscale <command> …)", "", "commands:"]
    lines += [f"  {name:<7} {text}" for name, text in COMMANDS.items()]
    lines += ["", "`orthoscale <command> --help` for a command's arguments; `orthoscale sweep --help` lists the",
              "families, the config groups and the most used keys. Bad input exits with code 2 and one line."]
    return "\n".join(lines)


def guarded(run, args: list[str]) -> int:
    """``run(args)``, with a configuration error as exit code 2 and one line (credentials redacted)."""
    from ..study.config import ConfigError
    from ..study.secrets import redact

    try:
        return run(args)
    except ConfigError as err:
        print(f"orthoscale: invalid config: {redact(str(err))}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(overview())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"orthoscale: unknown command {name!r}: one of {', '.join(COMMANDS)} (orthoscale --help)",
              file=sys.stderr)
        return 2
    command = importlib.import_module(f"{__name__}.{name}")
    if any(a in ("-h", "--help") for a in rest):
        print(command.help_text() if hasattr(command, "help_text") else command.HELP)
        return 0
    return guarded(command.run, rest)


def leave(code: int):
    """End the process with ``code`` once a command is done: output flushed and an embedded Ray shut down here,
    then the interpreter's own teardown is skipped (seconds with torch and Ray loaded; everything a command keeps
    is already fsynced, its MLflow calls answered and its tracking process ended)."""
    if "orthoscale.study.cluster" in sys.modules:
        sys.modules["orthoscale.study.cluster"].settle()
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def entry() -> None:
    """The ``orthoscale`` program: :func:`main` on ``sys.argv``, then :func:`leave`."""
    leave(main())
