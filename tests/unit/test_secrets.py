"""Credentials never leave the process: redact() masks them in any structure; split_credentials moves them out."""
from __future__ import annotations

import pytest

from orthoscale.study.secrets import MASK, redact, split_credentials


@pytest.mark.parametrize("text,clean", [
    ("http://alice:s3cr3t@host:5000/x", f"http://alice:{MASK}@host:5000/x"),
    ("postgresql+psycopg2://u:p%40ss@db:5432/mlflow", f"postgresql+psycopg2://u:{MASK}@db:5432/mlflow"),
    ("https://:tok@host", f"https://:{MASK}@host"),
    ("tracking at HTTP://bob:pw@h and sqlite:///x.db", f"tracking at HTTP://bob:{MASK}@h and sqlite:///x.db"),
    ("db?password=hunter2&user=me", f"db?password={MASK}&user=me"),
    ("TOKEN=abc123 API_KEY=k1 api-key=k2 access_key=k3 secret=k4 pwd=k5",
     f"TOKEN={MASK} API_KEY={MASK} api-key={MASK} access_key={MASK} secret={MASK} pwd={MASK}"),
])
def test_credentials_in_text_are_masked(text, clean):
    assert redact(text) == clean


@pytest.mark.parametrize("text", ["http://host:5000/x", "sqlite:///a/b.db", "http://user@host", "lr=0.1 depth=8",
                                  "keypassword", "file:///tmp/a:b"])
def test_text_without_credentials_is_unchanged(text):
    assert redact(text) == text


def test_nested_structures_keep_their_shape_with_every_secret_masked():
    value = {"uri": "http://a:pw1@h", "args": ["x", ("token=pw2", 3)], "n": 1.5, "none": None,
             "deep": {"deeper": [{"s": "password=pw3"}]}}
    out = redact(value)
    assert out == {"uri": f"http://a:{MASK}@h", "args": ["x", (f"token={MASK}", 3)], "n": 1.5, "none": None,
                   "deep": {"deeper": [{"s": f"password={MASK}"}]}}
    assert type(out["args"][1]) is tuple
    assert not any(pw in repr(out) for pw in ("pw1", "pw2", "pw3"))
    assert value["uri"] == "http://a:pw1@h"  # the input is not changed


def test_split_credentials_moves_them_into_mlflows_environment():
    clean, env = split_credentials("https://alice:p%40ss%3Aw@mlflow.example:443/path")
    assert clean == "https://mlflow.example:443/path"
    assert env == {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "p@ss:w"}  # URL-decoded
    assert split_credentials("http://host:5000") == ("http://host:5000", {})
    assert split_credentials("sqlite:///x.db") == ("sqlite:///x.db", {})
