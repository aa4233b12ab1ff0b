//! Packet decode: link layer → IPv4/IPv6 → TCP/UDP.
//!
//! Header parsing is done by `etherparse`; this module only walks the link
//! encapsulations etherparse has no slice type for (PPPoE sessions, Linux SLL2,
//! BSD loopback, MPLS) and turns the result into a compact [`DecodedPacket`].
//! Decode never panics: every frame ends as exactly one [`Decoded`] variant.

use etherparse::{
    Ethernet2HeaderSlice, LaxIpSlice, LenSource, SingleVlanHeaderSlice, TcpHeaderSlice, UdpHeaderSlice, ip_number,
};
use serde::Serialize;
use std::net::IpAddr;

/// Link-layer header types (libpcap `LINKTYPE_*` values) that trawl decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// BSD loopback: a 4-byte address family in host byte order.
    Null,
    Ethernet,
    /// Raw IPv4 or IPv6, told apart by the version nibble.
    Raw,
    Ipv4,
    Ipv6,
    LinuxSll,
    LinuxSll2,
    /// OpenBSD loopback: like `Null` but in network byte order.
    Loop,
    Unsupported(u32),
}

impl LinkType {
    pub fn from_linktype(value: u32) -> Self {
        match value {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            // 12 and 14 are the historical DLT_RAW values on some BSDs.
            12 | 14 | 101 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            other => LinkType::Unsupported(other),
        }
    }

    /// The `LINKTYPE_*` value a capture file names this link type by.
    pub fn to_linktype(self) -> u32 {
        match self {
            LinkType::Null => 0,
            LinkType::Ethernet => 1,
            LinkType::Raw => 101,
            LinkType::Loop => 108,
            LinkType::LinuxSll => 113,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::LinuxSll2 => 276,
            LinkType::Unsupported(other) => other,
        }
    }
}

/// Transport protocol of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Proto {
    Tcp,
    Udp,
}

impl L4Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
        }
    }
}

/// TCP header fields the flow table and reassembly need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpMeta {
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
}

/// The TCP flag bits trawl tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;

    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
}

/// A TCP or UDP packet, borrowed from the capture buffer.
#[derive(Clone, Debug)]
pub struct DecodedPacket<'a> {
    pub l4: L4Proto,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// IP datagram length from the IP header (what the wire carried).
    pub ip_len: u32,
    /// Present for TCP.
    pub tcp: Option<TcpMeta>,
    /// Transport payload as captured (may be shorter than on the wire).
    pub payload: &'a [u8],
    /// Transport payload length on the wire, from the IP/UDP length fields.
    pub wire_payload_len: u32,
}

impl DecodedPacket<'_> {
    /// True when the capture cut the payload short (snap length).
    pub fn payload_truncated(&self) -> bool {
        (self.payload.len() as u32) < self.wire_payload_len
    }
}

/// Why a frame did not yield a TCP/UDP packet. Each reason is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// ARP, LLDP and other frames with no IP inside.
    NonIp,
    /// IP, but neither TCP nor UDP (ICMP, SCTP, …).
    OtherIpProtocol,
    /// An IP fragment whose transport header is elsewhere.
    Fragment,
    /// Headers that do not parse (too short, bad version, bad lengths).
    Malformed,
    /// A link type trawl does not decode.
    UnsupportedLinkType,
}

/// The result of decoding one frame.
#[derive(Clone, Debug)]
pub enum Decoded<'a> {
    Packet(DecodedPacket<'a>),
    /// An IPv4 first fragment carries the ports for the rest of the datagram.
    Fragment(FragmentInfo),
    Skipped(Skip),
}

/// Enough of an IPv4 fragment to attribute it to a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentInfo {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub ident: u32,
    pub ip_len: u32,
    /// `Some((src_port, dst_port))` for the first fragment.
    pub ports: Option<(u16, u16)>,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
const ETHERTYPE_PPPOE_SESSION: u16 = 0x8864;
const ETHERTYPE_MPLS: u16 = 0x8847;
const ETHERTYPE_MPLS_MC: u16 = 0x8848;
const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;
/// Deeper stacks than this are not real traffic; stop instead of looping.
const MAX_LINK_ENCAPSULATIONS: usize = 8;

