#!/usr/bin/env bash
# Fan-out side by side on one machine: the local spawn floor, `pdsh -R ssh`, `clush` and
# `cohort exec`, each running one trivial command on N loopback hosts (each its own 127.0.x.y)
# at the same fan-out, timed over several runs, with every host that really ran the command
# counted (a dropped ssh connection hides behind an exit code; a file per host does not).
#
#   sudo bench/fanout.sh [--sizes "50 200 1000"] [--runs 3] [--fanout 64] [--out DIR]
#
# Needs root: it installs what it compares against (openssh-server, pdsh, clustershell and GNU
# time, from Debian's packages), adds a throw-away user, and starts a private sshd on a free port
# with its own host key that only that user, from loopback, with the key made here, may enter.
# It removes all of that when it ends, however it ends. Results: DIR/fanout.csv (one row per
# run), DIR/fanout.md (the table) and DIR/fanout.svg (time against hosts for every tool), DIR
# defaulting to bench/results.
#
# The command each side runs writes one file named after the host it ran on, then exits:
#   floor   `touch MARKS/HOST`, N processes by `xargs -P FANOUT`
#   ssh     `set -- $SSH_CONNECTION; exec touch MARKS/$3` (the address the connection reached)
#   cohort  `/usr/bin/touch MARKS/%h`
# cohort is timed twice in each run: `cohort-new` right after the exec node restarted, so the
# gateway opens every channel to the hosts in the run (a first contact), and `cohort` just
# after, on the channels the gateway keeps open between runs.
# CPU is counted on each side: the client's (user + system, children included) and the
# server's (sshd's listener, or cohort's two nodes, with every child they reaped).
set -euo pipefail

sizes="50 200 1000"
runs=3
fanout=64
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
out="$repo/bench/results"
while [ $# -gt 0 ]; do
  case "$1" in
  --sizes) sizes=${2:?--sizes needs a list}; shift 2 ;;
  --runs) runs=${2:?--runs needs a number}; shift 2 ;;
  --fanout) fanout=${2:?--fanout needs a number}; shift 2 ;;
  --out) out=${2:?--out needs a directory}; shift 2 ;;
  -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
  *) echo "fanout.sh: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
  esac
done
for n in $sizes $runs $fanout; do
  case "$n" in '' | *[!0-9]*) echo "fanout.sh: \`$n\` is not a whole number" >&2; exit 2 ;; esac
done
max=0
for n in $sizes; do
  [ "$n" -ge 1 ] && [ "$n" -le 2000 ] || { echo "fanout.sh: sizes go from 1 to 2000, not $n" >&2; exit 2; }
  [ "$n" -gt "$max" ] && max=$n
done
[ "$(id -u)" -eq 0 ] || { echo "fanout.sh: run it as root (it adds a user and starts sshd)" >&2; exit 2; }

say() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

# --- what it compares against --------------------------------------------------------------
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v pdsh >/dev/null || need+=(pdsh)
command -v clush >/dev/null || need+=(clustershell)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
say "building cohort (release)"
cargo build --release -q -p cohort --manifest-path "$repo/Cargo.toml"
cohort="$repo/target/release/cohort"

