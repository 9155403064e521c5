#!/bin/bash
# bench/storage.sh - DurableCounter on each storage, beside its ceilings, in one run:
#
#   the disk      ../shared/peers/fsync (256-byte append + fdatasync, alone and 64 per sync)
#   Redis         ../shared/peers/redis/run_lua.sh (the ETag compare-and-set by EVALSHA,
#                 plain SET, -c 64 and -P 16 -c 4)
#   Quark         counter-silo --storage memory | sqlite:FILE | redis://..., quark-bench over
#                 TCP: CounterActor (in memory) and DurableCounter, w1 and w2
#   memory        quark-bench --inproc --workload activate --type DurableCounter
#                 --storage sqlite:... (bytes per idle activation beyond its state)
#   Redis RTT     redis-benchmark -c 1: PING and the CAS script by EVALSHA (w1's
#                 budget: one round trip)
#   disk by size  fsync-pages (fdatasync of 1..64 pages of 4 KiB: a group commit
#                 costs its bytes)
#
# Usage: bash bench/storage.sh [--build-dir DIR] [--runs N]   (default build, 3 runs)
# Prints one line per measurement (docs/benchmarks.md sums them up); run nothing else
# meanwhile on a 2-core machine.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$REPO/build
RUNS=3
while [ $# -gt 0 ]; do
    case $1 in
    --build-dir) BUILD=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) echo "usage: bash bench/storage.sh [--build-dir DIR] [--runs N]" >&2; exit 2 ;;
    esac
done
PEERS=$REPO/../shared/peers
BENCH=$BUILD/bench/quark-bench
SILO=$BUILD/examples/counter/counter-silo
[ -x "$BENCH" ] && [ -x "$SILO" ] || { echo "build first: cmake --build $BUILD" >&2; exit 1; }
WORK=$(mktemp -d /tmp/quark-storage-bench-XXXXXX)   # on the disk SQLite will use (ext4 here)
REDIS_PID=
SILO_PID=
cleanup() {
    [ -n "$SILO_PID" ] && kill $SILO_PID 2>/dev/null && wait $SILO_PID 2>/dev/null
    [ -n "$REDIS_PID" ] && kill $REDIS_PID 2>/dev/null && wait $REDIS_PID 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_silo() { # storage spec
    "$SILO" --listen 127.0.0.1:0 --workers 2 --storage "$1" > "$WORK/silo.out" 2>&1 &
    SILO_PID=$!
    for _ in $(seq 100); do grep -q "(port " "$WORK/silo.out" && break; sleep 0.1; done
    SILO_PORT=$(grep -o "(port [0-9]*" "$WORK/silo.out" | head -1 | cut -d' ' -f2)
}
stop_silo() { kill $SILO_PID; wait $SILO_PID 2>/dev/null; SILO_PID=; }

echo "# storage bench $(date -u +%FT%TZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), git $(git -C "$REPO" rev-parse --short HEAD)"
echo "# disk of $WORK: $(findmnt -no FSTYPE -T "$WORK")"

RPORT=$(free_port)
redis-server --port $RPORT --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --logfile "$WORK/redis.log" &
REDIS_PID=$!
for _ in $(seq 50); do redis-cli -p $RPORT ping >/dev/null 2>&1 && break; sleep 0.1; done
# the same compare-and-set as ../shared/peers/redis/run_lua.sh (always matches: a write)
CAS_SHA=$(redis-cli -p $RPORT SCRIPT LOAD "local e=redis.call('HGET',KEYS[1],'etag') if e==false or e==ARGV[1] then redis.call('HSET',KEYS[1],'etag',ARGV[2],'data',ARGV[3]) return 1 end return 0")

for r in $(seq "$RUNS"); do
    echo "## run $r"
    bash "$PEERS/fsync/run.sh" 1 "$WORK" | sed "s/run1/run$r/"
    N=300000 bash "$PEERS/redis/run_lua.sh" 1 2>/dev/null | grep -E "^W2 (cas|set)" | sed "s/run1/run$r/"
    "$BUILD/bench/fsync-pages" "$WORK/pages.dat" | sed "s/^/W1 fsync-pages run$r: /"
    # one Redis round trip (w1's budget), one connection: PING, and the write's own
    # command (the storage's CAS script, by EVALSHA)
    echo "W1 redis-ping-c1 run$r: $(redis-benchmark -h 127.0.0.1 -p $RPORT -c 1 -n 30000 --csv PING | tail -1)"
    echo "W1 redis-cas-c1 run$r: $(redis-benchmark -h 127.0.0.1 -p $RPORT -c 1 -n 30000 --csv \
        EVALSHA $CAS_SHA 1 bench-key 1 1 data | tail -1 | sed 's/^"EVALSHA[^"]*"/"EVALSHA cas"/')"
    for spec in memory "sqlite:$WORK/state.db" "redis://127.0.0.1:$RPORT"; do
        start_silo "$spec"
        kind=${spec%%:*}
        for type in plain DurableCounter; do
            targ=(); [ $type = DurableCounter ] && targ=(--type DurableCounter)
            for w in w1 w2; do
                calls=100000; [ $w = w2 ] && calls=1000000
                res=$("$BENCH" --connect 127.0.0.1:$SILO_PORT --transport tcp --workload $w \
                      --calls $calls "${targ[@]}" 2>&1 | grep RESULT)
                echo "quark $kind $type $w run$r: $res"
            done
        done
        stop_silo
    done
    # Idle activations: with SQLite the records are in the file, so RSS is
    # the activations' own (the memory storage would count its records too).
    rm -f "$WORK"/act.db*
    res=$("$BENCH" --inproc --workload activate --calls 600000 --type DurableCounter \
          --storage "sqlite:$WORK/act.db" 2>&1 | grep RESULT)
    echo "quark inproc-sqlite DurableCounter activate run$r: $res"
    res=$("$BENCH" --inproc --workload activate --calls 600000 2>&1 | grep RESULT)
    echo "quark inproc plain activate run$r: $res"
done
