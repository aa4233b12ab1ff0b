//! Workload identity from the Kubernetes API: kube-runtime watchers over
//! Pods, Services, EndpointSlices, Nodes and Namespaces feed the same
//! time-aware identity index that inventory files feed.
//!
//! Nothing else is watched (no Secrets, no ConfigMaps). A watch that
//! breaks, or ends with 410 Gone (its resourceVersion expired), is resumed
//! by kube-runtime, with a fresh list when needed; objects missing from a
//! re-list were deleted meanwhile and stop resolving from then on, while
//! traffic seen before still resolves to them.
#![forbid(unsafe_code)]

pub mod objects;
pub mod review;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use trawl_core::{Identity, KubeObject, Timestamp, WorkloadKind};

/// One object from a watcher: its kind and key, and for the kinds that
/// name addresses, the facts identity uses.
#[derive(Debug)]
struct Object {
    kind: &'static str,
    namespace: String,
    name: String,
    facts: Option<KubeObject>,
}

impl Object {
    fn key(&self) -> (String, String) {
        (self.namespace.clone(), self.name.clone())
    }
}

/// One change from any of the watchers.
#[derive(Debug)]
enum Change {
    Apply(Object),
    Delete(Object),
    Init(&'static str),
    InitApply(Object),
    InitDone(&'static str),
}

fn changes<K>(api: Api<K>, kind: &'static str, facts: fn(&K) -> Option<KubeObject>) -> impl Stream<Item = Change> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    // A deleted object is forgotten by its key: its facts are not needed.
    let object = move |k: K, with_facts: bool| Object {
        kind,
        namespace: k.namespace().unwrap_or_default(),
        name: k.name_any(),
        facts: if with_facts { facts(&k) } else { None },
    };
    watcher::watcher(api, watcher::Config::default()).default_backoff().filter_map(move |ev| {
        let change = match ev {
            Ok(Event::Apply(k)) => Some(Change::Apply(object(k, true))),
            Ok(Event::Delete(k)) => Some(Change::Delete(object(k, false))),
            Ok(Event::Init) => Some(Change::Init(kind)),
            Ok(Event::InitApply(k)) => Some(Change::InitApply(object(k, true))),
            Ok(Event::InitDone) => Some(Change::InitDone(kind)),
            Err(e) => {
                // The backoff retries; the error is worth a line, not a stop.
                tracing::warn!(kind, error = %e, "Kubernetes watch failed; retrying");
                None
            }
        };
        std::future::ready(change)
    })
}

fn workload_kind(kind: &str) -> Option<WorkloadKind> {
    match kind {
        "Pod" => Some(WorkloadKind::Pod),
        "Service" => Some(WorkloadKind::Service),
        "Node" => Some(WorkloadKind::Node),
        _ => None,
    }
}

/// The identity the watchers build, and what they have seen.
#[derive(Debug, Default)]
pub struct KubeIdentity {
    pub identity: Identity,
    pub namespaces: BTreeSet<String>,
    /// Objects listed so far in a (re-)list that has not finished, by kind.
    listing: BTreeMap<&'static str, BTreeSet<(String, String)>>,
    /// Lists completed, per kind (the first, then every re-list).
    pub lists: BTreeMap<&'static str, u64>,
    pub events: u64,
}

impl KubeIdentity {
    pub fn new(base: Identity) -> Self {
        KubeIdentity { identity: base, ..Default::default() }
    }

    fn load(&mut self, obj: Object) {
        match obj.facts {
            Some(facts) => {
                self.identity.load_object(facts);
            }
            None if obj.kind == "Namespace" => {
                self.namespaces.insert(obj.name);
            }
            None => {}
        }
    }

    fn forget(&mut self, obj: Object, at: Timestamp) {
        if obj.kind == "Namespace" {
            self.namespaces.remove(&obj.name);
        } else if let Some(k) = workload_kind(obj.kind) {
            self.identity.remove(k, &obj.namespace, &obj.name, at);
        }
    }

    fn apply(&mut self, change: Change, now: Timestamp) {
        self.events += 1;
        match change {
            Change::Apply(obj) => self.load(obj),
            Change::Delete(obj) => self.forget(obj, now),
            Change::Init(kind) => {
                self.listing.insert(kind, BTreeSet::new());
            }
            Change::InitApply(obj) => {
                self.listing.entry(obj.kind).or_default().insert(obj.key());
                self.load(obj);
            }
            Change::InitDone(kind) => {
                let listed = self.listing.remove(kind).unwrap_or_default();
                *self.lists.entry(kind).or_default() += 1;
                if kind == "Namespace" {
                    self.namespaces.retain(|n| listed.contains(&(String::new(), n.clone())));
                    return;
                }
                // Deleted while the watch was down: gone as of now.
                let Some(k) = workload_kind(kind) else { return };
                let gone: Vec<(String, String)> = self
                    .identity
                    .objects_at(now)
                    .into_iter()
                    .filter(|(kk, ns, name)| *kk == k && !listed.contains(&(ns.clone(), name.clone())))
                    .map(|(_, ns, name)| (ns, name))
                    .collect();
                for (ns, name) in gone {
                    self.identity.remove(k, &ns, &name, now);
                }
            }
        }
    }
}

/// Watches the cluster `client` talks to and calls `publish` with the
/// identity after each burst of changes. Runs until the task is dropped.
pub async fn watch(client: Client, base: Identity, mut publish: impl FnMut(Arc<Identity>, &KubeIdentity) + Send) {
    let streams = futures_util::stream::select_all(vec![
        changes(Api::<Pod>::all(client.clone()), "Pod", |p| Some(objects::pod(p))).boxed(),
        changes(Api::<Service>::all(client.clone()), "Service", |s| Some(objects::service(s))).boxed(),
        changes(Api::<EndpointSlice>::all(client.clone()), "EndpointSlice", |e| Some(objects::endpoint_slice(e)))
            .boxed(),
        changes(Api::<Node>::all(client.clone()), "Node", |n| Some(objects::node(n))).boxed(),
        changes(Api::<Namespace>::all(client), "Namespace", |_| None).boxed(),
    ]);
    let mut bursts = streams.ready_chunks(512);
    let mut state = KubeIdentity::new(base);
    while let Some(burst) = bursts.next().await {
        let now = wall_now();
        for change in burst {
            state.apply(change, now);
        }
        // Records reach the map at most this late (a worker's queue and
        // journal, a hub restart): older closed bindings can go.
        state.identity.prune_closed(Timestamp(now.0.saturating_sub(BINDING_GRACE_NS)));
        publish(Arc::new(state.identity.clone()), &state);
    }
}

/// How long an address keeps naming a deleted object, for records that
/// arrive late.
const BINDING_GRACE_NS: u64 = 30 * 60 * 1_000_000_000;

/// Now, on the wall clock: watch events carry no capture time.
fn wall_now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp(since_epoch.as_nanos() as u64)
}
