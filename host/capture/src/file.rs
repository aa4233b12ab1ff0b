//! Capture files: classic pcap (µs and ns) and pcapng, read with `pcap-file`.

use pcap_file::pcap::{PcapParser, PcapReader, RawPcapPacket};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgParser, PcapNgReader};
use pcap_file::{PcapError, TsResolution};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use trawl_core::{LinkType, Timestamp};

/// Errors reading a capture file.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot open capture {path}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a pcap or pcapng capture (it starts with {magic})")]
    NotACapture { path: PathBuf, magic: String },
    #[error("{path} is truncated: the record after frame {frames} is cut short ({detail})")]
    Truncated { path: PathBuf, frames: u64, detail: String },
    #[error("{path} is corrupt after frame {frames}: {detail}")]
    Corrupt { path: PathBuf, frames: u64, detail: String },
}

impl CaptureError {
    /// True when frames before the error were good and should be reported.
    pub fn is_partial(&self) -> bool {
        matches!(self, CaptureError::Truncated { .. } | CaptureError::Corrupt { .. })
    }
}

/// One captured frame, borrowed from the reader.
#[derive(Debug)]
pub struct Frame<'a> {
    pub link: LinkType,
    pub ts: Timestamp,
    pub data: &'a [u8],
    /// Length on the wire (the record's original length).
    pub wire_len: u32,
}

/// Per-interface facts a pcapng packet needs.
#[derive(Clone, Copy, Debug)]
struct Interface {
    link: LinkType,
    /// Timestamp units per second.
    units_per_sec: u64,
    offset_secs: u64,
}

/// Where a capture's bytes come from: a file, or memory (fuzzing, tests).
type Source = Box<dyn Read + Send>;

enum Format {
    Pcap {
        reader: PcapReader<BufReader<Source>>,
        link: LinkType,
        nanos: bool,
    },
    PcapNg {
        reader: PcapNgReader<BufReader<Source>>,
        interfaces: Vec<Interface>,
    },
    /// Held in memory and parsed in place: `pcap-file`'s readers allocate
    /// an 8 MB buffer each, which dominates reading a small capture.
    PcapBytes {
        bytes: Vec<u8>,
        pos: usize,
        parser: PcapParser,
        link: LinkType,
        nanos: bool,
    },
    PcapNgBytes {
        bytes: Vec<u8>,
        pos: usize,
        parser: PcapNgParser,
        interfaces: Vec<Interface>,
    },
}

/// A capture file, read frame by frame.
pub struct CaptureFile {
    path: PathBuf,
    format: Format,
    frames: u64,
    /// Simple packet blocks carry no timestamp and inherit this one.
    last_ts: Timestamp,
}

impl std::fmt::Debug for CaptureFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureFile").field("path", &self.path).field("frames", &self.frames).finish()
    }
}

const PCAP_MAGICS: [[u8; 4]; 4] =
    [[0xa1, 0xb2, 0xc3, 0xd4], [0xd4, 0xc3, 0xb2, 0xa1], [0xa1, 0xb2, 0x3c, 0x4d], [0x4d, 0x3c, 0xb2, 0xa1]];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

