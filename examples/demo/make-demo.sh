#!/usr/bin/env bash
# Build a small, real demo capture for trawl: a fake two-node "cluster" made of
# network namespaces on one Linux bridge, real servers (nginx, redis, dnsmasq),
# real clients (curl, redis-cli, dig), captured with tcpdump on the bridge.
#
# Writes demo.pcap and inventory.json next to this script.
#
#   sudo examples/demo/make-demo.sh
#
# Traffic only ever flows between the network namespaces created here: the pod
# namespaces have a single connected route (10.244.0.0/16) and no default
# route, so nothing can leave this machine. Everything is torn down on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT_PCAP="$HERE/demo.pcap"
OUT_INV="$HERE/inventory.json"

BRNS=trawl-demo-net      # namespace holding the bridge
BR=br-trawl              # the bridge, where tcpdump listens

# pod            netns                  ip            node    mac (02:42 + ip)
PODS=(
  "frontend-7d9c  trawl-frontend-7d9c   10.244.1.10   node-a  02:42:0a:f4:01:0a"
  "api-5f6b       trawl-api-5f6b        10.244.1.20   node-a  02:42:0a:f4:01:14"
  "cart-redis-0   trawl-cart-redis-0    10.244.2.10   node-b  02:42:0a:f4:02:0a"
  "coredns-abc12  trawl-coredns-abc12   10.244.2.5    node-b  02:42:0a:f4:02:05"
  "stray          trawl-stray           10.244.9.9    -       02:42:0a:f4:09:09"
)
FRONTEND_NS=trawl-frontend-7d9c
API_NS=trawl-api-5f6b;            API_IP=10.244.1.20
REDIS_NS=trawl-cart-redis-0;      REDIS_IP=10.244.2.10
DNS_NS=trawl-coredns-abc12;       DNS_IP=10.244.2.5
STRAY_NS=trawl-stray
ALL_NS=("$FRONTEND_NS" "$API_NS" "$REDIS_NS" "$DNS_NS" "$STRAY_NS" "$BRNS")

# No proxy may redirect a client anywhere.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy no_proxy NO_PROXY
export REDISCLI_HISTFILE=/dev/null LC_ALL=C

log() { printf '[make-demo] %s\n' "$*" >&2; }

if [[ $EUID -ne 0 ]]; then
  echo "make-demo.sh must run as root (sudo $0)" >&2
  exit 1
fi

