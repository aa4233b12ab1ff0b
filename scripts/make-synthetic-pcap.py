#!/usr/bin/env python3
"""Writes a synthetic capture for UI benchmarks: N hosts and E TCP
connections between them (a SYN and a SYN/ACK each), so the L4 map by pod
has N nodes and E edges. Standard library only.

    scripts/make-synthetic-pcap.py OUT.pcap [HOSTS=2000] [EDGES=5000]
"""
import struct
import sys


def ip(i):
    return bytes([10, 1 + i // 65536 % 200, i // 256 % 256, i % 256])


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def packet(src, dst, sport, dport, flags):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0 if flags == 0x02 else 1001, 5 << 4, flags, 65535, 0, 0)
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    iph = iph[:10] + struct.pack("!H", checksum(iph)) + iph[12:]
    eth = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00"
    return eth + iph + tcp


def main():
    out = sys.argv[1]
    hosts = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    edges = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        t = 1_780_000_000.0
        seen = set()
        e = 0
        k = 0
        while len(seen) < edges:
            c, s = e % hosts, (e * 7 + 1 + k) % hosts
            e += 1
            if e % hosts == 0:
                k += 1
            if c == s or (c, s) in seen:
                continue
            seen.add((c, s))
            for (a, b, sp, dp, fl) in [(c, s, 40000 + len(seen) % 20000, 8080, 0x02), (s, c, 8080, 40000 + len(seen) % 20000, 0x12)]:
                p = packet(ip(a), ip(b), sp, dp, fl)
                t += 0.0001
                f.write(struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(p), len(p)))
                f.write(p)


main()