# --- a private world, removed at the end ---------------------------------------------------
mkdir -p /srv
work=$(mktemp -d -p /srv cohort-fanout.XXXXXX)
chmod 711 "$work"
user="cohortfan$$"
sshd_pid=""
cleanup() {
  set +e
  [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null
  "$repo/bench/exec-site.sh" stop "$work/cohort" 2>/dev/null
  wait 2>/dev/null
  id "$user" >/dev/null 2>&1 && userdel -r "$user" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Host i (from 1) at 127.0.x.y, as `cohort init --exec-hosts` places its hosts.
address() { echo "127.0.$((1 + $1 / 250)).$((1 + $1 % 250))"; }

say "a throw-away user and a private sshd"
useradd -m -s /bin/sh "$user"
usermod -p '*' "$user" # no password, yet not locked: sshd refuses locked accounts
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
install -m 644 "$work/client_key.pub" "$work/authorized_keys"
ssh_port=$(free_port)
mkdir -p /run/sshd
cat >"$work/sshd_config" <<EOF
Port $ssh_port
ListenAddress 0.0.0.0
HostKey $work/host_key
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
AllowUsers $user@127.0.0.0/8
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
# Above the fan-out, so that sshd does not drop the peers' connections (the default is 10:30:100).
MaxStartups $((fanout * 2))
EOF
/usr/sbin/sshd -D -f "$work/sshd_config" -E "$work/sshd.log" &
sshd_pid=$!
ssh_opts="-p $ssh_port -i $work/client_key -o BatchMode=yes -o StrictHostKeyChecking=no"
ssh_opts="$ssh_opts -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=30"
for _ in $(seq 1 50); do
  # shellcheck disable=SC2086
  ssh $ssh_opts -l "$user" "$(address 1)" true 2>/dev/null && break
  sleep 0.2
done
# shellcheck disable=SC2086
ssh $ssh_opts -l "$user" "$(address 1)" true || { echo "sshd does not let $user in; see $work/sshd.log" >&2; exit 1; }

say "a cohort site of $max hosts"
base=$(free_port)
exec_port=$(free_port)
"$repo/bench/exec-site.sh" start "$cohort" "$work/cohort" "$max" "$base" "$exec_port" >/dev/null
node_pids=$(tr '\n' ' ' <"$work/cohort/pids")
read -r member_pid exec_pid <<<"$node_pids"
# Stops the exec node and starts it again on the same state: the gateway sees every channel to
# its hosts close, so the next run opens each anew. Waits until every host listens again.
restart_exec() {
  kill "$exec_pid"
  while kill -0 "$exec_pid" 2>/dev/null; do sleep 0.05; done
  "$cohort" node run --config "$work/cohort/site/exec/node.toml" 2>>"$work/cohort/exec.log" &
  exec_pid=$!
  node_pids="$member_pid $exec_pid"
  printf '%s\n%s\n' "$member_pid" "$exec_pid" >"$work/cohort/pids" # for the clean-up
  for _ in $(seq 1 600); do
    [ "$(ss -Htln "sport = :$exec_port" | wc -l)" -ge "$max" ] && return 0
    sleep 0.05
  done
  echo "fanout.sh: the exec node did not listen for its $max hosts again; see $work/cohort/exec.log" >&2
  exit 1
}
# Writing 5 to clear_refs restarts a process's high-water mark.
reset_peak() { for pid in "$@"; do echo 5 >"/proc/$pid/clear_refs"; done; }
width=${#max}; [ "$width" -lt 2 ] && width=2

marks="$work/marks"
mkdir -p "$marks"
chmod 1777 "$marks"
ticks=$(getconf CLK_TCK)
# CPU seconds of processes and every child they reaped: utime + stime + cutime + cstime.
cpu_of() {
  local total=0 pid fields
  for pid in "$@"; do
    read -r -a fields <"/proc/$pid/stat"
    # Fields 14-17 (from 1), counted after the command name, which has no spaces here.
    total=$((total + fields[13] + fields[14] + fields[15] + fields[16]))
  done
  echo "$total"
}

run_one() { # TOOL N -> prints wall client_cpu server_cpu counted exit
  local tool=$1 n=$2 server_pids="" status=0 before after
  rm -rf "$marks" && mkdir "$marks" && chmod 1777 "$marks"
  seq 1 "$n" | while read -r i; do address "$i"; done >"$work/hosts"
  case "$tool" in
  floor) set -- sh -c "seq -w 1 $n | xargs -P $fanout -I{} touch $marks/{}" ;;
  pdsh)
    server_pids=$sshd_pid
    export PDSH_SSH_ARGS="$ssh_opts -l%u %h"
    set -- pdsh -R ssh -f "$fanout" -l "$user" -w "^$work/hosts" "set -- \$SSH_CONNECTION; exec touch $marks/\$3"
    ;;
  clush)
    server_pids=$sshd_pid
    set -- clush -f "$fanout" -l "$user" -o "$ssh_opts" --hostfile "$work/hosts" \
      "set -- \$SSH_CONNECTION; exec touch $marks/\$3"
    ;;
  cohort | cohort-new)
    server_pids=$node_pids
    local last first
    last=$(printf "%0${width}d" "$n"); first=$(printf "%0${width}d" 1)
    set -- "$cohort" exec --state-dir "$work/cohort/client" -w "h[$first-$last]" -f "$fanout" \
      /usr/bin/touch "$marks/%h"
    ;;
  esac
  # shellcheck disable=SC2086
  before=$(cpu_of $server_pids)
  local started=$EPOCHREALTIME
  /usr/bin/time -f "%U %S" -o "$work/time" "$@" >"$work/$tool.out" 2>"$work/$tool.err" || status=$?
  local ended=$EPOCHREALTIME
  # shellcheck disable=SC2086
  after=$(cpu_of $server_pids)
  read -r user_s sys_s <"$work/time"
  local counted
  counted=$(find "$marks" -mindepth 1 | wc -l)
  awk -v w0="$started" -v w1="$ended" -v u="$user_s" -v s="$sys_s" -v d="$((after - before))" \
    -v t="$ticks" -v c="$counted" -v e="$status" \
    'BEGIN { printf "%.3f %.2f %.2f %d %d\n", w1 - w0, u + s, d / t, c, e }'
}

