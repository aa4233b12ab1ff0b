#!/usr/bin/env bash
# CLI benchmark for docs/benchmarks.md: `trawl replay --stats` against
# `tshark -q -z conv,tcp -z conv,udp` on the largest corpus captures and on a
# larger capture stitched from them. Needs tshark (wireshark-common tools)
# and hyperfine (Debian packages); installs them if missing.
#
# Usage: scripts/bench-replay.sh [conv|l7|mixed|wire|all]   (default: all)
#
# `wire` records the wire-size corpus first if it is missing
# (scripts/record-wire-corpus.sh, as root: MTU 1500 veths, and the same
# traffic with GSO segments), then runs trawl against tshark on it, wasm
# against native, and each plugin on MTU segments against GSO segments.
set -euo pipefail
cd "$(dirname "$0")/.."
PART="${1:-all}"
CORPUS="${TRAWL_CORPUS:-../shared/data}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/trawl-target}"
OUT=/var/tmp/trawl-bench
mkdir -p "$OUT"
for tool in tshark mergecap hyperfine; do
    command -v "$tool" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark hyperfine; break; }
done
cargo build --release -q -p trawl-host --features native-plugins
TRAWL="$CARGO_TARGET_DIR/release/trawl"

# A bigger input: the three largest made/ captures, each repeated 40 times,
# concatenated (mergecap -a keeps them back to back).
BIG="$OUT/stitched.pcap"
if [ ! -f "$BIG" ]; then
    parts=()
    for i in $(seq 1 40); do
        for f in made/http2_h2c.pcap made/redis_resp2.pcap made/http1.pcap; do parts+=("$CORPUS/$f"); done
    done
    mergecap -F pcap -a -w "$BIG" "${parts[@]}"
fi

if [ "$PART" = all ] || [ "$PART" = conv ]; then
for f in "$CORPUS/made/http2_h2c.pcap" "$CORPUS/made/redis_resp2.pcap" "$CORPUS/made/http1.pcap" "$BIG"; do
    echo "== $(basename "$f") ($(stat -c %s "$f") bytes)"
    "$TRAWL" replay "$f" --stats >/dev/null
    hyperfine -N --warmup 3 --runs 20 --export-markdown "$OUT/$(basename "$f").md" \
        "$TRAWL replay $f" \
        "tshark -n -r $f -q -z conv,tcp -z conv,udp"
done
fi

# L7: records from the HTTP/1.x and DNS corpus, plugins as wasm and linked
# natively, against tshark dissecting the same fields (two-pass).
if [ "$PART" = all ] || [ "$PART" = l7 ]; then
L7="$OUT/http-dns.pcapng"
if [ ! -f "$L7" ]; then
    files=$(cd "$CORPUS" && find . \( -name '*.pcap' -o -name '*.pcapng' \) | sort | while read -r f; do
        if [ -f "$f.expected/http.tsv" ] || [ -f "$f.expected/dns.tsv" ]; then echo "$CORPUS/$f"; fi; done)
    parts=()
    for i in $(seq 1 20); do for f in $files; do parts+=("$f"); done; done
    mergecap -F pcapng -a -w "$L7" "${parts[@]}"
fi
echo "== $(basename "$L7") ($(stat -c %s "$L7") bytes)"
"$TRAWL" replay "$L7" --emit records --stats >/dev/null
hyperfine -N --warmup 2 --runs 10 --export-markdown "$OUT/l7.md" \
    "$TRAWL replay $L7 --emit records" \
    "$TRAWL replay $L7 --emit records --native-plugins" \
    "tshark -n -2 -r $L7 -Y http||dns -T fields -e http.request.method -e http.request.uri -e http.response.code -e dns.qry.name -e dns.flags.rcode"
fi

