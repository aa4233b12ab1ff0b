//! Workload identity on real cluster dumps (`../shared/data/k8s`): every
//! pod IP, service IP and node IP resolves as the dump itself says, with
//! the attribution rules applied:
//! - a Running pod wins over a Succeeded or Failed pod that still holds
//!   the same IP (npa-minikube, nri minikube v1.35);
//! - a hostNetwork pod's IP is its node's, with or without a Node object
//!   in the dump (IKS: 18 hostNetwork pods and no Nodes), except on a port
//!   that exactly one of them declares, which names that pod;
//! - a ClusterIP (both families on dual-stack) resolves to its Service;
//! - EndpointSlices give dual-stack pods their IPv6 addresses through
//!   `targetRef` and link pod IPs to the Service they serve (cilium kind).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use serde_json::Value;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use trawl_core::{Identity, Timestamp, WorkloadKind};

fn k8s_dir() -> Option<PathBuf> {
    let dir = support::corpus()?.join("k8s");
    assert!(dir.is_dir(), "the corpus has no k8s dumps at {}", dir.display());
    Some(dir)
}

/// The objects of a dump file, whatever its framing (List, typed list or array).
fn objects(doc: &Value) -> Vec<Value> {
    match doc {
        Value::Array(a) => a.clone(),
        Value::Object(o) => o.get("items").and_then(Value::as_array).cloned().unwrap_or_else(|| vec![doc.clone()]),
        _ => Vec::new(),
    }
}

fn load(files: &[PathBuf]) -> (Identity, Vec<Value>) {
    let mut identity = Identity::new();
    let mut all = Vec::new();
    for f in files {
        for doc in trawl_host::replay::inventory_documents(f).unwrap() {
            identity.load_value(&doc).unwrap();
            all.extend(objects(&doc));
        }
    }
    (identity, all)
}

/// Long after every object in the dumps was created.
const LATER: Timestamp = Timestamp(4_000_000_000_000_000_000);

fn ips_of_pod(p: &Value) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> =
        p["status"]["podIPs"].as_array().into_iter().flatten().filter_map(|x| x["ip"].as_str()?.parse().ok()).collect();
    ips.extend(p["status"]["podIP"].as_str().and_then(|s| s.parse::<IpAddr>().ok()));
    ips.sort();
    ips.dedup();
    ips
}

