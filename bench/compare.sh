#!/bin/bash
# bench/compare.sh - Quark side by side with the peer baselines, in one run,
# interleaved, with ratios.
#
#   bash bench/compare.sh [--runs N] [--peers rawtcp,redis,grpc,erlang[,caf]]
#                         [--transports tcp,grpc,tcp-1w,grpc-1w] [--build-dir DIR] [--quick]
#
# Starts one counter-silo per Quark transport and one server per peer (all on
# 127.0.0.1, free ports), then for each run i measures
#   w1: quark (each transport), then each peer's W1
#   w2: quark (each transport), then each peer's W2 (every shape)
# so machine drift hits every system alike. Transports default to
# tcp,grpc,tcp-1w,grpc-1w: "-1w" is the same against a silo started with
# --workers 1 (one silo thread, like the Redis and raw TCP servers: with the
# client's I/O thread that is one thread per core of a 2-core machine). One
# other than tcp is measured only if a trial quark-bench run over it succeeds.
# Prints a markdown table of medians with a "quark/peer" calls/s ratio column
# and writes it to bench/results/compare-<date>.md. Every server it started is
# stopped on exit.
#
# The peers come from ../shared/peers (PEERS_SRC), copied to /tmp/peers
# (PEERS_DIR) and built there. Their load commands are the ones in their README;
# server lifetimes are raised and ports are picked free (README ports if free).
# --quick: 1 run, w1 20,000 calls, w2 200,000 calls (a smoke test; the Erlang
# and CAF clients have fixed call counts).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=3
RUNS_SET=0
PEERS=rawtcp,redis,grpc,erlang
TRANSPORTS=tcp,grpc,tcp-1w,grpc-1w   # all but tcp only if a trial run works
BUILD=$REPO/build
QUICK=0
PEERS_SRC=${PEERS_SRC:-$REPO/../shared/peers}
PEERS_DIR=${PEERS_DIR:-/tmp/peers}
CLIENT_TIMEOUT=120

usage() {
    sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) [ $# -ge 2 ] || usage; RUNS=$2; RUNS_SET=1; shift 2 ;;
        --peers) [ $# -ge 2 ] || usage; PEERS=$2; shift 2 ;;
        --transports) [ $# -ge 2 ] || usage; TRANSPORTS=$2; shift 2 ;;
        --build-dir) [ $# -ge 2 ] || usage; BUILD=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        -h|--help) usage ;;
        *) echo "compare.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --runs wants a positive integer" >&2; exit 2; }
if [ "$QUICK" = 1 ] && [ "$RUNS_SET" = 0 ]; then RUNS=1; fi
case "$BUILD" in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
IFS=, read -r -a PEER_LIST <<<"$PEERS"
IFS=, read -r -a TRANSPORT_LIST <<<"$TRANSPORTS"
for p in "${PEER_LIST[@]}"; do
    case "$p" in rawtcp|redis|grpc|erlang|caf) ;; *) echo "compare.sh: unknown peer '$p'" >&2; exit 2 ;; esac
done
for t in "${TRANSPORT_LIST[@]}"; do
    case "$t" in tcp|grpc|tcp-1w|grpc-1w) ;; *) echo "compare.sh: unknown transport '$t'" >&2; exit 2 ;; esac
done

if [ "$QUICK" = 1 ]; then W1_CALLS=20000; W2_CALLS=200000; else W1_CALLS=100000; W2_CALLS=1000000; fi
W2_MAXSEC=10
KEYS=10000

T_START=$SECONDS
DATE_UTC=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
WORK=$(mktemp -d /tmp/quark-compare.XXXXXX)
mkdir -p "$WORK/logs"
TSV=$WORK/results.tsv      # system workload shape run calls_per_s p50_us p99_us
RAW=$WORK/raw.txt          # the clients' result lines, for the record
: >"$TSV"; : >"$RAW"
NOTES=()
FAILS=()

