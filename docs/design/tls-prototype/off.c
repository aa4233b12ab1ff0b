#include <openssl/ssl.h>
#include <stdio.h>
int main(void){
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  SSL *s = SSL_new(ctx);
  SSL_set_fd(s, 4242);
  void *rbio = *(void**)((char*)s + 0x10);
  printf("%s rbio@0x10=%p SSL_get_rbio=%p num@0x38=%d num@0x30=%d\n", OpenSSL_version(OPENSSL_VERSION), rbio, (void*)SSL_get_rbio(s), *(int*)((char*)rbio+0x38), *(int*)((char*)rbio+0x30));
  return 0;
}
