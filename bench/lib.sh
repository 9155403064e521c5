# bench/lib.sh - what the bench scripts share (sourced, after SILO is set):
# free ports, silos started in the background with their output in $LOG,
# and every process they started (PIDS) stopped on exit.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
LOG=$(mktemp -d)
start() { # log-name args...: a silo, returned once it listens
    local name=$1; shift
    "$SILO" "$@" >"$LOG/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do grep -q listening "$LOG/$name.log" && return 0; sleep 0.1; done
    echo "$(basename "$0"): silo $name did not start:" >&2; cat "$LOG/$name.log" >&2; exit 1
}
