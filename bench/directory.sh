#!/bin/bash
# bench/directory.sh - the Redis actor directory against hash placement, side
# by side in one run: activations per second and first-call latency (a fresh
# counter per call), and w2 (10,000 live counters, 64 in flight), through a
# cluster of 3 silos of each kind, beside the Redis server's own ceilings.
#
#   bash bench/directory.sh [--runs N] [--build-dir DIR]
#
# Starts one redis-server (free port, no persistence) and two clusters of
# three counter-silos (--workers 2, all on 127.0.0.1), both with Redis
# membership: "hash" (--directory hash) and "redis" (--directory redis://).
# For each run, interleaved:
#   activate   100,000 fresh counters, 64 in flight   (activations/s)
#   first      5,000 fresh counters, 1 in flight      (first-call p50/p99)
#   w2         1,000,000 calls on 10,000 counters      (calls/s)
# then, once, a 4th silo joins each cluster and w2 runs again ("w2 after a
# join": with hash placement a quarter of the counters move to it; with the
# Redis directory they stay, and the client learns where from the answers'
# location), with the silos' forwarded calls counted around it.
# and the references: redis-benchmark -P 16 -c 4 of ../shared/peers/redis's
# CAS script by EVALSHA (what one script per activation can reach) and -c 1
# (its round trip). Prints a markdown table of medians and writes
# bench/results/directory-<date>.md. Everything it started is stopped on exit.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=3
BUILD=$REPO/build
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --build-dir) BUILD=$2; shift 2 ;;
        *) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
SILO=$BUILD/examples/counter/counter-silo
BENCH=$BUILD/bench/quark-bench
STATUS=$BUILD/tools/quark-status
for f in "$SILO" "$BENCH" "$STATUS"; do
    [ -x "$f" ] || { echo "directory.sh: $f not built (cmake --build $BUILD)" >&2; exit 1; }
done
. "$REPO/bench/lib.sh"
RP=$(free_port)
redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --logfile "$LOG/redis.log" &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done
R=redis://127.0.0.1:$RP
declare -A ADDRS
for kind in hash redis; do
    db=$([ $kind = hash ] && echo 0 || echo 1) # one Redis database per cluster
    dir=$([ $kind = hash ] && echo hash || echo "$R/$db")
    a=()
    for i in 1 2 3; do
        p=$(free_port)
        start "$kind$i" --listen 127.0.0.1:$p --workers 2 --membership "$R/$db" \
            --directory "$dir"
        a+=(127.0.0.1:$p)
    done
    ADDRS[$kind]=$(IFS=,; echo "${a[*]}")
    for _ in $(seq 100); do
        n=$("$STATUS" "${a[0]}" | grep -c ': 3 members' || true)
        [ "$n" = 1 ] && break; sleep 0.1
    done
done
declare -A CPS P50 P99
run() { # key kind args...
    local key=$1 kind=$2; shift 2
    local out
    out=$(timeout 300 "$BENCH" --connect "${ADDRS[$kind]}" --transport tcp --routing owner "$@" \
          2>&1 | grep '^RESULT' || true)
    [ -n "$out" ] || { echo "directory.sh: $key failed" >&2; return; }
    CPS[$key]+="$(sed 's/.*calls_per_s=\([0-9]*\).*/\1/' <<<"$out") "
    P50[$key]+="$(sed 's/.*p50_us=\([0-9.]*\).*/\1/' <<<"$out") "
    P99[$key]+="$(sed 's/.*p99_us=\([0-9.]*\).*/\1/' <<<"$out") "
    echo "run: $key $out"
}
PEERS=$REPO/../shared/peers
for i in $(seq "$RUNS"); do
    for kind in hash redis; do
        run "activate-$kind" $kind --workload activate --calls 100000 --inflight 64
        run "first-$kind" $kind --workload activate --calls 5000 --inflight 1
        run "w2-$kind" $kind --workload w2 --calls 1000000
    done
    if [ -f "$PEERS/redis/run_lua.sh" ]; then
        line=$(N=300000 bash "$PEERS/redis/run_lua.sh" 1 2>/dev/null | grep '^W2 cas-P16x4' || true)
        CPS[cas-P16]+="$(awk -F'","' '{print int($2)}' <<<"$line") "
        echo "run: cas-P16 $line"
    fi
    sha=$(redis-cli -p "$RP" SCRIPT LOAD "local e=redis.call('HGET',KEYS[1],'etag') if e==false or e==ARGV[1] then redis.call('HSET',KEYS[1],'etag',ARGV[2],'data',ARGV[3]) return 1 end return 0")
    line=$(redis-benchmark -h 127.0.0.1 -p "$RP" -c 1 -n 20000 --csv EVALSHA "$sha" 1 k v1 v1 x | tail -1)
    P50[cas-c1]+="$(awk -F'","' '{print $5}' <<<"$line") "
    echo "run: cas-c1 $line"
