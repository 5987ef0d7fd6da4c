"""Durable trial results: one JSON line per finished trial in the study's folder, fsynced before
anything else (tracking included) happens to it. Tracking is fed from here, so it can be replayed."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path


def _plain(value):
    """JSON-safe: non-finite floats become strings ('nan', 'inf', '-inf')."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def encode(record: dict) -> str:
    """One record as its JSON line's text (keys sorted, non-finite floats as strings)."""
    return json.dumps(_plain(record), sort_keys=True)


class Encoded(dict):
    """A dict that carries its own JSON text (:func:`encode`), made where it was computed: a trial's result is
    encoded by its worker, so the driver's record of it costs no float formatting (~0.5 ms a trial). Pickles as
    a plain dict."""

    def __init__(self, value: dict, text: str):
        super().__init__(value)
        self.text = text

    def __reduce__(self):
        return dict, (dict(self),)


def _line(record: dict) -> str:
    """A record's JSON line; an :class:`Encoded` ``result`` is written as its own text, last."""
    result = record.get("result")
    if not isinstance(result, Encoded):
        return encode(record) + "\n"
    head = encode({k: v for k, v in record.items() if k != "result"})
    return f'{head[:-1]}, "result": {result.text}}}\n'


class ResultStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "results.jsonl"

    def append(self, *records: dict) -> None:
        """One line per record, all made durable by one fsync (a pack's records arrive together)."""
        lines = "".join(_line(record) for record in records)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())

    def load(self) -> list[dict]:
        """Every complete record, the last one per trial key (a torn final line is ignored)."""
        if not self.path.exists():
            return []
        out: dict[str, dict] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            out[rec["key"]] = rec
        return list(out.values())
