// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// trawl's TLS plaintext: uprobes on OpenSSL's SSL_write/SSL_read (and the
// _ex forms Python uses) copy what a targeted process hands to, or gets
// from, the TLS library, and tie it to the TCP 4-tuple of its socket.
//
// The tuple is learnt in-kernel, not from OpenSSL's structs (their layout
// moves between versions): while an SSL_* call is on the thread, the
// socket operation under it names its `struct sock`. Where that is seen
// depends on the kernel, so three programs share one `learn()`: the
// sock:sock_{send,recv}_length tracepoints (Linux >= 6.3), fentry on
// tcp_sendmsg/tcp_recvmsg, or kprobes on them. Userspace loads the first
// that works. The tuple is kept per {tgid, SSL*}, so later calls served
// from OpenSSL's buffer (no syscall) still find it.
//
// Every chunk carries its offset in its direction's stream: whatever is
// lost (ring full, a fault reading user memory, a call over 64 KiB, bytes
// before the tuple was known) becomes a hole that userspace turns into a
// gap, and is summed in tls_stats too.
//
// Only processes whose network namespace is in tls_netns (the targeted
// pods') are looked at: the probes sit on a library's inode, which every
// process using it shares.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define CHUNK 16384 // bytes per ring record (a TLS record's plaintext at most)
#define MAX_CHUNKS 4 // a call moving more than 64 KiB: the rest is a gap
#define DIR_WRITE 0 // local to peer
#define DIR_READ 1 // peer to local
#define DIR_CLOSE 2 // SSL_free: no bytes follow
#define DIR_SNI 3 // the server name the connection asked for follows
#define SSL_CTRL_SET_TLSEXT_HOSTNAME 55
#define MAX_SNI 256

// Only what is read, relocated against the running kernel's BTF (CO-RE).
struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));
struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));
struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));
struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));
struct nsproxy {
	struct net *net_ns;
} __attribute__((preserve_access_index));
struct task_struct {
	struct nsproxy *nsproxy;
} __attribute__((preserve_access_index));

struct tuple {
	__u8 local[16]; // IPv4 as ::ffff:a.b.c.d
	__u8 peer[16];
	__u16 lport; // host byte order
	__u16 pport;
	__u32 known;
};

struct call {
	__u64 ssl;
	__u64 buf;
	__u64 len_ptr; // size_t * of the _ex calls, 0 otherwise
	__u32 dir;     // 0 SSL_write (local to peer), 1 SSL_read
	__u32 netns;
};

struct conn_key {
	__u32 tgid;
	__u32 pad;
	__u64 ssl;
};

struct conn {
	struct tuple t;
	__u64 seq[2]; // bytes so far per direction: lost records show as holes
};

struct chunk_hdr {
	__u64 ts_ns;
	__u64 ssl;
	__u32 tgid;
	__u32 netns;
	struct tuple t;
	__u64 offset; // of this chunk in its direction's stream
	__u32 len;    // bytes that follow
	__u32 dir;
};

struct chunk {
	struct chunk_hdr h;
	__u8 data[CHUNK];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} tls_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct call);
} tls_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, struct conn);
} tls_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct chunk);
} tls_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} tls_events SEC(".maps");

// Shared with userspace (ebpf/src/tls.rs): 0 calls seen, 1 calls before the
// tuple was known, 2 read faults, 3 ring full, 4 bytes lost, 5 truncated calls
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 6);
	__type(key, __u32);
	__type(value, __u64);
} tls_stats SEC(".maps");

static __always_inline void add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&tls_stats, &idx);
	if (v)
		*v += n;
}

static __always_inline __u32 current_netns(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	return BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
}

// The caller's network namespace if it is a targeted pod's, else 0.
static __always_inline __u32 targeted_netns(void)
{
	__u32 netns = current_netns();
	return bpf_map_lookup_elem(&tls_netns, &netns) ? netns : 0;
}

static __always_inline int enter(void *ssl, void *buf, void *len_ptr, __u32 dir)
{
	__u32 netns = targeted_netns();
	if (!netns)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	struct call c = { .ssl = (__u64)ssl, .buf = (__u64)buf, .len_ptr = (__u64)len_ptr, .dir = dir, .netns = netns };
	bpf_map_update_elem(&tls_calls, &id, &c, BPF_ANY);
	return 0;
}

static __always_inline void v4_mapped(__u8 out[16], __u32 addr)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &addr, 4);
}

static __always_inline int same(const struct tuple *a, const struct tuple *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	for (int i = 0; i < sizeof(struct tuple) / 8; i++)
		if (x[i] != y[i])
			return 0;
	return 1;
}