mkdir -p "$out"
# Idle: the site is up, every host listening, nothing run yet.
idle="$(mib "$member_pid" VmRSS) $(mib "$exec_pid" VmRSS)"
peaks=""
csv="$out/fanout.csv"
echo "hosts,tool,run,wall_s,client_cpu_s,server_cpu_s,hosts_counted,exit" >"$csv"
tools="floor pdsh clush cohort-new cohort"
total=0
for n in $sizes; do total=$((total + runs * 5)); done
done_runs=0
for n in $sizes; do
  for run in $(seq 1 "$runs"); do
    # Each run takes every tool in turn, so a slow spell of the machine falls on all of them.
    for tool in $tools; do
      done_runs=$((done_runs + 1))
      printf '\r[%3d/%3d] %5d hosts, run %d: %-6s ' "$done_runs" "$total" "$n" "$run" "$tool" >&2
      [ "$tool" = cohort-new ] && restart_exec
      # Every tool starts on a quiet machine: nothing left of the run before (cohort's nodes
      # finish writing that run's audit records after its last result) or of a restart.
      sleep 1
      [ "$tool" = cohort ] && [ "$n" -eq "$max" ] && reset_peak "$member_pid" "$exec_pid"
      read -r wall cpu server counted status < <(run_one "$tool" "$n")
      if [ "$tool" = cohort ] && [ "$n" -eq "$max" ]; then
        peaks="$peaks $(mib "$member_pid" VmHWM) $(mib "$exec_pid" VmHWM)"
      fi
      echo "$n,$tool,$run,$wall,$cpu,$server,$counted,$status" >>"$csv"
      if [ "$counted" -ne "$n" ]; then
        printf '\n%s ran on %d of %d hosts (exit %d); its errors began: %s\n' "$tool" "$counted" \
          "$n" "$status" "$(head -c 300 "$work/$tool.err")" >&2
      fi
    done
  done
done
printf '\n' >&2

# --- the table ----------------------------------------------------------------------------
cpu_model=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
{
  echo "Fan-out on $(date -u +%Y-%m-%dT%H:%MZ): $(nproc) cores ($cpu_model), $(uname -sr)," \
    "fan-out $fanout, $runs runs each; time is the wall-clock median (min-max)."
  echo
  echo "cohort-new: the first run after the exec node restarted (every channel opened in the run);" \
    "cohort: the run just after, on the channels the gateway keeps open."
  echo
  echo "| hosts | tool | time (s) | hosts that ran (least) | client CPU (s) | server CPU (s) | vs floor | cohort (open / new channels) faster by |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|"
  tail -n +2 "$csv" | sort -t, -k1,1n -k2,2 | awk -F, '
    function isort(a, k,    i, j, v) {
      for (i = 2; i <= k; i++) { v = a[i]; for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]; a[j + 1] = v }
    }
    function median(a, k) { isort(a, k); return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
    function flush() {
      if (key == "") return
      med[key] = median(walls, cnt); lo[key] = walls[1]; hi[key] = walls[cnt]
      cmed[key] = median(cpus, cnt); smed[key] = median(servers, cnt); least[key] = minc
      order[++keys] = key; H[key] = hosts; T[key] = tool
      split("", walls); split("", cpus); split("", servers); cnt = 0
    }
    {
      k = $1 "," $2
      if (k != key) { flush(); key = k; hosts = $1; tool = $2; minc = $7 }
      cnt++; walls[cnt] = $4 + 0; cpus[cnt] = $5 + 0; servers[cnt] = $6 + 0; if ($7 + 0 < minc + 0) minc = $7
    }
    END {
      flush()
      rank["floor"] = 1; rank["cohort"] = 2; rank["cohort-new"] = 3; rank["pdsh"] = 4; rank["clush"] = 5
      for (i = 1; i <= keys; i++) {
        k = order[i]; h = H[k]; floor = med[h ",floor"]; coh = med[h ",cohort"]; cnew = med[h ",cohort-new"]
        vs = (floor > 0) ? sprintf("%.2fx", med[k] / floor) : "-"
        by = ((T[k] == "pdsh" || T[k] == "clush") && coh > 0 && cnew > 0) ? sprintf("%.1fx / %.1fx", med[k] / coh, med[k] / cnew) : ""
        printf "%d %d | %d | %s | %.3f (%.3f-%.3f) | %d of %d | %.2f | %.2f | %s | %s |\n",
          h, rank[T[k]], h, T[k], med[k], lo[k], hi[k], least[k], h, cmed[k], smed[k], vs, by
      }
    }' | sort -k1,1n -k2,2n | cut -d' ' -f3-
} >"$out/fanout.md"
{
  echo
  echo "Resident memory of cohort's two nodes (MiB), idle with $max hosts and at the peak of each $max-host run:"
  echo
  echo "| node | idle | peak during a run (each run) |"
  echo "|---|---:|---:|"
  read -r -a idle_mib <<<"$idle"
  read -r -a peak_mib <<<"$peaks"
  member_peaks=""; exec_peaks=""
  for ((i = 0; i < ${#peak_mib[@]}; i += 2)); do
    member_peaks="$member_peaks ${peak_mib[i]}"; exec_peaks="$exec_peaks ${peak_mib[i + 1]}"
  done
  echo "| member (gateway, KDC, audit collector) | ${idle_mib[0]} |$member_peaks |"
  echo "| exec node ($max hosts) | ${idle_mib[1]} |$exec_peaks |"
} >>"$out/fanout.md"
cat "$out/fanout.md"
cargo run --release -q -p cohort-bench-plot --manifest-path "$repo/Cargo.toml" -- "$csv" "$out/fanout.svg"
echo "rows: $csv; table: $out/fanout.md; chart: $out/fanout.svg" >&2