# Mixed corpus: every capture (HTTP/1.x, HTTP/2, gRPC, DNS, Redis, Kafka),
# repeated 20 times; all five plugins against tshark dissecting the same
# protocols (two-pass, fields of each).
if [ "$PART" = all ] || [ "$PART" = mixed ]; then
MIXED="$OUT/mixed.pcapng"
if [ ! -f "$MIXED" ]; then
    files=$(cd "$CORPUS" && find . \( -name '*.pcap' -o -name '*.pcapng' \) | sort | sed "s|^|$CORPUS/|")
    parts=()
    for i in $(seq 1 20); do for f in $files; do parts+=("$f"); done; done
    mergecap -F pcapng -a -w "$MIXED" "${parts[@]}"
fi
echo "== $(basename "$MIXED") ($(stat -c %s "$MIXED") bytes)"
"$TRAWL" replay "$MIXED" --emit records --stats >/dev/null
hyperfine -N --warmup 2 --runs 10 --export-markdown "$OUT/mixed.md" \
    "$TRAWL replay $MIXED --emit records" \
    "$TRAWL replay $MIXED --emit records --native-plugins" \
    "tshark -n -2 -r $MIXED -Y http||http2||grpc||dns||resp||kafka -T fields -e http.request.method -e http.response.code -e http2.headers.path -e http2.headers.status -e grpc.message_length -e dns.qry.name -e resp.bulk_string.value -e kafka.request_key"
fi

# Wire-size corpus: the same protocols recorded over an MTU 1500 veth pair.
if [ "$PART" = all ] || [ "$PART" = wire ]; then
WIRE_DIR="$OUT/wire"
[ -f "$WIRE_DIR/wire.pcap" ] || OUT="$WIRE_DIR" scripts/record-wire-corpus.sh
[ -f "$WIRE_DIR/gso.pcap" ] || OUT="$WIRE_DIR" SEGMENTS=gso scripts/record-wire-corpus.sh
WIRE="$WIRE_DIR/wire.pcap"
echo "== $(basename "$WIRE") ($(stat -c %s "$WIRE") bytes, $(capinfos -c "$WIRE" | awk '/Number of packets/ {print $4, $5}') frames)"
"$TRAWL" replay "$WIRE" --emit records --stats 2>&1 >/dev/null | tr ';' '\n'
hyperfine -N --warmup 1 --runs 5 --export-markdown "$OUT/wire.md" \
    "$TRAWL replay $WIRE --emit records" \
    "$TRAWL replay $WIRE --emit records --native-plugins" \
    "$TRAWL replay $WIRE" \
    "tshark -n -2 -r $WIRE -d tcp.port==8080,http2 -d tcp.port==50051,http2 -Y http||http2||grpc||resp||kafka||dns -T fields -e http.request.method -e http.response.code -e http2.headers.path -e http2.headers.status -e grpc.message_length -e dns.qry.name -e resp.bulk_string.value -e kafka.request_key"
# Each plugin alone, on MTU segments and on GSO (loopback-sized) segments
# of the same traffic.
for part in "http:tcp.port==80||tcp.port==8080" "grpc:tcp.port==50051" "redis:tcp.port==6379" \
    "kafka:tcp.port==9092" "dns:udp.port==53||tcp.port==53"; do
    name="${part%%:*}" filter="${part#*:}"
    for seg in wire gso; do
        [ -f "$WIRE_DIR/$name-$seg.pcap" ] || tshark -r "$WIRE_DIR/$seg.pcap" -Y "$filter" -w "$WIRE_DIR/$name-$seg.pcap"
    done
    echo "== $name: $(stat -c %s "$WIRE_DIR/$name-wire.pcap") bytes on MTU segments, $(stat -c %s "$WIRE_DIR/$name-gso.pcap") on GSO segments"
    hyperfine -N --warmup 1 --runs 5 --export-markdown "$OUT/wire-$name.md" \
        "$TRAWL replay $WIRE_DIR/$name-wire.pcap --emit records" \
        "$TRAWL replay $WIRE_DIR/$name-gso.pcap --emit records"
done
fi