/// Decodes one captured frame of the given link type.
pub fn decode(link: LinkType, frame: &[u8]) -> Decoded<'_> {
    let ip = match link {
        LinkType::Ethernet => match Ethernet2HeaderSlice::from_slice(frame) {
            Ok(eth) => ether_payload(eth.ether_type().0, &frame[eth.slice().len()..]),
            Err(_) => Err(Skip::Malformed),
        },
        LinkType::Null | LinkType::Loop => frame.get(4..).ok_or(Skip::Malformed),
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => Ok(frame),
        // SLL: packet type (2), ARPHRD (2), addr len (2), addr (8), protocol (2).
        // Read by hand: etherparse's slice rejects ARPHRD_LOOPBACK, which is
        // what `tcpdump -i any` writes for loopback traffic.
        LinkType::LinuxSll => match frame.get(..16) {
            Some(h) => ether_payload(u16::from_be_bytes([h[14], h[15]]), &frame[16..]),
            None => Err(Skip::Malformed),
        },
        // SLL2: protocol (2), reserved (2), ifindex (4), hatype (2),
        // pkttype (1), addr len (1), addr (8) = 20 bytes.
        LinkType::LinuxSll2 => match frame.get(..20) {
            Some(h) => ether_payload(u16::from_be_bytes([h[0], h[1]]), &frame[20..]),
            None => Err(Skip::Malformed),
        },
        LinkType::Unsupported(_) => Err(Skip::UnsupportedLinkType),
    };
    match ip {
        Ok(ip) => decode_ip(ip),
        Err(skip) => Decoded::Skipped(skip),
    }
}

/// Walks VLAN tags, PPPoE sessions and MPLS labels down to the IP header.
fn ether_payload(mut ether_type: u16, mut data: &[u8]) -> Result<&[u8], Skip> {
    for _ in 0..MAX_LINK_ENCAPSULATIONS {
        match ether_type {
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => return Ok(data),
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD => {
                let vlan = SingleVlanHeaderSlice::from_slice(data).map_err(|_| Skip::Malformed)?;
                ether_type = vlan.ether_type().0;
                data = &data[vlan.slice().len()..];
            }
            ETHERTYPE_PPPOE_SESSION => {
                // version/type (1), code (1), session (2), length (2), PPP protocol (2).
                let header = data.get(..8).ok_or(Skip::Malformed)?;
                let ppp_protocol = u16::from_be_bytes([header[6], header[7]]);
                data = &data[8..];
                return match ppp_protocol {
                    PPP_IPV4 | PPP_IPV6 => Ok(data),
                    _ => Err(Skip::NonIp),
                };
            }
            ETHERTYPE_MPLS | ETHERTYPE_MPLS_MC => {
                // Labels are 4 bytes; the bottom-of-stack bit ends the stack.
                loop {
                    let label = data.get(..4).ok_or(Skip::Malformed)?;
                    data = &data[4..];
                    if label[2] & 0x01 != 0 {
                        return Ok(data);
                    }
                }
            }
            _ => return Err(Skip::NonIp),
        }
    }
    Err(Skip::Malformed)
}

