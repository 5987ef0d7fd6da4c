"""`python -m orthoscale <command> …`: the command layer (orthoscale.cli)."""
from .cli import entry

entry()