note() { echo "compare.sh: $*" >&2; }

# ---------------------------------------------------------------- servers --
# Every server runs in its own session (setsid), so stopping it by its process
# group also stops its helpers (Erlang's erl_child_setup, ...).
SERVER_NAMES=()
SERVER_PIDS=()

start_server() {  # NAME LOGFILE CMD... ; sets SRV_PID
    local name=$1 log=$2
    shift 2
    setsid "$@" >"$log" 2>&1 </dev/null &
    SRV_PID=$!
    SERVER_NAMES+=("$name")
    SERVER_PIDS+=("$SRV_PID")
}

stop_server() {  # PID SIGNAL ; returns the exit status (or 0 if already gone)
    local pid=$1 sig=$2 rc=0 i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || rc=$?; return $rc; }
    kill -"$sig" "$pid" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        note "pid $pid did not stop on SIG$sig within 10 s: SIGKILL"
        kill -KILL -- -"$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    kill -TERM -- -"$pid" 2>/dev/null || true   # leftovers of its group
    return $rc
}

forget_server() {  # PID: drop it from the cleanup list
    local i
    for i in "${!SERVER_PIDS[@]}"; do
        if [ "${SERVER_PIDS[$i]}" = "$1" ]; then SERVER_PIDS[$i]=""; fi
    done
    return 0
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#SERVER_PIDS[@]} - 1; i >= 0; i--)); do
        [ -n "${SERVER_PIDS[$i]}" ] || continue
        stop_server "${SERVER_PIDS[$i]}" TERM || true
    done
    if [ "$rc" = 0 ] && [ ${#FAILS[@]} = 0 ]; then
        rm -rf "$WORK"
    else
        echo "compare.sh: logs kept in $WORK" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {  # [PREFERRED]: prints a port on 127.0.0.1 that nothing listens on
    python3 - "${1:-0}" <<'EOF'
import socket, sys
def try_bind(p):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", p))
        return s.getsockname()[1]
    except OSError:
        return 0
    finally:
        s.close()
want = int(sys.argv[1])
print((want and try_bind(want)) or try_bind(0))
EOF
}

wait_listen() {  # PORT PID NAME: until something listens on PORT (15 s)
    local i
    for i in $(seq 150); do
        kill -0 "$2" 2>/dev/null || { note "$3 exited before listening"; return 1; }
        ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    note "$3 is not listening on port $1 after 15 s"
    return 1
}

wait_log() {  # FILE REGEX PID NAME SECONDS
    local i
    for i in $(seq $(($5 * 10))); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || { note "$4 exited before it was ready:"; tail -5 "$1" >&2; return 1; }
        sleep 0.1
    done
    note "$4 not ready after $5 s:"; tail -5 "$1" >&2
    return 1
}

# ----------------------------------------------------------- dependencies --
install_missing() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} = 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        note "missing packages (run as root to install them): ${missing[*]}"
        exit 1
    fi
    note "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >"$WORK/logs/apt.log" 2>&1 ||
        { tail -20 "$WORK/logs/apt.log" >&2; exit 1; }
}

pkgs=(gcc make)
command -v python3 >/dev/null || pkgs+=(python3)
for p in "${PEER_LIST[@]}"; do
    case "$p" in
        redis) pkgs+=(redis-server redis-tools) ;;
        erlang) pkgs+=(erlang-nox) ;;
        grpc) pkgs+=(g++ pkg-config libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev) ;;
        caf) pkgs+=(g++ libcaf-dev) ;;
    esac
done
install_missing "${pkgs[@]}"

