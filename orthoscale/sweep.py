"""`python -m orthoscale.sweep [-m] [overrides…]`: an alias of `orthoscale sweep …` (orthoscale.cli.sweep)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
