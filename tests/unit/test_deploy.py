"""Deployment files agree with the lock and with each other: Dockerfiles, compose, cluster launcher,
KubeRay manifests, the job-submission wrapper. No network, no Docker engine, no Kubernetes."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
JOBS = ROOT / "jobs"
RAY_SERVICES = ("ray-head", "ray-worker", "driver")


def lock_pin(name: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        pkg, sep, version = line.strip().partition("==")
        if sep and pkg.lower() == name.lower():
            return version
    raise AssertionError(f"{name} is not pinned in constraints.txt")


def project_python() -> str:
    """'3.11' from pyproject's requires-python (">=3.11,<3.12")."""
    text = (ROOT / "pyproject.toml").read_text()
    spec = re.search(r'^requires-python\s*=\s*"([^"]+)"', text, re.M).group(1)
    low = re.search(r">=\s*(\d+)\.(\d+)", spec)
    high = re.search(r"<\s*(\d+)\.(\d+)", spec)
    assert low and high and (int(high[1]), int(high[2])) == (int(low[1]), int(low[2]) + 1), \
        f"requires-python {spec!r} should name exactly one minor version"
    return f"{low[1]}.{low[2]}"


RAY = lock_pin("ray")
TORCH = lock_pin("torch")
PY = project_python()
PY_TAG = PY.replace(".", "")


# ---------------------------------------------------------------------------------------- Dockerfiles

def dockerfile(flavour: str) -> tuple[dict[str, str], str, list[str], str]:
    """(ARG defaults, resolved base image, instructions without comments, raw text)."""
    text = (DOCKER / f"Dockerfile.{flavour}").read_text()
    logical = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    lines = [l.strip() for l in logical.splitlines() if l.strip()]
    args: dict[str, str] = {}
    base = None
    for line in lines:
        word, _, rest = line.partition(" ")
        if word.upper() == "ARG" and "=" in rest:
            key, _, value = rest.strip().partition("=")
            args.setdefault(key, value.strip().strip('"'))
        if word.upper() == "FROM" and base is None:
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], rest.split()[0])
    assert base, f"Dockerfile.{flavour} has no FROM"
    return args, base, lines, text


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_dockerfile_base_matches_lock(flavour):
    args, base, _, _ = dockerfile(flavour)
    assert args["RAY_VERSION"] == RAY, "the image's Ray must be the lock's"
    assert args["PYTHON_VERSION"] == PY_TAG, f"the image's Python must be {PY} (pyproject)"
    assert base == f"rayproject/ray:{RAY}-py{PY_TAG}-{flavour}"
    assert args.get("TORCH_VERSION") == TORCH


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_dockerfile_installs_the_locked_project_as_ray(flavour):
    args, _, lines, _ = dockerfile(flavour)
    runs = [l for l in lines if l.upper().startswith("RUN ")]
    assert any(re.search(r"pip install (.* )?-c constraints\.txt \.( |$)", r) for r in runs)
    users = [l.split()[1] for l in lines if l.upper().startswith("USER ")]
    assert users and users[-1] == "ray", "the image must end up running as Ray's non-root user"
    assert any(l.upper().startswith("WORKDIR ") for l in lines)
    copied = " ".join(l for l in lines if l.upper().startswith(("COPY ", "ADD ")))
    assert "constraints.txt" in copied and "orthoscale" in copied and "conf" in copied
    for bad in (".venv", ".orthoscale", ".git ", "COPY . "):
        assert bad not in copied + " ", f"{bad.strip()} must not be copied into the image"
    for line in lines:  # nothing secret baked in
        word, _, rest = line.partition(" ")
        if word.upper() in ("ENV", "ARG"):
            assert not re.search(r"TOKEN|PASSWORD|SECRET|_KEY\b", rest, re.I), line


def test_cpu_image_takes_cpu_torch_and_gpu_image_cuda_torch():
    _, _, cpu, _ = dockerfile("cpu")
    _, _, gpu, _ = dockerfile("gpu")
    cpu_runs = " ".join(l for l in cpu if l.upper().startswith("RUN "))
    gpu_runs = " ".join(l for l in gpu if l.upper().startswith("RUN "))
    assert "download.pytorch.org/whl/cpu" in cpu_runs and "+cpu" in cpu_runs
    assert "whl/cpu" not in gpu_runs and "+cpu" not in gpu_runs
    assert "torch.version.cuda is None" in cpu_runs and "torch.version.cuda" in gpu_runs
    assert re.search(r"psycopg2-binary==\$\{PSYCOPG2_VERSION\}", cpu_runs)
    assert re.fullmatch(r"\d+\.\d+\.\d+", dockerfile("cpu")[0]["PSYCOPG2_VERSION"])


