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
#define FLAG_RST 8 // RST seen: this direction's sender reset the connection

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
		if (tcp->rst)
			*flags |= FLAG_RST;
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

// ---- TCP health, from the kernel's own view of each socket ------------
//
// As Coroot does: `tcp:tcp_retransmit_skb` counts the segments a socket
// sends again, and `sock:inet_sock_set_state` times each connect (from
// SYN_SENT to ESTABLISHED: the handshake's round trip as the client sees
// it) and counts those that never got there (SYN_SENT to CLOSE: refused,
// or never answered). Both fire for every socket on the node, pods' too,
// and are keyed like `flows`: the socket's own address as `src`, so
// userspace joins them to the same flows. Resets come from the packets
// (FLAG_RST above).

struct tcp_health {
	__u64 retransmits;     // segments this socket sent again
	__u64 failed_connects; // connects that ended before ESTABLISHED
	__u64 handshakes;      // connects timed, and their round trips
	__u64 rtt_sum_ns;
	__u64 rtt_max_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct tcp_health);
} tcp_health SEC(".maps");

// Sockets in SYN_SENT, by address: when they entered it. (At SYN_SENT the
// source port may not be bound yet, so the tuple is read at the next
// transition.)
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} connecting SEC(".maps");

// The tracepoints' records, as /sys/kernel/tracing/events/*/format gives
// them (stable since Linux 4.16; later kernels only append fields).
struct tp_retransmit_skb {
	__u64 common;
	const void *skbaddr;
	const void *skaddr;
	int state;
	__u16 sport; // host byte order
	__u16 dport;
	__u16 family;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
};

struct tp_inet_sock_set_state {
	__u64 common;
	const void *skaddr;
	int oldstate;
	int newstate;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 protocol;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
};

#define AF_INET 2
#define AF_INET6 10
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7

static __always_inline int socket_key(struct flow_key *key, __u16 family, const __u8 *s4, const __u8 *d4,
				      const __u8 *s6, const __u8 *d6, __u16 sport, __u16 dport)
{
	if (family == AF_INET) {
		// Copied out first: the record's addresses are not 4-byte aligned.
		__u32 src, dst;
		__builtin_memcpy(&src, s4, 4);
		__builtin_memcpy(&dst, d4, 4);
		v4_mapped(key->src, src);
		v4_mapped(key->dst, dst);
	} else if (family == AF_INET6) {
		__builtin_memcpy(key->src, s6, 16);
		__builtin_memcpy(key->dst, d6, 16);
	} else {
		return 0;
	}
	key->sport = sport;
	key->dport = dport;
	key->proto = IPPROTO_TCP;
	return 1;
}

static __always_inline struct tcp_health *health_of(struct flow_key *key)
{
	struct tcp_health *h = bpf_map_lookup_elem(&tcp_health, key);
	if (h)
		return h;
	struct tcp_health zero = {};
	bpf_map_update_elem(&tcp_health, key, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&tcp_health, key);
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int trawl_retransmit(struct tp_retransmit_skb *ctx)
{
	struct flow_key key = {};
	if (!socket_key(&key, ctx->family, ctx->saddr, ctx->daddr, ctx->saddr_v6, ctx->daddr_v6, ctx->sport,
			ctx->dport))
		return 0;
	struct tcp_health *h = health_of(&key);
	if (h)
		__sync_fetch_and_add(&h->retransmits, 1);
	return 0;
}

SEC("tracepoint/sock/inet_sock_set_state")
int trawl_sock_state(struct tp_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	__u64 sk = (__u64)(long)ctx->skaddr;
	if (ctx->newstate == TCP_SYN_SENT) {
		__u64 now = bpf_ktime_get_ns();
		bpf_map_update_elem(&connecting, &sk, &now, BPF_ANY);
		return 0;
	}
	if (ctx->oldstate != TCP_SYN_SENT)
		return 0;
	__u64 *start = bpf_map_lookup_elem(&connecting, &sk);
	if (!start)
		return 0;
	__u64 took = bpf_ktime_get_ns() - *start;
	bpf_map_delete_elem(&connecting, &sk);
	struct flow_key key = {};
	if (!socket_key(&key, ctx->family, ctx->saddr, ctx->daddr, ctx->saddr_v6, ctx->daddr_v6, ctx->sport,
			ctx->dport))
		return 0;
	struct tcp_health *h = health_of(&key);
	if (!h)
		return 0;
	if (ctx->newstate == TCP_ESTABLISHED) {
		__sync_fetch_and_add(&h->handshakes, 1);
		__sync_fetch_and_add(&h->rtt_sum_ns, took);
		if (took > h->rtt_max_ns)
			h->rtt_max_ns = took;
	} else if (ctx->newstate == TCP_CLOSE) {
		__sync_fetch_and_add(&h->failed_connects, 1);
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
