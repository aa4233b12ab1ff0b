//! pcapng files Wireshark reads with names: a Name Resolution Block names
//! every address by its pod, service or node, and the first packet of each
//! flow carries a comment naming its workloads (as Netobserv does). Used by
//! `trawl replay --write-pcap` and `GET /api/pcap`.

use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::blocks::name_resolution::{Ipv4Record, Ipv6Record, NameResolutionBlock, Record};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::net::IpAddr;
use trawl_core::identity::WorkloadKind;
use trawl_core::record::L7Record;
use trawl_core::{GroupBy, Identity, L4Proto, LinkType, Timestamp};

/// A flow by its transport and its two ends, in a fixed order (either
/// direction's packets find it).
pub type FlowKey = (L4Proto, (IpAddr, u16), (IpAddr, u16));

pub fn flow_key(l4: L4Proto, a: (IpAddr, u16), b: (IpAddr, u16)) -> FlowKey {
    if a <= b { (l4, a, b) } else { (l4, b, a) }
}

/// A flow chosen for a file: its ends, and what was matched on it.
#[derive(Debug)]
pub struct ChosenFlow {
    pub client: (IpAddr, u16),
    pub server: (IpAddr, u16),
    pub protocols: BTreeSet<String>,
    pub records: u64,
    pub first_ts: Timestamp,
    commented: bool,
}

/// The flows of `records` (those `keep` admits), by key.
pub fn flows_of<'a>(
    records: impl IntoIterator<Item = &'a L7Record>,
    mut keep: impl FnMut(&L7Record) -> bool,
) -> HashMap<FlowKey, ChosenFlow> {
    let mut flows: HashMap<FlowKey, ChosenFlow> = HashMap::new();
    for r in records.into_iter().filter(|r| keep(r)) {
        let (client, server) = ((r.src.ip, r.src.port), (r.dst.ip, r.dst.port));
        let f = flows.entry(flow_key(r.transport, client, server)).or_insert_with(|| ChosenFlow {
            client,
            server,
            protocols: BTreeSet::new(),
            records: 0,
            first_ts: r.ts(),
            commented: false,
        });
        f.protocols.insert(r.protocol.clone());
        f.records += 1;
        f.first_ts = f.first_ts.min(r.ts());
    }
    flows
}

/// A flow chosen without records (an L4 edge's connections).
pub fn chosen(client: (IpAddr, u16), server: (IpAddr, u16), first_ts: Timestamp) -> ChosenFlow {
    ChosenFlow { client, server, protocols: BTreeSet::new(), records: 0, first_ts, commented: false }
}

/// How an address is named in the file: `NAME.NAMESPACE` for a pod or a
/// service (as cluster DNS would, less its suffix), the node's name, or
/// nothing for an address the inventory does not know.
fn dns_name(identity: &Identity, ip: IpAddr, at: Timestamp) -> Option<String> {
    let w = identity.lookup(ip, at)?;
    match w.kind {
        WorkloadKind::Pod | WorkloadKind::Service => Some(format!("{}.{}", w.name, w.namespace)),
        WorkloadKind::Node => Some(w.name.clone()),
        WorkloadKind::External => None,
    }
}

/// The map node (by pod) an endpoint is, as of `at`.
pub fn node_id(identity: &Identity, ip: IpAddr, port: u16, at: Timestamp, group: GroupBy) -> String {
    let w = identity.resolve_endpoint(ip, port, at);
    trawl_core::map::MapNode::for_workload(&w, group).id
}

/// The names of every address of `flows`, as of each flow's start.
pub fn names(identity: &Identity, flows: &HashMap<FlowKey, ChosenFlow>) -> BTreeMap<IpAddr, String> {
    let mut names = BTreeMap::new();
    for f in flows.values() {
        for ip in [f.client.0, f.server.0] {
            if let Some(name) = dns_name(identity, ip, f.first_ts) {
                names.entry(ip).or_insert(name);
            }
        }
    }
    names
}

/// A pcapng file being written: the section, the names, then packets.
pub struct PcapngOut<W: Write> {
    writer: PcapNgWriter<W>,
    interfaces: HashMap<u32, u32>,
    pub packets: u64,
}

