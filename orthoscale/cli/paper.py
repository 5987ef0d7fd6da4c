"""`orthoscale paper [paper.scale=tiny|small|full] [overrides…]` (and `make paper`): the paper's MNIST experiments
as four studies, the basin and global studies beyond the local rate (orthoscale/study/paper.py), and one Markdown
report with its figures."""
from __future__ import annotations

HELP = __doc__.strip()


def run(args: list[str]) -> int:
    from ..study.paper import run_paper

    scale = next((a.split("=", 1)[1] for a in args if a.startswith("paper.scale=")), "small")
    path = run_paper(scale, [a for a in args if not a.startswith("paper.scale=")])
    print(f"\nreport: {path}")
    return 0
