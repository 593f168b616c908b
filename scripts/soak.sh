#!/usr/bin/env bash
# Saturation run: `tessera serve` on 127.0.0.1 under wrk for SOAK_DURATION seconds after a
# warm-up, with three loads at once: GET /users/me (the bulk, saturating the CPU), refresh-
# token rotation, and password logins. Passes when no request failed (no socket error, no
# timeout, no status other than 2xx) and the server's resident memory (VmRSS) grew by less
# than 10% between the end of the warm-up and the end of the run.
#
#   ./scripts/soak.sh                        # 60 s, release build (the full run)
#   SOAK_DURATION=15 ./scripts/soak.sh --debug   # what CI runs
#
# Environment: SOAK_DURATION (seconds, default 60, at most 600), SOAK_WARMUP (default 10),
# SOAK_ME_CONNECTIONS (64), SOAK_REFRESH_CONNECTIONS (8), SOAK_LOGIN_CONNECTIONS (2).
# Installs wrk (Debian package) when missing. Per-IP rate limits are off for the run (one
# client address sends every login and refresh); everything else is the default
# configuration, including production Argon2id parameters.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${SOAK_DURATION:-60}
WARMUP=${SOAK_WARMUP:-10}
ME_CONNS=${SOAK_ME_CONNECTIONS:-64}
REFRESH_CONNS=${SOAK_REFRESH_CONNECTIONS:-8}
LOGIN_CONNS=${SOAK_LOGIN_CONNECTIONS:-2}
MAX_GROWTH_PERCENT=10
if [ "$DURATION" -gt 600 ] || [ "$DURATION" -lt 1 ]; then
  echo "SOAK_DURATION must be 1-600 seconds" >&2
  exit 2
fi

profile=release
cargo_profile=(--release)
if [ "${1:-}" = "--debug" ]; then
  profile=debug
  cargo_profile=()
fi
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
bin="$target_dir/$profile/tessera"

if ! command -v wrk >/dev/null 2>&1; then
  echo "==> installing wrk (Debian package)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi

echo "==> building tessera ($profile)"
cargo build --locked "${cargo_profile[@]}" --bin tessera

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

admin_password="soak run bootstrap passphrase"
user_password="quartz lantern under a staple moon"
: >"$work/server.log"
env -u TESSERA_CONFIG -u TESSERA_DATABASE_URL \
  RUST_LOG="${RUST_LOG:-warn}" \
  TESSERA_BOOTSTRAP_ADMIN_PASSWORD="$admin_password" \
  TESSERA_RATE_LIMITS__TOKEN_PER_MINUTE=0 \
  "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/server.log" 2>&1 </dev/null &
server_pid=$!
base=""
for _ in $(seq 1 600); do
  base=$(sed -n 's/^Tessera listening on \(http:[^ ]*\).*/\1/p' "$work/server.log" | head -n1 || true)
  [ -n "$base" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$base" ]; then
  echo "error: the server did not start:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
echo "==> tessera ($profile, pid $server_pid) on $base"

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
token_response() {
  curl -fsS -X POST "$base/token" --data-urlencode "username=$1" --data-urlencode "password=$2"
}
admin_token=$(token_response admin "$admin_password" | json_field access_token)
curl -fsS -o /dev/null -X POST "$base/admin/users" -H "Authorization: Bearer $admin_token" \
  -H 'content-type: application/json' \
  -d "{\"username\":\"soak\",\"password\":\"$user_password\",\"roles\":[\"user\"]}"
access_token=$(token_response soak "$user_password" | json_field access_token)
login_body="username=soak&password=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$user_password")"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status"; }

