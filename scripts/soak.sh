#!/usr/bin/env bash
# Soak tests of issue 16, for docs/benchmarks.md. Each is bounded in time.
# A hub and a live worker run as the manifests run them
# (deploy/manifests): the worker in a memory cgroup of its limit (512 MiB)
# with its flags (--max-flows 65536, 32 MiB each of queued and sent
# records), the hub in one of 1 GiB, so going over is an OOM kill, not a
# number to squint at.
#   syn-flood   hping3 SYN flood from random sources at a targeted pod
#   big-heads   HTTP/1.1 requests with 60 KiB heads at nginx (h2load)
#   reconnects  1,000 worker runs (each a new node and epoch) against one
#               hub with a short --worker-grace
# For each: the worker's and hub's peak memory, whether they lived, the
# hub's memory before and after, and the losses the hub's /metrics shows.
# Needs root.
#
# Usage: scripts/soak.sh [SECONDS] [RECONNECTS]   (defaults: 60, 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/wire/nginx.sh
SECS="${1:-60}"
RECONNECTS="${2:-1000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/trawl-target}"
. scripts/wire/lab.sh
lab_prepare soak h2load:nghttp2-client nginx:nginx-light hping3:hping3

P=tsk BR=tskbr0 SRV=tsk-srv CLI=tsk-cli SIP=10.78.0.2 CIP=10.78.0.3
WORK="$(mktemp -d /var/tmp/trawl-soak.XXXXXX)"
# The memory controller: cgroup v2 where it is enabled, else v1.
if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    CG=/sys/fs/cgroup/trawl-soak LIMIT=memory.max PEAK=memory.peak
else
    CG=/sys/fs/cgroup/memory/trawl-soak LIMIT=memory.limit_in_bytes PEAK=memory.max_usage_in_bytes