impl<W: Write> std::fmt::Debug for PcapngOut<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapngOut").field("packets", &self.packets).finish_non_exhaustive()
    }
}

impl<W: Write> PcapngOut<W> {
    pub fn new(out: W, comment: &str, names: &BTreeMap<IpAddr, String>) -> Result<Self, pcap_file::PcapError> {
        let section = SectionHeaderBlock {
            options: vec![
                SectionHeaderOption::Comment(Cow::Owned(comment.to_string())),
                SectionHeaderOption::UserApplication(Cow::Owned(format!("trawl {}", env!("CARGO_PKG_VERSION")))),
            ],
            ..SectionHeaderBlock::default()
        };
        let mut writer = PcapNgWriter::with_section_header(out, section)?;
        let mut nrb = NameResolutionBlock { records: Vec::new(), options: Vec::new() };
        for (ip, name) in names {
            let names = vec![Cow::Owned(name.clone())];
            nrb.records.push(match ip {
                IpAddr::V4(v4) => Record::Ipv4(Ipv4Record { ip_addr: Cow::Owned(v4.octets().to_vec()), names }),
                IpAddr::V6(v6) => Record::Ipv6(Ipv6Record { ip_addr: Cow::Owned(v6.octets().to_vec()), names }),
            });
        }
        nrb.records.push(Record::End);
        writer.write_pcapng_block(nrb)?;
        Ok(PcapngOut { writer, interfaces: HashMap::new(), packets: 0 })
    }

    /// Writes one frame of `flow`; its first carries the flow's comment.
    pub fn packet(
        &mut self,
        identity: &Identity,
        flow: &mut ChosenFlow,
        l4: L4Proto,
        (link, ts, wire_len, data): (LinkType, Timestamp, u32, &[u8]),
    ) -> Result<(), pcap_file::PcapError> {
        let link = link.to_linktype();
        let next = self.interfaces.len() as u32;
        let interface_id = match self.interfaces.get(&link) {
            Some(&id) => id,
            None => {
                self.writer.write_pcapng_block(InterfaceDescriptionBlock {
                    linktype: pcap_file::DataLink::from(link),
                    snaplen: 0,
                    // Nanosecond timestamps, as the writer writes them.
                    options: vec![InterfaceDescriptionOption::IfTsResol(9)],
                })?;
                self.interfaces.insert(link, next);
                next
            }
        };
        let mut options = Vec::new();
        if !flow.commented {
            flow.commented = true;
            options.push(EnhancedPacketOption::Comment(Cow::Owned(comment(identity, flow, l4))));
        }
        self.writer.write_pcapng_block(EnhancedPacketBlock {
            interface_id,
            timestamp: std::time::Duration::from_nanos(ts.as_nanos()),
            original_len: wire_len.max(data.len() as u32),
            data: Cow::Borrowed(data),
            options,
        })?;
        self.packets += 1;
        Ok(())
    }

    pub fn finish(self) -> W {
        self.writer.into_inner()
    }
}

/// The comment on a flow's first packet: its ends and workloads, and what
/// was matched on it.
fn comment(identity: &Identity, f: &ChosenFlow, l4: L4Proto) -> String {
    let at = f.first_ts;
    let mut text = format!(
        "trawl: {} {}:{} -> {}:{}, {} -> {}",
        l4.as_str(),
        f.client.0,
        f.client.1,
        f.server.0,
        f.server.1,
        node_id(identity, f.client.0, f.client.1, at, GroupBy::Pod),
        node_id(identity, f.server.0, f.server.1, at, GroupBy::Pod),
    );
    if f.records > 0 {
        let protocols: Vec<&str> = f.protocols.iter().map(String::as_str).collect();
        text.push_str(&format!("; {} record(s) matched ({})", f.records, protocols.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_is_found_from_either_direction() {
        let (a, b) = ((IpAddr::from([10, 0, 0, 1]), 40000), (IpAddr::from([10, 0, 0, 2]), 80));
        assert_eq!(flow_key(L4Proto::Tcp, a, b), flow_key(L4Proto::Tcp, b, a));
        assert_ne!(flow_key(L4Proto::Tcp, a, b), flow_key(L4Proto::Udp, a, b));
    }
}
