#!/usr/bin/env bash
# Resident memory and open descriptors of one local policy server with N agents, each on its own
# channel, polling every second: a master, the local and one agents node (`cohort init
# --policy-agents N`), sampled each second for SECONDS. It prints a table (time, the local's and
# the agents node's resident MiB and descriptors), then what the master's current status counts
# (every agent reporting, or the gap) and the local's refusals, and stops the nodes it started.
# Past the local's limit on open connections (4,096 per listener) the rest are refused at
# accept, each refusal logged; `--agents 4200` shows it.
#
#   bench/agents-load.sh [--agents 2000] [--seconds 20]
set -euo pipefail

agents=2000
seconds=20
while [ $# -gt 0 ]; do
  case "$1" in
  --agents) agents=${2:?--agents needs a number}; shift 2 ;;
  --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
  -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
  *) echo "agents-load.sh: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$agents" "$seconds"; do
  case "$n" in '' | *[!0-9]*) echo "agents-load.sh: \`$n\` is not a whole number" >&2; exit 2 ;; esac
done
[ "$agents" -ge 1 ] && [ "$agents" -le 10000 ] || { echo "agents-load.sh: --agents goes from 1 to 10000" >&2; exit 2; }
need=$((agents + 256))
[ "$(ulimit -n)" -ge "$need" ] || ulimit -n "$need" 2>/dev/null ||
  { echo "agents-load.sh: $agents agents need $need descriptors; raise \`ulimit -n\`" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
echo "== building cohort (release)" >&2
cargo build --release -q -p cohort --manifest-path "$repo/Cargo.toml"
cohort="$repo/target/release/cohort"
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"; [ -z "${KEEP:-}" ] || echo "kept $work" >&2
}
trap cleanup EXIT

echo "== a tier of one master, one local and $agents agents" >&2
"$cohort" init --dir "$work/c" --members 1 --base-port "$(free_port)" --policy-locals 1 \
  --policy-agents "$agents" --policy-port "$(free_port)" --policy-sync-s 3600 --policy-poll-s 1 >/dev/null
for node in policy/master policy/local-00 policy/agents; do
  RUST_LOG=info "$cohort" node run --config "$work/c/$node/node.toml" </dev/null >/dev/null \
    2>>"$work/$(basename "$node").log" &
  pids+=($!)
done
local_pid=${pids[1]}
agents_pid=${pids[2]}
tier=(--tier "$work/c/policy/tier.toml" --key "$work/c/operator.key")

fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
echo "| s | local MiB | local fds | agents node MiB | agents node fds |"
echo "|---:|---:|---:|---:|---:|"
for t in $(seq 1 "$seconds"); do
  sleep 1
  echo "| $t | $(mib "$local_pid" VmRSS) | $(fds "$local_pid") | $(mib "$agents_pid" VmRSS) | $(fds "$agents_pid") |"
done
# "global status (current): N agents reporting, M agents not reporting"
status=$("$cohort" status --global --current "${tier[@]}" 2>/dev/null | head -1 || true)
counted=$(sed -n 's/.*: \([0-9]*\) agents reporting.*/\1/p' <<<"$status")
silent=$(sed -n 's/.*, \([0-9]*\) agents not reporting.*/\1/p' <<<"$status")
refused=$(grep -c "connection refused: too many open" "$work/local-00.log" || true)
echo
echo "peak resident: local $(mib "$local_pid" VmHWM) MiB, agents node $(mib "$agents_pid" VmHWM) MiB"
echo "the master's current status counts ${counted:-?} agents (${silent:-?} not reporting) of $agents;" \
  "the local refused $refused connections (each logged: \"too many open\")"
kill -0 "$local_pid" || { echo "agents-load.sh: the local is gone" >&2; exit 1; }