# ----------------------------------------------------------------- quark ----
BENCH=$BUILD/bench/quark-bench
SILO=$BUILD/examples/counter/counter-silo
if [ ! -x "$BENCH" ] || [ ! -x "$SILO" ]; then
    note "building quark-bench and counter-silo in $BUILD (Release)"
    built=0
    for attempt in 1 2 3; do
        if cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DQUARK_BUILD_TESTS=OFF \
                >"$WORK/logs/build.log" 2>&1 &&
            cmake --build "$BUILD" -j"$(nproc)" --target quark-bench counter-silo \
                >>"$WORK/logs/build.log" 2>&1; then
            built=1; break
        fi
        tail -20 "$WORK/logs/build.log" >&2
        if [ $attempt -lt 3 ]; then note "build failed (attempt $attempt); retrying in 60 s"; sleep 60; fi
    done
    [ $built = 1 ] || { note "build failed (missing packages? bash scripts/demo.sh installs them)"; exit 1; }
fi
BUILD_TYPE=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$BUILD/CMakeCache.txt" 2>/dev/null || true)
BIN_TIME=$(date -u -r "$BENCH" +%Y-%m-%dT%H:%M:%SZ)

# ------------------------------------------------------------------ peers ---
[ -d "$PEERS_SRC" ] || { note "no peers at $PEERS_SRC (set PEERS_SRC)"; exit 1; }
mkdir -p "$PEERS_DIR"
cp -rTu --no-preserve=mode "$PEERS_SRC" "$PEERS_DIR"   # writable copy; keeps earlier builds
P=$PEERS_DIR

build_peer() {  # the same build steps as the peer's run.sh
    case "$1" in
        rawtcp) (cd "$P/rawtcp" && gcc -O2 -Wall -o server server.c && gcc -O2 -Wall -o client client.c) ;;
        grpc) (cd "$P/grpc" && make -s -j2) ;;
        erlang) (cd "$P/erlang" && erlc kvbench.erl) ;;
        caf) (cd "$P/caf" && { [ caf_kv -nt caf_kv.cpp ] ||
              g++ -O2 -std=c++17 -o caf_kv caf_kv.cpp -lcaf_io -lcaf_core -lpthread; }) ;;
        redis) true ;;
    esac
}
for p in "${PEER_LIST[@]}"; do
    note "building peer $p"
    build_peer "$p" >"$WORK/logs/build-$p.log" 2>&1 || { tail -20 "$WORK/logs/build-$p.log" >&2; exit 1; }
done

TTL=$((900 + RUNS * 600))   # server lifetimes (the README uses 600 s for 3 runs)
declare -A PORT PID SILO_LOG
export ERL_EPMD_ADDRESS=127.0.0.1
ERL_DIST=(-kernel inet_dist_use_interface '{127,0,0,1}' -setcookie kvbenchcookie)
ERL_B=kvb_b@localhost
ERL_A=kvb_a@localhost
ERL_B_STARTED=0

start_erlang_b() {
    start_server erlang "$WORK/logs/erlang-b.log" \
        bash -c 'cd "$1" && shift && exec erl "$@"' _ "$P/erlang" \
        -sname "$ERL_B" "${ERL_DIST[@]}" -noshell -noinput -eval 'kvbench:server()'
    PID[erlang]=$SRV_PID
    ERL_B_STARTED=$SECONDS
    wait_log "$WORK/logs/erlang-b.log" "server ready" "$SRV_PID" "Erlang node B" 60
}

