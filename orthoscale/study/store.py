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


class ResultStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "results.jsonl"

    def append(self, *records: dict) -> None:
        """One line per record, all made durable by one fsync (a pack's records arrive together)."""
        lines = "".join(json.dumps(_plain(record), sort_keys=True) + "\n" for record in records)
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
