#!/bin/bash
# bench/cluster.sh - w2 through the cluster client against 3 silos, beside one
# silo, and the cost of forwarding (a client pinned to one silo), in one run.
#
#   bash bench/cluster.sh [--runs N] [--calls N] [--build-dir DIR]
#
# Starts one lone counter-silo and a cluster of three (all on 127.0.0.1, free
# ports, --workers 2 each), then for each run measures, interleaved:
#   single  tcp, grpc   (the lone silo)
#   owner   tcp, grpc   (the client learns the view and calls each owner)
#   pinned  tcp, grpc   (every call to silo 1, which forwards 2/3 of them)
# Prints a markdown table of medians and writes bench/results/cluster-<date>.md.
# Every silo it started is stopped on exit. On one small machine the three
# silos share its cores with the client: this measures the protocol's cost,
# not a cluster's capacity.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=3
CALLS=1000000
BUILD=$REPO/build
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --calls) CALLS=$2; shift 2 ;;
        --build-dir) BUILD=$2; shift 2 ;;
        *) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
SILO=$BUILD/examples/counter/counter-silo
BENCH=$BUILD/bench/quark-bench
STATUS=$BUILD/tools/quark-status
for f in "$SILO" "$BENCH" "$STATUS"; do
    [ -x "$f" ] || { echo "cluster.sh: $f not built (cmake --build $BUILD)" >&2; exit 1; }
done
. "$REPO/bench/lib.sh"
P0=$(free_port); P1=$(free_port); P2=$(free_port); P3=$(free_port)
SEEDS=127.0.0.1:$P1,127.0.0.1:$P2,127.0.0.1:$P3
start single --listen 127.0.0.1:$P0 --workers 2
for p in $P1 $P2 $P3; do
    start "c$p" --listen 127.0.0.1:$p --workers 2 --seeds $SEEDS
done
for _ in $(seq 100); do
    n=$("$STATUS" 127.0.0.1:$P1 | grep -c ': 3 members' || true)
    [ "$n" = 1 ] && break; sleep 0.1
done
declare -A CPS P99
run() { # key cluster-id connect transport routing
    local out
    out=$(timeout 300 "$BENCH" --connect "$3" --transport "$4" --routing "$5" --workload w2 \
          --calls "$CALLS" 2>&1 | grep '^RESULT' || true)
    [ -n "$out" ] || { echo "cluster.sh: $1 failed" >&2; return; }
    CPS[$1]+="$(sed 's/.*calls_per_s=\([0-9]*\).*/\1/' <<<"$out") "
    P99[$1]+="$(sed 's/.*p99_us=\([0-9.]*\).*/\1/' <<<"$out") "
    echo "run: $1 $out"
}
for i in $(seq "$RUNS"); do
    for t in tcp grpc; do
        run "single-$t" - 127.0.0.1:$P0 $t owner
        run "owner-$t" - "$SEEDS" $t owner
        run "pinned-$t" - 127.0.0.1:$P1 $t pinned
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
OUT=$REPO/bench/results/cluster-$(date +%Y-%m-%d).md
{
    echo "## w2 against 3 silos ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $RUNS runs, medians)"
    echo
    echo "| setup | transport | calls/s | p99 us | vs one silo |"
    echo "|---|---|---|---|---|"
    for t in tcp grpc; do
        base=$(median <<<"${CPS[single-$t]:-0}")
        for k in single owner pinned; do
            c=$(median <<<"${CPS[$k-$t]:-0}"); p=$(median <<<"${P99[$k-$t]:-0}")
            r=$(awk -v a="$c" -v b="$base" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
            echo "| $k | $t | $c | $p | $r |"
        done
    done
    echo
    echo "Silos after the runs:"
    echo '```'
    "$STATUS" 127.0.0.1:$P1 127.0.0.1:$P2 127.0.0.1:$P3 | sed 's/^view v[0-9]* of //'
    echo '```'
} | tee "$OUT"