start_peer() {
    local p=$1 port
    case "$p" in
        rawtcp)
            port=$(free_port 17001)
            start_server rawtcp "$WORK/logs/rawtcp-server.log" "$P/rawtcp/server" "$port" "$TTL"
            PID[rawtcp]=$SRV_PID; PORT[rawtcp]=$port
            wait_listen "$port" "$SRV_PID" "raw TCP server" ;;
        redis)
            port=$(free_port 16379)
            start_server redis "$WORK/logs/redis-stdout.log" redis-server --port "$port" --bind 127.0.0.1 \
                --save '' --appendonly no --daemonize no --logfile "$WORK/logs/redis-server.log"
            PID[redis]=$SRV_PID; PORT[redis]=$port
            local i
            for i in $(seq 100); do
                redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && return 0
                kill -0 "$SRV_PID" 2>/dev/null || break
                sleep 0.1
            done
            note "redis-server did not answer PING"; return 1 ;;
        grpc)
            port=$(free_port 17002)
            start_server grpc "$WORK/logs/grpc-server.log" "$P/grpc/server" "$port" "$TTL"
            PID[grpc]=$SRV_PID; PORT[grpc]=$port
            wait_listen "$port" "$SRV_PID" "gRPC server" ;;
        erlang)
            if ! epmd -names >/dev/null 2>&1; then
                start_server epmd "$WORK/logs/epmd.log" epmd -address 127.0.0.1
                local i
                for i in $(seq 50); do epmd -names >/dev/null 2>&1 && break; sleep 0.1; done
            fi
            # The README's node names, unless another run is using them.
            if epmd -names 2>/dev/null | grep -qE "name kvb_(a|b) "; then
                ERL_B=kvb_b_cmp$$@localhost; ERL_A=kvb_a_cmp$$@localhost
                note "kvb_a/kvb_b already registered in epmd: using $ERL_A and $ERL_B"
            fi
            start_erlang_b ;;
        caf)
            port=$(free_port 17003)
            start_server caf "$WORK/logs/caf-server.log" "$P/caf/caf_kv" --mode=server --port="$port" --ttl="$TTL"
            PID[caf]=$SRV_PID; PORT[caf]=$port
            wait_log "$WORK/logs/caf-server.log" "caf server:" "$SRV_PID" "CAF server" 60 ;;
    esac
}

SILO_STARTS=0
start_silo() {  # TRANSPORT
    local t=$1 port log
    port=$(free_port)
    SILO_STARTS=$((SILO_STARTS + 1))
    log=$WORK/logs/silo-$t-$SILO_STARTS.log
    local extra=()
    case "$t" in *-1w) extra=(--workers 1) ;; esac
    start_server "counter-silo-$t" "$log" "$SILO" --listen "127.0.0.1:$port" "${extra[@]}"
    PID[silo-$t]=$SRV_PID; PORT[silo-$t]=$port; SILO_LOG[$t]=$log
    wait_log "$log" listening "$SRV_PID" "counter-silo ($t)" 30
}

ensure_silo() {  # TRANSPORT WHAT: restart the silo if it died (and say so)
    local t=$1 pid=${PID[silo-$1]} rc=0
    if kill -0 "$pid" 2>/dev/null && ! grep -q stopping "${SILO_LOG[$t]}"; then return 0; fi
    stop_server "$pid" TERM 2>/dev/null || rc=$?
    forget_server "$pid"
    FAILS+=("counter-silo ($t) was gone before $2 (exit status $rc; its last words: $(tail -2 "${SILO_LOG[$t]}" | tr '\n' ' ')); restarted it")
    note "counter-silo ($t) is gone (exit status $rc), restarting it:"
    tail -3 "${SILO_LOG[$t]}" >&2
    start_silo "$t"
}

stop_silo() {  # TRANSPORT: SIGTERM, expect a graceful exit 0
    local t=$1 pid=${PID[silo-$1]:-} rc=0
    [ -n "$pid" ] || return 0
    if ! kill -0 "$pid" 2>/dev/null || grep -q stopping "${SILO_LOG[$t]}"; then
        FAILS+=("counter-silo ($t) was stopped or gone before the end (its last words: $(tail -2 "${SILO_LOG[$t]}" | tr '\n' ' '))")
    fi
    stop_server "$pid" TERM || rc=$?
    forget_server "$pid"
    PID[silo-$t]=""
    if [ "$rc" != 0 ]; then
        FAILS+=("counter-silo ($t) exited with status $rc on SIGTERM")
    fi
}

