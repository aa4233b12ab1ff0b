//! Inventory parsing: Kubernetes objects (pods, services, nodes,
//! EndpointSlices, Endpoints) as JSON, in the shapes `kubectl get -o json`
//! and the API give, turned into the neutral [`KubeObject`] facts, and
//! those into the identity's time-bound bindings.

use super::objects::*;
use super::*;

impl Identity {
    /// Loads every pod, service and node of an inventory document.
    pub fn load_json(&mut self, text: &str) -> Result<usize, InventoryError> {
        let doc: Value = serde_json::from_str(text)?;
        self.load_value(&doc)
    }

    /// As [`Identity::load_json`], for a document already parsed (from
    /// YAML, or from the API). Pods and Services load before the
    /// EndpointSlices and Endpoints that refer to them.
    pub fn load_value(&mut self, doc: &Value) -> Result<usize, InventoryError> {
        let (items, list_kind) = match doc {
            Value::Array(items) => (items.as_slice(), None),
            Value::Object(o) => match o.get("items").and_then(Value::as_array) {
                Some(items) => (items.as_slice(), o.get("kind").and_then(Value::as_str)),
                None if o.contains_key("metadata") => (std::slice::from_ref(doc), None),
                None => return Err(InventoryError::NoObjects),
            },
            _ => return Err(InventoryError::NoObjects),
        };
        let kind_of = |item: &Value| {
            item.get("kind")
                .and_then(Value::as_str)
                .or_else(|| list_kind.and_then(|k| k.strip_suffix("List")))
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| guess_kind(item).to_string())
        };
        let mut loaded = 0;
        let mut later = Vec::new();
        for item in items {
            match object_from_json(item, &kind_of(item)) {
                Some(object) if object.loads_late() => later.push(object),
                Some(object) => loaded += usize::from(self.load_object(object)),
                None => {}
            }
        }
        for object in later {
            self.load_object(object);
        }
        Ok(loaded)
    }

    /// Adds one object's bindings, taking its strings; `true` if it is a
    /// workload (pod, service or node) rather than endpoints of one.
    pub fn load_object(&mut self, object: KubeObject) -> bool {
        match object {
            KubeObject::Pod(p) => self.add_pod(p),
            KubeObject::Service(s) => self.add_bound(WorkloadKind::Service, s.meta, Rank::Service, &s.ips),
            KubeObject::Node(n) => self.add_bound(WorkloadKind::Node, n.meta, Rank::Node, &n.ips),
            KubeObject::Endpoints(e) => {
                for a in &e.addresses {
                    self.add_endpoint_address(a, &e.namespace, e.service.as_deref());
                }
                false
            }
        }
    }

    /// An endpoint address: the pod its `targetRef` names holds it (an
    /// IPv6 address of a dual-stack pod may be known only from here), and
    /// it serves `service`.
    fn add_endpoint_address(&mut self, address: &EndpointAddress, namespace: &str, service: Option<&str>) {
        let Ok(addr) = address.ip.parse::<IpAddr>() else { return };
        if let Some(service) = service {
            let svc = format!("{namespace}/{service}");
            let list = self.services_of.entry(addr).or_default();
            if !list.contains(&svc) {
                list.push(svc);
            }
        }
        let Some((pod_ns, name)) = &address.pod else { return };
        let ns = pod_ns.as_deref().unwrap_or(namespace);
        let key = format!("{ns}/{name}");
        let binding = match self.pods.get(&key) {
            Some(b) => b.clone(),
            None => {
                let b = Binding {
                    workload: Arc::new(Workload {
                        kind: WorkloadKind::Pod,
                        namespace: ns.to_string(),
                        name: name.clone(),
                        node: address.node.clone(),
                        labels: BTreeMap::new(),
                        owner: None,
                    }),
                    from: None,
                    until: None,
                    rank: Rank::Pod,
                    ports: Arc::from([]),
                };
                self.pods.insert(key, b.clone());
                b
            }
        };
        self.bind(&address.ip, &binding);
    }

    fn add_pod(&mut self, pod: PodFacts) -> bool {
        let meta = pod.meta;
        if meta.name.is_empty() || meta.namespace.is_empty() {
            return false;
        }
        let key = format!("{}/{}", meta.namespace, meta.name);
        let workload = Arc::new(Workload {
            kind: WorkloadKind::Pod,
            namespace: meta.namespace,
            name: meta.name,
            node: pod.node.clone(),
            labels: meta.labels,
            owner: pod.owner,
        });
        let from = meta.created.or(pod.started);
        let until = meta.deleted.or(if pod.finished { pod.last_finish } else { None });
        let rank = if pod.finished {
            Rank::FinishedPod
        } else if pod.host_network {
            Rank::HostNetworkPod
        } else {
            Rank::Pod
        };
        let ports: Arc<[u16]> = if pod.host_network { Arc::from(pod.ports.as_slice()) } else { Arc::from([]) };
        let binding = Binding { workload, from, until, rank, ports };
        // A hostNetwork pod's IP is its node's: the node names it, even
        // when the inventory holds no Node object.
        let node =
            if pod.host_network && !pod.finished { pod.node.as_deref().map(|n| self.node_named(n)) } else { None };
        for ip in &pod.ips {
            self.bind(ip, &binding);
            if let Some(node) = &node {
                self.bind(
                    ip,
                    &Binding {
                        workload: node.clone(),
                        from: None,
                        until: None,
                        rank: Rank::Node,
                        ports: Arc::from([]),
                    },
                );
            }
        }
        self.pods.insert(key, binding);
        true
    }

    /// A Service or a node: the object holds its addresses for its
    /// lifetime. (A node has no namespace, and names itself as its node.)
    fn add_bound(&mut self, kind: WorkloadKind, meta: ObjectMeta, rank: Rank, ips: &[String]) -> bool {
        let is_node = kind == WorkloadKind::Node;
        if meta.name.is_empty() || (!is_node && meta.namespace.is_empty()) {
            return false;
        }
        let workload = Arc::new(Workload {
            kind,
            namespace: if is_node { String::new() } else { meta.namespace },
            node: is_node.then(|| meta.name.clone()),
            name: meta.name,
            labels: meta.labels,
            owner: None,
        });
        if is_node {
            self.nodes.insert(workload.name.clone(), workload.clone());
        }
        let binding = Binding { workload, from: meta.created, until: meta.deleted, rank, ports: Arc::from([]) };
        for ip in ips {
            self.bind(ip, &binding);
        }
        true
    }
}

