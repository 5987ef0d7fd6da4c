"""`make paper-cluster`: the full-scale paper run submitted as a Ray job, and refused where its record would vanish."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_paper_cluster_submits_the_paper_entry_point_at_full_scale(tmp_path):
    (tmp_path / "jobs").mkdir()
    shutil.copy(ROOT / "jobs" / "submit.sh", tmp_path / "jobs" / "submit.sh")
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ray"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_TOKEN": "t0ken"}
    env.pop("ORTHOSCALE_ENTRY", None)
    proc = subprocess.run(["make", "-s", "paper-cluster", "ARGS=study.state_dir=/srv/paper data.root=/srv/mnist"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    argv = json.loads(proc.stdout)
    assert argv[argv.index("--") + 1:] == ["python", "-m", "orthoscale", "paper", "ray.address=auto",
                                           "paper.scale=full", "study.state_dir=/srv/paper", "data.root=/srv/mnist"]


def test_paper_as_a_ray_job_without_a_lasting_record_stops_before_any_study():
    env = {**os.environ, "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "orthoscale", "paper", "paper.scale=tiny"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "study.state_dir" in proc.stderr and "study " not in proc.stdout