# ---------------------------------------------------------------- packages
need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]; }
have ip           || need_pkgs+=(iproute2)
have tcpdump      || need_pkgs+=(tcpdump)
have nginx        || need_pkgs+=(nginx)
have dnsmasq      || need_pkgs+=(dnsmasq)
have redis-server || need_pkgs+=(redis-server)
have redis-cli    || need_pkgs+=(redis-tools)
have curl         || need_pkgs+=(curl)
have dig          || need_pkgs+=(dnsutils)
have ethtool      || need_pkgs+=(ethtool)   # to turn off checksum offload on the veths
if ((${#need_pkgs[@]})); then
  log "installing: ${need_pkgs[*]}"
  apt-get update -qq
  # policy-rc.d 101: do not let the packages start their system-wide daemons.
  prc=/usr/sbin/policy-rc.d
  prc_made=0
  if [[ ! -e $prc ]]; then printf '#!/bin/sh\nexit 101\n' >"$prc"; chmod +x "$prc"; prc_made=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  ((prc_made)) && rm -f "$prc"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
TCPDUMP=$(command -v tcpdump || echo /usr/bin/tcpdump)

# ---------------------------------------------------------------- cleanup
TMP=""
TCPDUMP_PID=""
cleanup() {
  local -   # keep errexit for the caller
  set +e
  if [[ -n $TCPDUMP_PID ]] && kill -0 "$TCPDUMP_PID" 2>/dev/null; then
    kill -INT "$TCPDUMP_PID"; wait "$TCPDUMP_PID" 2>/dev/null
  fi
  # End the processes running inside the namespaces this script made (and only those).
  for ns in "${ALL_NS[@]}"; do
    if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null; done
    fi
  done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    left=""
    for ns in "${ALL_NS[@]}"; do left+=$(ip netns pids "$ns" 2>/dev/null); done
    [[ -z $left ]] && break
    sleep 0.2
  done
  for ns in "${ALL_NS[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
  done
  for ns in "${ALL_NS[@]}"; do ip netns del "$ns" 2>/dev/null; done
  if [[ -n $TMP && -d $TMP ]]; then rm -rf "$TMP"; fi
  return 0
}
cleanup          # leftovers of an earlier, interrupted run
trap cleanup EXIT
trap 'exit 130' INT TERM

TMP=$(mktemp -d /tmp/trawl-demo.XXXXXX)
chmod 755 "$TMP"   # nginx workers run as nobody and must read $TMP/www

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# ---------------------------------------------------------------- topology
log "creating namespaces and bridge"
for ns in "${ALL_NS[@]}"; do
  ip netns add "$ns"
  in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2>/dev/null || true
  in_ns "$ns" ip link set lo up
done
ip -n "$BRNS" link add "$BR" type bridge stp_state 0 forward_delay 0 mcast_snooping 0
ip -n "$BRNS" link set "$BR" up

i=0
for row in "${PODS[@]}"; do
  read -r _pod ns ip _node mac <<<"$row"
  port="vp$i"
  ip -n "$BRNS" link add "$port" type veth peer name eth0 netns "$ns"
  ip -n "$BRNS" link set "$port" master "$BR" up
  in_ns "$ns" ip link set eth0 address "$mac"
  in_ns "$ns" ip addr add "$ip/16" dev eth0
  in_ns "$ns" ip link set eth0 up
  # Software checksums and no segmentation offload: every captured frame is
  # a real, wire-sized frame with a valid checksum.
  in_ns "$ns" ethtool -K eth0 tx off tso off gso off >/dev/null 2>&1 || true
  i=$((i + 1))
done

# ---------------------------------------------------------------- servers
log "starting servers"
# redis: cart-redis-0
ip netns exec "$REDIS_NS" redis-server --bind "$REDIS_IP" --port 6379 --protected-mode no \
  --save '' --appendonly no --dir "$TMP" --logfile "$TMP/redis.log" --daemonize no &

# nginx: api-5f6b
mkdir -p "$TMP/www/static" "$TMP/nginx-tmp"
cat >"$TMP/www/index.html" <<'EOF'
<!doctype html>
<html><head><title>shop api</title></head>
<body><h1>shop api</h1><p>try /products.json</p></body></html>
EOF
cat >"$TMP/www/products.json" <<'EOF'
[{"sku":"sku-1","name":"mug","price":9.5},{"sku":"sku-2","name":"tea","price":4.25},{"sku":"sku-3","name":"spoon","price":1.0}]
EOF
printf 'body{font-family:sans-serif;margin:2em}\nh1{color:#336}\n' >"$TMP/www/static/app.css"
chmod -R a+rX "$TMP/www"
cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
daemon off;
events { worker_connections 64; }
http {
  access_log $TMP/nginx-access.log;
  client_body_temp_path $TMP/nginx-tmp/body;
  proxy_temp_path $TMP/nginx-tmp/proxy;
  fastcgi_temp_path $TMP/nginx-tmp/fastcgi;
  uwsgi_temp_path $TMP/nginx-tmp/uwsgi;
  scgi_temp_path $TMP/nginx-tmp/scgi;
  types { text/html html; application/json json; text/css css; }
  default_type text/plain;
  server_tokens off;
  keepalive_timeout 10;
  server {
    listen $API_IP:8080;
    root $TMP/www;
    location = /healthz { return 200 "ok\n"; }
    location = /api/orders {
      default_type application/json;
      if (\$request_method != POST) { return 405; }
      return 201 '{"order":"o-1001","status":"created"}\n';
    }
  }
}
EOF
ip netns exec "$API_NS" "$NGINX" -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" &

# dnsmasq: coredns-abc12
ip netns exec "$DNS_NS" "$DNSMASQ" --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
  --no-poll --bind-interfaces --listen-address="$DNS_IP" --port=53 \
  --pid-file="$TMP/dnsmasq.pid" --log-facility="$TMP/dnsmasq.log" --log-queries --user=root \
  --local=/cluster.local/ \
  --host-record=api.shop.svc.cluster.local,10.96.10.10 \
  --host-record=cart-redis.shop.svc.cluster.local,10.96.10.20 \
  --host-record=kube-dns.kube-system.svc.cluster.local,10.96.0.10 &

# Wait until each server listens (checked with ss inside its namespace: no packets).
wait_listen() { # ns proto(t|u) addr:port
  local ns=$1 proto=$2 want=$3
  for _ in $(seq 1 50); do
    if in_ns "$ns" ss -ln"$proto" | awk '{print $4}' | grep -qx "$want"; then return 0; fi
    sleep 0.1
  done
  echo "server in $ns did not start listening on $want" >&2
  return 1
}
wait_listen "$REDIS_NS" t "$REDIS_IP:6379"
wait_listen "$API_NS" t "$API_IP:8080"
wait_listen "$DNS_NS" u "$DNS_IP:53"
wait_listen "$DNS_NS" t "$DNS_IP:53"

# ---------------------------------------------------------------- capture
log "starting tcpdump on $BR"
# Started with ip netns exec directly (not through a shell function), so $!
# is tcpdump itself (ip execs it) and SIGINT reaches it.
ip netns exec "$BRNS" "$TCPDUMP" -i "$BR" -nn -U -s 262144 -Z root -w "$TMP/demo.pcap" 2>"$TMP/tcpdump.err" &
TCPDUMP_PID=$!
for _ in $(seq 1 50); do grep -q 'listening on' "$TMP/tcpdump.err" && break; sleep 0.1; done
grep -q 'listening on' "$TMP/tcpdump.err" || { cat "$TMP/tcpdump.err" >&2; exit 1; }
[[ $(cat "/proc/$TCPDUMP_PID/comm" 2>/dev/null) == tcpdump ]] || { echo "tcpdump pid not found" >&2; exit 1; }
sleep 1

# ---------------------------------------------------------------- traffic
pause() { sleep 0.2; }
DIG=(dig -4 +tries=1 +time=2 +short "@$DNS_IP")
CURL=(curl -sS --noproxy '*' --max-time 5 -o /dev/null -w '  HTTP %{http_code} %{method} %{url_effective}\n')
N=(-o /dev/null)   # curl needs one -o per extra URL
RCLI=(redis-cli -h "$REDIS_IP" -p 6379)

log "DNS: frontend -> coredns"
in_ns "$FRONTEND_NS" "${DIG[@]}" api.shop.svc.cluster.local A;                 pause
in_ns "$FRONTEND_NS" "${DIG[@]}" cart-redis.shop.svc.cluster.local A;          pause
in_ns "$FRONTEND_NS" "${DIG[@]}" api.shop.svc.cluster.local AAAA;              pause
in_ns "$FRONTEND_NS" "${DIG[@]}" payments.shop.svc.cluster.local A || true;    pause  # NXDOMAIN
in_ns "$FRONTEND_NS" "${DIG[@]}" +tcp kube-dns.kube-system.svc.cluster.local A; pause

log "HTTP: frontend -> api"
# one keep-alive connection, four requests (one 404)
in_ns "$FRONTEND_NS" "${CURL[@]}" "http://$API_IP:8080/healthz" "${N[@]}" "http://$API_IP:8080/products.json" \
  "${N[@]}" "http://$API_IP:8080/static/app.css" "${N[@]}" "http://$API_IP:8080/static/logo.png"; pause
# separate connections
in_ns "$FRONTEND_NS" "${CURL[@]}" "http://$API_IP:8080/";                    pause
in_ns "$FRONTEND_NS" "${CURL[@]}" "http://$API_IP:8080/products.json";       pause
in_ns "$FRONTEND_NS" "${CURL[@]}" -X POST -H 'Content-Type: application/json' \
  --data '{"cart":"u42","items":[{"sku":"sku-1","qty":2}]}' "http://$API_IP:8080/api/orders"; pause
in_ns "$FRONTEND_NS" "${CURL[@]}" "http://$API_IP:8080/checkout";            pause  # 404
in_ns "$FRONTEND_NS" "${CURL[@]}" -H 'Connection: close' "http://$API_IP:8080/healthz"; pause
in_ns "$FRONTEND_NS" "${CURL[@]}" -I "http://$API_IP:8080/index.html";       pause

log "redis: frontend -> cart-redis"
for cmd in "PING" "SET cart:u42 sku-1:2" "GET cart:u42" "INCR cart:views" "INCR cart:views" \
           "HSET cart:u42:items sku-1 2" "HSET cart:u42:items sku-2 1" "HGETALL cart:u42:items" \
           "EXPIRE cart:u42 3600" "TTL cart:u42"; do
  # shellcheck disable=SC2086
  in_ns "$FRONTEND_NS" "${RCLI[@]}" $cmd >/dev/null
  sleep 0.1
done
pause
# ten INCRs on one connection
in_ns "$FRONTEND_NS" "${RCLI[@]}" -r 10 -i 0.05 INCR cart:views >/dev/null; pause
# a pipeline of ten SETs in RESP, through --pipe
{
  for n in $(seq 1 10); do
    key="session:s$n"; val="user-$n"
    printf '*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n' "${#key}" "$key" "${#val}" "$val"
  done
} | in_ns "$FRONTEND_NS" "${RCLI[@]}" --pipe >/dev/null; pause

log "redis: api -> cart-redis"
in_ns "$API_NS" "${RCLI[@]}" GET cart:u42 >/dev/null;               pause
in_ns "$API_NS" "${RCLI[@]}" LPUSH orders o-1001 >/dev/null;        pause
in_ns "$API_NS" "${RCLI[@]}" LLEN orders >/dev/null;              pause
in_ns "$API_NS" "${RCLI[@]}" INCR orders:count >/dev/null;        pause
# (no interactive/stdin redis-cli here: redis-cli 7 then fetches COMMAND DOCS, ~180 KB)

log "HTTP: stray host (10.244.9.9, not in the inventory) -> api"
in_ns "$STRAY_NS" "${CURL[@]}" "http://$API_IP:8080/";        pause
in_ns "$STRAY_NS" "${CURL[@]}" "http://$API_IP:8080/healthz"

sleep 1
log "stopping tcpdump"
kill -INT "$TCPDUMP_PID"
wait "$TCPDUMP_PID" || true
TCPDUMP_PID=""
sed 's/^/[tcpdump] /' "$TMP/tcpdump.err" >&2

# Self-check: every IP packet stays inside the pod range, no IPv6 at all.
stray_pkts=$("$TCPDUMP" -r "$TMP/demo.pcap" -nn \
  'ip6 or (ip and not (src net 10.244.0.0/16 and dst net 10.244.0.0/16))' 2>/dev/null | wc -l)
if [[ $stray_pkts -ne 0 ]]; then
  echo "capture holds $stray_pkts packets outside 10.244.0.0/16 (or IPv6); not writing it" >&2
  exit 1
fi

# ---------------------------------------------------------------- inventory
FIRST=$("$TCPDUMP" -r "$TMP/demo.pcap" -nn -tt -c 1 2>/dev/null | awk '{print int($1)}')
[[ $FIRST =~ ^[0-9]+$ ]] || { echo "could not read the first packet's time" >&2; exit 1; }
at() { date -u -d "@$((FIRST + $1))" +%Y-%m-%dT%H:%M:%SZ; }

NODE_T=$(at -864000)                  # nodes: 10 days before the capture
SVC_T=$(at -7200)                     # services: 2 hours before
DNS_T=$(at -5400);  DNS_S=$(at -5398)  # pods: about an hour before
REDIS_T=$(at -3900); REDIS_S=$(at -3898)
API_T=$(at -3700);  API_S=$(at -3698)
FE_T=$(at -3600);   FE_S=$(at -3598)

# pod_json name ns uid created started node hostIP podIP labels-json owner-kind owner-name
#          owner-uid image port-json
pod_json() {
  local name=$1 ns=$2 uid=$3 created=$4 started=$5 node=$6 hostip=$7 podip=$8 labels=$9
  local okind=${10} oname=${11} ouid=${12} image=${13} cname=${14} ports=${15}
  local oapi=apps/v1
  RV=$((RV + 113))
  cat <<EOF
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "creationTimestamp": "$created",
                "labels": $labels,
                "name": "$name",
                "namespace": "$ns",
                "ownerReferences": [
                    {
                        "apiVersion": "$oapi",
                        "blockOwnerDeletion": true,
                        "controller": true,
                        "kind": "$okind",
                        "name": "$oname",
                        "uid": "$ouid"
                    }
                ],
                "resourceVersion": "$RV",
                "uid": "$uid"
            },
            "spec": {
                "containers": [
                    {
                        "image": "$image",
                        "imagePullPolicy": "IfNotPresent",
                        "name": "$cname",
                        "ports": $ports,
                        "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File"
                    }
                ],
                "dnsPolicy": "ClusterFirst",
                "enableServiceLinks": true,
                "nodeName": "$node",
                "preemptionPolicy": "PreemptLowerPriority",
                "priority": 0,
                "restartPolicy": "Always",
                "schedulerName": "default-scheduler",
                "serviceAccountName": "default",
                "terminationGracePeriodSeconds": 30
            },
            "status": {
                "conditions": [
                    {"lastTransitionTime": "$started", "status": "True", "type": "Initialized"},
                    {"lastTransitionTime": "$started", "status": "True", "type": "Ready"},
                    {"lastTransitionTime": "$started", "status": "True", "type": "ContainersReady"},
                    {"lastTransitionTime": "$created", "status": "True", "type": "PodScheduled"}
                ],
                "containerStatuses": [
                    {
                        "containerID": "containerd://${uid//-/}${uid//-/}",
                        "image": "$image",
                        "imageID": "$image",
                        "lastState": {},
                        "name": "$cname",
                        "ready": true,
                        "restartCount": 0,
                        "started": true,
                        "state": {"running": {"startedAt": "$started"}}
                    }
                ],
                "hostIP": "$hostip",
                "hostIPs": [{"ip": "$hostip"}],
                "phase": "Running",
                "podIP": "$podip",
                "podIPs": [{"ip": "$podip"}],
                "qosClass": "BestEffort",
                "startTime": "$started"
            }
        }
EOF
}

# svc_json name ns uid clusterIP labels selector ports
svc_json() {
  local name=$1 ns=$2 uid=$3 cip=$4 labels=$5 selector=$6 ports=$7
  RV=$((RV + 113))
  cat <<EOF
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "creationTimestamp": "$SVC_T",
                "labels": $labels,
                "name": "$name",
                "namespace": "$ns",
                "resourceVersion": "$RV",
                "uid": "$uid"
            },
            "spec": {
                "clusterIP": "$cip",
                "clusterIPs": ["$cip"],
                "internalTrafficPolicy": "Cluster",
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack",
                "ports": $ports,
                "selector": $selector,
                "sessionAffinity": "None",
                "type": "ClusterIP"
            },
            "status": {"loadBalancer": {}}
        }
