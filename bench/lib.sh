# Shared by the bench scripts (sourced, never run): a free TCP port and resident memory.

# A TCP port nothing listens on, between 20000 and 39999.
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    ss -Htln "sport = :$port" | grep -q . || { echo "$port"; return; }
  done
}

# Process $1's resident memory in MiB: field $2 of /proc/PID/status, `VmRSS` (now) or `VmHWM`
# (the most since the last reset; writing 5 to /proc/PID/clear_refs resets it).
mib() { awk -v f="$2:" '$1 == f { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
