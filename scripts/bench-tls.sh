#!/usr/bin/env bash
# What TLS plaintext capture costs, for docs/benchmarks.md: two pods (network
# namespaces on a bridge, MTU 1500 veths), nginx in one serving a small JSON
# file over HTTP/2 with TLS (443) and over h2c (8080), h2load in the other,
# with and without `trawl serve --live` targeting the server pod.
# For each run:
#   - h2load's rate, and the client's latency per request at p50 and p99
#     (from h2load's --log-file);
#   - CPU per request of trawl, of nginx (the uprobes trap in its context)
#     and of h2load, from utime+stime;
#   - trawl's records, and what its TLS side lost.
# Needs root.
#
# Usage: scripts/bench-tls.sh [REQUESTS] [ROUNDS]   (default 20000 requests,
#        3 rounds of every run, interleaved)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/wire/nginx.sh
N="${1:-20000}"
ROUNDS="${2:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/trawl-target}"
. scripts/wire/lab.sh
lab_prepare bench-tls h2load:nghttp2-client nginx:nginx-light openssl:openssl

P=ttb BR=ttbbr0 SRV=ttb-srv CLI=ttb-cli SIP=10.78.0.2 CIP=10.78.0.3
WORK="$(mktemp -d /var/tmp/trawl-tls.XXXXXX)"
trap lab_cleanup EXIT
lab_up bench
mkdir -p "$WORK/www"
python3 -c 'import json; print(json.dumps([{"id": i, "name": f"item-{i}", "price": i * 1.5} for i in range(12)]))' >"$WORK/www/small.json"
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=web -days 1 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
{
    nginx_http_head "$WORK"
    cat <<NGINX
    keepalive_requests 1000000;
    server {
        listen $SIP:443 ssl http2;
        listen $SIP:8080 http2;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        root $WORK/www;
    }
}
NGINX
} >"$WORK/nginx.conf"
ip netns exec "$SRV" nginx -c "$WORK/nginx.conf" >/dev/null 2>&1 & PIDS+=($!)
for port in 443 8080; do wait_port "$port"; done
NGINX_PIDS=$(ip netns pids "$SRV" | tr '\n' ' ')

TRAWL_PID=""
HZ=$(getconf CLK_TCK)
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
start_trawl() {  # $1: extra arguments
    # shellcheck disable=SC2086
    "$TRAWL" serve --live --netns-prefix "$P-" --inventory "$WORK/inventory.json" --listen 127.0.0.1:8897 \
        --capture-filter '^web$' $1 >"$WORK/trawl.log" 2>&1 &
    TRAWL_PID=$!
    for _ in $(seq 100); do curl -sf http://127.0.0.1:8897/metrics >/dev/null && break; sleep 0.1; done
    # The first retarget probes the OpenSSL nginx maps.
    sleep 4
}
stop_trawl() {
    [ -n "$TRAWL_PID" ] && kill "$TRAWL_PID" && wait "$TRAWL_PID" 2>/dev/null || true
    TRAWL_PID=""
}
metric() { curl -s http://127.0.0.1:8897/metrics | awk -v m="$1" '$1 == m {print $2}'; }
per() { awk -v c="$1" -v hz="$HZ" -v n="$N" 'BEGIN {printf "%.1f", c / hz * 1e6 / n}'; }
# run LABEL URL [H2LOAD ARGS]: one h2load run and what everyone spent on it.
run() {
    local label="$1" url="$2" extra="${3:-}" trawl0=0 records0=0
    if [ -n "$TRAWL_PID" ]; then trawl0=$(ticks "$TRAWL_PID"); records0=$(metric trawl_records_total); fi
    local nginx0 out
    nginx0=$(ticks $NGINX_PIDS)
    # bash's `times` gives the children's CPU: h2load's.
    out=$(ip netns exec "$CLI" bash -c "h2load -n $N -c 10 -m 1 -t 1 $extra --log-file $WORK/h2load.log $url >$WORK/h2load.out 2>&1; times" | tail -1)
    local client
    client=$(awk '{split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%d", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * '"$HZ"'}' <<<"$out")
    local nginx_cpu=$(( $(ticks $NGINX_PIDS) - nginx0 ))
    local rate lat
    rate=$(awk '/^finished in/ {print $4}' "$WORK/h2load.out")
    lat=$(awk '{print $3}' "$WORK/h2load.log" | sort -n | awk '{v[NR] = $1} END {
        p50 = v[int(NR * 0.50 + 0.999)]; p99 = v[int(NR * 0.99 + 0.999)]; printf "%d µs | %d µs", p50, p99}')
    local trawl_cell="–" records="–" lost="–"
    if [ -n "$TRAWL_PID" ]; then
        local last=-1 now
        for _ in $(seq 30); do
            sleep 1
            now=$(metric trawl_records_total)
            [ "$now" = "$last" ] && break
            last=$now
        done
        trawl_cell="$(per $(( $(ticks "$TRAWL_PID") - trawl0 ))) µs"
        records=$(( $(metric trawl_records_total) - records0 ))
        lost="$(metric trawl_tls_lost_bytes_total)"
    fi
    printf '| %s | %s req/s | %s | %s | %s µs | %s µs | %s | %s |\n' "$label" "$rate" "$lat" "$trawl_cell" \
        "$(per "$nginx_cpu")" "$(per "$client")" "$records" "$lost"
}

echo "| run | rate | client p50 | client p99 | trawl CPU per request | nginx CPU per request | h2load CPU per request | records | TLS bytes lost |"
echo "|---|---|---|---|---|---|---|---|---|"
# Paced: 10 clients at $RPS requests per second each, well below what the
# VM saturates at, so latency is the path's own and not a queue.
RPS="${RPS:-200}"
PACED="--rps=$RPS"
HTTPS="https://$SIP/small.json" H2C="http://$SIP:8080/small.json"
for round in $(seq "$ROUNDS"); do
    run "round $round: HTTPS (h2 over TLS), no trawl" "$HTTPS"
    run "round $round: HTTPS paced, no trawl" "$HTTPS" "$PACED"
    run "round $round: h2c, no trawl" "$H2C"
    start_trawl "--tls on"
    run "round $round: HTTPS, trawl --tls on" "$HTTPS"
    run "round $round: HTTPS paced, trawl --tls on" "$HTTPS" "$PACED"
    run "round $round: h2c, trawl (cleartext path)" "$H2C"
    stop_trawl
    start_trawl "--tls on --tls-scope process"
    run "round $round: HTTPS, trawl --tls on --tls-scope process" "$HTTPS"
    run "round $round: HTTPS paced, trawl --tls-scope process" "$HTTPS" "$PACED"
    stop_trawl
    start_trawl "--tls off"
    run "round $round: HTTPS, trawl --tls off (ciphertext only)" "$HTTPS"
    stop_trawl
done
