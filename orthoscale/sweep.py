"""`python -m orthoscale.sweep [-m] [overrides…]`: an alias of `orthoscale sweep …` (orthoscale.cli.sweep)."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from .cli import main as cli

    return cli(["sweep", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    from .cli import leave

    leave(main())
