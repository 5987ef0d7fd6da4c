#!/usr/bin/env bash
# The wheelhouse the images install from, offline: every dependency of the project at its locked version
# (constraints.txt), for Linux x86_64 and CPython 3.11, downloaded on this host into WHEELS
# (default .build/wheels). The CPU build of torch (2.13.0+cpu) is taken from wherever pip finds it (a
# local find-links folder, a configured index) or else from PyTorch's CPU index; a CUDA
# torch is never downloaded here. Idempotent: wheels already present are not fetched again.
#
#   docker/wheels.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
wheels=${WHEELS:-.build/wheels}
py=${PYTHON:-python3}
mkdir -p "$wheels" .build

# Done already for this lock, project and script: nothing to fetch (pip would still resolve against the index).
stamp=$(cat constraints.txt pyproject.toml "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
if [[ "$(cat "$wheels/.complete" 2> /dev/null)" == "$stamp" ]]; then
  exit 0
fi

torch=$(sed -n 's/^torch==//p' constraints.txt)
setuptools=${SETUPTOOLS_VERSION:-80.9.0}   # builds the project's own wheel inside the image, offline
target=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311)
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux_2_12 manylinux2010 \
           manylinux_2_5 manylinux1; do   # glibc 2.36 (bookworm) runs all of these; pip does not expand them itself
  target+=(--platform "${tag}_x86_64")
done

# The lock with torch pinned to its CPU build: no resolution below can fall back to the CUDA wheel.
sed "s/^torch==.*/torch==${torch}+cpu/" constraints.txt > .build/constraints-cpu.txt

if ! ls "$wheels"/torch-"${torch}"+cpu-cp311-*.whl > /dev/null 2>&1; then
  "$py" -m pip download -qq --no-deps "${target[@]}" -d "$wheels" "torch==${torch}+cpu" 2> /dev/null \
    || "$py" -m pip download -qq --no-deps "${target[@]}" -d "$wheels" \
         --index-url https://download.pytorch.org/whl/cpu "torch==${torch}+cpu"
fi

# Locked packages that publish no wheel, only a pure-Python sdist: built into a py3-none-any wheel here.
for name in antlr4-python3-runtime; do
  pin=$(grep -i "^${name}==" constraints.txt)
  if ! ls "$wheels"/"${name//-/_}"-"${pin#*==}"-*.whl > /dev/null 2>&1; then
    "$py" -m pip wheel -qq --no-deps -w "$wheels" "$pin"
  fi
done

# The project's dependencies (pyproject.toml), the PostgreSQL driver of the MLflow server and the build backend.
mapfile -t deps < <("$py" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
psycopg2=$(grep -i '^psycopg2-binary==' constraints.txt)
"$py" -m pip download -qq "${target[@]}" -d "$wheels" --find-links "$wheels" -c .build/constraints-cpu.txt \
  "${deps[@]}" "$psycopg2" "setuptools==${setuptools}"

if ls "$wheels"/nvidia_* > /dev/null 2>&1 || ls "$wheels"/torch-* | grep -qv '+cpu'; then
  echo "docker/wheels.sh: a CUDA torch or CUDA runtime wheel reached $wheels; remove it" >&2
  exit 1
fi
echo "$stamp" > "$wheels/.complete"
echo "wheels: $(ls "$wheels" | wc -l) files, $(du -sh "$wheels" | cut -f1) in $wheels"
