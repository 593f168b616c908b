#!/usr/bin/env bash
# Smoke-runs every fuzz target for a while (default 60 s each) on the stable toolchain.
# Usage: fuzz/smoke.sh [seconds-per-target]. Needs `cargo install cargo-fuzz --locked`.
# Exits non-zero on the first crash; the input is left in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
for target in compact_verify jwk_parse decode_unverified token_form differential_jsonwebtoken; do
  echo "==> fuzz ${target} for ${secs}s"
  mkdir -p "corpus/${target}"
  cargo fuzz run "${target}" --sanitizer none "corpus/${target}" "seeds/${target}" -- \
    -max_total_time="${secs}" -print_final_stats=1
done
