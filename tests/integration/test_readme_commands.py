"""Every command of README's tested block runs, at tiny scale, exactly as written plus small overrides."""
from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.integration
TINY = ["model.depth=2", "seed=0", "search.trials=1", "model.width=4", "stop.max_iters=60", "tracking.curve_points=10"]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash tested\n(.*?)```", text, re.S)
    assert blocks, "README has no tested block"
    return [ln.split("  #")[0].strip() for b in blocks for ln in b.splitlines() if ln.strip()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_commands_run(tmp_path):
    state = tmp_path / "state"
    extra = TINY + [f"study.state_dir={state}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    commands = readme_commands()
    assert any(c.startswith("make sweep") for c in commands) and any(c.startswith("make ui") for c in commands)
    for cmd in commands:
        if cmd.startswith("make ui"):
            port = _free_port()
            proc = subprocess.Popen(shlex.split(cmd) + [f"STATE={state}", f"PORT={port}"], cwd=ROOT, env=env,
                                    start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.time() + 120
                while True:
                    try:
                        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
                        break
                    except OSError:
                        assert time.time() < deadline, "make ui never answered"
                        time.sleep(0.5)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            continue
        if cmd.startswith("make sweep"):
            argv = shlex.split(cmd) + ["ARGS=" + " ".join(extra)]
        elif "orthoscale report" in cmd:
            argv = shlex.split(cmd) + [f"study.state_dir={state}"]
        else:
            argv = shlex.split(cmd) + extra
        out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{cmd}\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}"
