//! DNS message parsing (RFC 1035 and friends). Pure, bounded, never panics:
//! names follow at most `MAX_POINTERS` compression pointers and are at most
//! 255 bytes; sections hold at most `MAX_RECORDS` entries.

use std::fmt::Write;

const MAX_POINTERS: usize = 32;
const MAX_NAME: usize = 255;
const MAX_RECORDS: usize = 256;
const MAX_TXT: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub name: String,
    pub rtype: u16,
    pub ttl: u32,
    /// Presentation form of the data (`10.0.0.1`, `mail.example.`, …).
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub response: bool,
    pub opcode: u8,
    /// Full rcode: the header's 4 bits plus EDNS extended bits.
    pub rcode: u16,
    pub truncated: bool,
    pub authoritative: bool,
    pub recursion_desired: bool,
    pub questions: Vec<Question>,
    pub answers: Vec<Answer>,
    pub authority: Vec<Answer>,
    pub additional: Vec<Answer>,
    pub authority_count: u16,
    pub additional_count: u16,
    pub edns: Option<Edns>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub udp_size: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    Truncated,
    Malformed,
}

struct Reader<'a> {
    msg: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, Error> {
        let v = *self.msg.get(self.at).ok_or(Error::Truncated)?;
        self.at += 1;
        Ok(v)
    }
    fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from(self.u16()?) << 16 | u32::from(self.u16()?))
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.at.checked_add(n).ok_or(Error::Malformed)?;
        let b = self.msg.get(self.at..end).ok_or(Error::Truncated)?;
        self.at = end;
        Ok(b)
    }
    fn name(&mut self) -> Result<String, Error> {
        let (name, next) = read_name(self.msg, self.at)?;
        self.at = next;
        Ok(name)
    }
}

/// Reads a possibly compressed name at `at`; returns it (dotted, no final
/// dot, `.` for the root) and the offset after it.
fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize), Error> {
    let mut name = String::new();
    let mut after: Option<usize> = None;
    let mut pointers = 0;
    loop {
        let len = *msg.get(at).ok_or(Error::Truncated)?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                let next = after.unwrap_or(at + 1);
                if name.is_empty() {
                    name.push('.');
                }
                return Ok((name, next));
            }
            0x00 => {
                let label = msg.get(at + 1..at + 1 + usize::from(len)).ok_or(Error::Truncated)?;
                if !name.is_empty() {
                    name.push('.');
                }
                for &b in label {
                    if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                        name.push(b as char);
                    } else {
                        let _ = write!(name, "\\{b:03}");
                    }
                }
                if name.len() > MAX_NAME * 4 {
                    return Err(Error::Malformed);
                }
                at += 1 + usize::from(len);
            }
            0xc0 => {
                let lo = *msg.get(at + 1).ok_or(Error::Truncated)?;
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return Err(Error::Malformed);
                }
                after.get_or_insert(at + 2);
                let target = usize::from(len & 0x3f) << 8 | usize::from(lo);
                at = target;
            }
            _ => return Err(Error::Malformed),
        }
    }
}

pub fn type_name(t: u16) -> String {
    match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        39 => "DNAME",
        41 => "OPT",
        43 => "DS",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        252 => "AXFR",
        255 => "ANY",
        257 => "CAA",
        other => return format!("TYPE{other}"),
    }
    .to_string()
}

pub fn rcode_name(r: u16) -> String {
    match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        17 => "BADKEY",
        18 => "BADTIME",
        19 => "BADMODE",
        20 => "BADNAME",
        21 => "BADALG",
        22 => "BADTRUNC",
        23 => "BADCOOKIE",
        other => return format!("RCODE{other}"),
    }
    .to_string()
}

pub fn opcode_name(op: u8) -> &'static str {
    match op {
        0 => "QUERY",
        1 => "IQUERY",
        2 => "STATUS",
        4 => "NOTIFY",
        5 => "UPDATE",
        6 => "DSO",
        _ => "OPCODE",
    }
}