/// One inventory JSON object as the facts identity uses; `None` for
/// kinds it does not use.
pub fn object_from_json(item: &Value, kind: &str) -> Option<KubeObject> {
    Some(match kind {
        "Pod" => KubeObject::Pod(pod_from_json(item)),
        "Service" => KubeObject::Service(service_from_json(item)),
        "Node" => KubeObject::Node(node_from_json(item)),
        "EndpointSlice" => KubeObject::Endpoints(endpoint_slice_from_json(item)),
        "Endpoints" => KubeObject::Endpoints(endpoints_from_json(item)),
        _ => return None,
    })
}

fn meta_from_json(meta: &Value) -> ObjectMeta {
    ObjectMeta {
        namespace: str_at(meta, "namespace").unwrap_or("").to_string(),
        name: str_at(meta, "name").unwrap_or("").to_string(),
        labels: labels(meta),
        created: time_at(meta, "creationTimestamp"),
        deleted: time_at(meta, "deletionTimestamp"),
    }
}

fn pod_from_json(pod: &Value) -> PodFacts {
    let meta = &pod["metadata"];
    let status = &pod["status"];
    let spec = &pod["spec"];
    let finished = matches!(str_at(status, "phase"), Some("Succeeded" | "Failed"));
    let mut ips: Vec<String> = status["podIPs"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| str_at(p, "ip")).map(str::to_string).collect())
        .unwrap_or_default();
    ips.extend(str_at(status, "podIP").map(str::to_string));
    PodFacts {
        meta: meta_from_json(meta),
        node: str_at(spec, "nodeName").map(str::to_string),
        owner: meta["ownerReferences"].as_array().and_then(|refs| {
            let r = refs.iter().find(|r| r["controller"].as_bool() == Some(true)).or(refs.first())?;
            Some(format!("{}/{}", str_at(r, "kind")?, str_at(r, "name")?))
        }),
        finished,
        host_network: spec["hostNetwork"].as_bool().unwrap_or(false),
        ips,
        ports: spec["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .filter_map(|p| p["containerPort"].as_u64().and_then(|n| u16::try_from(n).ok()))
            .collect(),
        started: time_at(status, "startTime"),
        last_finish: if finished { last_finish(status) } else { None },
    }
}

