#!/usr/bin/env bash
# Tessera's HTTP benchmark, one command: builds the release binaries, installs wrk (Debian
# package) if missing, creates the Python peer's venv, then runs bench/tools/bench.py, which
# starts each server on 127.0.0.1 and loads it with wrk (each run at most 15 s).
#
#   bench/run.sh                         # every scenario (about 5 minutes on 2 cores, plus the build)
#   bench/run.sh users_me login          # chosen scenarios
#   bench/run.sh --quick                 # smoke check: 3 s runs, 16 connections, 1,000 tokens
#   bench/run.sh --servers tessera-rs256,hello users_me
#
# Scenarios: users_me users_me_10k login refresh users_me_under_login startup.
# Servers: tessera-rs256 tessera-hs256 hello fastapi.
# The table goes to bench/out/latest.md (and results-<time>.md/.json). See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
if ! command -v wrk >/dev/null 2>&1; then
  echo "==> installing wrk (Debian package)"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi

target=${CARGO_TARGET_DIR:-$ROOT/target}
echo "==> building tessera (release)"
cargo build --locked --release -p tessera-cli --bin tessera
echo "==> building the hello-world ceiling, argon2_time and rs256_sign_time (bench/hello, release)"
CARGO_TARGET_DIR="$target/bench-hello" cargo build --locked --release \
  --manifest-path bench/hello/Cargo.toml
hello_dir="$target/bench-hello/release"

python_args=()
venv="$ROOT/bench/.venv"
if python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || {
  echo "==> installing python3-venv (Debian package)"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv python3-pip >/dev/null
}; then
  stamp="$venv/.requirements"
  if [ ! -x "$venv/bin/python" ] || ! cmp -s bench/peers/requirements.txt "$stamp"; then
    echo "==> creating the FastAPI peer's venv ($venv)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r bench/peers/requirements.txt
    cp bench/peers/requirements.txt "$stamp"
  fi
  python_args=(--python "$venv/bin/python")
fi

echo "==> nproc $(nproc), load average $(cut -d' ' -f1-3 /proc/loadavg)"
exec python3 bench/tools/bench.py \
  --tessera "$target/release/tessera" \
  --hello "$hello_dir/tessera-bench-hello" \
  --argon2-time "$hello_dir/argon2_time" \
  --rs256-sign-time "$hello_dir/rs256_sign_time" \
  "${python_args[@]}" \
  --command "bench/run.sh $*" \
  "$@"