fn rdata(msg: &[u8], start: usize, len: usize, rtype: u16) -> Result<String, Error> {
    let data = msg.get(start..start + len).ok_or(Error::Truncated)?;
    let mut r = Reader { msg, at: start };
    let out = match rtype {
        1 if len == 4 => format!("{}.{}.{}.{}", data[0], data[1], data[2], data[3]),
        28 if len == 16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(data);
            std::net::Ipv6Addr::from(octets).to_string()
        }
        2 | 5 | 12 | 39 => r.name()?,
        15 => {
            let pref = r.u16()?;
            format!("{pref} {}", r.name()?)
        }
        33 => {
            let (prio, weight, port) = (r.u16()?, r.u16()?, r.u16()?);
            format!("{prio} {weight} {port} {}", r.name()?)
        }
        6 => {
            let (mname, rname) = (r.name()?, r.name()?);
            let serial = r.u32()?;
            format!("{mname} {rname} {serial}")
        }
        16 | 99 => {
            let mut parts = Vec::new();
            let mut at = 0;
            while at < data.len() && at < MAX_TXT {
                let n = usize::from(data[at]);
                let s = data.get(at + 1..at + 1 + n).ok_or(Error::Malformed)?;
                parts.push(String::from_utf8_lossy(s).into_owned());
                at += 1 + n;
            }
            parts.join(" ")
        }
        64 | 65 => {
            let prio = r.u16()?;
            format!("{prio} {}", r.name()?)
        }
        46 => {
            let covered = r.u16()?;
            let alg = r.u8()?;
            format!("RRSIG {} {alg}", type_name(covered))
        }
        _ => format!("\\# {len}"),
    };
    Ok(out)
}

/// Parses one DNS message.
pub fn parse(msg: &[u8]) -> Result<Message, Error> {
    let mut r = Reader { msg, at: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    let counts = [r.u16()?, r.u16()?, r.u16()?, r.u16()?];
    // A zone transfer's 64 KiB messages hold thousands of records; only a
    // count no message of this length could hold is malformed. (Only the
    // first records are kept either way.)
    let declared = counts.iter().map(|&c| usize::from(c)).sum::<usize>();
    if declared > MAX_RECORDS * 4 && declared * 5 > msg.len() {
        return Err(Error::Malformed);
    }
    let mut m = Message {
        id,
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0xf) as u8,
        rcode: flags & 0xf,
        truncated: flags & 0x0200 != 0,
        authoritative: flags & 0x0400 != 0,
        recursion_desired: flags & 0x0100 != 0,
        questions: Vec::new(),
        answers: Vec::new(),
        authority: Vec::new(),
        additional: Vec::new(),
        authority_count: counts[2],
        additional_count: counts[3],
        edns: None,
    };
    for _ in 0..counts[0].min(MAX_RECORDS as u16) {
        let name = r.name()?;
        let (qtype, qclass) = (r.u16()?, r.u16()?);
        m.questions.push(Question { name, qtype, qclass });
    }
    let records = usize::from(counts[1]) + usize::from(counts[2]) + usize::from(counts[3]);
    for i in 0..records.min(MAX_RECORDS * 3) {
        // A message cut short after the answers still says what it answered.
        let Ok(name) = r.name() else { break };
        let Ok(rtype) = r.u16() else { break };
        let Ok(class) = r.u16() else { break };
        let Ok(ttl) = r.u32() else { break };
        let Ok(len) = r.u16() else { break };
        let start = r.at;
        if r.bytes(usize::from(len)).is_err() {
            break;
        }
        if rtype == 41 {
            // OPT: class is the UDP size, the TTL holds the extended rcode.
            m.rcode |= ((ttl >> 24) as u16) << 4;
            m.edns = Some(Edns { udp_size: class, version: (ttl >> 16) as u8, dnssec_ok: ttl & 0x8000 != 0 });
            continue;
        }
        let data = rdata(msg, start, usize::from(len), rtype).unwrap_or_else(|_| format!("\\# {len}"));
        let answer = Answer { name, rtype, ttl, data };
        if i < usize::from(counts[1]) {
            m.answers.push(answer);
        } else if i < usize::from(counts[1]) + usize::from(counts[2]) {
            m.authority.push(answer);
        } else {
            m.additional.push(answer);
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m
    }

    #[test]
    fn query_and_compressed_answer() {
        let mut m = query(7, "api.shop.svc", 1);
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 2;
        // answer 1: CNAME via pointer to the question name
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6, 3, b'w', b'e', b'b', 0xc0, 16]);
        // answer 2: A
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 0, 0, 7]);
        let msg = parse(&m).unwrap();
        assert!(msg.response);
        assert_eq!(msg.questions[0].name, "api.shop.svc");
        assert_eq!(msg.answers[0].data, "web.shop.svc");
        assert_eq!(msg.answers[1].data, "10.0.0.7");
        assert_eq!(msg.answers[1].ttl, 30);
    }

    #[test]
    fn pointer_loop_is_malformed() {
        let mut m = query(1, "a", 1);
        let q = m.len() - 7;
        m[q] = 0xc0;
        m[q + 1] = q as u8;
        assert_eq!(parse(&m), Err(Error::Malformed));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 7u32;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 24) as u8
                })
                .collect();
            let _ = parse(&bytes);
        }
    }
}