// Under an SSL_* call of a targeted process: its socket is this one.
static __always_inline void learn(struct sock *sk)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct call *c = bpf_map_lookup_elem(&tls_calls, &id);
	if (!c)
		return;
	struct conn_key k = { .tgid = id >> 32, .ssl = c->ssl };
	struct conn *cur = bpf_map_lookup_elem(&tls_conns, &k);
	struct conn fresh = {};
	unsigned short family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family == 2) {
		v4_mapped(fresh.t.local, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
		v4_mapped(fresh.t.peer, BPF_CORE_READ(sk, __sk_common.skc_daddr));
	} else if (family == 10) {
		BPF_CORE_READ_INTO(&fresh.t.local, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&fresh.t.peer, sk, __sk_common.skc_v6_daddr);
	} else {
		return;
	}
	fresh.t.lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	fresh.t.pport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	// A socket already closed has lost its local port (inet_put_port):
	// it names no connection any more, so it teaches nothing.
	if (!fresh.t.lport || !fresh.t.pport)
		return;
	fresh.t.known = 1;
	if (cur && cur->t.known) {
		// Same socket: nothing to learn. Another one: the SSL object's
		// address was reused by a new connection, which starts at 0.
		if (same(&cur->t, &fresh.t))
			return;
	} else if (cur) { // chunks before the tuple was known were not sent: keep the count
		fresh.seq[0] = cur->seq[0];
		fresh.seq[1] = cur->seq[1];
	}
	bpf_map_update_elem(&tls_conns, &k, &fresh, BPF_ANY);
}

static __always_inline int leave(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct call *cp = bpf_map_lookup_elem(&tls_calls, &id);
	if (!cp)
		return 0;
	struct call c = *cp;
	bpf_map_delete_elem(&tls_calls, &id);
	add(0, 1);
	int ret = (int)PT_REGS_RC(ctx);
	__u64 total;
	if (c.len_ptr) { // SSL_read_ex/SSL_write_ex: 1 on success, count in *len_ptr
		if (ret != 1)
			return 0;
		if (bpf_probe_read_user(&total, sizeof(total), (void *)c.len_ptr))
			return 0;
	} else {
		if (ret <= 0)
			return 0;
		total = ret;
	}
	struct conn_key k = { .tgid = id >> 32, .ssl = c.ssl };
	struct conn *conn = bpf_map_lookup_elem(&tls_conns, &k);
	if (!conn || !conn->t.known) {
		// No syscall yet on this SSL (cannot happen for the first data);
		// counted, and the bytes become a hole once the tuple is known.
		struct conn fresh = {};
		if (!conn) {
			bpf_map_update_elem(&tls_conns, &k, &fresh, BPF_NOEXIST);
			conn = bpf_map_lookup_elem(&tls_conns, &k);
			if (!conn)
				return 0;
		}
		conn->seq[c.dir & 1] += total;
		add(1, 1);
		add(4, total);
		return 0;
	}
	__u32 zero = 0;
	struct chunk *out = bpf_map_lookup_elem(&tls_scratch, &zero);
	if (!out)
		return 0;
	__u64 start = conn->seq[c.dir & 1];
	conn->seq[c.dir & 1] = start + total;
	out->h.ts_ns = bpf_ktime_get_ns();
	out->h.ssl = c.ssl;
	out->h.tgid = id >> 32;
	out->h.netns = c.netns;
	out->h.t = conn->t;
	out->h.dir = c.dir;
	for (int i = 0; i < MAX_CHUNKS; i++) {
		__u64 off = (__u64)i * CHUNK;
		if (off >= total)
			return 0;
		__u64 n = total - off;
		if (n > CHUNK)
			n = CHUNK;
		out->h.offset = start + off;
		out->h.len = n;
		if (bpf_probe_read_user(out->data, n, (void *)(c.buf + off))) {
			add(2, 1);
			add(4, n);
			continue; // a hole at this offset
		}
		if (bpf_ringbuf_output(&tls_events, out, sizeof(out->h) + n, BPF_RB_NO_WAKEUP)) {
			add(3, 1);
			add(4, n);
		}
	}
	if (total > (__u64)MAX_CHUNKS * CHUNK) {
		add(5, 1);
		add(4, total - (__u64)MAX_CHUNKS * CHUNK);
	}
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(trawl_ssl_write, void *ssl, void *buf, int num)
{
	return enter(ssl, buf, 0, DIR_WRITE);
}

SEC("uprobe")
int BPF_KPROBE(trawl_ssl_read, void *ssl, void *buf, int num)
{
	return enter(ssl, buf, 0, DIR_READ);
}

SEC("uprobe")
int BPF_KPROBE(trawl_ssl_write_ex, void *ssl, void *buf, __u64 num, void *written)
{
	return enter(ssl, buf, written, DIR_WRITE);
}

SEC("uprobe")
int BPF_KPROBE(trawl_ssl_read_ex, void *ssl, void *buf, __u64 num, void *readbytes)
{
	return enter(ssl, buf, readbytes, DIR_READ);
}

// The object is gone: its address may come back for another connection.
SEC("uprobe")
int BPF_KPROBE(trawl_ssl_free, void *ssl)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = { .tgid = id >> 32, .ssl = (__u64)ssl };
	struct conn *conn = bpf_map_lookup_elem(&tls_conns, &k);
	if (!conn)
		return 0;
	// Tell userspace the stream ended (a header with no bytes), so its
	// records finish now rather than at the idle timeout.
	if (conn->t.known) {
		struct chunk_hdr h = { .ts_ns = bpf_ktime_get_ns(), .ssl = (__u64)ssl, .tgid = id >> 32, .t = conn->t, .dir = DIR_CLOSE };
		h.netns = current_netns();
		h.offset = conn->seq[0];
		bpf_ringbuf_output(&tls_events, &h, sizeof(h), BPF_RB_NO_WAKEUP);
	}
	bpf_map_delete_elem(&tls_conns, &k);
	return 0;
}

