// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// trawl's L4 flow counters: packets and bytes per directional 5-tuple,
// counted on each workload's host-side interface before any targeting
// check, so the L4 map covers every workload.
//
// Every packet counts once on a node. A workload's host-side interface
// sees the packets it sends (TC ingress: they enter the host) and the
// packets it receives (TC egress). Sent packets always count. Received
// packets count only when their sender is not a workload whose sends are
// counted (userspace lists those IPs in `counted_senders`): two pods on
// one node would otherwise count each packet at both of their interfaces,
// and two pods on two nodes at both nodes.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Shared with userspace (ebpf/src/lib.rs): keep the layouts in step.
struct flow_key {
	__u8 src[16]; // IPv4 as ::ffff:a.b.c.d
	__u8 dst[16];
	__u16 sport; // host byte order
	__u16 dport;
	__u8 proto; // IPPROTO_TCP or IPPROTO_UDP
	__u8 pad[3];
};

#define FLAG_SYN 1 // a SYN without ACK: this direction is the client's
#define FLAG_FIN 2 // FIN or RST seen
#define FLAG_SYNACK 4

struct flow_counters {
	__u64 packets;
	__u64 bytes;    // frame length, link header included
	__u64 ip_bytes; // IP datagram length
	__u64 first_ns; // bpf_ktime_get_ns of the first and last packet
	__u64 last_ns;
	__u64 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_counters);
} flows SEC(".maps");

// IPs (as ::ffff:a.b.c.d for IPv4) whose sent packets are counted at
// their own interface; the value is unused.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u8[16]);
	__type(value, __u8);
} counted_senders SEC(".maps");

// Packets seen and packets not counted (not IP, not TCP/UDP, truncated
// headers), for the drop counters: index 0 seen, 1 skipped, 2 map full.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void bump(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

static __always_inline void v4_mapped(__u8 out[16], __u32 addr)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &addr, 4);
}

// Parses the packet into `key`; returns the IP datagram length, or 0 when
// it is not a TCP/UDP packet this program counts.
static __always_inline __u32 parse(struct __sk_buff *skb, struct flow_key *key, __u64 *flags)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return 0;
	void *l4;
	__u32 ip_len;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return 0;
		// Fragments after the first carry no ports.
		if (ip->frag_off & bpf_htons(0x1fff))
			return 0;
		key->proto = ip->protocol;
		v4_mapped(key->src, ip->saddr);
		v4_mapped(key->dst, ip->daddr);
		l4 = (void *)ip + ip->ihl * 4;
		ip_len = bpf_ntohs(ip->tot_len);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return 0;
		// Extension headers are not walked: such packets are skipped.
		key->proto = ip6->nexthdr;
		__builtin_memcpy(key->src, &ip6->saddr, 16);
		__builtin_memcpy(key->dst, &ip6->daddr, 16);
		l4 = ip6 + 1;
		ip_len = bpf_ntohs(ip6->payload_len) + sizeof(struct ipv6hdr);
	} else {
		return 0;
	}
	if (key->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > end)
			return 0;
		key->sport = bpf_ntohs(tcp->source);
		key->dport = bpf_ntohs(tcp->dest);
		if (tcp->syn && !tcp->ack)
			*flags |= FLAG_SYN;
		if (tcp->syn && tcp->ack)
			*flags |= FLAG_SYNACK;
		if (tcp->fin || tcp->rst)
			*flags |= FLAG_FIN;
	} else if (key->proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > end)
			return 0;
		key->sport = bpf_ntohs(udp->source);
		key->dport = bpf_ntohs(udp->dest);
	} else {
		return 0;
	}
	return ip_len;
}

static __always_inline int count(struct __sk_buff *skb, int received)
{
	bump(0);
	struct flow_key key = {};
	__u64 flags = 0;
	// Headers may sit beyond the linear part of a GSO packet.
	bpf_skb_pull_data(skb, 14 + 40 + 60);
	__u32 ip_len = parse(skb, &key, &flags);
	if (!ip_len) {
		bump(1);
		return TC_ACT_UNSPEC;
	}
	if (received && bpf_map_lookup_elem(&counted_senders, key.src))
		return TC_ACT_UNSPEC;
	__u64 now = bpf_ktime_get_ns();
	struct flow_counters *c = bpf_map_lookup_elem(&flows, &key);
	if (c) {
		__sync_fetch_and_add(&c->packets, 1);
		__sync_fetch_and_add(&c->bytes, skb->len);
		__sync_fetch_and_add(&c->ip_bytes, ip_len);
		c->last_ns = now;
		if (flags)
			__sync_fetch_and_or(&c->flags, flags);
		return TC_ACT_UNSPEC;
	}
	struct flow_counters fresh = {
		.packets = 1,
		.bytes = skb->len,
		.ip_bytes = ip_len,
		.first_ns = now,
		.last_ns = now,
		.flags = flags,
	};
	if (bpf_map_update_elem(&flows, &key, &fresh, BPF_NOEXIST) != 0) {
		// Another CPU created it first: add to that one.
		c = bpf_map_lookup_elem(&flows, &key);
		if (c) {
			__sync_fetch_and_add(&c->packets, 1);
			__sync_fetch_and_add(&c->bytes, skb->len);
			__sync_fetch_and_add(&c->ip_bytes, ip_len);
		} else {
			bump(2);
		}
	}
	return TC_ACT_UNSPEC;
}

// TC ingress on a workload's host-side interface: the workload sent it.
SEC("classifier")
int trawl_sent(struct __sk_buff *skb)
{
	return count(skb, 0);
}

// TC egress on a workload's host-side interface: the workload receives it.
SEC("classifier")
int trawl_received(struct __sk_buff *skb)
{
	return count(skb, 1);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
