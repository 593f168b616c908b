#!/usr/bin/env bash
# Schema testing: schemathesis against the OpenAPI document (`GET /openapi.json`) of a real
# `tessera serve` on 127.0.0.1, with a test user's token and an admin token.
#
#   ./scripts/schemathesis.sh              # debug build, the bounded run CI does
#   ./scripts/schemathesis.sh --release    # release build
#   SCHEMATHESIS_MAX_EXAMPLES=200 SCHEMATHESIS_MAX_TIME=900 ./scripts/schemathesis.sh
#
# Fails (non-zero) on any 5xx, any status code the document does not list for the
# operation, a wrong content type, a body or header that does not match the documented
# schema, and the other schemathesis checks listed below. It installs schemathesis (pinned)
# into a venv under the target directory; it needs python3 and pip's access to PyPI.
#
# For this run only, rate limits are off and the lockout is short and high (see the server
# environment below): schemathesis sends hundreds of logins with random usernames from one
# address, which a production configuration rightly refuses with 429s and locks.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-25}
MAX_TIME=${SCHEMATHESIS_MAX_TIME:-150}
SEED=${SCHEMATHESIS_SEED:-}

profile=debug
cargo_profile=()
if [ "${1:-}" = "--release" ]; then
  profile=release
  cargo_profile=(--release)
fi
target_dir=$(mkdir -p "${CARGO_TARGET_DIR:-target}" && cd "${CARGO_TARGET_DIR:-target}" && pwd)
bin="$target_dir/$profile/tessera"

echo "==> building tessera ($profile)"
cargo build --locked "${cargo_profile[@]}" --bin tessera

venv="$target_dir/schemathesis-venv-$SCHEMATHESIS_VERSION"
if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

admin_password="schema tests need a long passphrase"
user_password="the user of the schema tests"
echo "==> starting tessera serve on 127.0.0.1:0 (data in $work/data)"
: >"$work/server.log"
env -u TESSERA_CONFIG -u TESSERA_DATABASE_URL \
  RUST_LOG="${RUST_LOG:-warn}" \
  TESSERA_BOOTSTRAP_ADMIN_PASSWORD="$admin_password" \
  TESSERA_REGISTRATION=open \
  TESSERA_RATE_LIMITS__TOKEN_PER_MINUTE=0 \
  TESSERA_RATE_LIMITS__MFA_PER_MINUTE=0 \
  TESSERA_RATE_LIMITS__REGISTRATION_PER_MINUTE=0 \
  TESSERA_LOCKOUT__THRESHOLD=100 \
  TESSERA_LOCKOUT__BASE=1s \
  TESSERA_LOCKOUT__MAX=1s \
  "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/server.log" 2>&1 </dev/null &
