# Shared by the bench and corpus scripts: the head of an nginx.conf that
# runs in the foreground as root with every path under $1 (a scratch dir).
nginx_conf_head() {
    cat <<NGINX
daemon off;
user root;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/nginx-error.log;
events { worker_connections 1024; }
NGINX
}

# The temp paths of an nginx http block, under $1.
nginx_temp_paths() {
    for kind in client_body proxy fastcgi uwsgi scgi; do echo "    ${kind}_temp_path $1/$kind;"; done
}

# An nginx.conf up to the inside of its http block (no access log), under $1.
nginx_http_head() {
    nginx_conf_head "$1"
    echo "http {"
    echo "    access_log off;"
    nginx_temp_paths "$1"
}
