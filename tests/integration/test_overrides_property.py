"""Bad input, generated: every random override set validates or exits 2 with one line naming a key it set."""
from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orthoscale import sweep
from orthoscale.study.compose import CONF
from orthoscale.study.config import Config
from orthoscale.study.typed import leaf_keys

KEYS = {k: meta for k, (_, _, meta) in leaf_keys(Config).items()}
GROUPS = {p.name: sorted(x.stem for x in p.glob("*.yaml")) for p in CONF.iterdir() if p.is_dir()}


def keys_set(overrides: list[str]) -> set[str]:
    """The keys of an override set and their groups: a rejection must name one of these, not any known name."""
    keys = {ov.partition("=")[0] for ov in overrides}
    return keys | {k.split(".")[0] for k in keys}


values = st.one_of(
    st.integers(-10, 5000).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["null", "true", "false", "''", "abc", "1e-12", "1e12", "-1", "0", "[1,2]", "{a: 1}", "nan"]),
    st.text("abcdefxyz_-.0123456789", min_size=0, max_size=8),
)


@st.composite
def override(draw):
    if draw(st.integers(0, 4)) == 0:
        group = draw(st.sampled_from(sorted(GROUPS)))
        return f"{group}={draw(st.one_of(st.sampled_from(GROUPS[group]), st.text('abcxyz', min_size=1, max_size=5)))}"
    key = draw(st.sampled_from(sorted(KEYS)))
    choices = KEYS[key].get("choices")
    value = draw(st.sampled_from(choices) if choices and draw(st.booleans()) else values)
    return f"{key}={value}"


@settings(max_examples=500, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(override(), min_size=1, max_size=3))
def test_random_overrides_validate_or_exit_2_naming_a_key(overrides):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = sweep.main(["--cfg", *overrides])
    assert code in (0, 2), (overrides, err.getvalue())
    if code == 2:
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1, (overrides, lines)
        assert lines[0].startswith("orthoscale: invalid config: ")
        named = lines[0].removeprefix("orthoscale: invalid config: ")
        assert any(name in named for name in keys_set(overrides)), (overrides, lines[0])
    else:
        assert '"cells"' in out.getvalue()


pytestmark = pytest.mark.integration
