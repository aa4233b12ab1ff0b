//! Builds captures of TCP conversations cut into MTU-1500 segments
//! (1,448 payload bytes, as Linux sends with timestamps on): what pod
//! traffic over a veth or a NIC looks like, unlike loopback's 64 KiB.

use std::net::Ipv4Addr;
use std::path::Path;

/// Payload bytes per segment on a 1,500-byte MTU with TCP timestamps.
pub(crate) const MSS: usize = 1448;

/// One TCP connection, handshake to FIN, as Ethernet frames.
pub(crate) struct Conversation {
    client: (Ipv4Addr, u16),
    server: (Ipv4Addr, u16),
    /// Next sequence number, per direction (client→server, server→client).
    seq: [u32; 2],
    ts_us: u64,
    pub(crate) frames: Vec<(u64, Vec<u8>)>,
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;

impl Conversation {
    /// A connection with its three-way handshake.
    pub(crate) fn open(client: (Ipv4Addr, u16), server: (Ipv4Addr, u16), start_us: u64) -> Self {
        let mut c = Conversation { client, server, seq: [1_000, 50_000], ts_us: start_us, frames: Vec::new() };
        c.segment(0, SYN, &[]);
        c.seq[0] += 1;
        c.segment(1, SYN | ACK, &[]);
        c.seq[1] += 1;
        c.segment(0, ACK, &[]);
        c
    }

    /// `bytes` from the client (`to_server`) or the server, in segments of
    /// at most [`MSS`] bytes.
    pub(crate) fn send(&mut self, to_server: bool, bytes: &[u8]) {
        let d = usize::from(!to_server);
        for chunk in bytes.chunks(MSS) {
            self.segment(d, ACK | PSH, chunk);
            self.seq[d] = self.seq[d].wrapping_add(chunk.len() as u32);
        }
    }

    /// Both sides finish.
    pub(crate) fn close(mut self) -> Vec<(u64, Vec<u8>)> {
        for d in [0, 1] {
            self.segment(d, FIN | ACK, &[]);
            self.seq[d] = self.seq[d].wrapping_add(1);
        }
        self.segment(0, ACK, &[]);
        self.frames
    }

    fn segment(&mut self, d: usize, flags: u8, payload: &[u8]) {
        let (src, dst) = if d == 0 { (self.client, self.server) } else { (self.server, self.client) };
        let mut f = Vec::with_capacity(54 + payload.len());
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, if d == 0 { 2 } else { 1 }]);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, if d == 0 { 1 } else { 2 }]);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 20 + payload.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&src.0.octets());
        ip.extend_from_slice(&dst.0.octets());
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&src.1.to_be_bytes());
        f.extend_from_slice(&dst.1.to_be_bytes());
        f.extend_from_slice(&self.seq[d].to_be_bytes());
        let ack = if flags == SYN { 0 } else { self.seq[1 - d] };
        f.extend_from_slice(&ack.to_be_bytes());
        f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        self.frames.push((self.ts_us, f));
        self.ts_us += 10;
    }
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes frames as a classic pcap (Ethernet, microseconds).
pub(crate) fn write_pcap(path: &Path, frames: &[(u64, Vec<u8>)]) {
    let mut out = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0];
    out[16..20].copy_from_slice(&65_535u32.to_le_bytes());
    for (ts, data) in frames {
        out.extend_from_slice(&((ts / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((ts % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    std::fs::write(path, out).expect("write capture");
}
