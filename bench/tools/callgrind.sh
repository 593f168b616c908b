#!/usr/bin/env bash
# Instructions per cached `GET /users/me`, counted by callgrind (repeatable whatever else the
# machine is doing, unlike wrk). Needs a prior `bench/run.sh` (its release binary and the
# tessera-rs256 data directory with the bench user) and valgrind.
#
#   bench/tools/callgrind.sh [BINARY]        # default target/release/tessera
#
# Starts a copy of bench/out/work/data-tessera-rs256 under callgrind, logs in, warms up,
# zeroes the counters, runs `wrk -t1 -c4 -d10s`, dumps, and prints total ÷ requests.
# The profile stays in bench/out/callgrind.out.* (`callgrind_annotate --inclusive=yes`).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-${CARGO_TARGET_DIR:-target}/release/tessera}
work=bench/out/callgrind-data
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -rf "$work" bench/out/callgrind.out*
cp -r bench/out/work/data-tessera-rs256 "$work"
env -i PATH="$PATH" HOME="$HOME" TESSERA_RATE_LIMITS__TOKEN_PER_MINUTE=0 \
  TESSERA_ISSUER=http://tessera.bench.test \
  valgrind --tool=callgrind --callgrind-out-file=bench/out/callgrind.out \
  "$bin" serve --listen "127.0.0.1:$port" --data-dir "$work" >bench/out/callgrind.log 2>&1 &
vg=$!
trap 'kill $vg 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 1; done
token=$(curl -s -d "username=bench&password=quartz lantern under a staple moon" \
  "http://127.0.0.1:$port/token" | python3 -c 'import sys,json;print(json.load(sys.stdin)["access_token"])')
curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$port/users/me" >/dev/null
callgrind_control --zero "$vg" >/dev/null
n=$(wrk -t1 -c4 -d10s -H "Authorization: Bearer $token" "http://127.0.0.1:$port/users/me" \
  | awk '/requests in/{print $1}')
callgrind_control --dump=measured "$vg" >/dev/null
sleep 1
f=$(ls -t bench/out/callgrind.out.* | head -1)
total=$(callgrind_annotate "$f" | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
echo "$n requests, $total instructions, $((total / n)) per request ($f)"