EOF
}

# node_json name uid ip podCIDR extra-labels
node_json() {
  local name=$1 uid=$2 ip=$3 cidr=$4 extra=$5
  RV=$((RV + 113))
  cat <<EOF
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "creationTimestamp": "$NODE_T",
                "labels": {
                    "beta.kubernetes.io/arch": "amd64",
                    "beta.kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/hostname": "$name",
                    "kubernetes.io/os": "linux"$extra
                },
                "name": "$name",
                "resourceVersion": "$RV",
                "uid": "$uid"
            },
            "spec": {
                "podCIDR": "$cidr",
                "podCIDRs": ["$cidr"]
            },
            "status": {
                "addresses": [
                    {"address": "$ip", "type": "InternalIP"},
                    {"address": "$name", "type": "Hostname"}
                ],
                "allocatable": {"cpu": "2", "memory": "8049172Ki", "pods": "110"},
                "capacity": {"cpu": "2", "memory": "8151572Ki", "pods": "110"},
                "conditions": [
                    {"lastHeartbeatTime": "$FE_S", "lastTransitionTime": "$NODE_T", "message": "kubelet is posting ready status", "reason": "KubeletReady", "status": "True", "type": "Ready"}
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "containerRuntimeVersion": "containerd://1.7.13",
                    "kernelVersion": "6.1.0-18-amd64",
                    "kubeProxyVersion": "v1.29.2",
                    "kubeletVersion": "v1.29.2",
                    "operatingSystem": "linux",
                    "osImage": "Debian GNU/Linux 12 (bookworm)"
                }
            }
        }