// The server name (SNI), as a header with the name after it. It needs no
// tuple: it comes before the connection's first chunk from this process
// (the ring is causal within a process), and userspace keeps it by SSL*.
static __always_inline void send_sni(__u64 id, __u64 ssl, const void *name, __u32 netns)
{
	__u32 zero = 0;
	struct chunk *out = bpf_map_lookup_elem(&tls_scratch, &zero);
	if (!out)
		return;
	long n = bpf_probe_read_user_str(out->data, MAX_SNI, name);
	if (n <= 1)
		return;
	n -= 1; // without the NUL
	if (n > MAX_SNI - 1)
		n = MAX_SNI - 1;
	__builtin_memset(&out->h, 0, sizeof(out->h));
	out->h.ts_ns = bpf_ktime_get_ns();
	out->h.ssl = ssl;
	out->h.tgid = id >> 32;
	out->h.netns = netns;
	out->h.len = n;
	out->h.dir = DIR_SNI;
	bpf_ringbuf_output(&tls_events, out, sizeof(out->h) + (n & (MAX_SNI - 1)), BPF_RB_NO_WAKEUP);
}

// A client names the server: SSL_set_tlsext_host_name is SSL_ctrl(s, 55, 0, name).
SEC("uprobe")
int BPF_KPROBE(trawl_ssl_ctrl, void *ssl, int cmd, long larg, void *parg)
{
	if (cmd != SSL_CTRL_SET_TLSEXT_HOSTNAME || !parg)
		return 0;
	__u32 netns = targeted_netns();
	if (netns)
		send_sni(bpf_get_current_pid_tgid(), (__u64)ssl, parg, netns);
	return 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} tls_servername_calls SEC(".maps");

// A server asks which name the client sent (nginx does in its SNI callback).
SEC("uprobe")
int BPF_KPROBE(trawl_ssl_get_servername, void *ssl)
{
	if (!targeted_netns())
		return 0;
	__u64 id = bpf_get_current_pid_tgid(), s = (__u64)ssl;
	bpf_map_update_elem(&tls_servername_calls, &id, &s, BPF_ANY);
	return 0;
}

SEC("uretprobe")
int trawl_ssl_get_servername_ret(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 *ssl = bpf_map_lookup_elem(&tls_servername_calls, &id);
	if (!ssl)
		return 0;
	__u64 s = *ssl;
	bpf_map_delete_elem(&tls_servername_calls, &id);
	void *name = (void *)PT_REGS_RC(ctx);
	if (name)
		send_sni(id, s, name, current_netns());
	return 0;
}

SEC("uretprobe")
int trawl_ssl_ret(struct pt_regs *ctx)
{
	return leave(ctx);
}

SEC("fentry/tcp_sendmsg")
int BPF_PROG(trawl_fentry_tcp_sendmsg, struct sock *sk)
{
	learn(sk);
	return 0;
}

SEC("fentry/tcp_recvmsg")
int BPF_PROG(trawl_fentry_tcp_recvmsg, struct sock *sk)
{
	learn(sk);
	return 0;
}

SEC("kprobe/tcp_sendmsg")
int BPF_KPROBE(trawl_kprobe_tcp_sendmsg, struct sock *sk)
{
	learn(sk);
	return 0;
}

SEC("kprobe/tcp_recvmsg")
int BPF_KPROBE(trawl_kprobe_tcp_recvmsg, struct sock *sk)
{
	learn(sk);
	return 0;
}

// Linux 6.3+: stable tracepoints in sock_sendmsg/sock_recvmsg carry the sock.
struct tp_sock_length {
	__u64 common;
	struct sock *sk;
	__u16 family;
	__u16 protocol;
	int ret;
	int flags;
};

SEC("tracepoint/sock/sock_send_length")
int trawl_tp_send_length(struct tp_sock_length *ctx)
{
	if (ctx->protocol == 6)
		learn(ctx->sk);
	return 0;
}

SEC("tracepoint/sock/sock_recv_length")
int trawl_tp_recv_length(struct tp_sock_length *ctx)
{
	if (ctx->protocol == 6)
		learn(ctx->sk);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
