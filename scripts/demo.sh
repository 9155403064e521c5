#!/usr/bin/env bash
# The Awesome Pizza demo (examples/pizza/README.md): install what is needed,
# build, then start a broker and the application on this machine (all on
# 127.0.0.1, ports chosen free): mosquitto, a pizza-silo on embedded SQLite,
# the HTTP gateway, the MQTT bridge and 3 simulated drivers. It places an
# order through the REST API, follows it over Server-Sent Events to
# Delivered, printing each step, and stops everything it started.
#   bash scripts/demo.sh            the demo, then stop
#   bash scripts/demo.sh --serve    keep it all running (Ctrl-C stops it)
# The counter demo is scripts/counter-demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
SERVE=0
[ "${1:-}" = "--serve" ] && SERVE=1
. scripts/deps.sh
# shellcheck disable=SC2086
quark_install_packages $QUARK_BUILD_PKGS mosquitto curl python3
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQUARK_BUILD_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)" --target pizza-silo pizza-gateway pizza-mqtt-bridge \
    pizza-driver-sim >/dev/null
B=build/examples/pizza
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
RUN=$(mktemp -d /tmp/pizza-demo-XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$RUN"
}
trap cleanup EXIT
wait_line() { # file pattern: until the program printed it (20 s)
    for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "demo: $(basename "$1" .log) did not start:" >&2; cat "$1" >&2; exit 1
}
MQ=$(free_port); SILO=$(free_port); HTTP=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n' "$MQ" \
    > "$RUN/mosquitto.conf"
/usr/sbin/mosquitto -c "$RUN/mosquitto.conf" > "$RUN/mosquitto.log" 2>&1 &
PIDS+=($!)
$B/pizza-silo --listen 127.0.0.1:$SILO --data-dir "$RUN/data" --bake-ms 3000 \
    > "$RUN/silo.log" 2>&1 &
PIDS+=($!)
wait_line "$RUN/silo.log" listening
$B/pizza-gateway --listen 127.0.0.1:$HTTP --cluster 127.0.0.1:$SILO > "$RUN/gateway.log" 2>&1 &
PIDS+=($!)
$B/pizza-mqtt-bridge --broker 127.0.0.1:$MQ --cluster 127.0.0.1:$SILO > "$RUN/bridge.log" 2>&1 &
PIDS+=($!)
wait_line "$RUN/gateway.log" listening
wait_line "$RUN/bridge.log" subscribed
$B/pizza-driver-sim --broker 127.0.0.1:$MQ --cluster 127.0.0.1:$SILO --drivers 3 \
    > "$RUN/sim.log" 2>&1 &
PIDS+=($!)
wait_line "$RUN/sim.log" online
API=http://127.0.0.1:$HTTP
echo "== Awesome Pizza: silo 127.0.0.1:$SILO (SQLite), gateway $API, MQTT 127.0.0.1:$MQ, 3 drivers"
echo "== POST $API/api/orders"
ORDER=$(curl -sf -X POST "$API/api/orders" -H 'Content-Type: application/json' -d '{
  "customerId": "ada", "items": [{"pizzaType": "margherita", "size": "large", "quantity": 2}],
  "deliveryAddress": {"lat": 52.5300, "lon": 13.4200}, "specialInstructions": "ring twice"}')
ID=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["orderId"])' "$ORDER")
echo "   $ORDER" | cut -c1-150
echo "== tracking $API/api/orders/$ID/track (Server-Sent Events)"
curl -sfN "$API/api/orders/$ID/track" > "$RUN/track.txt" &
TRACK=$!
sleep 0.3
echo "== POST $API/api/orders/$ID/confirm"
curl -sf -X POST "$API/api/orders/$ID/confirm" > /dev/null
# Follow the stream until it ends (after Delivered), each step as it comes.
python3 - "$RUN/track.txt" "$TRACK" <<'PY'
import json, os, sys, time
path, pid = sys.argv[1], int(sys.argv[2])
seen, start, event, shown = 0, time.time(), None, -1.0
while time.time() - start < 120:
    with open(path) as f:
        lines = f.read().split("\n")
    for line in lines[seen:]:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            d = json.loads(line[6:])
            t = "%5.1f s" % (time.time() - start)
            if event == "order":
                print(f"   {t}  order {d['orderId']}: {d['status']}, {d['totalAmount']}")
            elif event == "status":
                who = f" (driver {d['driverId']})" if d.get("driverId") else ""
                print(f"   {t}  {d['status']}{who}")
            elif event == "location" and time.time() - shown >= 1.0:  # one a second
                shown = time.time()
                print(f"   {t}  driver {d['driverId']} at {d['lat']:.5f}, {d['lon']:.5f}")
    seen = max(seen, len(lines) - 1)
    try:
        os.kill(pid, 0)
    except OSError:
        break
    time.sleep(0.2)
PY
echo "== GET $API/api/orders/$ID"
curl -sf "$API/api/orders/$ID" | python3 -c 'import json,sys; o=json.load(sys.stdin); print("   status:", o["status"], "| driver:", o.get("driverId"), "| history:", " -> ".join(h["status"] for h in o["history"]))'
echo "== GET $API/api/drivers"
curl -sf "$API/api/drivers" | python3 -c 'import json,sys; [print("  ", d["driverId"], d["status"], "deliveredToday", d["deliveredToday"]) for d in json.load(sys.stdin)]'
if [ $SERVE = 1 ]; then
    echo "== serving: REST and SSE at $API, MQTT at 127.0.0.1:$MQ (Ctrl-C stops)"
    wait
fi
