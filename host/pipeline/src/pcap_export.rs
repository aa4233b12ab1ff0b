//! `trawl replay --write-pcap OUT.pcapng --filter KFL2`: the packets of the
//! flows behind the records a display filter matches, as a pcapng file
//! Wireshark reads with names (see [`trawl_service::pcapng`]).
//!
//! Two passes over the capture: the first dissects it and picks the flows,
//! the second copies their frames as they were captured.

use crate::replay::{ReplayOptions, load_identity};
use anyhow::Context;
use std::path::Path;
use trawl_capture::file::CaptureFile;
use trawl_core::decode::{Decoded, decode};
use trawl_service::filter::Filter;
use trawl_service::pcapng::{PcapngOut, flow_key, flows_of, names};

/// What `--write-pcap` wrote.
#[derive(Debug, serde::Serialize)]
pub struct PcapSummary {
    pub records_matched: u64,
    pub flows: usize,
    pub packets: u64,
    pub names: usize,
}

/// Replays `opts.capture`, and writes the flows of the records `filter`
/// matches (every record's, without one) to `out`.
pub fn write(opts: &ReplayOptions, filter: Option<&str>, out: &Path) -> anyhow::Result<PcapSummary> {
    let filter = Filter::compile(filter.unwrap_or("")).map_err(|e| anyhow::anyhow!("--filter: {e}"))?;
    let (records, legend, _outcome) = crate::replay_l7::records(opts)?;
    let mut flows = flows_of(&records, |r| filter.matches(r, &legend));
    let records_matched = flows.values().map(|f| f.records).sum();
    let identity = load_identity(&opts.inventories)?;
    let names = names(&identity, &flows);

    let file = std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let comment =
        format!("trawl replay of {}: the flows of the records matching {:?}", opts.capture.display(), filter.source());
    let mut pcapng = PcapngOut::new(std::io::BufWriter::new(file), &comment, &names)
        .with_context(|| format!("cannot write {}", out.display()))?;
    let mut failed = None;
    let mut capture = CaptureFile::open(&opts.capture)?;
    let read = capture.for_each_frame(|frame| {
        let Decoded::Packet(p) = decode(frame.link, frame.data) else { return };
        let Some(flow) = flows.get_mut(&flow_key(p.l4, (p.src, p.src_port), (p.dst, p.dst_port))) else { return };
        if failed.is_none()
            && let Err(e) = pcapng.packet(&identity, flow, p.l4, (frame.link, frame.ts, frame.wire_len, frame.data))
        {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e).with_context(|| format!("cannot write {}", out.display()));
    }
    if let Err(e) = read {
        // The first pass already said how much of a damaged capture counts.
        tracing::warn!(error = %e, "the capture ends early; its frames before that were written");
    }
    let packets = pcapng.packets;
    use std::io::Write;
    pcapng.finish().flush().with_context(|| format!("cannot write {}", out.display()))?;
    Ok(PcapSummary { records_matched, flows: flows.len(), packets, names: names.len() })
}