EOF
}

RV=4200   # resourceVersions: fixed, so only the timestamps change between runs
{
  printf '{\n    "apiVersion": "v1",\n    "items": [\n'
  # pods, by namespace then name (as kubectl lists them)
  pod_json coredns-abc12 kube-system 5b0e5f1c-0c1d-4a8e-9d0a-1c2b3d4e5f01 "$DNS_T" "$DNS_S" node-b 172.18.0.3 10.244.2.5 \
    '{"k8s-app": "kube-dns", "pod-template-hash": "abc"}' ReplicaSet coredns-abc 7a1d2c3e-4f50-4617-8293-a4b5c6d7e801 \
    registry.k8s.io/coredns/coredns:v1.11.1 coredns \
    '[{"containerPort": 53, "name": "dns", "protocol": "UDP"}, {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"}]'
  printf ',\n'
  pod_json api-5f6b shop 0c6f1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e02 "$API_T" "$API_S" node-a 172.18.0.2 10.244.1.20 \
    '{"app": "api", "pod-template-hash": "5f6b"}' ReplicaSet api-5f6b 7a1d2c3e-4f50-4617-8293-a4b5c6d7e802 \
    nginx:1.22 api '[{"containerPort": 8080, "name": "http", "protocol": "TCP"}]'
  printf ',\n'
  pod_json cart-redis-0 shop 1d7a2e3f-4b5c-4d6e-9f70-8b9c0d1e2f03 "$REDIS_T" "$REDIS_S" node-b 172.18.0.3 10.244.2.10 \
    '{"app": "cart-redis", "controller-revision-hash": "cart-redis-6c9b8d7f4", "statefulset.kubernetes.io/pod-name": "cart-redis-0"}' \
    StatefulSet cart-redis 7a1d2c3e-4f50-4617-8293-a4b5c6d7e803 \
    redis:7.0 redis '[{"containerPort": 6379, "name": "redis", "protocol": "TCP"}]'
  printf ',\n'
  pod_json frontend-7d9c shop 2e8b3f40-5c6d-4e7f-a081-9c0d1e2f3a04 "$FE_T" "$FE_S" node-a 172.18.0.2 10.244.1.10 \
    '{"app": "frontend", "pod-template-hash": "7d9c"}' ReplicaSet frontend-7d9c 7a1d2c3e-4f50-4617-8293-a4b5c6d7e804 \
    curlimages/curl:8.5.0 frontend '[]'
  printf ',\n'
  # services
  svc_json kube-dns kube-system 3f9c4051-6d7e-4f80-b192-0d1e2f3a4b05 10.96.0.10 \
    '{"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}' \
    '{"k8s-app": "kube-dns"}' \
    '[{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}, {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]'
  printf ',\n'
  svc_json api shop 40ad5162-7e8f-4091-82a3-1e2f3a4b5c06 10.96.10.10 '{"app": "api"}' '{"app": "api"}' \
    '[{"name": "http", "port": 8080, "protocol": "TCP", "targetPort": 8080}]'
  printf ',\n'
  svc_json cart-redis shop 51be6273-8f90-41a2-93b4-2f3a4b5c6d07 10.96.10.20 '{"app": "cart-redis"}' '{"app": "cart-redis"}' \
    '[{"name": "redis", "port": 6379, "protocol": "TCP", "targetPort": 6379}]'
  printf ',\n'
  # nodes
  node_json node-a 62cf7384-90a1-42b3-a4c5-3a4b5c6d7e08 172.18.0.2 10.244.1.0/24 \
    ',
                    "node-role.kubernetes.io/control-plane": ""'
  printf ',\n'
  node_json node-b 73d08495-a1b2-43c4-b5d6-4b5c6d7e8f09 172.18.0.3 10.244.2.0/24 ''
  printf '    ],\n    "kind": "List",\n    "metadata": {\n        "resourceVersion": ""\n    }\n}\n'
} >"$TMP/inventory.json"

if command -v jq >/dev/null 2>&1; then
  jq -e '.kind == "List" and (.items | length) == 9' "$TMP/inventory.json" >/dev/null \
    || { echo "generated inventory.json is not valid" >&2; exit 1; }
elif command -v python3 >/dev/null 2>&1; then
  python3 -m json.tool "$TMP/inventory.json" >/dev/null \
    || { echo "generated inventory.json is not valid" >&2; exit 1; }
fi

install -m 644 "$TMP/demo.pcap" "$OUT_PCAP"
install -m 644 "$TMP/inventory.json" "$OUT_INV"
if [[ -n ${SUDO_UID:-} && -n ${SUDO_GID:-} ]]; then
  chown "$SUDO_UID:$SUDO_GID" "$OUT_PCAP" "$OUT_INV"
fi
log "wrote $OUT_PCAP ($(stat -c %s "$OUT_PCAP") bytes, $("$TCPDUMP" -r "$OUT_PCAP" -nn 2>/dev/null | wc -l) packets)"
log "wrote $OUT_INV (pods created $DNS_T..$FE_T; first packet $(at 0))"