# ---------------------------------------------------------------- clients ---
# client LABEL CMD...: runs CMD under timeout, output in $OUT; logs failures.
client() {
    local label=$1 rc=0
    shift
    OUT=$(timeout "$CLIENT_TIMEOUT" "$@" 2>"$WORK/logs/last.err") || rc=$?
    printf '## %s (exit %s)\n%s\n' "$label" "$rc" "$OUT" >>"$WORK/logs/clients.log"
    cat "$WORK/logs/last.err" >>"$WORK/logs/clients.err"
    if [ "$rc" != 0 ]; then
        if [ "$rc" = 124 ]; then FAILS+=("$label: timed out after ${CLIENT_TIMEOUT} s")
        else FAILS+=("$label: exit status $rc"); fi
        note "FAILED $label (exit $rc); last stderr:"
        tail -3 "$WORK/logs/last.err" >&2 || true
        return 1
    fi
}

kv() {  # KEY LINE: the number after " KEY="
    sed -n "s/.*[[:space:]]$1=\([0-9.][0-9.]*\).*/\1/p" <<<"$2" | head -1
}

record() {  # SYSTEM WORKLOAD SHAPE RUN CPS P50 P99 LINE
    if [ -z "$5" ] || [ -z "$6" ] || [ -z "$7" ]; then
        FAILS+=("$1 $2 $3 run$4: no result in output")
        note "FAILED $1 $2 $3 run$4: no result in output: $8"
        return 0
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" >>"$TSV"
    printf '%s %s [%s] run%s: %s\n' "$1" "$2" "$3" "$4" "$8" >>"$RAW"
    printf '  %-11s %-3s %-30s %12.0f calls/s  p50 %8.1f us  p99 %8.1f us\n' \
        "$1" "$2" "$3" "$5" "$6" "$7" >&2
}

record_kv() {  # SYSTEM WORKLOAD SHAPE RUN LINE (key=value result line)
    record "$1" "$2" "$3" "$4" "$(kv calls_per_s "$5")" "$(kv p50_us "$5")" "$(kv p99_us "$5")" "$5"
}

record_redis() {  # SYSTEM WORKLOAD SHAPE RUN CSVLINE
    # "INCR ...","rps","avg_ms","min_ms","p50_ms","p95_ms","p99_ms","max_ms"
    local vals
    vals=$(awk -F'","' 'NF >= 8 { printf "%s %.1f %.1f", $2, $5 * 1000, $7 * 1000 }' <<<"$5")
    set -- "$1" "$2" "$3" "$4" "$5" $vals
    record "$1" "$2" "$3" "$4" "${6:-}" "${7:-}" "${8:-}" "$5"
}

quark_run() {  # TRANSPORT WORKLOAD RUN
    local t=$1 wl=$2 i=$3 calls shape line
    if [ "$wl" = w1 ]; then calls=$W1_CALLS; shape="1 call in flight"; else
        calls=$W2_CALLS; shape="1 client, 64 async in flight"; fi
    case "$t" in *-1w) shape+=", silo --workers 1" ;; esac
    ensure_silo "$t" "quark-$t $wl run$i" || { FAILS+=("counter-silo ($t) restart failed"); return 0; }
    client "quark-$t $wl run$i" "$BENCH" --connect "127.0.0.1:${PORT[silo-$t]}" --transport "${t%-1w}" \
        --workload "$wl" --calls "$calls" || return 0
    line=$(grep '^RESULT' <<<"$OUT" | tail -1 || true)
    record_kv "quark-$t" "$wl" "$shape" "$i" "$line"
}

ERL_W2_LINE=""
erlang_client() {  # RUN: one node-A run (W1 then W2, RUNS=1)
    # Node B halts after its built-in 600 s lifetime: restart it before that.
    if ! kill -0 "${PID[erlang]}" 2>/dev/null || [ $((SECONDS - ERL_B_STARTED)) -gt 480 ]; then
        stop_server "${PID[erlang]}" TERM || true
        forget_server "${PID[erlang]}"
        start_erlang_b || { FAILS+=("erlang: node B restart failed"); return 1; }
    fi
    client "erlang run$1" env RUNS=1 bash -c 'cd "$1" && shift && exec erl "$@"' _ "$P/erlang" \
        -sname "$ERL_A" "${ERL_DIST[@]}" -noshell -noinput -s kvbench client "$ERL_B"
}

