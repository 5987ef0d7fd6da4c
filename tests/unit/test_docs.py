"""Docs and configs cannot drift from the schema."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from orthoscale.study.compose import plan
from orthoscale.study.config import Config, MnistData, TeacherData, to_dict
from orthoscale.study.typed import leaf_keys
from orthoscale.study.keytable import markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_key_table_is_generated_from_the_schema():
    text = (ROOT / "README.md").read_text()
    body = text[text.index("<!-- keys:start -->") + len("<!-- keys:start -->"):text.index("<!-- keys:end -->")]
    assert body.strip() == markdown_table().strip()


@pytest.mark.parametrize("group,data,model", [("teacher", TeacherData(), []),
                                              ("mnist", MnistData(), ["model.width=10", "model.init=random"])])
def test_conf_defaults_equal_schema_defaults(group, data, model):
    """Each data group's yaml holds exactly its dataclass's keys, with the same defaults (as do the others)."""
    (cfg, _, cells), = plan([f"data={group}", *model], grid=False)
    composed = cells[0].config
    schema = to_dict(replace(Config(), data=data, model=cells[0].cfg.model))
    assert set(composed["data"]) == set(schema["data"])
    for key in leaf_keys(Config):
        if key.startswith("family.") or (key.startswith("data.") and key.split(".")[1] not in schema["data"]):
            continue
        node_c, node_s = composed, schema
        for part in key.split("."):
            node_c, node_s = node_c[part], node_s[part]
        assert node_c == node_s, f"{key}: conf/ has {node_c!r}, the schema {node_s!r}"
