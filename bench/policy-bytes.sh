#!/usr/bin/env bash
# The policy tier's traffic at the master, against the same agents polling the master directly.
#
#   sudo bench/policy-bytes.sh [--agents 1000] [--locals 10] [--window 2] [--cycles 10] [--out DIR]
#
# Two layouts, made by `cohort init` and run as real processes on loopback, one after the other:
#   tier    the master, LOCALS local servers (the last behind the first), AGENTS agents spread
#           over the locals, each polling its local every sync window;
#   direct  the master and the same AGENTS agents, each polling the master every sync window
#           (the layout init makes with one local, with the local's agents handed to the master).
# In each, once every agent has reported, nftables counts every packet to and from the master's
# port on loopback (TCP/IP headers included) over CYCLES sync windows in which nothing changes,
# then over the windows in which one new policy goes out to every agent and their reports come
# back. Needs root (nftables; installed from Debian if missing). It removes its table and its
# processes when it ends. Results: DIR/policy-bytes.csv and DIR/policy-bytes.md (DIR defaults to
# bench/results).
set -euo pipefail

agents=1000
locals=10
window=2
cycles=10
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
out="$repo/bench/results"
while [ $# -gt 0 ]; do
  case "$1" in
  --agents) agents=${2:?--agents needs a number}; shift 2 ;;
  --locals) locals=${2:?--locals needs a number}; shift 2 ;;
  --window) window=${2:?--window needs seconds}; shift 2 ;;
  --cycles) cycles=${2:?--cycles needs a number}; shift 2 ;;
  --out) out=${2:?--out needs a directory}; shift 2 ;;
  -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
  *) echo "policy-bytes.sh: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
  esac
done
for n in $agents $locals $window $cycles; do
  case "$n" in '' | *[!0-9]*) echo "policy-bytes.sh: \`$n\` is not a whole number" >&2; exit 2 ;; esac
done
[ "$agents" -ge 1 ] && [ "$agents" -le 60000 ] || { echo "policy-bytes.sh: --agents goes from 1 to 60000" >&2; exit 2; }
[ "$locals" -ge 2 ] && [ "$locals" -le 100 ] || { echo "policy-bytes.sh: --locals goes from 2 to 100" >&2; exit 2; }
[ "$window" -ge 1 ] && [ "$cycles" -ge 1 ] || { echo "policy-bytes.sh: --window and --cycles are at least 1" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "policy-bytes.sh: run it as root (it counts packets with nftables)" >&2; exit 2; }

say() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

if ! command -v nft >/dev/null; then
  say "installing nftables"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null
fi
say "building cohort (release)"
cargo build --release -q -p cohort --manifest-path "$repo/Cargo.toml"
cohort="$repo/target/release/cohort"

work=$(mktemp -d)
table="cohort_policy_bytes_$$"
pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  set +e
  stop_all
  nft delete table inet "$table" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# LOCALS+1 consecutive free ports.
policy_port() {
  local base i
  while :; do
    base=$((20000 + RANDOM % 20000))
    for ((i = 0; i <= locals; i++)); do
      ss -Htln "sport = :$((base + i))" | grep -q . && continue 2
    done
    echo "$base"
    return
  done
}

# Every packet to or from the master's port, counted once: on loopback each passes the input
# hook exactly once.
count_master() {
  nft delete table inet "$table" 2>/dev/null || true
  nft -f - <<EOF
table inet $table {
  counter to_master {}
  counter from_master {}
  chain input {
    type filter hook input priority -300; policy accept;
    iif lo tcp dport $1 counter name to_master
    iif lo tcp sport $1 counter name from_master
  }
}
EOF
}
reset_counts() { nft reset counters table inet "$table" >/dev/null; }
# "BYTES_TO BYTES_FROM PACKETS_TO PACKETS_FROM" since the last reset.
read_counts() {
  nft list counters table inet "$table" | awk '
    /counter to_master/ { which = "to" } /counter from_master/ { which = "from" }
    /packets/ { for (i = 1; i <= NF; i++) { if ($i == "packets") p[which] = $(i + 1); if ($i == "bytes") b[which] = $(i + 1) } }
    END { print b["to"] + 0, b["from"] + 0, p["to"] + 0, p["from"] + 0 }'
}

status_json() { # DIR
  "$cohort" status --global --current --json --tier "$1/policy/tier.toml" --key "$1/operator.key" 2>/dev/null
}
reporting() { # DIR -> agents reporting (0 while unknown)
  { status_json "$1" || true; } | awk -F'"agents":' 'NF > 1 { split($2, a, /[,}]/); n = a[1] + 0 } END { print n + 0 }'
}
applied() { # DIR VALUE -> agents whose policy file says firewall.default = VALUE
  { grep -l "^\"firewall.default\" = \"$2\"" "$1"/policy/agents/agent-*.policy 2>/dev/null || true; } | wc -l
}

