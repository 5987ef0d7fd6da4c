"""`python -m orthoscale <command> …`: the command layer (orthoscale.cli)."""
import sys

from .cli import main

sys.exit(main())