server_pid=$!
base=""
for _ in $(seq 1 600); do
  base=$(sed -n 's/^Tessera listening on \(http:[^ ]*\).*/\1/p' "$work/server.log" | head -n1 || true)
  [ -n "$base" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if [ -z "$base" ]; then
  echo "error: the server did not start:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
echo "    listening on $base"

# Principals: the admin (admin endpoints, /introspect, /revocations), a plain user (the
# rest), a user whose sessions /logout may end, a user for the endpoints that check the
# caller's password again (/users/me/password, /users/me/mfa/*: tests/schemathesis/hooks.py
# sends its password in half their cases and follows its changes), a user signed in in
# cookie mode by the hooks for /session/refresh and /session/logout, a user whose password
# grant the hooks send in half the cases of POST /token, and a sacrificial user
# and session that the hooks substitute whenever a request would disable, delete or sign
# out the run's own principals.
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
login() {
  curl -fsS -X POST "$base/token" --data-urlencode "username=$1" --data-urlencode "password=$2" \
    | json_field access_token
}
me() { curl -fsS "$base/users/me" -H "Authorization: Bearer $1" | json_field "$2"; }
admin_token=$(login admin "$admin_password")
for u in schema-user schema-logout schema-reauth schema-cookie schema-token schema-victim; do
  curl -fsS -o /dev/null -X POST "$base/admin/users" -H "Authorization: Bearer $admin_token" \
    -H 'content-type: application/json' \
    -d "{\"username\":\"$u\",\"password\":\"$user_password\",\"roles\":[\"user\"]}"
done
user_token=$(login schema-user "$user_password")
logout_token=$(login schema-logout "$user_password")
reauth_token=$(login schema-reauth "$user_password")
victim_token=$(login schema-victim "$user_password")
protected="admin,schema-user,schema-reauth,schema-cookie,schema-token"
for t in "$admin_token" "$user_token" "$reauth_token"; do
  protected="$protected,$(me "$t" id),$(me "$t" session_id)"
done
# The cookie-mode user's id; its sessions come and go with the hooks' sign-ins.
protected="$protected,$(me "$(login schema-cookie "$user_password")" id)"
# The password-grant user's id; its sessions come and go with the hooks' requests.
protected="$protected,$(me "$(login schema-token "$user_password")" id)"
export TESSERA_SCHEMA_PROTECTED="$protected"
export TESSERA_SCHEMA_BASE_URL="$base"
export TESSERA_SCHEMA_PASSWORD="$user_password"
export TESSERA_SCHEMA_COOKIE_USER=schema-cookie
export TESSERA_SCHEMA_TOKEN_USER=schema-token
export TESSERA_SCHEMA_VICTIM_USER=schema-victim
TESSERA_SCHEMA_VICTIM_SESSION=$(me "$victim_token" session_id)
export TESSERA_SCHEMA_VICTIM_SESSION
export SCHEMATHESIS_HOOKS=hooks
export PYTHONPATH="$PWD/tests/schemathesis${PYTHONPATH:+:$PYTHONPATH}"

cat >"$work/schemathesis.toml" <<EOF
# Written by scripts/schemathesis.sh for one run.
headers = { Authorization = "Bearer $user_token" }
# Each run starts clean (the failure cache would otherwise replay old failures).
cache = { enabled = false }
# An operation that answers only 401/403 is never tested past its authentication: fail the
# run (the hooks give every operation valid credentials; a new one may need them too).
warnings = { fail-on = ["missing_auth"] }

# positive_data_acceptance: a request that matches the schema must not be refused. Two
# refusals are semantic and no JSON Schema can express them, so they are allowed on purpose:
# 422 weak_password (the password policy: configurable minimum length, zxcvbn strength, the
# list of common passwords) everywhere a password is set...
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

# The first [[operations]] entry that matches an operation is the one that applies.
[[operations]]
include-path-regex = "^/(admin/|introspect$|revocations$)"
headers = { Authorization = "Bearer $admin_token" }

[[operations]]
include-path = "/logout"
headers = { Authorization = "Bearer $logout_token" }

# ...and 400 where the protocol answers a well-formed request with wrong secrets: the token
# endpoint's invalid_grant (RFC 6749 §5.2: wrong password, unknown refresh token), the same
# answers of cookie mode's POST /session and POST /session/refresh (a refresh cookie that a
# replayed request presents after it has rotated), and the TOTP endpoints' wrong code or
# wrong state.
[[operations]]
include-path-regex = "^/users/me/mfa/totp/(confirm|disable)$"
headers = { Authorization = "Bearer $reauth_token" }
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]

[[operations]]
include-path-regex = "^/users/me/(password|mfa/totp)$"
headers = { Authorization = "Bearer $reauth_token" }

[[operations]]
include-path-regex = "^/(token|session|session/refresh)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]
EOF

report_dir="$target_dir/schemathesis-report"
args=(
  --config-file "$work/schemathesis.toml" run "$base/openapi.json"
  --checks all
  --max-examples "$MAX_EXAMPLES"
  --max-time "$MAX_TIME"
  # One worker: with two, hypothesis (under CPython 3.11) intermittently fails inside
  # ast.parse ("AST constructor recursion depth mismatch"), a client-side error.
  --workers 1
  --request-timeout 30
  --report junit --report-dir "$report_dir"
)
[ -n "$SEED" ] && args+=(--seed "$SEED")
echo "==> schemathesis $SCHEMATHESIS_VERSION (max $MAX_EXAMPLES examples per operation, max ${MAX_TIME}s)"
start=$(date +%s)
status=0
(cd "$work" && "$venv/bin/schemathesis" "${args[@]}") || status=$?
echo "==> schemathesis finished in $(( $(date +%s) - start ))s with status $status"
if grep -q 'panicked' "$work/server.log"; then
  echo "error: the server panicked during the run:" >&2
  grep -A5 'panicked' "$work/server.log" >&2
  status=1
fi
exit "$status"