/// Checks every object of the dump against the identity; returns how many
/// IPs were checked.
fn check_dump(identity: &Identity, objects: &[Value]) -> usize {
    let phase = |p: &Value| p["status"]["phase"].as_str().unwrap_or("").to_string();
    let is_pod = |o: &Value| o["spec"].get("containers").is_some();
    let running_ips: std::collections::HashSet<IpAddr> = objects
        .iter()
        .filter(|o| is_pod(o) && !matches!(phase(o).as_str(), "Succeeded" | "Failed"))
        .flat_map(ips_of_pod)
        .collect();
    let mut checked = 0;
    for o in objects {
        let name = o["metadata"]["name"].as_str().unwrap_or("");
        let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
        if is_pod(o) {
            let host_network = o["spec"]["hostNetwork"].as_bool() == Some(true);
            let finished = matches!(phase(o).as_str(), "Succeeded" | "Failed");
            for ip in ips_of_pod(o) {
                if finished && running_ips.contains(&ip) {
                    // The Running pod that holds it now wins; checked as its own.
                    let w = identity.resolve(ip, LATER);
                    assert!(
                        w.kind != WorkloadKind::Pod || w.name != name,
                        "{ip}: finished {ns}/{name} beat a Running pod"
                    );
                    checked += 1;
                    continue;
                }
                let at = if finished {
                    // While it ran.
                    o["status"]["startTime"]
                        .as_str()
                        .and_then(trawl_core::identity::parse_rfc3339)
                        .map_or(LATER, |t| Timestamp(t.0 + 1))
                } else {
                    LATER
                };
                let w = identity.resolve(ip, at);
                if host_network {
                    let node = o["spec"]["nodeName"].as_str().unwrap();
                    assert_eq!((w.kind, w.name.as_str()), (WorkloadKind::Node, node), "{ip}: hostNetwork {ns}/{name}");
                } else {
                    assert_eq!((w.kind, w.namespace.as_str(), w.name.as_str()), (WorkloadKind::Pod, ns, name), "{ip}");
                }
                checked += 1;
            }
        } else if o["spec"].get("clusterIP").is_some() || o.get("kind").and_then(Value::as_str) == Some("Service") {
            let mut ips: Vec<&str> =
                o["spec"]["clusterIPs"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            ips.extend(o["spec"]["clusterIP"].as_str());
            let created = o["metadata"]["creationTimestamp"].as_str().and_then(trawl_core::identity::parse_rfc3339);
            for ip in ips.into_iter().filter_map(|s| s.parse::<IpAddr>().ok()) {
                // A ClusterIP reused by a Service created later (the dump
                // spans both): each holds it from its creation on.
                let newer = objects.iter().filter(|x| x["spec"].get("clusterIP").is_some()).any(|x| {
                    x["spec"]["clusterIP"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) == Some(ip)
                        && x["metadata"]["creationTimestamp"].as_str().and_then(trawl_core::identity::parse_rfc3339)
                            > created
                });
                let at = match (newer, created) {
                    (true, Some(c)) => Timestamp(c.0 + 1),
                    _ => LATER,
                };
                let w = identity.resolve(ip, at);
                // Services the dump gives the same IP at the same moment
                // (an edited fixture does): any of them is right.
                let twins: Vec<&str> = objects
                    .iter()
                    .filter(|x| {
                        x["spec"]["clusterIP"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) == Some(ip)
                            && x["metadata"]["creationTimestamp"].as_str().and_then(trawl_core::identity::parse_rfc3339)
                                == created
                    })
                    .filter_map(|x| x["metadata"]["name"].as_str())
                    .collect();
                assert_eq!((w.kind, w.namespace.as_str()), (WorkloadKind::Service, ns), "{ip}");
                assert!(w.name == name || twins.contains(&w.name.as_str()), "{ip}: {} is not {name}", w.name);
                checked += 1;
            }
        } else if o["status"].get("addresses").is_some() {
            for a in o["status"]["addresses"].as_array().unwrap() {
                if a["type"] != "InternalIP" {
                    continue;
                }
                let ip: IpAddr = a["address"].as_str().unwrap().parse().unwrap();
                let w = identity.resolve(ip, LATER);
                assert_eq!((w.kind, w.name.as_str()), (WorkloadKind::Node, name), "{ip}");
                checked += 1;
            }
        }
    }
    checked
}

fn files(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
    names.iter().map(|n| dir.join(n)).collect()
}

#[test]
fn every_address_in_the_dumps_resolves_as_the_dump_says() {
    let Some(k8s) = k8s_dir() else { return };
    let dumps: Vec<(&str, Vec<PathBuf>)> = vec![
        (
            "minikube v1.35",
            files(
                &k8s.join("nri-kubernetes-minikube-v1.35"),
                &["nodes.yaml", "pods.yaml", "services.yaml", "endpoints.yaml"],
            ),
        ),
        ("IKS 3 nodes", files(&k8s.join("nca-ibm-iks-3node-2018"), &["pods_list.json"])),
        ("online-boutique pods", files(&k8s.join("npa-minikube"), &["onlineboutique_pods.yaml"])),
        (
            "minikube pods and services (IP reuse)",
            files(&k8s.join("npa-minikube"), &["services_test_pods_list.yaml", "services_test_services_list.yaml"]),
        ),
        ("online-boutique services", files(&k8s.join("nca-onlineboutique-live-kind-2024"), &["all_services.yaml"])),
        ("bookinfo", files(&k8s.join("nca-bookinfo-istio-kind-2021"), &["bookinfo_pods_list.json"])),
        ("dual-stack kind", files(&k8s.join("cilium-dualstack-kind-v1.27"), &["init.yaml", "state1.yaml"])),
        ("homelab kubelet", files(&k8s.join("honeycomb-homelab-kubelet-pods"), &["pods.json"])),
        ("OpenShift 9 nodes", files(&k8s.join("manageiq-vcr-ocp36-9nodes"), &["api_v1_nodes.json"])),
    ];
    for (name, paths) in dumps {
        let (identity, objects) = load(&paths);
        let checked = check_dump(&identity, &objects);
        assert!(checked > 0, "{name}: nothing checked");
        eprintln!("{name}: {checked} addresses resolve as the dump says");
    }
}

#[test]
fn endpoint_slices_give_dual_stack_pods_both_families_and_their_service() {
    let Some(k8s) = k8s_dir() else { return };
    let (identity, objects) = load(&files(&k8s.join("cilium-dualstack-kind-v1.27"), &["init.yaml", "state1.yaml"]));
    let mut seen_v6 = 0;
    for slice in objects.iter().filter(|o| o["kind"] == "EndpointSlice") {
        let service = slice["metadata"]["labels"]["kubernetes.io/service-name"].as_str().unwrap();
        let ns = slice["metadata"]["namespace"].as_str().unwrap();
        for ep in slice["endpoints"].as_array().into_iter().flatten() {
            // The API server's own endpoints name no pod.
            let Some(pod) = ep["targetRef"]["name"].as_str() else { continue };
            for ip in ep["addresses"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().parse::<IpAddr>().unwrap())
            {
                let w = identity.resolve(ip, LATER);
                assert_eq!((w.kind, w.name.as_str()), (WorkloadKind::Pod, pod), "{ip}");
                assert!(
                    identity.services_of(ip).contains(&format!("{ns}/{service}")),
                    "{ip}: {:?}",
                    identity.services_of(ip)
                );
                seen_v6 += usize::from(ip.is_ipv6());
            }
        }
    }
    assert!(seen_v6 >= 2, "the IPv6 slice should name both pods");
}

#[test]
fn graceful_termination_keeps_the_endpoint_until_it_is_gone() {
    let Some(k8s) = k8s_dir() else { return };
    let dir = k8s.join("cilium-graceful-termination-kind");
    // Ready, then terminating (still serving): the pod keeps its IP; then
    // no endpoints: nothing new is learned, the pod binding stays as known.
    for state in ["state1.yaml", "state2.yaml"] {
        let (identity, objects) = load(&files(&dir, &[state]));
        let slice = objects.iter().find(|o| o["kind"] == "EndpointSlice").unwrap();
        for ep in slice["endpoints"].as_array().unwrap() {
            let ip: IpAddr = ep["addresses"][0].as_str().unwrap().parse().unwrap();
            assert_eq!(identity.resolve(ip, LATER).name, ep["targetRef"]["name"].as_str().unwrap(), "{state}");
        }
    }
    let (_, objects) = load(&files(&dir, &["state3.yaml"]));
    assert!(objects.iter().any(|o| o["kind"] == "EndpointSlice" && o["endpoints"].is_null()));
}

#[test]
fn host_network_pods_are_named_by_a_port_only_they_declare() {
    let Some(k8s) = k8s_dir() else { return };
    let mini = k8s.join("nri-kubernetes-minikube-v1.35");
    let (identity, objects) = load(&files(&mini, &["nodes.yaml", "pods.yaml"]));
    let host_pods: Vec<&Value> = objects
        .iter()
        .filter(|o| o["spec"]["hostNetwork"].as_bool() == Some(true) && o["status"]["phase"] == "Running")
        .collect();
    assert!(host_pods.len() >= 4, "the dump has hostNetwork pods");
    let ports = |p: &Value| -> Vec<u16> {
        p["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|x| x["containerPort"].as_u64().map(|n| n as u16))
            .collect()
    };
    let mut named = 0;
    for p in &host_pods {
        let ip: IpAddr = p["status"]["podIP"].as_str().unwrap().parse().unwrap();
        let node = p["spec"]["nodeName"].as_str().unwrap();
        for port in ports(p) {
            let owners = host_pods
                .iter()
                .filter(|q| q["status"]["podIP"] == p["status"]["podIP"] && ports(q).contains(&port))
                .count();
            let (w, status) = identity.resolve_endpoint_status(ip, port, LATER);
            if owners == 1 {
                assert_eq!(
                    (w.kind, w.name.as_str()),
                    (WorkloadKind::Pod, p["metadata"]["name"].as_str().unwrap()),
                    "{ip}:{port}"
                );
                assert_eq!(status, trawl_core::identity::ResolutionStatus::ResolvedByPort, "{ip}:{port}");
                named += 1;
            } else {
                assert_eq!((w.kind, w.name.as_str()), (WorkloadKind::Node, node), "{ip}:{port} is shared");
            }
        }
        // A port nobody declares, or no port: the node.
        assert_eq!(identity.resolve_endpoint(ip, 1, LATER).name, node);
        assert_eq!(identity.resolve(ip, LATER).name, node);
    }
    assert!(named > 0, "no hostNetwork pod declares a port of its own");
}

/// The watchers map typed API objects straight into identity's facts; an
/// inventory file maps JSON into the same facts. For every pod, service,
/// node and EndpointSlice in the dumps, both roads give the same facts.
#[test]
fn typed_api_objects_give_the_facts_their_json_gives() {
    use k8s_openapi::api::core::v1::{Node, Pod, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use trawl_core::identity::object_from_json;
    use trawl_host::k8s::objects;

    let Some(k8s) = k8s_dir() else { return };
    let mut compared = std::collections::BTreeMap::<String, usize>::new();
    let mut untyped = 0;
    for entry in walk(&k8s) {
        let Ok(docs) = trawl_host::replay::inventory_documents(&entry) else { continue };
        for doc in docs {
            let list_kind = doc["kind"].as_str().and_then(|k| k.strip_suffix("List")).map(str::to_string);
            for item in objects(&doc) {
                let Some(kind) = item["kind"].as_str().map(str::to_string).or(list_kind.clone()) else { continue };
                let Some(from_json) = object_from_json(&item, &kind) else { continue };
                let typed = match kind.as_str() {
                    "Pod" => serde_json::from_value::<Pod>(item.clone()).map(|p| objects::pod(&p)),
                    "Service" => serde_json::from_value::<Service>(item.clone()).map(|s| objects::service(&s)),
                    "Node" => serde_json::from_value::<Node>(item.clone()).map(|n| objects::node(&n)),
                    "EndpointSlice" => {
                        serde_json::from_value::<EndpointSlice>(item.clone()).map(|e| objects::endpoint_slice(&e))
                    }
                    _ => continue,
                };
                // Old dumps can miss fields the typed API requires; those
                // objects never come from a watcher.
                let Ok(typed) = typed else {
                    untyped += 1;
                    continue;
                };
                assert_eq!(typed, from_json, "{kind} in {}", entry.display());
                *compared.entry(kind).or_default() += 1;
            }
        }
    }
    eprintln!("compared {compared:?}; {untyped} objects the typed API rejects");
    for kind in ["Pod", "Service", "Node", "EndpointSlice"] {
        assert!(compared.get(kind).copied().unwrap_or(0) > 0, "no {kind} compared");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "json" || e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    out
}