# ---------------------------------------------------------------------------------------- compose

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def published(service: dict) -> list[str]:
    return service.get("ports", []) or []


def host_ip(port) -> str | None:
    if isinstance(port, dict):
        return port.get("host_ip")
    parts = str(port).split(":")
    return parts[0] if len(parts) == 3 else None


def named_volumes(service: dict) -> list[str]:
    out = []
    for v in service.get("volumes", []) or []:
        if isinstance(v, dict):
            if v.get("type", "volume") == "volume" and v.get("source"):
                out.append(v["source"])
        else:
            source = str(v).split(":")[0]
            if ":" in str(v) and not source.startswith((".", "/", "~", "$")):
                out.append(source)
    return out


def depends(service: dict) -> dict[str, str]:
    dep = service.get("depends_on") or {}
    return {name: "service_started" for name in dep} if isinstance(dep, list) else \
        {name: (spec or {}).get("condition", "service_started") for name, spec in dep.items()}


def command(service: dict) -> str:
    parts = [service.get("entrypoint") or [], service.get("command") or []]
    return " ".join(" ".join(p) if isinstance(p, list) else str(p) for p in parts)


def test_compose_services_and_ports(compose):
    services = compose["services"]
    assert {"postgres", "mlflow", "ray-head", "ray-worker"} <= set(services)
    for name, svc in services.items():
        for port in published(svc):
            assert host_ip(port) == "127.0.0.1", f"{name} publishes {port!r} beyond the loopback interface"
        assert "network_mode" not in svc or svc["network_mode"] != "host", name
    assert not published(services["ray-worker"]), "workers scale; they publish nothing"
    assert not published(services["postgres"]), "the database is not published"
    assert "container_name" not in services["ray-worker"], "a fixed name would stop --scale"
    assert [str(p) for p in published(services["mlflow"])] == ["127.0.0.1:5000:5000"]
    assert [str(p) for p in published(services["ray-head"])] == ["127.0.0.1:8265:8265"]


def test_compose_dependencies_are_healthchecked(compose):
    services = compose["services"]
    needed = {dep for svc in services.values() for dep in depends(svc)}
    assert needed, "services should wait for what they use"
    for name, svc in services.items():
        for dep, condition in depends(svc).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert condition == "service_healthy", f"{name} should wait for {dep} to be healthy"
    for dep in needed:
        test = (services[dep].get("healthcheck") or {}).get("test")
        assert test and test != ["NONE"], f"{dep} is depended on but has no healthcheck"
    assert depends(services["ray-worker"]) == {"ray-head": "service_healthy"}
    assert depends(services["mlflow"]) == {"postgres": "service_healthy"}
    assert "pg_isready" in str(services["postgres"]["healthcheck"]["test"])
    assert "ray status" in str(services["ray-head"]["healthcheck"]["test"])
    assert "/health" in str(services["mlflow"]["healthcheck"]["test"])


def test_compose_volumes_are_declared(compose):
    declared = set(compose.get("volumes") or {})
    used = {v for svc in compose["services"].values() for v in named_volumes(svc)}
    assert used, "postgres, mlflow and the Ray nodes keep their data on volumes"
    assert used <= declared, f"undeclared volumes: {sorted(used - declared)}"
    assert "/var/lib/postgresql/data" in str(compose["services"]["postgres"]["volumes"])
    state = {str(v) for name in RAY_SERVICES for v in compose["services"][name].get("volumes", [])}
    assert len(state) == 1, "every Ray container mounts the same state volume at the same path"


