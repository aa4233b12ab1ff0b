#!/bin/sh
# Makes the hub's certificate for the workers' TLS: a CA of its own and a
# certificate it signs for the hub's Service names, printed as the Secret
# `NAME-hub-tls` (keys ca.crt, tls.crt, tls.key) that the manifests mount.
#
#   deploy/hub-tls.sh [NAMESPACE [NAME]] | kubectl apply -f -
#
# NAMESPACE defaults to trawl and NAME (the Service is NAME-hub) to trawl.
# With OUT=DIR it also leaves the PEM files in DIR. Needs openssl. (The
# Helm chart makes the same Secret itself; cert-manager users can name
# theirs with hubTls.existingSecret instead.)
set -eu
ns=${1:-trawl}
name=${2:-trawl}
svc="$name-hub"
dir=${OUT:-$(mktemp -d)}
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=$name hub CA" -keyout ca.key -out ca.crt \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$svc.$ns.svc" \
    -keyout tls.key -out tls.csr 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.%s,DNS:%s.%s.svc,DNS:%s.%s.svc.cluster.local\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
    "$svc" "$svc" "$ns" "$svc" "$ns" "$svc" "$ns" > ext.cnf
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -extfile ext.cnf -out tls.crt 2>/dev/null
b64() { base64 < "$1" | tr -d '\n'; }
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: $svc-tls
  namespace: $ns
  labels:
    app.kubernetes.io/name: trawl
type: Opaque
data:
  ca.crt: $(b64 ca.crt)
  tls.crt: $(b64 tls.crt)
  tls.key: $(b64 tls.key)
YAML
[ -n "${OUT:-}" ] || rm -rf "$dir"
