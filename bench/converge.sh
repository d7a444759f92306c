#!/usr/bin/env bash
# Configuration change to last install, on real sockets: for each cluster size, a loopback
# cluster (`cohort init`, every member its own process), then several signed changes, each
# submitted with `cohort admin set --wait`. That command reports how long after the change was
# accepted every member had installed it. The client polls each member's status every 50 ms,
# so a figure is late by at most one poll round. Prints a table in seconds and in heartbeats,
# and stops what it started.
#
#   bench/converge.sh [--sizes "3 10 30"] [--runs 5] [--heartbeat-ms 1000]
set -euo pipefail

sizes="3 10 30"
runs=5
heartbeat_ms=1000
while [ $# -gt 0 ]; do
  case "$1" in
  --sizes) sizes=${2:?--sizes needs a list}; shift 2 ;;
  --runs) runs=${2:?--runs needs a number}; shift 2 ;;
  --heartbeat-ms) heartbeat_ms=${2:?--heartbeat-ms needs a number}; shift 2 ;;
  -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
  *) echo "converge.sh: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
  esac
done
for n in $sizes "$runs" "$heartbeat_ms"; do
  case "$n" in '' | *[!0-9]*) echo "converge.sh: \`$n\` is not a whole number" >&2; exit 2 ;; esac
done
for n in $sizes; do
  [ "$n" -ge 1 ] && [ "$n" -le 99 ] || { echo "converge.sh: sizes go from 1 to 99 members" >&2; exit 2; }
done

repo=$(cd "$(dirname "$0")/.." && pwd)
echo "== building cohort (release)" >&2
cargo build --release -q -p cohort --manifest-path "$repo/Cargo.toml"
cohort="$repo/target/release/cohort"
work=$(mktemp -d)
pids=()
stop_members() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop_members; rm -rf "$work"' EXIT

# A base port with the 200 ports above it free (members and their operator ports).
free_base() {
  local base
  while :; do
    base=$((20000 + RANDOM % 20000))
    ss -Htln "( sport >= :$base and sport <= :$((base + 200)) )" | grep -q . || { echo "$base"; return; }
  done
}

echo "| members | runs | to last install, median (min-max) | in heartbeats ($heartbeat_ms ms) |"
echo "|---:|---:|---:|---:|"
for members in $sizes; do
  site="$work/site-$members"
  "$cohort" init --dir "$site" --members "$members" --base-port "$(free_base)" \
    --heartbeat-ms "$heartbeat_ms" >/dev/null
  for ((i = 0; i < members; i++)); do
    "$cohort" node run --config "$site/m$i/node.toml" 2>"$site/m$i.log" &
    pids+=($!)
  done
  set_change() {
    "$cohort" admin set "bench.run=$1" --wait --timeout-secs 60 \
      --cluster "$site/cluster.toml" --key "$site/operator.key"
  }
  # The first change also waits for every member to be up and joined.
  for _ in $(seq 1 100); do set_change 0 >/dev/null 2>&1 && break; sleep 0.5; done
  times=()
  for run in $(seq 1 "$runs"); do
    printf '\r%d members, change %d of %d ' "$members" "$run" "$runs" >&2
    said=$(set_change "$run") || { echo "the change was not installed everywhere: $said" >&2; exit 1; }
    took=$(sed -n 's/^installed on every member \([0-9.]*\)s later$/\1/p' <<<"$said")
    [ -n "$took" ] || { echo "unexpected answer: $said" >&2; exit 1; }
    times+=("$took")
  done
  printf '\r%40s\r' '' >&2
  printf '%s\n' "${times[@]}" | sort -n | awk -v m="$members" -v h="$heartbeat_ms" '
    { t[NR] = $1 }
    END {
      med = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
      printf "| %d | %d | %.2f s (%.2f-%.2f) | %.1f |\n", m, NR, med, t[1], t[NR], med * 1000 / h
    }'
  stop_members
done