def test_compose_images_and_commands(compose):
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:16"
    for name in ("mlflow", *RAY_SERVICES):
        svc = services[name]
        build = svc["build"]
        assert build["dockerfile"] == "docker/Dockerfile.cpu"
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile.cpu"
        assert build["args"] == {"RAY_VERSION": RAY, "PYTHON_VERSION": PY_TAG}
        assert f"ray{RAY}-py{PY_TAG}-cpu" in svc["image"]
    mlflow = command(services["mlflow"])
    for piece in ("mlflow server", "--backend-store-uri postgresql+psycopg2://", "@postgres/mlflow",
                  "--artifacts-destination /artifacts", "--serve-artifacts", "--host 0.0.0.0", "--port 5000",
                  "--workers 1"):
        assert piece in mlflow, piece
    hosts = mlflow.split("--allowed-hosts ")[1].split()[0].split(",")
    assert "mlflow:5000" in hosts, "the Ray containers reach MLflow as http://mlflow:5000"
    assert str(services["mlflow"]["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]).lower() == "false"
    assert "${POSTGRES_PASSWORD" in mlflow
    assert "${POSTGRES_PASSWORD" in services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    head = command(services["ray-head"])
    assert all(p in head for p in ("ray start", "--head", "--port=6379", "--dashboard-host=0.0.0.0", "--block"))
    worker = command(services["ray-worker"])
    assert all(p in worker for p in ("ray start", "--address=ray-head:6379", "--block"))
    assert "python -m orthoscale.sweep" in command(services["driver"]) and services["driver"].get("profiles")
    for name in RAY_SERVICES:
        assert services[name].get("shm_size"), f"{name}: Ray's object store wants a larger /dev/shm"


def test_compose_ray_token_comes_from_the_environment(compose):
    for name in RAY_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token", f"{name}: token authentication stays on"
        assert re.fullmatch(r"\$\{RAY_AUTH_TOKEN(:\?[^}]*)?\}", env["RAY_AUTH_TOKEN"]), \
            f"{name}: the token is interpolated from the host environment, never written here"
    text = (DOCKER / "compose.yaml").read_text()
    assert "RAY_AUTH_MODE: disabled" not in text and "RAY_AUTH_MODE=disabled" not in text


def docker_compose_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def test_docker_compose_config_accepts_the_file():
    """`docker compose config` where the client has the plugin; elsewhere the file must at least load as YAML
    with the services the schema checks above inspect in detail."""
    if not docker_compose_available():
        spec = yaml.safe_load((DOCKER / "compose.yaml").read_text())
        assert {"postgres", "mlflow", "ray-head", "ray-worker"} <= set(spec["services"])
        return
    env = {**os.environ, "RAY_AUTH_TOKEN": "0" * 64}
    proc = subprocess.run(["docker", "compose", "-f", str(DOCKER / "compose.yaml"), "config", "-q"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------- KubeRay

def manifests(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((JOBS / name).read_text()) if d]


def containers(cluster_spec: dict) -> list[tuple[str, dict]]:
    out = [("head", c) for c in cluster_spec["headGroupSpec"]["template"]["spec"]["containers"]]
    for group in cluster_spec["workerGroupSpecs"]:
        out += [(group["groupName"], c) for c in group["template"]["spec"]["containers"]]
    return out


def assert_token_from_secret(where: str, container: dict) -> None:
    env = {e["name"]: e for e in container.get("env", [])}
    assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{where}: RAY_AUTH_MODE=token"
    ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
    assert ref.get("name") and ref.get("key"), f"{where}: RAY_AUTH_TOKEN must come from a Secret"


def check_cluster_spec(spec: dict) -> None:
    assert str(spec["rayVersion"]) == RAY
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert {"cpu", "gpu"} <= set(groups)
    for where, c in containers(spec):
        assert c["image"].endswith(f"ray{RAY}-py{PY_TAG}-{'gpu' if where == 'gpu' else 'cpu'}"), c["image"]
        assert_token_from_secret(where, c)
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
    assert int(gpu["limits"]["nvidia.com/gpu"]) >= 1
    for where, c in containers(spec):
        if where != "gpu":
            assert "nvidia.com/gpu" not in str(c.get("resources", {})), where
    for g in groups.values():
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], g["groupName"]


def test_raycluster_manifest():
    (doc,) = [d for d in manifests("raycluster.yaml") if d.get("kind") == "RayCluster"]
    assert doc["apiVersion"] == "ray.io/v1"
    check_cluster_spec(doc["spec"])


def test_rayjob_manifest():
    (doc,) = [d for d in manifests("rayjob.yaml") if d.get("kind") == "RayJob"]
    assert doc["apiVersion"] == "ray.io/v1"
    spec = doc["spec"]
    assert spec["entrypoint"].startswith("python -m orthoscale.sweep")
    assert "ray.address=auto" in spec["entrypoint"].split()
    assert spec["shutdownAfterJobFinishes"] is True
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"]
    assert {".venv", ".orthoscale", ".git"} <= set(runtime_env.get("excludes", []))
    assert ("rayClusterSpec" in spec) != ("clusterSelector" in spec)
    check_cluster_spec(spec["rayClusterSpec"])
    (submitter,) = spec["submitterPodTemplate"]["spec"]["containers"]
    assert_token_from_secret("submitter", submitter)
    assert "command" not in submitter, "KubeRay fills in the `ray job submit` command"


def test_rayjob_entrypoint_overrides_compose():
    """The entrypoint's Hydra overrides are valid for this project's configs (composition only)."""
    from orthoscale.study.compose import plan

    (doc,) = [d for d in manifests("rayjob.yaml") if d.get("kind") == "RayJob"]
    words = shlex.split(doc["spec"]["entrypoint"])
    assert words[:3] == ["python", "-m", "orthoscale.sweep"]
    (cfg, _, cells), = plan(words[3:])
    assert cfg.ray.address == "auto" and cfg.tracking.uri == "http://mlflow:5000" and cells


# ---------------------------------------------------------------------------------------- cluster launcher

def test_cluster_launcher_config():
    cfg = yaml.safe_load((JOBS / "cluster.yaml").read_text())
    image = cfg["docker"]["image"]
    assert image and image.endswith(f"ray{RAY}-py{PY_TAG}-gpu"), image
    assert any("RAY_AUTH_MODE=token" in o for o in cfg["docker"].get("run_options", []))
    assert "~/.ray/auth_token" in cfg["file_mounts"], "the token reaches every node by file_mounts"
    assert "." in cfg["file_mounts"].values(), "the project is mounted"
    assert any("pip install" in c and "constraints.txt" in c for c in cfg["setup_commands"])
    head = cfg["available_node_types"][cfg["head_node_type"]]["node_config"]["InstanceType"]
    assert not head.startswith(("g", "p")), "the head is a CPU node"
    workers = [t for n, t in cfg["available_node_types"].items() if n != cfg["head_node_type"]]
    assert any(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in workers)
    for t in workers:
        assert 0 <= t["min_workers"] <= t["max_workers"] <= cfg["max_workers"]


def test_cluster_launcher_config_passes_rays_schema():
    """Ray's own validation of launcher configs (fills provider defaults; no cloud calls)."""
    import copy
    import logging

    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((JOBS / "cluster.yaml").read_text())
    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)
    validate_config(prepare_config(copy.deepcopy(cfg)))


# ---------------------------------------------------------------------------------------- submit.sh

SUBMIT = JOBS / "submit.sh"


def test_submit_script_is_valid_bash():
    assert os.stat(SUBMIT).st_mode & stat.S_IXUSR, "jobs/submit.sh must be executable"
    proc = subprocess.run(["bash", "-n", str(SUBMIT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = SUBMIT.read_text()
    assert "ray job submit" in text.replace('"$ray" job submit', "ray job submit")
    assert "set -euo pipefail" in text


def test_submit_script_requires_the_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
    proc = subprocess.run(["bash", str(SUBMIT), "family=width"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0 and "RAY_AUTH_TOKEN" in proc.stderr


def test_submit_script_command_line(tmp_path):
    """With a stand-in `ray` on PATH, the wrapper's exact `ray job submit` call and its environment."""
    (tmp_path / "jobs").mkdir()
    shutil.copy(SUBMIT, tmp_path / "jobs" / "submit.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ray"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "print(json.dumps({'argv': sys.argv[1:], 'mode': os.environ.get('RAY_AUTH_MODE'),\n"
                    "                  'token': os.environ.get('RAY_AUTH_TOKEN'), 'cwd': os.getcwd()}))\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_TOKEN": "t0ken"}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_JOB_FLAGS", None)
    env.pop("RAY_AUTH_MODE", None)
    proc = subprocess.run(["bash", str(tmp_path / "jobs" / "submit.sh"), "family=width", "search.trials=12"],
                          capture_output=True, text=True, env=env, timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["mode"] == "token" and out["token"] == "t0ken"
    assert Path(out["cwd"]).resolve() == tmp_path.resolve(), "submits the repository root as working dir"
    argv = out["argv"]
    assert argv[:6] == ["job", "submit", "--address", "http://127.0.0.1:8265", "--working-dir", "."]
    runtime_env = json.loads(argv[argv.index("--runtime-env-json") + 1])
    assert {".venv", ".orthoscale", ".git"} <= set(runtime_env["excludes"])
    assert argv[argv.index("--") + 1:] == ["python", "-m", "orthoscale.sweep", "ray.address=auto",
                                           "family=width", "search.trials=12"]
