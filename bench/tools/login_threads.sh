#!/usr/bin/env bash
# Where a login's CPU goes, per thread kind: the server's CPU time and context switches per
# `POST /token` (password grant), split into the hashing threads, the tokio workers and
# SQLite's threads, read with `perf stat --per-thread` (software counters, which guests
# without hardware counters still have). Needs a prior `bench/run.sh` (its release binary and
# the tessera-rs256 data directory with the bench user), wrk and perf.
#
#   bench/tools/login_threads.sh [BINARY] [SECONDS]     # default target/release/tessera, 8
#
# Starts a copy of bench/out/work/data-tessera-rs256, warms up with 2 s of the bench's login
# load (wrk -t2 -c64), then counts over SECONDS more of it. Compare the hashing threads' CPU
# per login with `argon2_time 30 2` (the same hash, two at once, in a process of its own) to
# see what running inside the server costs the hash (docs/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-${CARGO_TARGET_DIR:-target}/release/tessera}
secs=${2:-8}
work=bench/out/login-threads-data
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -rf "$work"
cp -r bench/out/work/data-tessera-rs256 "$work"
env -i PATH="$PATH" HOME="$HOME" TESSERA_RATE_LIMITS__TOKEN_PER_MINUTE=0 \
  TESSERA_ISSUER=http://tessera.bench.test \
  "$bin" serve --listen "127.0.0.1:$port" --data-dir "$work" >bench/out/login-threads.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
export BENCH_BODY="username=bench&password=quartz+lantern+under+a+staple+moon"
export BENCH_WRK_DIR="$PWD/bench/wrk"
wrk -t2 -c64 -d2s -s bench/wrk/fixed.lua "http://127.0.0.1:$port/token" >/dev/null 2>&1
perf stat --per-thread -x, -e task-clock,context-switches -p "$pid" -- sleep "$secs" \
  2>bench/out/login-threads.stat &
stat=$!
n=$(wrk -t2 -c64 -d"${secs}s" -s bench/wrk/fixed.lua "http://127.0.0.1:$port/token" \
  | awk '/requests in/{print $1}')
wait "$stat"
echo "$n logins in ${secs} s"
# perf -x, lines: thread-tid,value,unit,event,...  Thread names: tessera-hash,
# tokio-rt-worker, sqlx-sqlite-wor(ker).
awk -F, -v n="$n" '
  $4 ~ /task-clock|context-switches/ {
    name = $1; sub(/-[0-9]+$/, "", name)
    if (name ~ /^tessera-hash/) k = "hashing threads"
    else if (name ~ /^tokio-rt/) k = "tokio workers"
    else if (name ~ /^sqlx-sqlite/) k = "SQLite threads"
    else k = "other"
    if ($4 ~ /task-clock/) cpu[k] += $2; else cs[k] += $2
  }
  END {
    for (k in cpu) { total += cpu[k]
      printf "%-16s %7.3f ms CPU and %5.1f context switches per login\n", k, cpu[k] / n, cs[k] / n }
    printf "%-16s %7.3f ms CPU per login\n", "server", total / n
  }' bench/out/login-threads.stat
