"""The study's typed schema: validate() turns a plain dict into a Config or one line naming the key; the key table."""
from __future__ import annotations

import dataclasses
import re

import pytest

from orthoscale import stiefel
from orthoscale.study.config import (TRACKING_SCHEMES, Config, ConfigError, MnistData, TeacherData, to_dict, upgrade,
                                     validate, widths)
from orthoscale.study.typed import get_path, leaf_keys, set_path
from orthoscale.study.keytable import markdown_table

DEFAULTS = to_dict(Config())


def rejected(raw: dict) -> str:
    """The message of the ConfigError that ``raw`` raises: one line."""
    with pytest.raises(ConfigError) as info:
        validate(raw)
    text = str(info.value)
    assert "\n" not in text, text
    return text


def with_(*pairs) -> dict:
    """DEFAULTS with ``pairs`` set; data.kind=k chooses the data group k (its keys take their defaults)."""
    raw = DEFAULTS
    for key, value in pairs:
        raw = set_path(raw, "data", {"kind": value}) if key == "data.kind" else set_path(raw, key, value)
    return raw


def test_defaults_validate_to_the_default_config_and_missing_keys_take_defaults():
    assert validate(DEFAULTS) == Config()
    assert validate({}) == Config()
    cfg = validate({"model": {"depth": 3}})
    assert cfg.model.depth == 3 and cfg.model.width == Config().model.width and cfg.optim == Config().optim


def test_set_path_copies_and_get_path_reads():
    raw = set_path(DEFAULTS, "model.depth", 5)
    assert get_path(raw, "model.depth") == 5 and get_path(DEFAULTS, "model.depth") == Config().model.depth
    assert set_path({}, "a.b.c", 1) == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize("raw,start", [({"model": {"dpeth": 3}}, "model.dpeth: unknown key; allowed: depth, width"),
                                       ({"nope": 1}, "nope: unknown key; allowed: model, data"),
                                       ({"stop": {"tolerance": 1e-3}}, "stop.tolerance: unknown key")])
def test_an_unknown_key_is_named_with_the_allowed_ones(raw, start):
    assert rejected(raw).startswith(start)


@pytest.mark.parametrize("key,value,why", [
    ("model.depth", "8", "must be an integer"), ("model.depth", 2.5, "must be an integer"),
    ("model.depth", True, "must be an integer"), ("optim.lr", "fast", "must be a finite number"),
    ("optim.lr", float("nan"), "must be a finite number"), ("optim.lr", float("inf"), "must be a finite number"),
    ("optim.lr", False, "must be a finite number"), ("study.resume", 1, "must be true or false"),
    ("model.free_layer", 3, "must be a string"), ("family.grid", [1, 2], "must be a mapping"),
    ("model.depth", None, "a value is required"),
])
def test_a_value_of_the_wrong_type_is_named(key, value, why):
    text = rejected(with_((key, value)))
    assert text.startswith(f"{key}=") and text.endswith(why)


def test_a_group_that_is_not_a_mapping_is_named():
    assert rejected({"model": 5}) == "model=5: must be a mapping"


def test_whole_numbers_become_ints_and_ints_become_floats():
    cfg = validate(with_(("model.depth", 4.0), ("optim.lr", 1)))
    assert cfg.model.depth == 4 and type(cfg.model.depth) is int
    assert cfg.optim.lr == 1.0 and type(cfg.optim.lr) is float
    assert validate(with_(("tracking.uri", None))).tracking.uri is None  # optional keys take null


@pytest.mark.parametrize("key,value,bound", [
    ("model.depth", 0, "≥ 1"), ("model.depth", 4097, "≤ 4096"), ("optim.lr", 0, "> 0"), ("optim.lr", -1e-3, "> 0"),
    ("stop.tol", 1.0, "< 1"), ("stop.diverge_factor", 1.0, "> 1"),
    ("study.verbose", 4, "≤ 3"), ("data.condition", 0.5, "≥ 1"),
])
def test_a_value_out_of_range_is_named_with_its_bound(key, value, bound):
    text = rejected(with_((key, value)))
    assert text.startswith(f"{key}={value}") and text.endswith(f"must be {bound}")


def test_each_data_group_has_its_own_keys():
    """data=teacher and data=mnist are two dataclasses: a key of the other group is unknown, and named."""
    assert isinstance(validate(with_(("data.kind", "mnist"), ("model.width", 10), ("model.init", "random"))).data,
                      MnistData)
    assert isinstance(Config().data, TeacherData)
    text = rejected(with_(("data.whiten_eps", 0.1)))
    assert text.startswith("data.whiten_eps: unknown key of data.kind='teacher' (the group data=teacher)")
    text = rejected(with_(("data.kind", "mnist"), ("data.input_dim", 5)))
    assert text.startswith("data.input_dim: unknown key of data.kind='mnist'")
    assert rejected(with_(("data.kind", "images"))) == "data.kind='images': must be one of teacher, mnist"
    text = rejected(with_(("data.kind", "mnist"), ("data.whiten_eps", 1.0)))
    assert text == "data.whiten_eps=1.0: must be < 1"


@pytest.mark.parametrize("key,value", [("model.depth", 1), ("data.condition", 1.0), ("data.noise", 0.0),
                                       ("study.verbose", 3), ("search.penalty", 0.0)])
def test_the_bounds_themselves_are_allowed_where_inclusive(key, value):
    assert get_path(to_dict(validate(with_((key, value)))), key) == value


