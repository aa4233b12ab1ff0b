#!/usr/bin/env bash
# CLI benchmark for docs/benchmarks.md: `trawl replay --stats` against
# `tshark -q -z conv,tcp -z conv,udp` on the largest corpus captures and on a
# larger capture stitched from them. Needs tshark (wireshark-common tools)
# and hyperfine (Debian packages); installs them if missing.
#
# Usage: scripts/bench-replay.sh [conv|l7|mixed|all]   (default: all)
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
