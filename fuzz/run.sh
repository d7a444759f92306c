#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20), from its corpus in `corpus/TARGET/`,
# which grows with what the fuzzer finds new. A crash stops with the input that caused it in
# `artifacts/TARGET/`: copy it to `regressions/TARGET/` so `cargo test` keeps running it.
#
#   fuzz/run.sh [SECONDS] [TARGET ...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on a stable toolchain RUSTC_BOOTSTRAP=1 lets it
# use the sanitizer flags.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
shift || true
case "$seconds" in '' | *[!0-9]*) echo "run.sh: \`$seconds\` is not a number of seconds" >&2; exit 2 ;; esac
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
export RUSTC_BOOTSTRAP=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo fuzz build -O >/dev/null
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  dirs=("corpus/$target")
  if [ -n "${FUZZ_SCRATCH:-}" ]; then
    mkdir -p "$FUZZ_SCRATCH/$target"
    dirs=("$FUZZ_SCRATCH/$target" "corpus/$target")
  fi
  printf '== fuzz %-16s %4ss, corpus %s inputs\n' "$target" "$seconds" "$(find "corpus/$target" -type f | wc -l)"
  status=0
  cargo fuzz run -O "$target" "${dirs[@]}" -- -max_total_time="$seconds" -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::new_units_added|==[0-9]+==ERROR|SUMMARY|Test unit written)' "$log" || true
  [ "$status" -eq 0 ] || { tail -40 "$log" >&2; echo "fuzz/run.sh: $target found a crash; see fuzz/artifacts/$target/" >&2; exit 1; }
done
