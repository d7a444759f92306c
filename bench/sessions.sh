#!/usr/bin/env bash
# Resident memory and open descriptors of a gateway holding N exec sessions at once: a loopback
# site of N hosts (bench/exec-site.sh), the demo principal's fan-out ceiling raised to N by a
# signed ACL change, then one `cohort exec -f N /bin/sleep SECONDS` on every host, sampled each
# second. It prints a table (time, the member's and the exec node's resident MiB and descriptors,
# commands running) and the peaks, and stops the nodes it started.
#
#   bench/sessions.sh [--hosts 1000] [--seconds 10]
set -euo pipefail

hosts=1000
seconds=10
while [ $# -gt 0 ]; do
  case "$1" in
  --hosts) hosts=${2:?--hosts needs a number}; shift 2 ;;
  --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
  -h | --help) sed -n '2,8p' "$0"; exit 0 ;;
  *) echo "sessions.sh: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$hosts" "$seconds"; do
  case "$n" in '' | *[!0-9]*) echo "sessions.sh: \`$n\` is not a whole number" >&2; exit 2 ;; esac
done
[ "$hosts" -ge 1 ] && [ "$hosts" -le 2000 ] || { echo "sessions.sh: --hosts goes from 1 to 2000" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
echo "== building cohort (release)" >&2
cargo build --release -q -p cohort --manifest-path "$repo/Cargo.toml"
cohort="$repo/target/release/cohort"
work=$(mktemp -d)
cleanup() {
  "$repo/bench/exec-site.sh" stop "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== a site of $hosts hosts" >&2
"$repo/bench/exec-site.sh" start "$cohort" "$work" "$hosts" "$(free_port)" "$(free_port)" >/dev/null
read -r member exec_node <<<"$(tr '\n' ' ' <"$work/pids")"
"$cohort" acl set alice --run-as root --commands '*' --max-fanout "$hosts" \
  --cluster "$work/site/cluster.toml" --key "$work/site/operator.key" --wait >/dev/null

fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
running() { pgrep -c -P "$exec_node" -x sleep || true; }

width=${#hosts}; [ "$width" -lt 2 ] && width=2
last=$(printf "%0${width}d" "$hosts"); first=$(printf "%0${width}d" 1)
for pid in "$member" "$exec_node"; do echo 5 >"/proc/$pid/clear_refs"; done
echo "| s | member MiB | member fds | exec node MiB | exec node fds | commands running |"
echo "|---:|---:|---:|---:|---:|---:|"
echo "| idle | $(mib "$member" VmRSS) | $(fds "$member") | $(mib "$exec_node" VmRSS) | $(fds "$exec_node") | $(running) |"
started=$EPOCHREALTIME
"$cohort" exec --state-dir "$work/client" -w "h[$first-$last]" -f "$hosts" /bin/sleep "$seconds" \
  >"$work/exec.out" 2>&1 &
run=$!
t=0
while kill -0 "$run" 2>/dev/null; do
  sleep 1
  t=$((t + 1))
  echo "| $t | $(mib "$member" VmRSS) | $(fds "$member") | $(mib "$exec_node" VmRSS) | $(fds "$exec_node") | $(running) |"
done
status=0
wait "$run" || status=$?
ended=$EPOCHREALTIME
echo
echo "peak resident: member $(mib "$member" VmHWM) MiB, exec node $(mib "$exec_node" VmHWM) MiB;" \
  "the run took $(awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.1f", b - a }') s" \
  "for a $seconds s command (exit $status): $(tail -1 "$work/exec.out")"