impl CaptureFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CaptureError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source| CaptureError::Open { path: path.clone(), source };
        let mut file = File::open(&path).map_err(open_err)?;
        if file.metadata().map_err(open_err)?.is_dir() {
            return Err(open_err(std::io::Error::other("is a directory")));
        }
        let mut magic = [0u8; 4];
        let got = read_up_to(&mut file, &mut magic).map_err(open_err)?;
        let not_capture = || CaptureError::NotACapture {
            path: path.clone(),
            magic: if got == 0 { "nothing: the file is empty".to_string() } else { hex(&magic[..got]) },
        };
        if got < 4 {
            return Err(not_capture());
        }
        let file = File::open(&path).map_err(open_err)?;
        Self::with_source(path, magic, Box::new(file))
    }

    /// A capture held in memory, `name` standing for its path in errors.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Self, CaptureError> {
        let path = PathBuf::from(name);
        let Some(magic) = bytes.first_chunk::<4>().copied() else {
            return Err(CaptureError::NotACapture { path, magic: "fewer than 4 bytes".into() });
        };
        let format = if PCAP_MAGICS.contains(&magic) {
            let (rest, parser) = PcapParser::new(&bytes).map_err(|e| header_error(&path, e))?;
            let (pos, header) = (bytes.len() - rest.len(), parser.header());
            let link = LinkType::from_linktype(u32::from(header.datalink));
            Format::PcapBytes { pos, parser, link, nanos: header.ts_resolution == TsResolution::NanoSecond, bytes }
        } else if magic == PCAPNG_MAGIC {
            let (rest, parser) = PcapNgParser::new(&bytes).map_err(|e| header_error(&path, e))?;
            Format::PcapNgBytes { pos: bytes.len() - rest.len(), parser, interfaces: Vec::new(), bytes }
        } else {
            return Err(CaptureError::NotACapture { path, magic: hex(&magic) });
        };
        Ok(CaptureFile { path, format, frames: 0, last_ts: Timestamp::ZERO })
    }

    fn with_source(path: PathBuf, magic: [u8; 4], source: Source) -> Result<Self, CaptureError> {
        let reader = BufReader::with_capacity(1 << 16, source);
        let header_err = |e: PcapError| header_error(&path, e);
        let format = if PCAP_MAGICS.contains(&magic) {
            let reader = PcapReader::new(reader).map_err(header_err)?;
            let header = reader.header();
            let link = LinkType::from_linktype(u32::from(header.datalink));
            Format::Pcap { reader, link, nanos: header.ts_resolution == TsResolution::NanoSecond }
        } else if magic == PCAPNG_MAGIC {
            Format::PcapNg { reader: PcapNgReader::new(reader).map_err(header_err)?, interfaces: Vec::new() }
        } else {
            return Err(CaptureError::NotACapture { path, magic: hex(&magic) });
        };
        Ok(CaptureFile { path, format, frames: 0, last_ts: Timestamp::ZERO })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Frames read so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Calls `f` for every frame until the end of the file or an error.
    pub fn for_each_frame(&mut self, mut f: impl FnMut(Frame<'_>)) -> Result<(), CaptureError> {
        loop {
            // Ok(true): a frame; Ok(false): a block that carries none.
            let step: Result<bool, Fault> = match &mut self.format {
                Format::Pcap { reader, link, nanos } => match reader.next_raw_packet() {
                    None => return Ok(()),
                    Some(Err(e)) => Err(Fault::Parse(e)),
                    Some(Ok(p)) => {
                        f(pcap_frame(&p, *link, *nanos));
                        Ok(true)
                    }
                },
                Format::PcapBytes { bytes, pos, parser, link, nanos } => {
                    let Some(rest) = bytes.get(*pos..).filter(|rest| !rest.is_empty()) else { return Ok(()) };
                    match parser.next_raw_packet(rest) {
                        Err(e) => Err(Fault::Parse(e)),
                        Ok((after, p)) => {
                            *pos = bytes.len() - after.len();
                            f(pcap_frame(&p, *link, *nanos));
                            Ok(true)
                        }
                    }
                }
                Format::PcapNg { reader, interfaces } => match reader.next_block() {
                    None => return Ok(()),
                    Some(Err(e)) => Err(Fault::Parse(e)),
                    Some(Ok(block)) => pcapng_block(block, interfaces, &mut self.last_ts, &mut f),
                },
                Format::PcapNgBytes { bytes, pos, parser, interfaces } => {
                    let Some(rest) = bytes.get(*pos..).filter(|rest| !rest.is_empty()) else { return Ok(()) };
                    match parser.next_block(rest) {
                        Err(e) => Err(Fault::Parse(e)),
                        Ok((after, block)) => {
                            *pos = bytes.len() - after.len();
                            pcapng_block(block, interfaces, &mut self.last_ts, &mut f)
                        }
                    }
                }
            };
            match step {
                Ok(true) => self.frames += 1,
                Ok(false) => {}
                Err(fault) => return Err(record_error(&self.path, self.frames, fault)),
            }
        }
    }
}

/// Why reading stopped before the end.
enum Fault {
    Parse(PcapError),
    Corrupt(String),
}

fn header_error(path: &Path, e: PcapError) -> CaptureError {
    match e {
        PcapError::IncompleteBuffer | PcapError::IoError(_) => CaptureError::Truncated {
            path: path.to_path_buf(),
            frames: 0,
            detail: "the file header is incomplete".into(),
        },
        other => CaptureError::Corrupt { path: path.to_path_buf(), frames: 0, detail: other.to_string() },
    }
}

fn record_error(path: &Path, frames: u64, fault: Fault) -> CaptureError {
    let path = path.to_path_buf();
    let truncated =
        || CaptureError::Truncated { path: path.clone(), frames, detail: "end of file inside a record".into() };
    match fault {
        Fault::Parse(PcapError::IncompleteBuffer) => truncated(),
        Fault::Parse(PcapError::IoError(io)) if io.kind() == std::io::ErrorKind::UnexpectedEof => truncated(),
        Fault::Parse(other) => CaptureError::Corrupt { path, frames, detail: other.to_string() },
        Fault::Corrupt(detail) => CaptureError::Corrupt { path, frames, detail },
    }
}

fn pcap_frame<'a>(p: &'a RawPcapPacket<'_>, link: LinkType, nanos: bool) -> Frame<'a> {
    let frac = if nanos { p.ts_frac } else { p.ts_frac.saturating_mul(1000) };
    let ts = Timestamp::from_secs_nanos(u64::from(p.ts_sec), frac);
    let (data, wire_len) = wire_frame(&p.data, p.orig_len);
    Frame { link, ts, data, wire_len }
}

/// Handles one pcapng block: interfaces are remembered, packets handed to
/// `f`. Ok(true) when the block carried a frame.
fn pcapng_block(
    block: Block<'_>,
    interfaces: &mut Vec<Interface>,
    last_ts: &mut Timestamp,
    f: &mut impl FnMut(Frame<'_>),
) -> Result<bool, Fault> {
    Ok(match block {
        Block::SectionHeader(_) => {
            interfaces.clear();
            false
        }
        Block::InterfaceDescription(idb) => {
            let mut iface = Interface {
                link: LinkType::from_linktype(u32::from(idb.linktype)),
                units_per_sec: 1_000_000,
                offset_secs: 0,
            };
            for opt in &idb.options {
                match opt {
                    InterfaceDescriptionOption::IfTsResol(r) => iface.units_per_sec = units_per_sec(*r),
                    InterfaceDescriptionOption::IfTsOffset(o) => iface.offset_secs = *o,
                    _ => {}
                }
            }
            interfaces.push(iface);
            false
        }
        Block::EnhancedPacket(epb) => {
            let Some(iface) = interfaces.get(epb.interface_id as usize).copied() else {
                return Err(Fault::Corrupt(format!(
                    "packet names interface {} that was never described",
                    epb.interface_id
                )));
            };
            // pcap-file hands over the raw 64-bit count as "nanoseconds".
            let raw = epb.timestamp.as_nanos() as u64;
            let ts = scale_ts(raw, iface);
            *last_ts = ts;
            let (data, wire_len) = wire_frame(&epb.data, epb.original_len);
            f(Frame { link: iface.link, ts, data, wire_len });
            true
        }
        Block::SimplePacket(spb) => {
            // No timestamp: it happened no earlier than the last frame.
            let link = interfaces.first().map_or(LinkType::Ethernet, |i| i.link);
            let (data, wire_len) = wire_frame(&spb.data, spb.original_len);
            f(Frame { link, ts: *last_ts, data, wire_len });
            true
        }
        Block::Packet(pb) => {
            let iface = interfaces.get(usize::from(pb.interface_id)).copied().unwrap_or(Interface {
                link: LinkType::Ethernet,
                units_per_sec: 1_000_000,
                offset_secs: 0,
            });
            let ts = scale_ts(pb.timestamp, iface);
            *last_ts = ts;
            let (data, wire_len) = wire_frame(&pb.data, pb.original_len);
            f(Frame { link: iface.link, ts, data, wire_len });
            true
        }
        _ => false,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// The bytes and wire length of a record. A record that holds more bytes
/// than its original length was written by a broken tool: the frame ends at
/// the original length (as Wireshark reads it) and the rest is trailing junk.
/// An original length of zero is not believed.
fn wire_frame(data: &[u8], orig_len: u32) -> (&[u8], u32) {
    if orig_len == 0 { (data, data.len() as u32) } else { (&data[..data.len().min(orig_len as usize)], orig_len) }
}

/// `if_tsresol`: high bit clear = negative power of 10, set = of 2.
fn units_per_sec(resol: u8) -> u64 {
    let exp = u32::from(resol & 0x7f);
    if resol & 0x80 == 0 { 10u64.checked_pow(exp) } else { 2u64.checked_pow(exp) }.unwrap_or(u64::MAX)
}

fn scale_ts(raw: u64, iface: Interface) -> Timestamp {
    let per = iface.units_per_sec.max(1);
    let secs = raw / per;
    let frac = raw % per;
    let nanos = (u128::from(frac) * 1_000_000_000 / u128::from(per)) as u32;
    Timestamp::from_secs_nanos(secs.saturating_add(iface.offset_secs), nanos)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsresol() {
        assert_eq!(units_per_sec(6), 1_000_000);
        assert_eq!(units_per_sec(9), 1_000_000_000);
        assert_eq!(units_per_sec(0x80 | 10), 1024);
        let iface = Interface { link: LinkType::Ethernet, units_per_sec: 1_000_000, offset_secs: 0 };
        assert_eq!(scale_ts(1_500_000, iface), Timestamp(1_500_000_000));
    }

    /// (frames, bytes, first and last timestamp, how reading ended)
    fn summary(mut file: CaptureFile) -> (u64, usize, Vec<Timestamp>, String) {
        let (mut bytes, mut ts) = (0, Vec::new());
        let end = file.for_each_frame(|frame| {
            bytes += frame.data.len();
            ts.push(frame.ts);
        });
        ts.drain(1..ts.len().saturating_sub(1));
        (file.frames(), bytes, ts, end.map_or_else(|e| e.to_string(), |()| "ok".into()))
    }

    /// Reading from memory parses in place, from a file through a reader:
    /// both read the same frames, and a capture cut short ends the same way.
    #[test]
    fn memory_and_file_read_the_same_frames() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/public/ndpi");
        let scratch = std::env::temp_dir().join(format!("trawl-capture-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).unwrap();
        for name in ["dns.pcap", "resp.pcap", "http.pcapng", "kafka.pcapng"] {
            let Ok(bytes) = std::fs::read(data.join(name)) else {
                eprintln!("skipping {name}: ../shared/data is not here");
                continue;
            };
            for cut in [bytes.len(), bytes.len() - 7, bytes.len() / 2] {
                let path = scratch.join(name);
                std::fs::write(&path, &bytes[..cut]).unwrap();
                let from_file = summary(CaptureFile::open(&path).unwrap());
                let path = path.to_str().unwrap();
                let from_memory = summary(CaptureFile::from_bytes(path, bytes[..cut].to_vec()).unwrap());
                assert_eq!(from_memory, from_file, "{name} cut at {cut}");
                assert!(from_file.0 > 0, "{name} cut at {cut} read nothing");
                assert_eq!(from_file.3 == "ok", cut == bytes.len(), "{name} cut at {cut}: {}", from_file.3);
            }
        }
        std::fs::remove_dir_all(&scratch).unwrap();
    }
}