fi
cleanup() {
    # The hub's and worker's logs outlive the run, for a look afterwards.
    mkdir -p /var/tmp/trawl-soak-logs && cp "$WORK"/*.log /var/tmp/trawl-soak-logs/ 2>/dev/null || true
    lab_cleanup
    for g in worker hub; do rmdir "$CG/$g" 2>/dev/null || true; done
    rmdir "$CG" 2>/dev/null || true
}
trap cleanup EXIT
lab_up soak
mkdir -p "$WORK/www"
echo '{"ok": true}' >"$WORK/www/small.json"
{
    nginx_http_head "$WORK"
    cat <<NGINX
    keepalive_requests 1000000;
    large_client_header_buffers 4 64k;
    server { listen $SIP:80; root $WORK/www; }
}
NGINX
} >"$WORK/nginx.conf"
ip netns exec "$SRV" nginx -c "$WORK/nginx.conf" >/dev/null 2>&1 & PIDS+=($!)
wait_port 80

# Cgroups with the manifests' limits.
mkdir -p "$CG"
echo "+memory" >"$CG/cgroup.subtree_control" 2>/dev/null || true
mkdir -p "$CG/worker" "$CG/hub"
echo $((512 << 20)) >"$CG/worker/$LIMIT"
echo $((1 << 30)) >"$CG/hub/$LIMIT"

HUB_UI=8896 HUB_WORKERS=9796
# in_cgroup GROUP COMMAND...: runs COMMAND in the background inside GROUP.
in_cgroup() {
    local group="$1"; shift
    bash -c "echo \$\$ >$CG/$group/cgroup.procs && exec \"\$@\"" _ "$@" &
    PIDS+=($!)
    LAST_PID=$!
}
RUST_LOG=info in_cgroup hub "$TRAWL" hub --token soak --workers "127.0.0.1:$HUB_WORKERS" --listen "127.0.0.1:$HUB_UI" \
    --inventory "$WORK/inventory.json" --worker-grace 5 --record-log-mib 16 2>"$WORK/hub.log"
HUB_PID=$LAST_PID
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HUB_UI/healthz" >/dev/null && break; sleep 0.1; done
start_worker() {
    in_cgroup worker "$TRAWL" worker --live --hub "127.0.0.1:$HUB_WORKERS" --token soak --node node-a \
        --netns-prefix "$P-" --inventory "$WORK/inventory.json" \
        --max-flows 65536 --max-record-mib 32 --journal-mib 32 2>>"$WORK/worker.log"
    WORKER_PID=$LAST_PID
    sleep 4
}
metric() { curl -s "http://127.0.0.1:$HUB_UI/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
rss() { awk '/VmRSS/ {printf "%.0f MiB", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo gone; }
hwm() { awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo gone; }
mib() { awk '{printf "%.0f MiB", $1 / 1048576}' "$1"; }
alive() { kill -0 "$1" 2>/dev/null && echo alive || echo "DEAD (see dmesg for an OOM kill)"; }
losses() {
    printf 'ebpf_map_full %s, ebpf_evicted %s, flows_evicted %s, budget_releases %s, gaps %s, detaches %s, reorder %s, ring_drops %s, unsampled %s' \
        "$(metric trawl_ebpf_map_full_total)" "$(metric trawl_ebpf_evicted_total)" "$(metric trawl_flows_evicted_total)" \
        "$(metric trawl_reassembly_budget_releases_total)" "$(metric trawl_reassembly_gaps_total)" \
        "$(metric trawl_plugin_detaches_total)" "$(metric trawl_reorder_overflow_total)" \
        "$(metric trawl_ring_drops_total)" "$(metric trawl_records_unsampled_total)"
}
report() {  # LABEL HUB_RSS_BEFORE
    echo "| $1 | $(alive "$WORKER_PID" worker) | $(hwm "$WORKER_PID") (cgroup, with page cache and socket buffers: $(mib "$CG/worker/$PEAK")) | $(alive "$HUB_PID" hub) | $2 → $(rss "$HUB_PID") (peak $(hwm "$HUB_PID")) | $(losses) |"
}

echo "| soak ($SECS s) | worker | worker peak RSS (limit 512 MiB) | hub | hub RSS before → after | losses (hub /metrics) |"
echo "|---|---|---|---|---|---|"

# A fresh worker for each flood, so each peak is that flood's.
stop_worker() {
    kill "$WORKER_PID" 2>/dev/null || true
    wait "$WORKER_PID" 2>/dev/null || true
    echo 0 >"$CG/worker/$PEAK" 2>/dev/null || true
}

start_worker
before=$(rss "$HUB_PID")
[ "$SECS" -gt 0 ] && ip netns exec "$CLI" timeout "$SECS" hping3 -S -p 80 --flood --rand-source "$SIP" >/dev/null 2>&1 || true
sleep 3
report "SYN flood, random sources, at web:80 (hping3 --flood)" "$before"
stop_worker

start_worker
before=$(rss "$HUB_PID")
pad=$(head -c 46000 /dev/zero | base64 -w0 | head -c 61000)
ip netns exec "$CLI" timeout $((SECS + 30)) h2load --h1 -D "$SECS" -c 16 -t 1 -H "x-pad: $pad" \
    "http://$SIP/small.json" >"$WORK/h2load.log" 2>&1 || true
sleep 3
report "60 KiB heads, HTTP/1.1 (h2load, $(awk '/^requests:/ {print $6}' "$WORK/h2load.log") done)" "$before"
stop_worker

# Reconnects: a worker restarted over and over on two nodes, two at a
# time. Each run replays the demo capture through its own hard link of it,
# so each is a new epoch, as a restarted live worker is; the hub forgets
# each after --worker-grace.
before=$(rss "$HUB_PID")
run_one() {
    local capture="$WORK/run-$1.pcap"
    ln -f examples/demo/demo.pcap "$capture" 2>/dev/null || cp examples/demo/demo.pcap "$capture"
    "$TRAWL" worker --hub "127.0.0.1:$HUB_WORKERS" --token soak --node "churn-$(($1 % 2))" --speed max \
        --replay "$capture" >/dev/null 2>&1 || echo "worker $1 failed" >&2
    rm -f "$capture"
}
for i in $(seq 1 2 "$RECONNECTS"); do
    run_one "$i" & a=$!
    run_one "$((i + 1))" & b=$!
    wait "$a" "$b"
    [ $((i % 200)) = 1 ] && echo "  after $i runs: hub RSS $(rss "$HUB_PID"), workers listed $(curl -s "http://127.0.0.1:$HUB_UI/api/health" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["workers"]))')" >&2
done
sleep 12
listed=$(curl -s "http://127.0.0.1:$HUB_UI/api/health" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["workers"]))')
echo "| $RECONNECTS worker restarts (replay, a new epoch each, on 2 nodes) | – | – | $(alive "$HUB_PID" hub) | $before → $(rss "$HUB_PID") (peak $(hwm "$HUB_PID")); workers listed after the grace: $listed | – |"
