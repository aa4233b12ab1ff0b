//! The facts about a Kubernetes object that identity needs, in a neutral
//! shape: inventory JSON and the typed API objects of the watchers both
//! map into these, so neither goes through the other's representation.

use crate::time::Timestamp;
use std::collections::BTreeMap;

/// Name, namespace, labels and lifetime of an object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub created: Option<Timestamp>,
    pub deleted: Option<Timestamp>,
}

/// A pod, as far as naming its addresses goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodFacts {
    pub meta: ObjectMeta,
    pub node: Option<String>,
    /// Its controller, as `Kind/name`.
    pub owner: Option<String>,
    /// Phase `Succeeded` or `Failed`.
    pub finished: bool,
    pub host_network: bool,
    /// `status.podIPs` and `status.podIP`, as written.
    pub ips: Vec<String>,
    /// Declared container ports (only used for hostNetwork pods).
    pub ports: Vec<u16>,
    /// `status.startTime`: its start when the creation time is missing.
    pub started: Option<Timestamp>,
    /// When its last container stopped, if it finished.
    pub last_finish: Option<Timestamp>,
}

/// A Service: its cluster, external and load-balancer addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFacts {
    pub meta: ObjectMeta,
    pub ips: Vec<String>,
}

/// A node: its internal and external addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub meta: ObjectMeta,
    pub ips: Vec<String>,
}

/// One address of an EndpointSlice or Endpoints object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointAddress {
    pub ip: String,
    pub node: Option<String>,
    /// The pod its `targetRef` names: (namespace if given, name).
    pub pod: Option<(Option<String>, String)>,
}

/// The addresses serving a Service (from an EndpointSlice or Endpoints).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointFacts {
    pub namespace: String,
    pub service: Option<String>,
    pub addresses: Vec<EndpointAddress>,
}

/// One Kubernetes object that identity knows how to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeObject {
    Pod(PodFacts),
    Service(ServiceFacts),
    Node(NodeFacts),
    Endpoints(EndpointFacts),
}

impl KubeObject {
    /// Endpoints name pods and services, so they load after those.
    pub fn loads_late(&self) -> bool {
        matches!(self, KubeObject::Endpoints(_))
    }
}
