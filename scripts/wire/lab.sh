# Shared by bench-live.sh and soak.sh: two pods (network namespaces $SRV
# and $CLI at $SIP and $CIP) on bridge $BR, with MTU 1500 veths named
# ${P}v0 and ${P}v1 as a CNI makes them, an inventory of them in
# $WORK/inventory.json (namespace $1), and a cleanup that kills what
# PIDS holds and takes it all down again.
PIDS=()
lab_teardown() {
    for ns in "$SRV" "$CLI"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
    sleep 0.2
    ip netns del "$SRV" 2>/dev/null || true
    ip netns del "$CLI" 2>/dev/null || true
    ip link del "$BR" 2>/dev/null || true
}
lab_cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    lab_teardown
    rm -rf "$WORK"
}
lab_up() {
    lab_teardown
    ip link add "$BR" type bridge
    ip link set "$BR" up
    for pod in "$SRV:$SIP:0" "$CLI:$CIP:1"; do
        IFS=: read -r ns ip i <<<"$pod"
        ip netns add "$ns"
        ip link add "${P}v$i" type veth peer name eth0 netns "$ns"
        ip link set "${P}v$i" master "$BR" mtu 1500 up
        ip -n "$ns" addr add "$ip/24" dev eth0
        ip -n "$ns" link set eth0 mtu 1500 up
        ip -n "$ns" link set lo up
    done
    cat >"$WORK/inventory.json" <<JSON
{"kind": "List", "apiVersion": "v1", "items": [
 {"kind": "Pod", "metadata": {"name": "web", "namespace": "$1", "creationTimestamp": "2020-01-01T00:00:00Z"},
  "spec": {"nodeName": "node-a", "containers": []}, "status": {"phase": "Running", "podIP": "$SIP"}},
 {"kind": "Pod", "metadata": {"name": "load", "namespace": "$1", "creationTimestamp": "2020-01-01T00:00:00Z"},
  "spec": {"nodeName": "node-a", "containers": []}, "status": {"phase": "Running", "podIP": "$CIP"}}]}
JSON
}
# wait_port PORT: until the client pod can connect to the server pod's PORT.
wait_port() {
    for _ in $(seq 100); do ip netns exec "$CLI" bash -c "exec 3<>/dev/tcp/$SIP/$1" 2>/dev/null && break; sleep 0.1; done
}
# lab_prepare NAME TOOL:PACKAGE...: root, the tools (from Debian when
# missing), and a release build of trawl in $TRAWL.
lab_prepare() {
    local name="$1"; shift
    [ "$(id -u)" = 0 ] || { echo "$name: needs root" >&2; exit 1; }
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pair##*:}" >/dev/null; }
    done
    # TRAWL=PATH runs that binary instead (an A/B against another build).
    if [ -z "${TRAWL:-}" ]; then
        cargo build --release -q -p trawl-host
        TRAWL="$CARGO_TARGET_DIR/release/trawl"
    fi
}
