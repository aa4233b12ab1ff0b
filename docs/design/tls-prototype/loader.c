// Prototype loader (libbpf), only to check the design on this kernel:
//   loader LIBSSL NETNS_PATH SECONDS
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <arpa/inet.h>

struct tuple { unsigned char local[16], peer[16]; unsigned short lport, pport; unsigned known; };
struct chunk_hdr { unsigned long long ts_ns, ssl; unsigned tgid, netns; struct tuple t; unsigned long long offset; unsigned len, dir; };

static const char *ip(const unsigned char *a, char *buf) {
	if (!memcmp(a, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12)) inet_ntop(AF_INET, a + 12, buf, 64);
	else inet_ntop(AF_INET6, a, buf, 64);
	return buf;
}

static int on_chunk(void *ctx, void *data, size_t size) {
	struct chunk_hdr *h = data;
	char a[64], b[64];
	const char *p = (const char *)(h + 1);
	int line = 0;
	while (line < (int)h->len && line < 100 && p[line] != '\r' && p[line] != '\n') line++;
	printf("tgid=%u netns=%u ssl=%llx %s %s:%u %s %s:%u off=%llu len=%u | %.*s\n", h->tgid, h->netns, h->ssl,
	       h->dir ? "READ " : "WRITE", ip(h->t.local, a), h->t.lport, h->dir ? "<-" : "->", ip(h->t.peer, b),
	       h->t.pport, h->offset, h->len, line, p);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv) {
	if (argc < 4) return 2; /* loader LIB NETNS... SECONDS */
	struct bpf_object *obj = bpf_object__open_file("tls.bpf.o", NULL);
	if (!obj) { perror("open"); return 1; }
	// Only one of the fentry/kprobe pairs is loaded: fentry here (no kprobes).
	const char *mode = getenv("MODE") ? getenv("MODE") : "tp";
	const char *all[] = { "trawl_kprobe_tcp_sendmsg", "trawl_kprobe_tcp_recvmsg", "trawl_fentry_tcp_sendmsg",
			      "trawl_fentry_tcp_recvmsg", "trawl_tp_send_length", "trawl_tp_recv_length" };
	const char *keep = !strcmp(mode, "fentry") ? "fentry" : !strcmp(mode, "kprobe") ? "kprobe" : "_tp_";
	for (int i = 0; i < 6; i++)
		if (!strstr(all[i], keep))
			bpf_program__set_autoload(bpf_object__find_program_by_name(obj, all[i]), false);
	if (bpf_object__load(obj)) { fprintf(stderr, "load failed\n"); return 1; }
	struct { const char *fn, *entry; } probes[] = {
		{ "SSL_write", "trawl_ssl_write" }, { "SSL_read", "trawl_ssl_read" },
		{ "SSL_write_ex", "trawl_ssl_write_ex" }, { "SSL_read_ex", "trawl_ssl_read_ex" },
	};
	for (unsigned i = 0; i < 4; i++) {
		LIBBPF_OPTS(bpf_uprobe_opts, o, .func_name = probes[i].fn, .retprobe = false);
		if (!bpf_program__attach_uprobe_opts(bpf_object__find_program_by_name(obj, probes[i].entry), -1, argv[1], 0, &o)) {
			fprintf(stderr, "uprobe %s failed\n", probes[i].fn); return 1; }
		LIBBPF_OPTS(bpf_uprobe_opts, r, .func_name = probes[i].fn, .retprobe = true);
		if (!bpf_program__attach_uprobe_opts(bpf_object__find_program_by_name(obj, "trawl_ssl_ret"), -1, argv[1], 0, &r)) {
			fprintf(stderr, "uretprobe %s failed\n", probes[i].fn); return 1; }
	}
	for (int i = 0; i < 6; i++)
		if (strstr(all[i], keep) && !bpf_program__attach(bpf_object__find_program_by_name(obj, all[i]))) {
			fprintf(stderr, "attach %s failed\n", all[i]); return 1; }
	{
		LIBBPF_OPTS(bpf_uprobe_opts, o, .func_name = "SSL_free");
		if (!getenv("NOFREE") && !bpf_program__attach_uprobe_opts(bpf_object__find_program_by_name(obj, "trawl_ssl_free"), -1, argv[1], 0, &o)) {
			fprintf(stderr, "uprobe SSL_free failed\n"); return 1; }
	}
	for (int a = 2; a < argc - 1; a++) {
	struct stat st;
	if (stat(argv[a], &st)) { perror("netns"); return 1; }
	unsigned inum = st.st_ino; unsigned char one = 1;
	bpf_map_update_elem(bpf_object__find_map_fd_by_name(obj, "tls_netns"), &inum, &one, BPF_ANY);
	fprintf(stderr, "netns %s=%u\n", argv[a], inum);
	}
	struct ring_buffer *rb = ring_buffer__new(bpf_object__find_map_fd_by_name(obj, "tls_events"), on_chunk, NULL, NULL);
	fprintf(stderr, "ready\n");
	time_t end = time(NULL) + atoi(argv[argc - 1]);
	while (time(NULL) < end) ring_buffer__poll(rb, 100);
	int sfd = bpf_object__find_map_fd_by_name(obj, "tls_stats");
	int ncpu = libbpf_num_possible_cpus();
	for (unsigned k = 0; k < 6; k++) {
		unsigned long long v[256] = {0}, sum = 0;
		bpf_map_lookup_elem(sfd, &k, v);
		for (int c = 0; c < ncpu; c++) sum += v[c];
		printf("stat[%u]=%llu\n", k, sum);
	}
	return 0;
}