# One load phase: the three wrk processes at once for $1 seconds; results in $work/$2-*.out.
# Every phase starts its refresh pool from fresh logins.
load() {
  local secs=$1 tag=$2
  : >"$work/tokens"
  for _ in $(seq 1 $((2 * REFRESH_CONNS + 4))); do
    token_response soak "$user_password" | json_field refresh_token >>"$work/tokens"
  done
  export SOAK_LUA_DIR="$ROOT/scripts/soak"
  wrk -t2 -c "$ME_CONNS" -d "${secs}s" --timeout 5s -s scripts/soak/plain.lua \
    -H "Authorization: Bearer $access_token" "$base/users/me" >"$work/$tag-me.out" 2>&1 &
  local me=$!
  wrk -t1 -c "$REFRESH_CONNS" -d "${secs}s" --timeout 5s -s scripts/soak/refresh.lua \
    "$base/token" -- "$work/tokens" >"$work/$tag-refresh.out" 2>&1 &
  local refresh=$!
  SOAK_BODY="$login_body" wrk -t1 -c "$LOGIN_CONNS" -d "${secs}s" --timeout 5s \
    -s scripts/soak/plain.lua "$base/token" >"$work/$tag-login.out" 2>&1 &
  local login=$!
  local status=0
  wait "$me" || status=1
  wait "$refresh" || status=1
  wait "$login" || status=1
  return $status
}

echo "==> warm-up: ${WARMUP}s"
load "$WARMUP" warmup
rss_start=$(rss_kib)
echo "    VmRSS after warm-up: ${rss_start} KiB"

echo "==> saturation: ${DURATION}s of GET /users/me ($ME_CONNS connections), refresh ($REFRESH_CONNS) and login ($LOGIN_CONNS)"
load "$DURATION" run &
load_pid=$!
samples=()
while kill -0 "$load_pid" 2>/dev/null; do
  sleep 5
  kill -0 "$server_pid" 2>/dev/null || break
  samples+=("$(rss_kib)")
done
failed=0
wait "$load_pid" || failed=1
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "error: the server died during the run:" >&2
  tail -50 "$work/server.log" >&2
  exit 1
fi
rss_end=$(rss_kib)
echo "    VmRSS every 5 s (KiB): ${samples[*]}"

total_errors=0
for kind in me refresh login; do
  line=$(grep '^SOAK ' "$work/run-$kind.out" || true)
  if [ -z "$line" ]; then
    echo "error: wrk ($kind) printed no summary:" >&2
    cat "$work/run-$kind.out" >&2
    exit 1
  fi
  for kv in ${line#SOAK }; do declare "r_${kv%%=*}=${kv#*=}"; done
  errors=$((r_status_errors + r_connect_errors + r_read_errors + r_write_errors + r_timeouts))
  total_errors=$((total_errors + errors))
  awk -v k="$kind" -v n="$r_requests" -v us="$r_duration_us" -v p50="$r_p50_us" -v p99="$r_p99_us" \
    -v max="$r_max_us" -v e="$errors" -v detail="status $r_status_errors, connect $r_connect_errors, read $r_read_errors, write $r_write_errors, timeout $r_timeouts" \
    'BEGIN { printf "    %-8s %9d requests %8.0f/s  p50 %7.2f ms  p99 %8.2f ms  max %8.2f ms  errors %d (%s)\n", k, n, n * 1e6 / (us > 0 ? us : 1), p50 / 1000, p99 / 1000, max / 1000, e, detail }'
done

growth=$(python3 -c "print(f'{($rss_end - $rss_start) * 100 / $rss_start:.1f}')")
echo "    VmRSS: ${rss_start} KiB after warm-up, ${rss_end} KiB at the end: ${growth}% growth (limit ${MAX_GROWTH_PERCENT}%)"
if grep -q 'panicked' "$work/server.log"; then
  echo "error: the server panicked:" >&2
  grep -A5 'panicked' "$work/server.log" >&2
  failed=1
fi
if [ "$total_errors" -ne 0 ]; then
  echo "error: $total_errors requests failed" >&2
  failed=1
fi
if python3 -c "import sys; sys.exit(0 if ($rss_end - $rss_start) * 100 < $MAX_GROWTH_PERCENT * $rss_start else 1)"; then :; else
  echo "error: VmRSS grew by ${growth}% (limit ${MAX_GROWTH_PERCENT}%)" >&2
  failed=1
fi
if [ "$failed" -ne 0 ]; then exit 1; fi
echo "==> soak passed: ${DURATION}s, 0 errors, VmRSS growth ${growth}%"