def test_a_choice_outside_its_options_lists_them():
    text = rejected(with_(("optim.retraction", "polr")))
    assert text == f"optim.retraction='polr': must be one of {', '.join(stiefel.RETRACTIONS)}"
    for option in stiefel.RETRACTIONS:
        assert validate(with_(("optim.retraction", option))).optim.retraction == option


@pytest.mark.parametrize("pairs,start", [
    ((("search.lr_min", 1.0), ("search.lr_max", 0.5)), "search.lr_min=1.0: must be < search.lr_max=0.5"),
    ((("search.lr_min", 0.5), ("search.lr_max", 0.5)), "search.lr_min=0.5: must be < search.lr_max=0.5"),
    ((("data.samples", 8),), "data.samples=8: must be ≥ data.input_dim=16"),
    ((("model.width", 32),), "model.depth=8, model.width=32, data.input_dim=16, data.output_dim=16: layer 8"),
    ((("data.kind", "mnist"),), "model.depth=8, model.width=16, data.kind='mnist': layer 8"),  # 10 classes < 16
    ((("data.kind", "mnist"), ("model.width", 10)), "model.init='teacher_perturbed': needs a teacher"),
    ((("model.init", "spectral"), ("model.free_layer", "none")),
     "model.init='spectral': a spectral start needs a free layer"),
    ((("tracking.uri", "ftp://host/x"),), "tracking.uri='ftp://host/x': MLflow cannot use 'ftp'"),
    ((("tracking.uri", "C:\\mlruns"),), "tracking.uri='C:\\\\mlruns': MLflow cannot use 'c'"),
])
def test_rules_across_keys_name_the_key(pairs, start):
    assert rejected(with_(*pairs)).startswith(start)


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "https://user@host/mlflow", "sqlite:///x/mlflow.db",
                                 "postgresql+psycopg2://u@db:5432/mlflow", "file:///tmp/mlruns", "databricks"])
def test_tracking_uris_of_the_schemes_mlflow_reads_are_accepted(uri):
    assert validate(with_(("tracking.uri", uri))).tracking.uri == uri
    assert uri.split(":")[0].split("+")[0] in TRACKING_SCHEMES


def test_mnist_with_teacher_targets_or_a_random_init_is_allowed():
    mnist = ("data.kind", "mnist"), ("model.width", 10)  # ≤ 10 classes: the last layer has orthonormal columns
    assert validate(with_(*mnist, ("data.targets", "teacher"))).data.kind == "mnist"
    assert validate(with_(*mnist, ("model.init", "random"))).model.init == "random"


def test_widths_follow_depth_width_and_the_data():
    cfg = validate(with_(("model.depth", 3), ("model.width", 7), ("data.input_dim", 5), ("data.output_dim", 9)))
    assert widths(cfg) == (5, 7, 7, 9)
    assert widths(cfg, input_dim=3) == (3, 7, 7, 9)
    mnist = validate(with_(("data.kind", "mnist"), ("data.targets", "teacher"), ("model.depth", 2),
                           ("model.width", 10)))
    assert widths(mnist) == (784, 10, 10)


def test_leaf_keys_cover_every_field_with_its_default():
    keys = leaf_keys(Config)
    for key, (_, value, _) in keys.items():
        node = Config(data=MnistData()) if key.split(".")[-1] in ("targets", "whiten", "whiten_eps", "root") \
            else Config()
        for part in key.split("."):
            node = getattr(node, part)
        assert node == value, key
    assert {k.split(".")[0] for k in keys} == {f.name for f in dataclasses.fields(Config)}
    assert len(keys) == len(set(keys)) and "seed" in keys and "stop.tol" in keys and "model.depth" in keys


def test_markdown_table_has_one_row_per_leaf_key_with_its_allowed_values():
    rows = markdown_table().splitlines()
    keys = leaf_keys(Config)
    shown = [re.match(r"\| `([^`]+)`", r)[1] for r in rows[2:]]
    assert list(dict.fromkeys(shown)) == list(keys)  # every key; keys the data groups declare apart, once each
    assert shown.count("data.samples") == 2 and shown.count("data.condition") == 1
    assert "| `data.samples` (data=mnist) | int | `0` | ≥ 0 |" in rows
    for row, key in zip(rows[2:], shown):
        _, default, meta = keys[key]
        if "(data=mnist)" in row:
            continue
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        if "choices" in meta:
            assert cells[-1] == " \\| ".join(meta["choices"]), key
            assert default in meta["choices"], key
        for name, word in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if name in meta:
                assert f"{word} {meta[name]:g}" in cells[-1], key
    depth = next(r for r in rows if r.startswith("| `model.depth` |"))
    assert depth == "| `model.depth` | int | `8` | ≥ 1, ≤ 4096 |"


def test_a_plan_saved_with_both_data_groups_keys_is_read_as_its_group():
    """Plans saved before data=teacher | mnist were two groups carry all data keys; upgrade keeps the group's."""
    old = set_path(set_path(DEFAULTS, "data.targets", "onehot"), "data.whiten", "subspace")
    assert rejected(old).startswith("data.targets: unknown key")
    assert validate(upgrade(old)) == Config()
    old_mnist = set_path(with_(("data.kind", "mnist"), ("model.width", 10), ("model.init", "random")),
                         "data.input_dim", 784)
    assert isinstance(validate(upgrade(old_mnist)).data, MnistData)
