"""Validates deploy/: the plain manifests and the Helm chart rendered by
Helm's own engine (helm-python-sdk, Helm's Go SDK without the binary),
against the Kubernetes schemas bundled by kubernetes-validate (strict:
unknown fields are errors too).

Usage: validate.py REPO_ROOT OUT_DIR
Writes the ConfigMaps' trawl.yaml files into OUT_DIR (for the caller to
load with trawl itself) and prints a JSON summary on stdout."""

import json
import pathlib
import sys

import helm_python as helm
import kubernetes_validate
import yaml

KUBE = "1.35.0"
root, out_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out_dir.mkdir(parents=True, exist_ok=True)
problems = []


def validate(docs, where):
    for doc in docs:
        name = f"{where}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, KUBE, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{name}: {e.message} at {'.'.join(map(str, e.path))}")
        except Exception as e:  # noqa: BLE001 - a schema that cannot be found is a failure too
            problems.append(f"{name}: {type(e).__name__}: {e}")


def objects(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def container(docs, kind, name):
    return objects(docs)[(kind, name)]["spec"]["template"]["spec"]["containers"][0]


# The plain manifests.
manifests = []
for f in sorted((root / "deploy/manifests").glob("*.yaml")):
    manifests += [d for d in yaml.safe_load_all(f.read_text()) if d]
validate(manifests, "deploy/manifests")

# The chart, rendered as `helm install trawl deploy/helm/trawl -n trawl` would,
# with its defaults and with values that change every branch.
chart = helm.Chart.load(str(root / "deploy/helm/trawl"))
variants = {
    "defaults": {},
    "netns": {
        "worker": {"discovery": "netns", "tls": {"enabled": False}},
        "existingSecret": "my-token",
        "hubTls": {"existingSecret": "my-hub-tls"},
        "captureFilters": {"podRegex": "^front", "namespaces": ["shop"], "excludeNamespaces": []},
        "plugins": ["http", "dns"],
        "image": {"tag": "dev"},
        "hub": {"service": {"type": "NodePort"}, "tolerations": [{"operator": "Exists"}]},
        "networkPolicy": {"apiFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
    },
}
rendered = {}
for variant, values in variants.items():
    files = chart.render(values, name="trawl", namespace="trawl", is_install=True)
    docs = []
    for path, text in files.items():
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    validate(docs, f"chart ({variant})")
    rendered[variant] = docs

report = helm.lint(str(root / "deploy/helm/trawl"), strict=True)
problems += [f"helm lint: {m['path']}: {m['error']}" for m in report.get("messages", []) if m.get("severity", 0) >= 2]
problems += [f"helm lint: {e}" for e in report.get("errors") or []]

# The chart renders the same objects as the manifests (it makes the token
# Secret; the manifests leave that to kubectl and make the Namespace).
chart_docs = rendered["defaults"]
want = set(objects(manifests)) - {("Namespace", "trawl")}
got = set(objects(chart_docs)) - {("Secret", "trawl-token"), ("Secret", "trawl-hub-tls")}
if want != got:
    problems.append(f"chart and manifests differ: only in manifests {sorted(want - got)}, only in chart {sorted(got - want)}")
else:
    for kind, name in [("DaemonSet", "trawl-worker"), ("Deployment", "trawl-hub")]:
        a, b = container(manifests, kind, name), container(chart_docs, kind, name)
        for field in ["securityContext", "ports", "readinessProbe", "livenessProbe", "resources", "volumeMounts"]:
            if a.get(field) != b.get(field):
                problems.append(f"{kind}/{name}: {field} differs: manifests {a.get(field)} chart {b.get(field)}")
        flags = lambda c: sorted(x.split("=")[0] for x in c["args"])  # noqa: E731
        if flags(a) != flags(b):
            problems.append(f"{kind}/{name}: flags differ: {flags(a)} vs {flags(b)}")
    if objects(manifests)[("ClusterRole", "trawl")]["rules"] != objects(chart_docs)[("ClusterRole", "trawl")]["rules"]:
        problems.append("ClusterRole rules differ")

# Least privilege, as the issue asks.
for where, docs in [("manifests", manifests)] + [(f"chart ({v})", d) for v, d in rendered.items()]:
    worker = container(docs, "DaemonSet", "trawl-worker")
    sc = worker["securityContext"]
    caps = set(sc["capabilities"]["add"])
    tls = "--tls=off" not in worker["args"]
    expected = (
        {"BPF", "PERFMON", "NET_ADMIN", "NET_RAW"}
        | ({"SYS_ADMIN"} if "--netns-prefix=cni-" in worker["args"] else set())
        | ({"SYS_PTRACE"} if tls else set())
    )
    if sc.get("privileged") or caps != expected:
        problems.append(f"{where}: worker capabilities {sorted(caps)}, want {sorted(expected)} and not privileged")
    pod = objects(docs)[("DaemonSet", "trawl-worker")]["spec"]["template"]["spec"]
    # TLS capture sees the pods' processes only with the host's PIDs, and
    # only TLS capture may ask for them.
    if bool(pod.get("hostPID")) != tls:
        problems.append(f"{where}: hostPID is {pod.get('hostPID')} with TLS capture {'on' if tls else 'off'}")
    if not pod.get("hostNetwork") or not worker.get("readinessProbe"):
        problems.append(f"{where}: the worker needs hostNetwork and a readiness probe")
    mounts = {m["mountPath"] for m in worker["volumeMounts"]}
    if not {"/sys/fs/bpf", "/sys/fs/cgroup"} <= mounts:
        problems.append(f"{where}: the worker lacks the bpffs or cgroup mount: {sorted(mounts)}")
    for rule in objects(docs)[("ClusterRole", "trawl")]["rules"]:
        if set(rule["verbs"]) - {"get", "list", "watch"} or {"secrets", "configmaps"} & set(rule["resources"]):
            problems.append(f"{where}: ClusterRole rule goes beyond reading workloads: {rule}")
secret = objects(rendered["defaults"])[("Secret", "trawl-token")]
for key in ["api-token", "admin-token"]:
    if len(secret["data"].get(key, "")) < 40:
        problems.append(f"the chart's generated {key} is missing or too short")
if secret["data"].get("api-token") == secret["data"].get("admin-token"):
    problems.append("the chart's two API tokens must differ")

# The chart's hub certificate, for the caller to start a TLS hub with.
import base64  # noqa: E402

tls_secret = objects(rendered["defaults"]).get(("Secret", "trawl-hub-tls"))
tls_dir = out_dir / "chart-tls"
tls_dir.mkdir(exist_ok=True)
if not tls_secret:
    problems.append("the chart makes no hub certificate")
else:
    for key in ["ca.crt", "tls.crt", "tls.key"]:
        (tls_dir / key).write_bytes(base64.b64decode(tls_secret["data"][key]))
if ("Secret", "trawl-hub-tls") in objects(rendered["netns"]) or ("Secret", "my-hub-tls") in objects(rendered["netns"]):
    problems.append("with hubTls.existingSecret the chart must not make a certificate")

# Access: the hub's API needs tokens (it refuses to start on 0.0.0.0
# without), its probes are the open /healthz and /readyz, the worker's
# health binds the pod's address, and a NetworkPolicy guards the hub.
for where, docs in [("manifests", manifests)] + [(f"chart ({v})", d) for v, d in rendered.items()]:
    hub = container(docs, "Deployment", "trawl-hub")
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef", {}).get("key") for e in hub.get("env", [])}
    if env.get("TRAWL_API_TOKEN") != "api-token" or env.get("TRAWL_ADMIN_TOKEN") != "admin-token":
        problems.append(f"{where}: the hub does not take its API tokens from the Secret: {env}")
    probes = {hub[p]["httpGet"]["path"] for p in ["readinessProbe", "livenessProbe"]}
    if probes != {"/readyz", "/healthz"}:
        problems.append(f"{where}: the hub's probes must be the open /readyz and /healthz, not {probes}")
    for flag in ["--tls-cert=", "--tls-key=", "--kube-auth"]:
        if not any(a.startswith(flag) for a in hub["args"]):
            problems.append(f"{where}: the hub lacks {flag}")
    if "TRAWL_TOKEN" in env:
        problems.append(f"{where}: a shared worker token would let any worker speak for any node")
    worker = container(docs, "DaemonSet", "trawl-worker")
    for flag in ["--hub-ca=", "--token-file="]:
        if not any(a.startswith(flag) for a in worker["args"]):
            problems.append(f"{where}: the worker lacks {flag}")
    pod_volumes = {v["name"]: v for v in objects(docs)[("DaemonSet", "trawl-worker")]["spec"]["template"]["spec"]["volumes"]}
    sources = pod_volumes.get("hub-token", {}).get("projected", {}).get("sources", [])
    if not any(x.get("serviceAccountToken", {}).get("audience") == "trawl-hub" for x in sources):
        problems.append(f"{where}: the worker has no projected token for the audience trawl-hub")
    if [i["key"] for i in pod_volumes.get("hub-ca", {}).get("secret", {}).get("items", [])] != ["ca.crt"]:
        problems.append(f"{where}: the worker must mount the hub's CA and nothing else of its Secret")
    hub_sa = objects(docs)[("Deployment", "trawl-hub")]["spec"]["template"]["spec"]["serviceAccountName"]
    worker_sa = objects(docs)[("DaemonSet", "trawl-worker")]["spec"]["template"]["spec"]["serviceAccountName"]
    review = {("ClusterRoleBinding", n) for (k, n) in objects(docs) if k == "ClusterRoleBinding"}
    reviewers = set()
    for _, n in review:
        b = objects(docs)[("ClusterRoleBinding", n)]
        role = objects(docs)[("ClusterRole", b["roleRef"]["name"])]
        if any("tokenreviews" in r["resources"] for r in role["rules"]):
            reviewers |= {x["name"] for x in b["subjects"]}
    if reviewers != {hub_sa} or hub_sa == worker_sa:
        problems.append(f"{where}: only the hub's own account may review tokens: {reviewers}, hub {hub_sa}, worker {worker_sa}")
    health = [a for a in worker["args"] if a.startswith("--health-listen=")]
    if not health or not health[0].startswith("--health-listen=$(POD_IP):"):
        problems.append(f"{where}: the worker's health must bind the pod's address: {health}")
    policy = objects(docs).get(("NetworkPolicy", "trawl-hub"))
    if not policy:
        problems.append(f"{where}: no NetworkPolicy guards the hub")
    else:
        rules = policy["spec"]["ingress"]
        open_rules = [r for r in rules if not r.get("from") and {p["port"] for p in r["ports"]} != {9797}]
        if open_rules:
            problems.append(f"{where}: the hub's NetworkPolicy lets anyone reach more than the worker port: {open_rules}")
api_rules = [r for r in objects(rendered["netns"])[("NetworkPolicy", "trawl-hub")]["spec"]["ingress"] if r.get("from")]
if not api_rules or api_rules[0]["ports"][0]["port"] != 8899:
    problems.append("networkPolicy.apiFrom does not let its peers reach the API")
if ("Secret", "trawl-token") in objects(rendered["netns"]):
    problems.append("with existingSecret the chart must not make a Secret")

configs = {}
for where, docs in [("manifests", manifests), ("chart-defaults", rendered["defaults"]), ("chart-netns", rendered["netns"])]:
    text = objects(docs)[("ConfigMap", "trawl-config")]["data"]["trawl.yaml"]
    path = out_dir / f"{where}.yaml"
    path.write_text(text)
    configs[where] = {"path": str(path), "config": yaml.safe_load(text)}

print(json.dumps({"problems": problems, "configs": configs, "chart_tls": str(tls_dir), "validated": len(manifests) + sum(map(len, rendered.values()))}))