csv="$out/policy-bytes.csv"
mkdir -p "$out"
echo "layout,phase,cycles,bytes_to_master,bytes_from_master,packets_to_master,packets_from_master,seconds" >"$csv"

measure() { # LAYOUT
  local layout=$1 dir="$work/$1" base n
  base=$(policy_port)
  local init_locals=$locals
  [ "$layout" = direct ] && init_locals=1
  say "$layout: master, $([ "$layout" = tier ] && echo "$locals locals, ")$agents agents; sync window ${window}s"
  "$cohort" init --dir "$dir" --members 1 --policy-locals "$init_locals" --policy-agents "$agents" \
    --policy-port "$base" --policy-sync-s "$window" --policy-poll-s "$window" >/dev/null
  if [ "$layout" = direct ]; then
    # The master serves the agents the one local would have.
    mv "$dir/policy/local-00/agents.toml" "$dir/policy/master/agents.toml"
    printf 'agents = []\n' >"$dir/policy/local-00/agents.toml"
    sed -i 's/^server = "local-00"$/server = "master"/' "$dir/policy/agents/node.toml"
  fi
  local names=(master)
  for ((n = 0; n < init_locals; n++)); do names+=("local-$(printf %02d "$n")"); done
  for name in "${names[@]}" agents; do
    "$cohort" node run --config "$dir/policy/$name/node.toml" 2>"$dir/$name.log" &
    pids+=($!)
  done
  # Every agent reports, and a few windows pass so that every link is open and settled.
  local seen=0
  for _ in $(seq 1 $((60 * window + 120))); do
    seen=$(reporting "$dir")
    [ "$seen" -ge "$agents" ] && break
    sleep 1
  done
  [ "$seen" -ge "$agents" ] || { echo "policy-bytes.sh: only $seen of $agents agents reported; see $dir/*.log" >&2; exit 1; }
  sleep $((2 * window))
  count_master "$base"

  printf '%s: %d quiet windows\n' "$layout" "$cycles" >&2
  reset_counts
  local started=$EPOCHREALTIME
  sleep $((cycles * window))
  local ended=$EPOCHREALTIME
  read -r to from pto pfrom < <(read_counts)
  echo "$layout,quiet,$cycles,$to,$from,$pto,$pfrom,$(awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.1f", b - a }')" >>"$csv"

  printf '%s: one policy to every agent\n' "$layout" >&2
  reset_counts
  started=$EPOCHREALTIME
  "$cohort" policy set fw firewall.default=deny --tier "$dir/policy/tier.toml" --key "$dir/operator.key" >/dev/null
  local done_at=""
  for _ in $(seq 1 $((20 * window * 10))); do
    if [ "$(applied "$dir" deny)" -ge "$agents" ]; then done_at=$EPOCHREALTIME; break; fi
    sleep 0.1
  done
  [ -n "$done_at" ] || { echo "policy-bytes.sh: the policy did not reach every agent; see $dir/*.log" >&2; exit 1; }
  # The reports of the applied policy climb back up within two windows more.
  sleep $((2 * window))
  ended=$EPOCHREALTIME
  local windows
  windows=$(awk -v a="$started" -v b="$ended" -v w="$window" 'BEGIN { printf "%d", (b - a) / w + 0.5 }')
  read -r to from pto pfrom < <(read_counts)
  echo "$layout,change,$windows,$to,$from,$pto,$pfrom,$(awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.1f", b - a }')" >>"$csv"
  stop_all
}

measure tier
measure direct

{
  echo "Policy traffic at the master on $(date -u +%Y-%m-%dT%H:%MZ): $agents agents, sync window and poll" \
    "interval ${window}s; bytes are every TCP/IP packet to and from the master's port on loopback."
  echo
  echo "| layout | phase | windows | to the master | from the master | per window, both ways | packets per window |"
  echo "|---|---|---:|---:|---:|---:|---:|"
  tail -n +2 "$csv" | awk -F, -v locals="$locals" '
    function size(b) { return b >= 1048576 ? sprintf("%.2f MiB", b / 1048576) : sprintf("%.1f KiB", b / 1024) }
    {
      layout = ($1 == "tier") ? "tier (" locals " locals)" : "direct polling"
      per = ($4 + $5) / $3; pk = ($6 + $7) / $3
      printf "| %s | %s | %d | %s | %s | %s | %.0f |\n", layout, $2, $3, size($4), size($5), size(per), pk
      total[$1 "," $2] = per
    }
    END {
      print ""
      if (total["tier,quiet"] > 0) printf "Quiet windows: direct polling moves %.1fx the bytes at the master that the tier does.\n", total["direct,quiet"] / total["tier,quiet"]
      if (total["tier,change"] > 0) printf "Windows carrying a change: direct polling moves %.1fx the bytes at the master.\n", total["direct,change"] / total["tier,change"]
    }'
} >"$out/policy-bytes.md"
cat "$out/policy-bytes.md"
echo "rows: $csv; table: $out/policy-bytes.md" >&2
