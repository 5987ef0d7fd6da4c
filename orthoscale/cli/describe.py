"""`orthoscale sweep --help`: the families, the config groups and the most used keys, read from conf/ and the
schema (orthoscale/study/config.py), so the help cannot drift from them."""
from __future__ import annotations

import yaml

COMMON = ("model.depth", "model.width", "seed", "search.trials", "search.lr_min", "search.lr_max", "optim.retraction",
          "optim.method", "stop.tol", "stop.max_iters", "ray.cpus_per_trial", "ray.max_concurrent", "tracking.uri",
          "study.state_dir", "study.resume")


def families() -> list[tuple[str, str]]:
    from ..study.compose import CONF

    out = []
    for path in sorted((CONF / "family").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text()) or {}
        out.append((path.stem, (spec.get("family") or {}).get("description", "")))
    return out


def sweep_help() -> str:
    from ..study.compose import CONF, _groups, _options
    from ..study.config import Config
    from ..study.typed import leaf_keys

    keys = leaf_keys(Config)
    lines = ["usage: orthoscale sweep [-m] [key=value | key=v1,v2,… | group=option]…",
             "       (python -m orthoscale.sweep … is the same command)", "",
             "A study: one Optuna search of the step size μ per cell of the family's grid, every trial fanned out by",
             "Ray Tune and recorded in MLflow. A list value (model.depth=2,4,8, seed=range(3)) becomes a grid axis;",
             "with -m/--multirun lists expand into one study per combination. --cfg job prints the composed config.",
             "", "families (family=…):"]
    lines += [f"  {name:<16} {text}" for name, text in families()]
    lines += ["", "config groups (group=option):"]
    lines += [f"  {g:<9} {' | '.join(_options(g))}" for g in _groups() if g != "family"]
    lines += ["", "most used keys (default):"]
    lines += [f"  {k:<20} {keys[k][1]!r}" for k in COMMON]
    lines += ["", "every key, its type and what it allows: README's key table, or "
              f"{CONF / 'config.yaml'} and its groups"]
    return "\n".join(lines)
