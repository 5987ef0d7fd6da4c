"""Docs and configs cannot drift from the schema."""
from __future__ import annotations

from pathlib import Path

from orthoscale.study.compose import plan
from orthoscale.study.config import Config, leaf_keys, markdown_table, to_dict

ROOT = Path(__file__).resolve().parents[2]


def test_readme_key_table_is_generated_from_the_schema():
    text = (ROOT / "README.md").read_text()
    body = text[text.index("<!-- keys:start -->") + len("<!-- keys:start -->"):text.index("<!-- keys:end -->")]
    assert body.strip() == markdown_table().strip()


def test_conf_defaults_equal_schema_defaults():
    (cfg, _, cells), = plan([], grid=False)
    composed, schema = cells[0].config, to_dict(Config())
    for key in leaf_keys():
        if key.startswith("family."):
            continue
        node_c, node_s = composed, schema
        for part in key.split("."):
            node_c, node_s = node_c[part], node_s[part]
        assert node_c == node_s, f"{key}: conf/ has {node_c!r}, the schema {node_s!r}"
