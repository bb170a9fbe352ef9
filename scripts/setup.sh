#!/usr/bin/env bash
# One-command setup: .venv with pinned dependencies, CMake path fix, colcon build into install/.
# Idempotent: each stage is skipped when the stamp of its inputs is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

stamp_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# 1. Virtual environment and pinned dependencies.
req_stamp=$(stamp_of requirements.txt requirements-libero.txt src/hypervla_core/setup.py)
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$VENV/.req-stamp" 2>/dev/null)" != "$req_stamp" ]; then
  echo "[setup] installing pinned dependencies (first run: about 2 minutes)"
  # pip's notes about missing local wheel folders are noise here; real errors still fail the step.
  "$VENV/bin/pip" install --disable-pip-version-check -q -r requirements.txt 2> >(grep -v "^WARNING: Location" >&2)
  # LIBERO pins opencv<5, numpy<2 and an older mujoco in its metadata but runs with the versions above:
  # installed without its dependency pins (test_libero_bridge checks it loads and steps).
  "$VENV/bin/pip" install --disable-pip-version-check -q --no-deps -r requirements-libero.txt 2> >(grep -v "^WARNING: Location" >&2)
  "$VENV/bin/python" scripts/fix_ros_wheel_cmake.py
  echo "$req_stamp" > "$VENV/.req-stamp"
fi

# 2. colcon build (the Python packages are symlinked, so editing them needs no rebuild).
build_stamp=$(find package.xml CMakeLists.txt colcon.meta src -type f \
  \( -name package.xml -o -name CMakeLists.txt -o -name '*.msg' -o -name '*.srv' -o -name setup.py \
     -o -name setup.cfg -o -name colcon.meta \) -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16)
if [ "$(cat install/.build-stamp 2>/dev/null)" != "$build_stamp" ]; then
  echo "[setup] colcon build"
  # shellcheck disable=SC1091
  source scripts/env.sh --no-install
  colcon build --symlink-install --base-paths . src \
    --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" \
    --event-handlers console_cohesion- summary+ > log/colcon-build.txt 2>&1 \
    || { tail -50 log/colcon-build.txt; echo "[setup] colcon build failed: see log/colcon-build.txt"; exit 1; }
  tail -1 log/colcon-build.txt
  echo "$build_stamp" > install/.build-stamp
fi
# 3. This checkout's policy-signing key pair (keys/ is git-ignored: a private key is never committed).
if [ ! -f keys/policy_signing ]; then
  PYTHONPATH=$ROOT/src/hypervla_core "$VENV/bin/python" -m hypervla_core.cli keygen keys/policy_signing > /dev/null
  echo "[setup] made the policy-signing key keys/policy_signing (+ .pub, the controller's trusted key)"
fi
echo "[setup] ready: source scripts/env.sh"