fn service_from_json(svc: &Value) -> ServiceFacts {
    let spec = &svc["spec"];
    let mut ips: Vec<String> = Vec::new();
    for field in ["clusterIPs", "externalIPs"] {
        if let Some(a) = spec[field].as_array() {
            ips.extend(a.iter().filter_map(Value::as_str).map(str::to_string));
        }
    }
    ips.extend(str_at(spec, "clusterIP").map(str::to_string));
    if let Some(ingress) = svc["status"]["loadBalancer"]["ingress"].as_array() {
        ips.extend(ingress.iter().filter_map(|i| str_at(i, "ip")).map(str::to_string));
    }
    ServiceFacts { meta: meta_from_json(&svc["metadata"]), ips }
}

fn node_from_json(node: &Value) -> NodeFacts {
    let ips = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| matches!(str_at(a, "type"), Some("InternalIP" | "ExternalIP")))
        .filter_map(|a| str_at(a, "address").map(str::to_string))
        .collect();
    NodeFacts { meta: meta_from_json(&node["metadata"]), ips }
}

fn address_from_json(ip: &str, target: &Value, node: Option<&str>) -> EndpointAddress {
    let pod = (str_at(target, "kind") == Some("Pod"))
        .then(|| str_at(target, "name"))
        .flatten()
        .map(|name| (str_at(target, "namespace").map(str::to_string), name.to_string()));
    EndpointAddress { ip: ip.to_string(), node: node.map(str::to_string), pod }
}

fn endpoint_slice_from_json(slice: &Value) -> EndpointFacts {
    let meta = &slice["metadata"];
    let mut addresses = Vec::new();
    for ep in slice["endpoints"].as_array().into_iter().flatten() {
        for ip in ep["addresses"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            addresses.push(address_from_json(ip, &ep["targetRef"], str_at(ep, "nodeName")));
        }
    }
    EndpointFacts {
        namespace: str_at(meta, "namespace").unwrap_or("default").to_string(),
        service: meta["labels"]["kubernetes.io/service-name"].as_str().map(str::to_string),
        addresses,
    }
}

fn endpoints_from_json(endpoints: &Value) -> EndpointFacts {
    let meta = &endpoints["metadata"];
    let mut addresses = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        for field in ["addresses", "notReadyAddresses"] {
            for a in subset[field].as_array().into_iter().flatten() {
                if let Some(ip) = str_at(a, "ip") {
                    addresses.push(address_from_json(ip, &a["targetRef"], str_at(a, "nodeName")));
                }
            }
        }
    }
    EndpointFacts {
        namespace: str_at(meta, "namespace").unwrap_or("default").to_string(),
        service: str_at(meta, "name").map(str::to_string),
        addresses,
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty() && *s != "None")
}

fn time_at(v: &Value, key: &str) -> Option<Timestamp> {
    str_at(v, key).and_then(parse_rfc3339)
}

fn labels(meta: &Value) -> BTreeMap<String, String> {
    meta["labels"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// When the last container of a finished pod stopped.
fn last_finish(status: &Value) -> Option<Timestamp> {
    status["containerStatuses"]
        .as_array()?
        .iter()
        .filter_map(|c| time_at(&c["state"]["terminated"], "finishedAt"))
        .max()
}

/// Objects from typed clients can come without `kind`.
fn guess_kind(item: &Value) -> &'static str {
    if item["spec"].get("containers").is_some() {
        "Pod"
    } else if item["spec"].get("clusterIP").is_some() || item["spec"].get("ports").is_some() {
        "Service"
    } else if item["status"].get("addresses").is_some() || item["status"].get("nodeInfo").is_some() {
        "Node"
    } else if item.get("subsets").is_some() {
        "Endpoints"
    } else if item.get("addressType").is_some() {
        "EndpointSlice"
    } else {
        ""
    }
}

/// Parses the RFC 3339 timestamps Kubernetes writes (`2024-01-02T03:04:05Z`,
/// optionally with fractional seconds or a numeric offset). Total: any
/// text, ASCII or not, is a timestamp or `None`, never a panic.
pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut nanos = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let mut scale = 100_000_000;
        for c in frac[..digits].bytes().take(9) {
            nanos += i64::from(c - b'0') * scale;
            scale /= 10;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(rest.get(..1), Some("+" | "-")) => {
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset;
    if secs < 0 {
        return None;
    }
    Some(Timestamp::from_secs_nanos(secs as u64, nanos as u32))
}