fn decode_ip(data: &[u8]) -> Decoded<'_> {
    let Ok((ip, _ext_err)) = LaxIpSlice::from_slice(data) else {
        return Decoded::Skipped(Skip::Malformed);
    };
    let (src, dst) = (ip.source_addr(), ip.destination_addr());
    let (ip_len, header_len) = match &ip {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            (u32::from(h.total_len()), h.slice().len() as u32)
        }
        LaxIpSlice::Ipv6(v6) => {
            let payload_len = u32::from(v6.header().payload_length());
            (40 + payload_len, 40)
        }
    };
    let payload = ip.payload();
    // When the IP length field could not be trusted (truncated capture, IPv6
    // jumbograms) the slice length stands in for it.
    let ip_len = if payload.len_source == LenSource::Slice && ip_len < header_len { data.len() as u32 } else { ip_len };
    let protocol = payload.ip_number;

    if payload.fragmented {
        if let LaxIpSlice::Ipv4(v4) = &ip {
            let h = v4.header();
            let first = h.fragments_offset().value() == 0;
            let ports = if first {
                payload.payload.get(..4).map(|p| (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]])))
            } else {
                None
            };
            return Decoded::Fragment(FragmentInfo {
                src,
                dst,
                protocol: protocol.0,
                ident: u32::from(h.identification()),
                ip_len,
                ports,
            });
        }
        return Decoded::Skipped(Skip::Fragment);
    }

    let transport = payload.payload;
    // Transport bytes the wire carried: IP length minus every IP header byte.
    // (The offset of the transport header, not `data.len() - transport.len()`,
    // which would count Ethernet trailer padding as IP header.)
    let ip_overhead = (transport.as_ptr() as usize).saturating_sub(data.as_ptr() as usize) as u32;
    let wire_transport_len = ip_len.saturating_sub(ip_overhead);
    match protocol {
        ip_number::TCP => match TcpHeaderSlice::from_slice(transport) {
            Ok(tcp) => {
                let header_len = tcp.slice().len();
                let mut flags = 0u8;
                for (set, bit) in [
                    (tcp.fin(), TcpFlags::FIN),
                    (tcp.syn(), TcpFlags::SYN),
                    (tcp.rst(), TcpFlags::RST),
                    (tcp.ack(), TcpFlags::ACK),
                ] {
                    if set {
                        flags |= bit;
                    }
                }
                Decoded::Packet(DecodedPacket {
                    l4: L4Proto::Tcp,
                    src,
                    dst,
                    src_port: tcp.source_port(),
                    dst_port: tcp.destination_port(),
                    ip_len,
                    tcp: Some(TcpMeta {
                        seq: tcp.sequence_number(),
                        ack: tcp.acknowledgment_number(),
                        flags: TcpFlags(flags),
                    }),
                    payload: &transport[header_len..],
                    wire_payload_len: wire_transport_len.saturating_sub(header_len as u32),
                })
            }
            Err(_) => Decoded::Skipped(Skip::Malformed),
        },
        ip_number::UDP => match UdpHeaderSlice::from_slice(transport) {
            Ok(udp) => {
                let captured = &transport[8..];
                let declared = u32::from(udp.length()).saturating_sub(8);
                // Trust the UDP length only when it fits inside the IP datagram.
                let wire = if declared <= wire_transport_len.saturating_sub(8) {
                    declared
                } else {
                    wire_transport_len.saturating_sub(8)
                };
                let payload_len = (wire as usize).min(captured.len());
                Decoded::Packet(DecodedPacket {
                    l4: L4Proto::Udp,
                    src,
                    dst,
                    src_port: udp.source_port(),
                    dst_port: udp.destination_port(),
                    ip_len,
                    tcp: None,
                    payload: &captured[..payload_len],
                    wire_payload_len: wire,
                })
            }
            Err(_) => Decoded::Skipped(Skip::Malformed),
        },
        _ => Decoded::Skipped(Skip::OtherIpProtocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 1000, 65535)
            .syn();
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn ethernet_ipv4_tcp() {
        let frame = tcp_frame(b"hello");
        let Decoded::Packet(p) = decode(LinkType::Ethernet, &frame) else { panic!("not decoded") };
        assert_eq!(p.l4, L4Proto::Tcp);
        assert_eq!((p.src_port, p.dst_port), (40000, 80));
        assert_eq!(p.ip_len, 20 + 20 + 5);
        assert_eq!(p.payload, b"hello");
        assert!(p.tcp.unwrap().flags.syn());
    }

    #[test]
    fn stacked_vlan_then_pppoe() {
        let ip = &tcp_frame(b"x")[14..];
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x88, 0x64]);
        frame.extend_from_slice(&[0x11, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x21]);
        frame.extend_from_slice(ip);
        assert!(matches!(decode(LinkType::Ethernet, &frame), Decoded::Packet(_)));
    }

    #[test]
    fn sll2_and_null_and_raw() {
        let ip = &tcp_frame(b"x")[14..];
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0; 18]);
        sll2.extend_from_slice(ip);
        assert!(matches!(decode(LinkType::LinuxSll2, &sll2), Decoded::Packet(_)));
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(ip);
        assert!(matches!(decode(LinkType::Null, &null), Decoded::Packet(_)));
        assert!(matches!(decode(LinkType::Raw, ip), Decoded::Packet(_)));
    }

    #[test]
    fn snaplen_truncation_keeps_wire_lengths() {
        let frame = tcp_frame(&[7u8; 1000]);
        let Decoded::Packet(p) = decode(LinkType::Ethernet, &frame[..100]) else { panic!("not decoded") };
        assert_eq!(p.ip_len, 1040);
        assert_eq!(p.wire_payload_len, 1000);
        assert_eq!(p.payload.len(), 100 - 54);
        assert!(p.payload_truncated());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678u32;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            for link in [LinkType::Ethernet, LinkType::Raw, LinkType::LinuxSll, LinkType::LinuxSll2] {
                let _ = decode(link, &bytes);
            }
        }
        assert!(matches!(decode(LinkType::Ethernet, &[0x08, 0x06]), Decoded::Skipped(Skip::Malformed)));
    }

    #[test]
    fn sll_loopback() {
        let ip = &tcp_frame(b"x")[14..];
        let mut sll = vec![0x00, 0x00, 0x03, 0x04, 0x00, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(ip);
        assert!(matches!(decode(LinkType::LinuxSll, &sll), Decoded::Packet(_)));
    }

    #[test]
    fn arp_is_non_ip() {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x06]);
        frame.extend_from_slice(&[0; 28]);
        assert!(matches!(decode(LinkType::Ethernet, &frame), Decoded::Skipped(Skip::NonIp)));
    }
}
