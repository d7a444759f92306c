#!/usr/bin/env bash
# A loopback site for timing `cohort exec` on many hosts: one member (gateway, KDC, collector)
# and the exec member playing N managed hosts, each on its own 127.0.x.y address.
#
#   bench/exec-site.sh start COHORT DIR HOSTS BASE_PORT EXEC_PORT   # init, start, log in
#   bench/exec-site.sh run   COHORT DIR HOSTS [FANOUT]              # one timed-able exec of `true`
#   bench/exec-site.sh stop  DIR                                    # stop the nodes it started
#
# COHORT is a cohort binary (so two builds can be compared side by side on one machine).
set -euo pipefail

cmd=${1:?start|run|stop}
case "$cmd" in
start)
  cohort=${2:?COHORT}; dir=${3:?DIR}; hosts=${4:?HOSTS}; base=${5:?BASE_PORT}; exec_port=${6:?EXEC_PORT}
  rm -rf "$dir"
  "$cohort" init --dir "$dir/site" --members 1 --base-port "$base" \
    --exec-hosts "$hosts" --exec-port "$exec_port" >/dev/null
  "$cohort" node run --config "$dir/site/m0/node.toml" 2>"$dir/m0.log" &
  echo $! >"$dir/pids"
  "$cohort" node run --config "$dir/site/exec/node.toml" 2>"$dir/exec.log" &
  echo $! >>"$dir/pids"
  for _ in $(seq 1 100); do
    if "$cohort" login --state-dir "$dir/client" --cluster "$dir/site/cluster.toml" -u alice \
        --password-file "$dir/site/alice.password" >/dev/null 2>&1; then
      echo "site up: $hosts hosts, state in $dir/client"
      exit 0
    fi
    sleep 0.2
  done
  echo "the gateway never took a login; see $dir/m0.log" >&2
  exit 1
  ;;
run)
  cohort=${2:?COHORT}; dir=${3:?DIR}; hosts=${4:?HOSTS}; fanout=${5:-64}
  width=${#hosts}; [ "$width" -lt 2 ] && width=2
  last=$(printf "%0${width}d" "$hosts"); first=$(printf "%0${width}d" 1)
  exec "$cohort" exec --state-dir "$dir/client" -w "h[$first-$last]" -f "$fanout" -- true
  ;;
stop)
  dir=${2:?DIR}
  if [ -f "$dir/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$dir/pids"
    rm -f "$dir/pids"
  fi
  ;;
*)
  echo "usage: $0 start|run|stop ..." >&2
  exit 2
  ;;
esac
