#!/usr/bin/env bash
# How long a plugin pushed to a hub takes to be active on every worker:
# `PUT /api/plugins/NAME`, then `GET /api/plugins` every 10 ms until each
# worker reports the new module active; then DELETE, and again. One hub and
# two workers (replaying CAPTURE, so their pipelines run) on loopback.
#
# usage: scripts/bench-plugin-push.sh PLUGIN.wasm CAPTURE [ROUNDS] [TRAWL]
set -euo pipefail
wasm=$1 capture=$2 rounds=${3:-20} trawl=${4:-${CARGO_TARGET_DIR:-target}/release/trawl}
name=$(basename "$wasm" .wasm)
ui=18931 workers=18932
"$trawl" hub --workers 127.0.0.1:$workers --listen 127.0.0.1:$ui --token bench 2>/dev/null & pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT
until curl -sf "http://127.0.0.1:$ui/api/health" >/dev/null; do sleep 0.1; done
for i in 0 1; do
    "$trawl" worker --hub 127.0.0.1:$workers --token bench --node "n$i" --part "$i/2" --speed 1 --stay \
        --replay "$capture" 2>/dev/null & pids+=($!)
done
python3 - "$ui" "$name" "$wasm" "$rounds" <<'PY'
import json, sys, time, urllib.request
ui, name, wasm, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
base = f"http://127.0.0.1:{ui}"
def get(path):
    return json.load(urllib.request.urlopen(base + path))
def active_generations():
    """Worker id → the newest generation of the plugin it runs, as the
    workers themselves report it (their status in /api/health)."""
    out = {}
    for wid, w in get("/api/health")["workers"].items():
        gens = [p["generation"] for p in w.get("plugins", []) if p["name"] == name and p["state"] == "active"]
        if w["connected"] and gens:
            out[wid] = max(gens)
    return out
while sum(w["connected"] for w in get("/api/health")["workers"].values()) < 2:
    time.sleep(0.1)
module = open(wasm, "rb").read()
took = []
for _ in range(rounds):
    before = active_generations()
    start = time.monotonic()
    urllib.request.urlopen(urllib.request.Request(base + f"/api/plugins/{name}", data=module, method="PUT"))
    while True:
        now = active_generations()
        if len(now) == 2 and all(g > before.get(w, 0) for w, g in now.items()):
            break
        time.sleep(0.01)
    took.append((time.monotonic() - start) * 1000)
    urllib.request.urlopen(urllib.request.Request(base + f"/api/plugins/{name}", method="DELETE"))
    while active_generations():
        time.sleep(0.01)
took.sort()
print(f"{name}: PUT → active on 2 workers over {rounds} rounds: "
      f"p50 {took[len(took) // 2]:.0f} ms, max {took[-1]:.0f} ms ({len(module)} bytes)")
PY