done
# A 4th silo joins each cluster; w2 again, counting the forwards around it.
forwarded() { # addresses...: the silos' forwarded calls, summed
    local n=0 a f
    for a in "$@"; do
        f=$("$STATUS" "$a" | sed -n 's/.* \([0-9]*\) forwarded.*/\1/p' | head -1)
        n=$((n + ${f:-0}))
    done
    echo $n
}
declare -A FWD
for kind in hash redis; do
    db=$([ $kind = hash ] && echo 0 || echo 1)
    dir=$([ $kind = hash ] && echo hash || echo "$R/$db")
    p=$(free_port)
    start "${kind}4" --listen 127.0.0.1:$p --workers 2 --membership "$R/$db" --directory "$dir"
    ADDRS[$kind]="${ADDRS[$kind]},127.0.0.1:$p"
    for _ in $(seq 100); do
        "$STATUS" 127.0.0.1:$p | grep -q ': 4 members' && break; sleep 0.1
    done
    IFS=, read -ra all <<<"${ADDRS[$kind]}"
    f0=$(forwarded "${all[@]}")
    run "w2j-$kind" $kind --workload w2 --calls 1000000
    FWD[$kind]=$(( $(forwarded "${all[@]}") - f0 ))
    echo "run: w2j-$kind forwarded ${FWD[$kind]}"
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
OUT=$REPO/bench/results/directory-$(date +%Y-%m-%d).md
{
    echo "## Redis directory vs hash placement, 3 silos ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $RUNS runs, medians)"
    echo
    echo "| workload | hash | redis | redis / hash |"
    echo "|---|---|---|---|"
    for w in activate w2; do
        h=$(median <<<"${CPS[$w-hash]:-0}"); r=$(median <<<"${CPS[$w-redis]:-0}")
        echo "| $w calls/s | $h | $r | $(awk -v a="$r" -v b="$h" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }') |"
    done
    h=$(median <<<"${CPS[w2j-hash]:-0}"); r=$(median <<<"${CPS[w2j-redis]:-0}")
    echo "| w2 after a 4th silo joined, calls/s (1 run) | $h | $r | $(awk -v a="$r" -v b="$h" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }') |"
    echo "| ... calls forwarded by silos during it | ${FWD[hash]:-?} | ${FWD[redis]:-?} | |"
    for q in P50 P99; do
        declare -n arr=$q
        h=$(median <<<"${arr[first-hash]:-0}"); r=$(median <<<"${arr[first-redis]:-0}")
        echo "| first call ${q,,} us | $h | $r | $(awk -v a="$r" -v b="$h" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }') |"
    done
    echo
    echo "References (the same Redis server's ceilings): CAS script by EVALSHA, redis-benchmark"
    echo "-P 16 -c 4: $(median <<<"${CPS[cas-P16]:-0}") calls/s; -c 1 p50: $(median <<<"${P50[cas-c1]:-0}") ms."
} | tee "$OUT"
