//! Inventory parsing: Kubernetes objects (pods, services, nodes,
//! EndpointSlices, Endpoints) as JSON, in the shapes `kubectl get -o json`
//! and the API give, turned into the identity's time-bound bindings.

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
            let kind = kind_of(item);
            let added = match kind.as_str() {
                "Pod" => self.add_pod(item),
                "Service" => self.add_service(item),
                "Node" => self.add_node(item),
                "EndpointSlice" | "Endpoints" => {
                    later.push((kind, item));
                    false
                }
                _ => false,
            };
            loaded += usize::from(added);
        }
        for (kind, item) in later {
            if kind == "EndpointSlice" { self.add_endpoint_slice(item) } else { self.add_endpoints(item) }
        }
        self.workloads += loaded;
        Ok(loaded)
    }

    /// An endpoint address: the pod its `targetRef` names holds it (an
    /// IPv6 address of a dual-stack pod may be known only from here), and
    /// it serves `service`.
    fn add_endpoint_address(
        &mut self,
        ip: &str,
        target: &Value,
        node: Option<&str>,
        namespace: &str,
        service: Option<&str>,
    ) {
        let Ok(addr) = ip.parse::<IpAddr>() else { return };
        if let Some(service) = service {
            let svc = format!("{namespace}/{service}");
            let list = self.services_of.entry(addr).or_default();
            if !list.contains(&svc) {
                list.push(svc);
            }
        }
        if str_at(target, "kind") != Some("Pod") {
            return;
        }
        let Some(name) = str_at(target, "name") else { return };
        let ns = str_at(target, "namespace").unwrap_or(namespace);
        let key = format!("{ns}/{name}");
        let binding = match self.pods.get(&key) {
            Some(b) => b.clone(),
            None => {
                let b = Binding {
                    workload: Arc::new(Workload {
                        kind: WorkloadKind::Pod,
                        namespace: ns.to_string(),
                        name: name.to_string(),
                        node: node.map(str::to_string),
                        labels: BTreeMap::new(),
                        owner: None,
                    }),
                    from: None,
                    until: None,
                    rank: Rank::Pod,
                    ports: Arc::from([]),
                };
                self.pods.insert(key, b.clone());
                self.workloads += 1;
                b
            }
        };
        self.bind(ip, &binding);
    }

    fn add_endpoint_slice(&mut self, slice: &Value) {
        let meta = &slice["metadata"];
        let namespace = str_at(meta, "namespace").unwrap_or("default").to_string();
        let service = meta["labels"]["kubernetes.io/service-name"].as_str().map(str::to_string);
        for ep in slice["endpoints"].as_array().into_iter().flatten() {
            for ip in ep["addresses"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                self.add_endpoint_address(ip, &ep["targetRef"], str_at(ep, "nodeName"), &namespace, service.as_deref());
            }
        }
    }

    fn add_endpoints(&mut self, endpoints: &Value) {
        let meta = &endpoints["metadata"];
        let namespace = str_at(meta, "namespace").unwrap_or("default").to_string();
        let service = str_at(meta, "name").map(str::to_string);
        for subset in endpoints["subsets"].as_array().into_iter().flatten() {
            for field in ["addresses", "notReadyAddresses"] {
                for a in subset[field].as_array().into_iter().flatten() {
                    if let Some(ip) = str_at(a, "ip") {
                        self.add_endpoint_address(
                            ip,
                            &a["targetRef"],
                            str_at(a, "nodeName"),
                            &namespace,
                            service.as_deref(),
                        );
                    }
                }
            }
        }
    }

    fn add_pod(&mut self, pod: &Value) -> bool {
        let meta = &pod["metadata"];
        let (Some(name), Some(namespace)) = (str_at(meta, "name"), str_at(meta, "namespace")) else {
            return false;
        };
        let status = &pod["status"];
        let phase = str_at(status, "phase").unwrap_or("");
        let host_network = pod["spec"]["hostNetwork"].as_bool().unwrap_or(false);
        let finished = matches!(phase, "Succeeded" | "Failed");
        let workload = Arc::new(Workload {
            kind: WorkloadKind::Pod,
            namespace: namespace.to_string(),
            name: name.to_string(),
            node: str_at(&pod["spec"], "nodeName").map(str::to_string),
            labels: labels(meta),
            owner: meta["ownerReferences"].as_array().and_then(|refs| {
                let r = refs.iter().find(|r| r["controller"].as_bool() == Some(true)).or(refs.first())?;
                Some(format!("{}/{}", str_at(r, "kind")?, str_at(r, "name")?))
            }),
        });
        let from = time_at(meta, "creationTimestamp").or_else(|| time_at(status, "startTime"));
        let until = time_at(meta, "deletionTimestamp").or_else(|| if finished { last_finish(status) } else { None });
        let rank = if finished {
            Rank::FinishedPod
        } else if host_network {
            Rank::HostNetworkPod
        } else {
            Rank::Pod
        };
        let ports: Arc<[u16]> = if host_network {
            pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .filter_map(|p| p["containerPort"].as_u64().and_then(|n| u16::try_from(n).ok()))
                .collect()
        } else {
            Arc::from([])
        };
        let binding = Binding { workload, from, until, rank, ports };
        let mut ips: Vec<&str> =
            status["podIPs"].as_array().map(|a| a.iter().filter_map(|p| str_at(p, "ip")).collect()).unwrap_or_default();
        ips.extend(str_at(status, "podIP"));
        // A hostNetwork pod's IP is its node's: the node names it, even
        // when the inventory holds no Node object.
        let node =
            if host_network && !finished { str_at(&pod["spec"], "nodeName").map(|n| self.node_named(n)) } else { None };
        for ip in ips {
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
        self.pods.insert(format!("{namespace}/{name}"), binding);
        true
    }

    fn add_service(&mut self, svc: &Value) -> bool {
        let meta = &svc["metadata"];
        let (Some(name), Some(namespace)) = (str_at(meta, "name"), str_at(meta, "namespace")) else {
            return false;
        };
        let spec = &svc["spec"];
        let workload = Arc::new(Workload {
            kind: WorkloadKind::Service,
            namespace: namespace.to_string(),
            name: name.to_string(),
            node: None,
            labels: labels(meta),
            owner: None,
        });
        let binding = Binding {
            workload,
            from: time_at(meta, "creationTimestamp"),
            until: time_at(meta, "deletionTimestamp"),
            rank: Rank::Service,
            ports: Arc::from([]),
        };
        let mut ips: Vec<&str> = Vec::new();
        for field in ["clusterIPs", "externalIPs"] {
            if let Some(a) = spec[field].as_array() {
                ips.extend(a.iter().filter_map(Value::as_str));
            }
        }
        ips.extend(str_at(spec, "clusterIP"));
        if let Some(ingress) = svc["status"]["loadBalancer"]["ingress"].as_array() {
            ips.extend(ingress.iter().filter_map(|i| str_at(i, "ip")));
        }
        for ip in ips {
            self.bind(ip, &binding);
        }
        true
    }

    fn add_node(&mut self, node: &Value) -> bool {
        let meta = &node["metadata"];
        let Some(name) = str_at(meta, "name") else {
            return false;
        };
        let workload = Arc::new(Workload {
            kind: WorkloadKind::Node,
            namespace: String::new(),
            name: name.to_string(),
            node: Some(name.to_string()),
            labels: labels(meta),
            owner: None,
        });
        self.nodes.insert(name.to_string(), workload.clone());
        let binding = Binding {
            workload,
            from: time_at(meta, "creationTimestamp"),
            until: time_at(meta, "deletionTimestamp"),
            rank: Rank::Node,
            ports: Arc::from([]),
        };
        if let Some(addresses) = node["status"]["addresses"].as_array() {
            for a in addresses {
                if matches!(str_at(a, "type"), Some("InternalIP" | "ExternalIP"))
                    && let Some(ip) = str_at(a, "address")
                {
                    self.bind(ip, &binding);
                }
            }
        }
        true
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
/// optionally with fractional seconds or a numeric offset).
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
    let mut rest = &s[19..];
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
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") => {
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
