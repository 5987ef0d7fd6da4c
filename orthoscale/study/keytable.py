"""README's key table, generated from the schema (orthoscale/study/config.py) so the docs cannot drift from the
code: ``python -m orthoscale.study.keytable``."""
from __future__ import annotations

import dataclasses
import typing

from .config import Config
from .typed import leaf_keys, variants


def markdown_table() -> str:
    """README's table of every key: generated from this schema, so docs cannot drift from the code."""
    def kind(tp) -> str:
        name = getattr(tp, "__name__", None) or str(tp)
        text = str(tp).replace("typing.", "") if name in ("Optional", "Union") or "|" in str(tp) else name
        return text.replace("|", "\\|")

    def allowed(meta: dict) -> str:
        if "choices" in meta:
            return " \\| ".join(meta["choices"])
        words = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
        return ", ".join(f"{words[k]} {v:g}" for k, v in meta.items() if k in words)

    rows = ["| key | type | default | allowed |", "|---|---|---|---|"]
    for key, label, (tp, default, meta) in _table_keys():
        shown = "{…}" if isinstance(default, dict) else ("null" if default is None else default)
        rows.append(f"| `{key}`{label} | {kind(tp)} | `{shown}` | {allowed(meta)} |")
    return "\n".join(rows)


def _table_keys():
    """(key, label, declaration) per row of the key table: a group's variants (data=teacher | mnist) each
    list their keys, labelled, where the variants differ."""
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        options = variants(hints[f.name])
        if len(options) < 2:
            yield from ((k, "", spec) for k, spec in leaf_keys(Config).items() if k.split(".")[0] == f.name)
            continue
        tables = [leaf_keys(v, f"{f.name}.") for v in options]
        for v, table in zip(options, tables):
            group = f" ({f.name}={v.__dataclass_fields__['kind'].default})"
            for key, spec in table.items():
                shared = all(key in t and t[key] == spec for t in tables)
                if not shared or v is options[0]:
                    yield key, "" if shared else group, spec


if __name__ == "__main__":
    print(markdown_table())
