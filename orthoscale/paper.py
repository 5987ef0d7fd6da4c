"""`python -m orthoscale.paper [paper.scale=small|full] [overrides…]` (and `make paper`): the paper's experiments."""
import sys

from .study.paper import main

if __name__ == "__main__":
    sys.exit(main())