peer_w1() {  # PEER RUN
    local p=$1 i=$2 line
    case "$p" in
        rawtcp)
            client "rawtcp w1 run$i" "$P/rawtcp/client" "${PORT[rawtcp]}" 1 1 "$W1_CALLS" 10 1 || return 0
            record_kv rawtcp w1 "1 conn x 1" "$i" "$OUT" ;;
        redis)
            redis-cli -h 127.0.0.1 -p "${PORT[redis]}" flushall >/dev/null
            client "redis w1 run$i" redis-benchmark -h 127.0.0.1 -p "${PORT[redis]}" --csv -c 1 -n "$W1_CALLS" \
                INCR counter || return 0
            record_redis redis w1 "-c 1" "$i" "$(tail -1 <<<"$OUT")" ;;
        grpc)
            client "grpc w1 run$i" "$P/grpc/client" "${PORT[grpc]}" w1 "$W1_CALLS" || return 0
            record_kv grpc w1 "sync stub" "$i" "$OUT" ;;
        erlang)
            # node A always runs W1 and W2: keep W1 here, W2 in the w2 slot
            erlang_client "$i" || return 0
            line=$(grep '^W1 run' <<<"$OUT" || true)
            record_kv erlang w1 "1 process" "$i" "$line" ;;
        caf)
            # one client run gives W1, W1ev and W2: all are taken in the w1 slot
            client "caf run$i" "$P/caf/caf_kv" --mode=client --port="${PORT[caf]}" --runs=1 || return 0
            record_kv caf w1 "scoped_actor" "$i" "$(grep '^W1 run' <<<"$OUT" || true)"
            record_kv caf w1 "event-based caller" "$i" "$(grep '^W1ev run' <<<"$OUT" || true)"
            record_kv caf w2 "64 actors, 1 BASP link (w1 slot)" "$i" "$(grep '^W2 run' <<<"$OUT" || true)" ;;
    esac
}

peer_w2() {  # PEER RUN
    local p=$1 i=$2 line
    case "$p" in
        rawtcp)
            if client "rawtcp w2 4x16 run$i" "$P/rawtcp/client" "${PORT[rawtcp]}" 4 16 "$W2_CALLS" "$W2_MAXSEC" "$KEYS"; then
                record_kv rawtcp w2 "4 conns x 16 (pipelined)" "$i" "$OUT"
            fi
            if client "rawtcp w2 64x1 run$i" "$P/rawtcp/client" "${PORT[rawtcp]}" 64 1 "$W2_CALLS" "$W2_MAXSEC" "$KEYS"; then
                record_kv rawtcp w2 "64 conns x 1" "$i" "$OUT"
            fi ;;
        redis)
            if client "redis w2 c64 run$i" redis-benchmark -h 127.0.0.1 -p "${PORT[redis]}" --csv -c 64 -r "$KEYS" \
                    -n "$W2_CALLS" INCR 'counter:__rand_int__'; then
                record_redis redis w2 "-c 64" "$i" "$(tail -1 <<<"$OUT")"
            fi
            if client "redis w2 P16c4 run$i" redis-benchmark -h 127.0.0.1 -p "${PORT[redis]}" --csv -c 4 -P 16 \
                    -r "$KEYS" -n "$W2_CALLS" INCR 'counter:__rand_int__'; then
                record_redis redis w2 "-P 16 -c 4 (pipelined)" "$i" "$(tail -1 <<<"$OUT")"
            fi ;;
        grpc)
            client "grpc w2 run$i" "$P/grpc/client" "${PORT[grpc]}" w2 4 16 "$W2_CALLS" "$W2_MAXSEC" "$KEYS" || return 0
            record_kv grpc w2 "4 channels x 16 (async CQ)" "$i" "$OUT" ;;
        erlang)
            erlang_client "$i" || return 0
            line=$(grep '^W2 run' <<<"$OUT" || true)
            record_kv erlang w2 "64 processes, 1 dist link" "$i" "$line" ;;
        caf) true ;;
    esac
}

