//! Typed API objects into identity's neutral facts, field by field: no
//! JSON in between.

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta as ApiMeta, Time};
use trawl_core::Timestamp;
use trawl_core::identity::{EndpointAddress, EndpointFacts, KubeObject, NodeFacts, ObjectMeta, PodFacts, ServiceFacts};

/// A value as inventory files treat it: empty (and Python's `None`, which
/// some exporters write) means absent.
fn present(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty() && *s != "None")
}

fn time(t: &Option<Time>) -> Option<Timestamp> {
    let nanos = t.as_ref()?.0.as_nanosecond();
    u64::try_from(nanos).ok().map(Timestamp)
}

fn meta(m: &ApiMeta) -> ObjectMeta {
    ObjectMeta {
        namespace: present(&m.namespace).unwrap_or("").to_string(),
        name: present(&m.name).unwrap_or("").to_string(),
        labels: m.labels.clone().unwrap_or_default(),
        created: time(&m.creation_timestamp),
        deleted: time(&m.deletion_timestamp),
    }
}

pub fn pod(p: &Pod) -> KubeObject {
    let spec = p.spec.as_ref();
    let status = p.status.as_ref();
    let finished = matches!(status.and_then(|s| present(&s.phase)), Some("Succeeded" | "Failed"));
    let mut ips: Vec<String> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|ip| ip.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    ips.extend(status.and_then(|s| present(&s.pod_ip)).map(str::to_string));
    let owner = p.metadata.owner_references.as_ref().and_then(|refs| {
        let r = refs.iter().find(|r| r.controller == Some(true)).or(refs.first())?;
        Some(format!("{}/{}", r.kind, r.name))
    });
    let last_finish = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| time(&c.state.as_ref()?.terminated.as_ref()?.finished_at))
        .max();
    KubeObject::Pod(PodFacts {
        meta: meta(&p.metadata),
        node: spec.and_then(|s| present(&s.node_name)).map(str::to_string),
        owner,
        finished,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        ips,
        ports: spec
            .into_iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|port| u16::try_from(port.container_port).ok())
            .collect(),
        started: status.and_then(|s| time(&s.start_time)),
        last_finish: if finished { last_finish } else { None },
    })
}

pub fn service(s: &Service) -> KubeObject {
    let mut ips: Vec<String> = Vec::new();
    if let Some(spec) = &s.spec {
        ips.extend(spec.cluster_ips.iter().flatten().cloned());
        ips.extend(spec.external_ips.iter().flatten().cloned());
        ips.extend(present(&spec.cluster_ip).map(str::to_string));
    }
    let ingress = s.status.as_ref().and_then(|st| st.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
    ips.extend(ingress.into_iter().flatten().filter_map(|i| present(&i.ip)).map(str::to_string));
    KubeObject::Service(ServiceFacts { meta: meta(&s.metadata), ips })
}

pub fn node(n: &Node) -> KubeObject {
    let ips = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| matches!(a.type_.as_str(), "InternalIP" | "ExternalIP"))
        .map(|a| a.address.clone())
        .collect();
    KubeObject::Node(NodeFacts { meta: meta(&n.metadata), ips })
}

pub fn endpoint_slice(slice: &EndpointSlice) -> KubeObject {
    let mut addresses = Vec::new();
    for ep in &slice.endpoints {
        let pod = ep
            .target_ref
            .as_ref()
            .filter(|r| r.kind.as_deref() == Some("Pod"))
            .and_then(|r| Some((present(&r.namespace).map(str::to_string), present(&r.name)?.to_string())));
        for ip in &ep.addresses {
            addresses.push(EndpointAddress {
                ip: ip.clone(),
                node: present(&ep.node_name).map(str::to_string),
                pod: pod.clone(),
            });
        }
    }
    let labels = slice.metadata.labels.as_ref();
    KubeObject::Endpoints(EndpointFacts {
        namespace: present(&slice.metadata.namespace).unwrap_or("default").to_string(),
        service: labels.and_then(|l| l.get("kubernetes.io/service-name")).cloned(),
        addresses,
    })
}
