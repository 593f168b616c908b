#!/usr/bin/env bash
# The whole test suite, as the README promises: `./scripts/test.sh`.
#
# Safe on a fresh machine of the project's kind: it installs what it needs (Debian
# packages for Chromium, the npm package that drives it, Python's venv). PostgreSQL tests
# run whenever a server answers at TESSERA_TEST_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/postgres); set TESSERA_REQUIRE_POSTGRES=1 to make a
# missing server an error instead of a loud skip (CI does); TESSERA_REQUIRE_PYTHON=1 does
# the same for the Python interop tests.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"
export TESSERA_TEST_DATABASE_URL="${TESSERA_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
apt_install() {
  echo "==> installing Debian packages: $*"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# Chromium and Node.js for the browser tests. (The Rust build needs only the C compiler the
# machine has: aws-lc-sys and SQLite are built with cc. The jwt-simple benchmark peer, which
# needs cmake and clang, is an opt-in feature outside this suite; docs/BENCHMARKS.md.)
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
# Python with venv + pip for the interop tests (PyJWT, the tutorial's own code).
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv python3-pip)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

# PostgreSQL: run its suites when it answers, say so loudly when it does not.
pg_host_port=$(printf '%s' "$TESSERA_TEST_DATABASE_URL" | sed -E 's#^[a-z]+://([^@/]*@)?([^/:?]+)(:([0-9]+))?.*#\2 \4#')
pg_host=${pg_host_port% *}; pg_port=${pg_host_port#* }; pg_port=${pg_port:-5432}
if (exec 3<>"/dev/tcp/$pg_host/$pg_port") 2>/dev/null; then
  echo "==> PostgreSQL answers at $pg_host:$pg_port: the PostgreSQL suites will run"
else
  echo "############################################################################"
  echo "##  PostgreSQL is NOT reachable at $pg_host:$pg_port."
  echo "##  The PostgreSQL test suites will be SKIPPED (they print SKIPPED)."
  echo "##  Start PostgreSQL or set TESSERA_TEST_DATABASE_URL to run them."
  echo "############################################################################"
  if [ "${TESSERA_REQUIRE_POSTGRES:-0}" = 1 ]; then
    echo "error: TESSERA_REQUIRE_POSTGRES=1 but PostgreSQL is not reachable" >&2
    exit 1
  fi
fi

echo "==> cargo test (workspace)"
cargo test --workspace --locked

echo "==> browser tests (Playwright + Chromium)"
cargo build --locked --bin tessera
(
  cd tests/browser
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
  node --test --test-concurrency=1 .
)
echo "==> all tests passed"
