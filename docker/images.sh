#!/usr/bin/env bash
# `make images`: build the CPU image (and with GPU=1 the GPU image) and pick the PostgreSQL image of
# docker/compose.yaml. Needs a running Docker engine (`make engine`). Cached: a second run rebuilds nothing.
#
# Bases, in this order:
#   BASE=<image>                   the CPU image's base, as given;
#   Ray's official CPU image       where it is present or can be pulled (Dockerfile.cpu's default);
#   orthoscale-base:bookworm       else: Debian bookworm's python3, from Debian packages (docker/debian-base.sh).
# PostgreSQL: the official postgres:16 where it is present or can be pulled, else orthoscale-postgres:15-bookworm
# (docker/Dockerfile.postgres on Debian's PostgreSQL). The choice is written to .build/images.env
# (ORTHOSCALE_IMAGE=…, POSTGRES_IMAGE=…) for `docker compose --env-file` or `export`.
# The GPU image builds only on Ray's official GPU base, which brings CUDA; where it cannot be pulled,
# GPU=1 stops before anything is built (no CUDA wheels are downloaded on this host).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ray=$(sed -n 's/^ray==//p' constraints.txt)
py=$(sed -n 's/^requires-python *= *">=3\.\([0-9]*\),.*/3\1/p' pyproject.toml)
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml)
cpu_tag="orthoscale:${version}-ray${ray}-py${py}-cpu"
gpu_tag="orthoscale:${version}-ray${ray}-py${py}-gpu"
export DOCKER_BUILDKIT=0   # the classic builder: works with any engine, needs no buildx plugin and no registry

if ! docker info > /dev/null 2>&1; then
  echo "images: no Docker engine answers (start one with 'make engine')" >&2
  exit 2
fi

# present here, or pulled now (a registry that cannot be reached fails at once)
available() { docker image inspect "$1" > /dev/null 2>&1 || timeout 600 docker pull -q "$1" > /dev/null 2>&1; }

if [[ "${GPU:-0}" == 1 ]]; then
  gpu_base=${GPU_BASE:-rayproject/ray:${ray}-py${py}-gpu}
  if ! available "$gpu_base"; then
    echo "images: GPU=1 needs Ray's official GPU base $gpu_base, which cannot be pulled here;" >&2
    echo "  the GPU image is not built (it would need CUDA torch wheels: build it where that image is reachable)" >&2
    exit 2
  fi
fi

start=$SECONDS
if [[ -n "${BASE:-}" ]]; then
  base=$BASE
elif available "rayproject/ray:${ray}-py${py}-cpu"; then
  base="rayproject/ray:${ray}-py${py}-cpu"
else
  base=orthoscale-base:bookworm
  docker/debian-base.sh "$base" python3,python3-venv,ca-certificates
fi
docker/wheels.sh

# The wheelhouse, served read-only to the build on an internal network of its own (no route beyond it):
# the wheels reach the build without being copied into a layer.
net=orthoscale-build
docker network inspect "$net" > /dev/null 2>&1 || docker network create --internal "$net" > /dev/null
server=$(docker run -d --rm --network "$net" --network-alias wheels --user 65534:65534 \
  -v "$PWD/${WHEELS:-.build/wheels}:/wheels:ro" -w /wheels "$base" python3 -m http.server 8000)
trap 'docker rm -f "$server" > /dev/null 2>&1 || true' EXIT
for _ in $(seq 30); do
  docker exec "$server" python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/')" \
    > /dev/null 2>&1 && break
  sleep 0.5
done
docker build --network "$net" -f docker/Dockerfile.cpu --build-arg BASE="$base" \
  --build-arg WHEELS=http://wheels:8000/ -t "$cpu_tag" .

if [[ "${GPU:-0}" == 1 ]]; then
  docker build -f docker/Dockerfile.gpu --build-arg BASE="$gpu_base" -t "$gpu_tag" .
fi

if available postgres:16; then
  pg=postgres:16
else
  pg=orthoscale-postgres:15-bookworm
  docker/debian-base.sh orthoscale-postgres-base:bookworm postgresql-15
  docker build -q -f docker/Dockerfile.postgres --build-arg BASE=orthoscale-postgres-base:bookworm -t "$pg" . > /dev/null
fi

printf 'ORTHOSCALE_IMAGE=%s\nPOSTGRES_IMAGE=%s\n' "$cpu_tag" "$pg" > .build/images.env
size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.2f GB", $1/1e9}'; }
echo "images ($((SECONDS - start)) s):"
echo "  $cpu_tag   on $base   $(size "$cpu_tag")"
[[ "${GPU:-0}" == 1 ]] && echo "  $gpu_tag   on $gpu_base   $(size "$gpu_tag")"
echo "  $pg   $(size "$pg")"
echo "  docker compose: export POSTGRES_IMAGE=$pg   (or --env-file .build/images.env)"