# ------------------------------------------------------------------- run ----
for p in "${PEER_LIST[@]}"; do
    note "starting peer $p"
    start_peer "$p" || { note "peer $p did not start"; exit 1; }
done

ACTIVE_T=()
for t in "${TRANSPORT_LIST[@]}"; do
    note "starting counter-silo for transport $t"
    start_silo "$t" || exit 1
    if [ "$t" != tcp ]; then
        # A trial run: is this transport built yet?
        if ! timeout 60 "$BENCH" --connect "127.0.0.1:${PORT[silo-$t]}" --transport "${t%-1w}" --workload w1 \
                --calls 1000 >"$WORK/logs/trial-$t.log" 2>&1; then
            NOTES+=("quark transport $t skipped: the trial \`quark-bench --transport $t\` failed: $(tail -1 "$WORK/logs/trial-$t.log")")
            note "skipping transport $t: $(tail -1 "$WORK/logs/trial-$t.log")"
            stop_silo "$t"
            continue
        fi
    fi
    ACTIVE_T+=("$t")
done
[ ${#ACTIVE_T[@]} -gt 0 ] || { note "no quark transport to measure"; exit 1; }

for i in $(seq "$RUNS"); do
    note "run $i/$RUNS: w1 (load $(cut -d' ' -f1-3 /proc/loadavg))"
    for t in "${ACTIVE_T[@]}"; do quark_run "$t" w1 "$i"; done
    for p in "${PEER_LIST[@]}"; do peer_w1 "$p" "$i"; done
    note "run $i/$RUNS: w2 (load $(cut -d' ' -f1-3 /proc/loadavg))"
    for t in "${ACTIVE_T[@]}"; do quark_run "$t" w2 "$i"; done
    for p in "${PEER_LIST[@]}"; do peer_w2 "$p" "$i"; done
done

for t in "${ACTIVE_T[@]}"; do stop_silo "$t"; done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$((SECONDS - T_START))

# ----------------------------------------------------------------- report ---
GIT_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
MODEL=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"; }
VERSIONS=""
for p in "${PEER_LIST[@]}"; do
    case "$p" in
        rawtcp) VERSIONS+="raw TCP: gcc $(gcc -dumpfullversion); " ;;
        redis) VERSIONS+="redis-server $(pkgver redis-server); " ;;
        grpc) VERSIONS+="libgrpc++-dev $(pkgver libgrpc++-dev); " ;;
        erlang) VERSIONS+="erlang-nox $(pkgver erlang-nox); " ;;
        caf) VERSIONS+="libcaf-dev $(pkgver libcaf-dev); " ;;
    esac
done
if [ "$QUICK" = 1 ]; then
    NOTES+=("--quick: w1 $W1_CALLS calls, w2 $W2_CALLS calls (the Erlang and CAF clients always make 100,000 / up to 1M); not comparable with full runs")
fi
for p in "${PEER_LIST[@]}"; do
    if [ "$p" = caf ]; then NOTES+=("CAF: one client run per i gives W1, W1ev and W2, all taken in the w1 slot"); fi
    if [ "$p" = erlang ]; then NOTES+=("Erlang: node A runs W1 and W2 on each start; it is started in both slots, W1 kept from the w1 slot and W2 from the w2 slot"); fi
done

