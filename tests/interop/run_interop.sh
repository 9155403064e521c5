#!/usr/bin/env bash
# run_interop.sh COUNTER_SILO - the gRPC interop test (ctest: grpc_interop).
# run_interop.sh --check-modules - only check that node and the npm packages are
# there, saying how to get them if not (ctest: interop.npm_ci_done).
# Starts COUNTER_SILO --listen 127.0.0.1:0, waits for its "listening" line,
# runs interop.test.mjs (a stock grpc-js client) against its port, then stops
# the silo with SIGTERM and checks that it exits 0. The silo is killed on any
# way out of this script.
set -euo pipefail
silo=${1:?usage: run_interop.sh path/to/counter-silo | --check-modules}
case $silo in /*|--check-modules) ;; *) silo=$PWD/$silo ;; esac
cd "$(dirname "$0")"

die() { echo "run_interop.sh: $*" >&2; exit 1; }
command -v node >/dev/null || die "node is not installed: apt-get install nodejs npm (scripts/test.sh does it)"
for m in @grpc/grpc-js @grpc/proto-loader protobufjs; do
  [ -d "node_modules/$m" ] || die "tests/interop/node_modules has no $m: run 'npm ci --prefix tests/interop' from the repository root (scripts/test.sh does it)"
done
if [ "$silo" = --check-modules ]; then
  echo "run_interop.sh: node $(node --version) and the npm packages of tests/interop are installed"
  exit 0
fi
[ -x "$silo" ] || die "$silo is not an executable"

tmp=$(mktemp -d)
silo_pid=
node_pid=
cleanup() {
  if [ -n "$node_pid" ]; then kill -KILL -- "-$node_pid" 2>/dev/null || true; fi
  if [ -n "$silo_pid" ] && kill -0 "$silo_pid" 2>/dev/null; then
    kill -KILL "$silo_pid" 2>/dev/null || true
    wait "$silo_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "run_interop.sh: interrupted" >&2; exit 130' INT TERM HUP

silo_log() {
  echo "---- counter-silo stdout:" >&2; cat "$tmp/silo.out" >&2 || true
  echo "---- counter-silo stderr:" >&2; cat "$tmp/silo.err" >&2 || true
}

# DurableCounter keeps its value in an SQLite file the tests read back.
"$silo" --listen 127.0.0.1:0 --storage "sqlite:$tmp/state.db" >"$tmp/silo.out" 2>"$tmp/silo.err" &
silo_pid=$!

# Wait (at most 20 s) for "counter-silo: listening on ... (port N, cluster '...')".
port=
for _ in $(seq 400); do
  port=$(sed -n 's/.*listening.*(port \([0-9][0-9]*\),.*/\1/p' "$tmp/silo.out" | head -n 1)
  [ -n "$port" ] && break
  kill -0 "$silo_pid" 2>/dev/null || { silo_log; die "counter-silo exited before listening"; }
  sleep 0.05
done
[ -n "$port" ] || { silo_log; die "counter-silo printed no listening line within 20 s"; }
echo "== counter-silo (pid $silo_pid) listening on 127.0.0.1:$port"

# node runs in the background so that a signal reaches the trap at once, in
# its own process group so that the trap also ends the test file's process.
status=0
QUARK_PORT=$port QUARK_STATE_DB=$tmp/state.db setsid node --test --test-reporter=spec interop.test.mjs &
node_pid=$!
wait "$node_pid" || status=$?
node_pid=

# The silo must have survived the tests, and stop gracefully on SIGTERM.
if ! kill -0 "$silo_pid" 2>/dev/null; then
  rc=0
  wait "$silo_pid" || rc=$?
  silo_pid=
  silo_log
  die "counter-silo died during the tests (exit status $rc)"
fi
kill -TERM "$silo_pid"
for _ in $(seq 400); do # at most 20 s
  kill -0 "$silo_pid" 2>/dev/null || break
  sleep 0.05
done
if kill -0 "$silo_pid" 2>/dev/null; then
  silo_log
  die "counter-silo did not stop within 20 s of SIGTERM"
fi
rc=0
wait "$silo_pid" || rc=$?
silo_pid=
if [ "$rc" -ne 0 ]; then
  silo_log
  die "counter-silo exited with status $rc on SIGTERM (expected 0)"
fi
echo "== counter-silo stopped on SIGTERM with exit status 0"
[ "$status" -eq 0 ] || { silo_log; die "interop tests failed (node exit status $status)"; }
echo "== grpc interop: all tests passed"
