#!/bin/bash
# bench/ab_storage.sh - two builds of libquark alternated on DurableCounter w2, with
# redis-benchmark's pipelined EVALSHA of the same compare-and-set in the same loop:
#
#   bash bench/ab_storage.sh OLD_LIB_DIR [ROUNDS] [STORAGE]
#
# OLD_LIB_DIR holds the other libquark.so.0 (e.g. built at an older commit and
# copied there); the new one is this tree's build/. STORAGE: redis (default; a
# redis-server is started on a free port) or sqlite (a file in a temporary dir).
# Prints one RESULT line per build per round. Run nothing else meanwhile.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
B=$REPO/build
OLD=${1:?usage: bash bench/ab_storage.sh OLD_LIB_DIR [ROUNDS] [redis|sqlite]}
ROUNDS=${2:-3}
KIND=${3:-redis}
W=$(mktemp -d /tmp/quark-ab-XXXXXX)
RP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --logfile "$W/r.log" &
RPID=$!
trap 'kill $RPID 2>/dev/null; wait $RPID 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 50); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done
SHA=$(redis-cli -p "$RP" SCRIPT LOAD "local e=redis.call('HGET',KEYS[1],'etag') if e==false or e==ARGV[1] then redis.call('HSET',KEYS[1],'etag',ARGV[2],'data',ARGV[3]) return 1 end return 0")
for r in $(seq "$ROUNDS"); do
    echo "round $r: redis-benchmark EVALSHA -P 16 -c 4: $(redis-benchmark -p "$RP" -c 4 -P 16 -n 300000 --csv EVALSHA "$SHA" 1 k 1 1 d | tail -1 | cut -d, -f2)"
    for v in old new; do
        spec="redis://127.0.0.1:$RP"
        [ "$KIND" = sqlite ] && { rm -f "$W"/s.db*; spec="sqlite:$W/s.db"; }
        if [ $v = old ]; then lib=$OLD; else lib=$B/src; fi
        LD_LIBRARY_PATH=$lib "$B/examples/counter/counter-silo" --listen 127.0.0.1:0 --workers 2 \
            --storage "$spec" > "$W/silo.out" 2>&1 &
        SP=$!
        for _ in $(seq 100); do grep -q "(port " "$W/silo.out" && break; sleep 0.1; done
        PORT=$(grep -o "(port [0-9]*" "$W/silo.out" | head -1 | cut -d' ' -f2)
        echo "round $r: $v $("$B/bench/quark-bench" --connect 127.0.0.1:"$PORT" --transport tcp \
            --workload w2 --calls 600000 --type DurableCounter 2>&1 | grep RESULT)"
        kill $SP; wait $SP 2>/dev/null
    done
done
