#!/usr/bin/env bash
# The live agent's cost, for docs/benchmarks.md: two pods (network
# namespaces on a bridge, MTU 1500 veths with the kernel's default offloads,
# as a CNI makes them) and real load generators, with and without
# `trawl serve --live` attached:
#   - nginx serving a small JSON file, h2load over HTTP/1.1 (--h1) and h2c;
#   - redis-server, redis-benchmark with pipelining;
#   - iperf3 bulk TCP (the eBPF counters' cost).
# For each run: the load generator's rate, trawl's CPU time per 1,000
# requests (utime+stime from /proc), its peak RSS, its ring drops and
# records (from /metrics). Needs root.
#
# Usage: scripts/bench-live.sh [REQUESTS]   (default 100000 per HTTP run)
#        IPERF_ROUNDS=5 scripts/bench-live.sh  (only the counters' iperf3 cost)
#        L7_ONLY=1 TRAWL=/path/to/trawl scripts/bench-live.sh  (another build's L7 rows)
#        WARMUP=1 ...  (the L7 rows after one untimed HTTP/1.1 batch: steady state)
#        RECORD=DIR scripts/bench-live.sh  (no trawl: the HTTP/1.1 and Redis loads as pcaps)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/wire/nginx.sh
N="${1:-100000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/trawl-target}"
. scripts/wire/lab.sh
lab_prepare bench-live h2load:nghttp2-client nginx:nginx-light redis-server:redis-server redis-benchmark:redis-tools iperf3:iperf3

P=tlb BR=tlbbr0 SRV=tlb-srv CLI=tlb-cli SIP=10.79.0.2 CIP=10.79.0.3
WORK="$(mktemp -d /var/tmp/trawl-live.XXXXXX)"
trap lab_cleanup EXIT
lab_up bench
mkdir -p "$WORK/www"
python3 -c 'import json; print(json.dumps([{"id": i, "name": f"item-{i}", "price": i * 1.5} for i in range(12)]))' >"$WORK/www/small.json"
{
    nginx_http_head "$WORK"
    cat <<NGINX
    keepalive_requests 1000000;
    server { listen $SIP:80; listen $SIP:8080 http2; root $WORK/www; }
}
NGINX
} >"$WORK/nginx.conf"
ip netns exec "$SRV" nginx -c "$WORK/nginx.conf" >/dev/null 2>&1 & PIDS+=($!)
ip netns exec "$SRV" redis-server --bind "$SIP" --port 6379 --protected-mode no --save "" --appendonly no >/dev/null 2>&1 & PIDS+=($!)
ip netns exec "$SRV" iperf3 -s -B "$SIP" >/dev/null 2>&1 & PIDS+=($!)
for port in 80 6379 5201; do wait_port "$port"; done

