/* A TLS client with OpenSSL linked in statically, for tests/live_tls.rs:
 * trawl must find OpenSSL in the executable itself (no libssl.so mapped).
 *   static_tls_client IP PORT PATH_PREFIX COUNT DELAY_SECONDS
 * waits DELAY_SECONDS (so trawl's scan finds it), then makes COUNT HTTP/1.1
 * requests over TLS, one connection each, and prints each status line. */
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 6)
		return 2;
	sleep((unsigned)atoi(argv[5]));
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		return 1;
	for (int i = 0; i < atoi(argv[4]); i++) {
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2])) };
		if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1)
			return 1;
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
			return 1;
		SSL *ssl = SSL_new(ctx);
		SSL_set_fd(ssl, fd);
		if (SSL_connect(ssl) != 1)
			return 1;
		char req[256], buf[4096];
		int n = snprintf(req, sizeof(req), "GET %s/%d HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", argv[3], i,
				 argv[1]);
		if (SSL_write(ssl, req, n) != n)
			return 1;
		int got, first = 1;
		while ((got = SSL_read(ssl, buf, sizeof(buf) - 1)) > 0) {
			if (first) {
				buf[got] = 0;
				char *eol = strstr(buf, "\r\n");
				if (eol)
					*eol = 0;
				printf("%s\n", buf);
				first = 0;
			}
		}
		SSL_shutdown(ssl);
		SSL_free(ssl);
		close(fd);
	}
	SSL_CTX_free(ctx);
	return 0;
}
