"""The cells of a study: the product of the family's grid, each a resolved, validated config."""
from __future__ import annotations

import json

import pytest

from orthoscale.study.cells import Cell, expand
from orthoscale.study.config import Config, ConfigError, to_dict
from orthoscale.study.typed import get_path, set_path

DEFAULTS = to_dict(Config())


def grid(axes: dict, raw: dict = DEFAULTS) -> dict:
    return set_path(raw, "family.grid", axes)


def test_the_grid_is_the_cartesian_product_in_order():
    cells = expand(grid({"model.depth": [2, 3], "seed": [0, 1, 2]}))
    assert [c.index for c in cells] == list(range(6))
    assert [(c.get("model.depth"), c.get("seed")) for c in cells] == [(d, s) for d in (2, 3) for s in (0, 1, 2)]
    first = cells[0]
    assert first.values == (("model.depth", 2), ("seed", 0))
    assert first.id == "depth=2,seed=0" and first.overrides == ["model.depth=2", "seed=0"]
    assert {c.series for c in cells} == {"all"}  # depth and seed only: one series
    assert all(c.get("model.width") == DEFAULTS["model"]["width"] for c in cells)


def test_an_empty_grid_is_one_cell_of_the_config_itself():
    (cell,) = expand(grid({}))
    assert cell.id == "all" and cell.series == "all" and cell.overrides == [] and cell.values == ()
    assert cell.config == DEFAULTS


def test_variants_set_several_keys_under_one_name():
    variants = [{"name": "slow", "optim.lr": 0.01, "model.width": 8}, {"name": "fast", "optim.lr": 0.5}]
    cells = expand(grid({"speed": variants, "model.depth": [2, 4]}))
    assert [c.id for c in cells] == ["speed=slow,depth=2", "speed=slow,depth=4", "speed=fast,depth=2",
                                     "speed=fast,depth=4"]
    slow = cells[0]
    assert slow.settings == (("optim.lr", 0.01), ("model.width", 8), ("model.depth", 2))
    assert slow.get("optim.lr") == 0.01 and slow.get("model.width") == 8
    assert cells[2].get("model.width") == DEFAULTS["model"]["width"]  # a variant sets only its own keys
    assert [c.series for c in cells] == ["speed=slow", "speed=slow", "speed=fast", "speed=fast"]
    assert slow.overrides == ["optim.lr=0.01", "model.width=8", "model.depth=2"]


def test_values_and_settings_are_the_validated_ones_and_strings_are_quoted_for_hydra():
    cells = expand(grid({"model.depth": [2.0], "optim.retraction": ["qr", "cayley"]}))
    assert cells[0].values == (("model.depth", 2), ("optim.retraction", "qr"))
    assert type(cells[0].get("model.depth")) is int
    assert cells[1].overrides == ["model.depth=2", 'optim.retraction="cayley"']
    assert cells[1].series == "retraction=cayley"


def test_interpolations_follow_each_cells_grid_values():
    raw = set_path(DEFAULTS, "data.output_dim", "${model.width}")
    cells = expand(grid({"model.width": [16, 24]}, raw))
    assert [c.get("data.output_dim") for c in cells] == [16, 24]
    assert get_path(raw, "data.output_dim") == "${model.width}"  # the unresolved config is left as it was


def test_expand_leaves_its_input_unchanged():
    raw = grid({"model.depth": [2, 3]})
    before = json.dumps(raw, sort_keys=True)
    expand(raw)
    assert json.dumps(raw, sort_keys=True) == before


@pytest.mark.parametrize("axes,start", [
    ({"search.trials": [1, 2]}, "family.grid.search.trials: not a key a cell can vary"),
    ({"ray.num_cpus": [1]}, "family.grid.ray.num_cpus: not a key a cell can vary"),
    ({"model.depth": []}, "family.grid.model.depth=[]: must be a non-empty list"),
    ({"model.depth": 3}, "family.grid.model.depth=3: must be a non-empty list"),
    ({"speed": ["slow"]}, "family.grid.speed: not a config key, so its values must be mappings"),
    ({"speed": [{"optim.lr": 0.1}]}, "family.grid.speed: not a config key"),  # a variant needs a name
    ({"speed": [{"name": "x", "optim.rl": 0.1}]}, "family.grid.speed.optim.rl: unknown key"),
    ({"model.depth": [2, 0]}, "model.depth=0: must be ≥ 1"),  # every cell is validated
])
def test_bad_grids_are_one_line_naming_the_axis(axes, start):
    with pytest.raises(ConfigError) as info:
        expand(grid(axes))
    assert str(info.value).startswith(start) and "\n" not in str(info.value)


def test_a_cell_survives_a_json_round_trip():
    variants = [{"name": "slow", "optim.lr": 0.01}]
    for cell in expand(grid({"speed": variants, "model.depth": [2, 3], "optim.retraction": ["qr"]})):
        again = Cell.from_dict(json.loads(json.dumps(cell.to_dict())))
        assert again == cell
        assert (again.id, again.series, again.overrides) == (cell.id, cell.series, cell.overrides)