TRAWL_PID=""
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
start_trawl() {  # $1: extra arguments
    # shellcheck disable=SC2086
    "$TRAWL" serve --live --netns-prefix "$P-" --inventory "$WORK/inventory.json" --listen 127.0.0.1:8898 $1 \
        >"$WORK/trawl.log" 2>&1 &
    TRAWL_PID=$!
    for _ in $(seq 100); do curl -sf http://127.0.0.1:8898/metrics >/dev/null && break; sleep 0.1; done
    sleep 1
}
stop_trawl() {
    [ -n "$TRAWL_PID" ] && kill "$TRAWL_PID" && wait "$TRAWL_PID" 2>/dev/null || true
    TRAWL_PID=""
}
metric() { curl -s http://127.0.0.1:8898/metrics | awk -v m="$1" '$1 == m {print $2}'; }
HZ=$(getconf CLK_TCK)
# run LABEL REQUESTS COMMAND...: the load, and what trawl spent on it.
run() {
    local label="$1" requests="$2"; shift 2
    local before=0 records0=0
    if [ -n "$TRAWL_PID" ]; then before=$(cpu_ticks "$TRAWL_PID"); records0=$(metric trawl_records_total); fi
    local rate
    # h2load: "finished in …, N req/s"; redis-benchmark -q: "SET: N requests
    # per second" per test (summed); iperf3: the receiver's bitrate.
    rate=$("$@" 2>&1 | tr '\r' '\n' | awk '
        /^finished in/ {print $4, "req/s"}
        /requests per second/ {for (i = 1; i < NF; i++) if ($(i + 1) == "requests") r += $i; n++}
        /receiver$/ {print $7, $8}
        END {if (n) printf "%.0f req/s\n", r / n}' | tail -1)
    if [ -n "$TRAWL_PID" ]; then
        # Until the L7 thread has caught up: its records stop growing.
        local last=-1 now
        for _ in $(seq 60); do
            sleep 1
            now=$(metric trawl_records_total)
            [ "$now" = "$last" ] && break
            last=$now
        done
        local cpu=$(( $(cpu_ticks "$TRAWL_PID") - before ))
        local us_per=$(awk -v c="$cpu" -v hz="$HZ" -v n="$requests" 'BEGIN {printf "%.1f", c / hz * 1e6 / n}')
        local rss=$(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$TRAWL_PID/status")
        printf '| %s | %s | %s µs | %s | %s | %s |\n' "$label" "$rate" "$us_per" \
            "$(metric trawl_ring_drops_total)" "$(( $(metric trawl_records_total) - records0 ))" "$rss"
    else
        printf '| %s | %s | – | – | – | – |\n' "$label" "$rate"
    fi
}
h1() { ip netns exec "$CLI" h2load --h1 -n "$N" -c 16 -t 1 "http://$SIP/small.json"; }
h2c() { ip netns exec "$CLI" h2load -n "$N" -c 16 -m 8 -t 1 "http://$SIP:8080/small.json"; }
redis() { ip netns exec "$CLI" redis-benchmark -h "$SIP" -q -n "$N" -c 16 -P 16 -t set,get; }
bulk() { ip netns exec "$CLI" iperf3 -c "$SIP" -t 10 -f g; }

if [ -n "${IPERF_ROUNDS:-}" ]; then
    # IPERF_ROUNDS=N: only the eBPF counters' cost, as N alternating pairs
    # of iperf3 runs without and with `trawl serve --live` (L4 only).
    echo "| round | iperf3 without trawl | iperf3 with trawl (L4 only) |"
    echo "|---|---|---|"
    for round in $(seq "$IPERF_ROUNDS"); do
        without=$(bulk 2>&1 | awk '/receiver$/ {print $7, $8}')
        start_trawl "--capture-filter ^$"
        with=$(bulk 2>&1 | awk '/receiver$/ {print $7, $8}')
        stop_trawl
        echo "| $round | $without | $with |"
    done
    exit 0
fi
if [ -n "${RECORD:-}" ]; then
    # RECORD=DIR: no trawl; the HTTP/1.1 and Redis loads recorded with
    # tcpdump on the server pod's host-side veth, as DIR/h1.pcap and
    # DIR/redis.pcap with DIR/inventory.json, for replay A/B runs.
    mkdir -p "$RECORD"
    cp "$WORK/inventory.json" "$RECORD/inventory.json"
    for what in h1 redis; do
        tcpdump -i "${P}v0" -s 0 -B 65536 -w "$RECORD/$what.pcap" >/dev/null 2>&1 & TCPDUMP=$!
        sleep 1
        "$what" >/dev/null 2>&1
        sleep 1
        kill -INT "$TCPDUMP"; wait "$TCPDUMP" || true
    done
    ls -l "$RECORD"
    exit 0
fi
echo "| run | rate | trawl CPU per request | ring drops | records | trawl peak RSS |"
echo "|---|---|---|---|---|---|"
if [ -z "${L7_ONLY:-}" ]; then  # L7_ONLY=1: only the L4 + L7 rows (an A/B of builds)
run "HTTP/1.1 (h2load --h1), no trawl" "$N" h1
run "h2c (h2load), no trawl" "$N" h2c
run "Redis (redis-benchmark -P 16), no trawl" $((N * 2)) redis
run "iperf3, no trawl" 1 bulk
start_trawl "--capture-filter ^$"
run "HTTP/1.1, trawl L4 only" "$N" h1
run "iperf3, trawl L4 only" 1 bulk
stop_trawl
fi
start_trawl ""
if [ -n "${WARMUP:-}" ]; then
    # WARMUP=1: one HTTP/1.1 batch first, so the rows show a running
    # agent's steady state (its record log full, its heap grown) rather
    # than a fresh one's growth into memory.
    run "(warm-up) HTTP/1.1, trawl L4 + L7" "$N" h1
fi
if [ -n "${PROFILE:-}" ]; then
    # PROFILE=FILE: a perf profile of trawl during the HTTP/1.1 L7 run.
    perf record -F 999 -g -o "$PROFILE" -p "$TRAWL_PID" >/dev/null 2>&1 & PERF=$!
fi
run "HTTP/1.1, trawl L4 + L7" "$N" h1
if [ -n "${PROFILE:-}" ]; then kill -INT "$PERF"; wait "$PERF" || true; fi
run "h2c, trawl L4 + L7" "$N" h2c
run "Redis, trawl L4 + L7" $((N * 2)) redis
run "iperf3, trawl L4 + L7" 1 bulk
stop_trawl