mkdir -p "$REPO/bench/results"
SUFFIX=""
if [ "$QUICK" = 1 ]; then SUFFIX=-quick; fi
OUTFILE=$REPO/bench/results/compare-$(date -u +%Y-%m-%d)$SUFFIX.md
if [ -e "$OUTFILE" ]; then OUTFILE=${OUTFILE%.md}-$(date -u +%H%M%S).md; fi

{
    echo "# Quark side by side with the peers (bench/compare.sh)"
    echo
    echo "- date: $DATE_UTC, took ${ELAPSED} s; load average start $LOAD_START, end $LOAD_END"
    echo "- machine: nproc $(nproc), ${MODEL:-unknown CPU}, kernel $(uname -r)"
    echo "- quark: git $GIT_REV$([ "$GIT_DIRTY" != 0 ] && echo " with $GIT_DIRTY modified tracked files"), build $BUILD (${BUILD_TYPE:-?}), quark-bench built $BIN_TIME"
    echo "- peers: ${VERSIONS%; }"
    echo "- $RUNS run(s), interleaved per run: w1 for every system, then w2 for every system. w1: 1 call in flight, 1 key, $W1_CALLS calls. w2: 64 in flight, $KEYS keys, $W2_CALLS calls (the raw, gRPC, Erlang and CAF clients stop at ${W2_MAXSEC} s; quark-bench and redis-benchmark do not)."
    echo "- values are medians of the runs; quark/peer = Quark's median calls/s over ${ACTIVE_T[0]} divided by the row's (w1 against w1, w2 against each w2 shape)$([ ${#ACTIVE_T[@]} -gt 1 ] && echo "; quark-T/peer likewise over transport T")."
    echo
    python3 - "$TSV" "$RUNS" "${ACTIVE_T[@]}" <<'EOF'
import statistics, sys
tsv, runs, transports = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows, order = {}, []
for line in open(tsv):
    s, w, shape, r, cps, p50, p99 = line.rstrip("\n").split("\t")
    k = (s, w, shape)
    if k not in rows:
        rows[k] = []
        order.append(k)
    rows[k].append((float(cps), float(p50), float(p99)))
order.sort(key=lambda k: k[1])  # w1 rows, then w2 rows; stable otherwise
med = {k: statistics.median(x[0] for x in v) for k, v in rows.items()}
def quark(t, w):
    c = [med[k] for k in order if k[0] == "quark-" + t and k[1] == w]
    return c[0] if c else None
cols = ["quark/peer" if j == 0 else "quark-%s/peer" % t for j, t in enumerate(transports)]
print("| system | workload | shape | runs | calls/s | p50 us | p99 us | " + " | ".join(cols) + " | calls/s range |")
print("|---|---|---|---:|---:|---:|---:|" + "---:|" * len(cols) + "---|")
for k in order:
    v = rows[k]
    c = [x[0] for x in v]
    ratios = []
    for t in transports:
        q = quark(t, k[1])
        ratios.append("%.2f" % (q / med[k]) if q and med[k] else "-")
    print("| %s | %s | %s | %d/%d | %s | %.1f | %.1f | %s | %s |" % (
        k[0], k[1], k[2], len(v), runs, format(round(med[k]), ","),
        statistics.median(x[1] for x in v), statistics.median(x[2] for x in v),
        " | ".join(ratios), "%s-%s" % (format(round(min(c)), ","), format(round(max(c)), ","))))
EOF
    if [ ${#NOTES[@]} -gt 0 ] || [ ${#FAILS[@]} -gt 0 ]; then
        echo
        for n in "${NOTES[@]}"; do echo "- note: $n"; done
        for f in "${FAILS[@]}"; do echo "- FAILED: $f"; done
    fi
} >"$WORK/report.md"

cat "$WORK/report.md"
{
    cat "$WORK/report.md"
    echo
    echo "## Raw result lines"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
} >"$OUTFILE"
echo >&2
note "written to ${OUTFILE#"$REPO"/} in ${ELAPSED} s"
[ ${#FAILS[@]} = 0 ] || exit 3
