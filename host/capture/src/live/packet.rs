//! AF_PACKET with a TPACKET_V3 ring: the payload path for targeted pods.
//!
//! The kernel fills blocks of a ring shared by mmap and hands each block
//! over whole (or when it has waited `RETIRE_MS`); reading costs no copy
//! and no syscall per packet. The ring is the only unsafe code here: the
//! socket calls and reading blocks the kernel has marked as ours.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// How long the kernel keeps a partly filled block before handing it over.
const RETIRE_MS: u32 = 50;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TPACKET_V3: libc::c_int = 2;
/// sizeof(struct tpacket3_hdr) rounded to TPACKET_ALIGNMENT: where the
/// sockaddr_ll with the packet type follows.
const SLL_OFFSET: usize = 48;

/// One packet, borrowed from the ring until the callback returns.
#[derive(Debug)]
pub struct PacketView<'a> {
    pub ts_ns: u64,
    /// The frame from its link header on (Ethernet on a veth).
    pub data: &'a [u8],
    pub wire_len: u32,
    /// Sent by the host into the interface (on a pod's host-side veth:
    /// the pod receives it), rather than received from it.
    pub outgoing: bool,
}

/// A TPACKET_V3 ring bound to one interface.
#[derive(Debug)]
pub struct PacketRing {
    fd: OwnedFd,
    map: *mut u8,
    block_size: usize,
    blocks: usize,
    next: usize,
    pub iface: String,
    /// Packets the kernel dropped because the ring was full.
    drops: u64,
}

// SAFETY: the ring is only touched through `&mut self`; the mapping and the
// socket belong to it alone, so moving it to another thread is sound.
unsafe impl Send for PacketRing {}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed.
    check(unsafe {
        libc::setsockopt(fd, level, name, (value as *const T).cast(), std::mem::size_of::<T>() as libc::socklen_t)
    })
    .map(|_| ())
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

impl PacketRing {
    /// Opens a ring of `blocks` blocks of `block_size` bytes (a power of
    /// two, at least a page) on `iface`.
    pub fn open(iface: &str, block_size: usize, blocks: usize) -> io::Result<Self> {
        let name = std::ffi::CString::new(iface).map_err(|_| io::Error::other("interface name has a NUL"))?;
        // SAFETY: if_nametoindex reads a NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the fd is owned right after.
        let raw = check(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto.into()) })?;
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V3)?;
        let req = libc::tpacket_req3 {
            tp_block_size: block_size as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: 2048,
            tp_frame_nr: (block_size / 2048 * blocks) as u32,
            tp_retire_blk_tov: RETIRE_MS,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
        let size = block_size * blocks;
        // SAFETY: maps the ring the kernel just allocated for this socket.
        let map = unsafe {
            libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, raw, 0)
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ring = PacketRing { fd, map: map.cast(), block_size, blocks, next: 0, iface: iface.to_string(), drops: 0 };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: binds to a sockaddr_ll of the size passed.
        check(unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(ring)
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Hands every packet of the next block to `f` if the kernel has
    /// released it, and returns the block to the kernel. Returns how many
    /// packets there were (0: nothing ready; poll the fd and call again).
    pub fn read_block(&mut self, mut f: impl FnMut(PacketView<'_>)) -> usize {
        // SAFETY: `next < blocks`, so the block lies inside the mapping.
        let block = unsafe { self.map.add(self.next * self.block_size) };
        // SAFETY: block_status is an aligned u32 at offset 8 of the block
        // descriptor, written by the kernel: read it atomically.
        let status = unsafe { &*(block.add(8).cast::<AtomicU32>()) };
        if status.load(Ordering::Acquire) & TP_STATUS_USER == 0 {
            return 0;
        }
        // SAFETY: the kernel set TP_STATUS_USER: the block is ours to read
        // until we hand it back below, and nothing else writes to it.
        let b = unsafe { std::slice::from_raw_parts(block, self.block_size) };
        let count = u32_at(b, 12).unwrap_or(0) as usize;
        let mut off = u32_at(b, 16).unwrap_or(0) as usize;
        for _ in 0..count {
            let (Some(next), Some(sec), Some(nsec), Some(snap), Some(len), Some(mac)) = (
                u32_at(b, off),
                u32_at(b, off + 4),
                u32_at(b, off + 8),
                u32_at(b, off + 12),
                u32_at(b, off + 16),
                u16_at(b, off + 24),
            ) else {
                break;
            };
            let start = off + usize::from(mac);
            let Some(data) = b.get(start..start + snap as usize) else { break };
            let pkttype = b.get(off + SLL_OFFSET + 10).copied().unwrap_or(0);
            f(PacketView {
                ts_ns: u64::from(sec) * 1_000_000_000 + u64::from(nsec),
                data,
                wire_len: len,
                outgoing: pkttype == libc::PACKET_OUTGOING,
            });
            if next == 0 {
                break;
            }
            off += next as usize;
        }
        status.store(TP_STATUS_KERNEL, Ordering::Release);
        self.next = (self.next + 1) % self.blocks;
        count
    }

    /// Packets dropped because the ring was full, since it opened.
    pub fn drops(&mut self) -> u64 {
        // SAFETY: tpacket_stats_v3 is plain data; zero is valid.
        let mut st: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `st`.
        let rc = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        // The kernel resets its counters on each read: keep the sum.
        if rc == 0 {
            self.drops += u64::from(st.tp_drops);
        }
        self.drops
    }
}

impl Drop for PacketRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`; no view of it
        // outlives `read_block`.
        unsafe {
            libc::munmap(self.map.cast(), self.block_size * self.blocks);
        }
    }
}

/// Waits until one of `rings` may have a block ready, or `timeout_ms`.
pub fn wait_any(rings: &[PacketRing], timeout_ms: i32) {
    let mut fds: Vec<libc::pollfd> =
        rings.iter().map(|r| libc::pollfd { fd: r.fd(), events: libc::POLLIN | libc::POLLERR, revents: 0 }).collect();
    if fds.is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(timeout_ms.max(0) as u64));
        return;
    }
    // SAFETY: `fds` is a live array of the length passed.
    unsafe {
        libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms);
    }
}
