//! Who may use the API, against a real `trawl serve` and a real `trawl
//! hub`: without a token, 401 on the map, the WebSocket, the metrics and
//! the capture-filter PUT; a read token reads and gets 403 on the PUT; the
//! admin token does both. Probes stay open and say nothing about traffic.
//! With no token on loopback, a foreign `Host` (DNS rebinding) is refused;
//! a non-loopback address without a token does not start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::process::{Command, Stdio};
use support::{Terminated, free_port, wait_for};

const READ: &str = "read-t0ken";
const ADMIN: &str = "admin-t0ken";

/// `curl` a request; returns the HTTP status and the body.
fn status(port: u16, method: &str, path: &str, token: Option<&str>, host: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(h) = host {
        c.args(["-H", &format!("Host: {h}")]);
    }
    if method == "PUT" {
        c.args(["-H", "content-type: application/json", "-d", r#"{"namespaces":["default"]}"#]);
    }
    let out = c.arg(format!("http://127.0.0.1:{port}{path}")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

/// The status of a WebSocket handshake on `/api/ws`, with the token in
/// `Authorization`, in the subprotocol list, or nowhere.
fn ws_status(port: u16, header: Option<&str>, subprotocol: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://127.0.0.1:{port}/api/ws").into_client_request().unwrap();
    if let Some(t) = header {
        req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    if let Some(t) = subprotocol {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
        req.headers_mut().insert("sec-websocket-protocol", format!("trawl, trawl.bearer.{encoded}").parse().unwrap());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        match tokio_tungstenite::connect_async(req).await {
            Ok((_, resp)) => {
                if subprotocol.is_some() {
                    assert_eq!(resp.headers()["sec-websocket-protocol"], "trawl", "the server names the subprotocol");
                }
                resp.status().as_u16()
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
            Err(e) => panic!("WebSocket to {port}: {e}"),
        }
    })
}

/// Every rule of the acceptance list, on one server.
fn check_tokens(port: u16) {
    for path in ["/api/map", "/api/map?map=l7", "/metrics", "/api/plugins", "/api/health"] {
        assert_eq!(status(port, "GET", path, None, None).0, 401, "{path} without a token");
        assert_eq!(status(port, "GET", path, Some("wrong"), None).0, 401, "{path} with a wrong token");
        assert_eq!(status(port, "GET", path, Some(READ), None).0, 200, "{path} with the read token");
        assert_eq!(status(port, "GET", path, Some(ADMIN), None).0, 200, "{path} with the admin token");
    }
    let (code, body) = status(port, "GET", "/api/map", None, None);
    assert_eq!(code, 401);
    assert!(body.contains("Bearer") && !body.contains(READ) && !body.contains(ADMIN), "{body}");
    assert_eq!(status(port, "PUT", "/api/capture-filters", None, None).0, 401);
    assert_eq!(status(port, "PUT", "/api/capture-filters", Some(READ), None).0, 403);
    assert_eq!(status(port, "PUT", "/api/capture-filters", Some(ADMIN), None).0, 200);
    assert_eq!(ws_status(port, None, None), 401);
    assert_eq!(ws_status(port, Some("wrong"), None), 401);
    assert_eq!(ws_status(port, Some(READ), None), 101);
    assert_eq!(ws_status(port, None, Some(READ)), 101);
    assert_eq!(ws_status(port, None, Some("wrong")), 401);
    for probe in ["/healthz", "/readyz"] {
        let (code, body) = status(port, "GET", probe, None, None);
        assert_eq!(code, 200, "{probe} is open");
        assert!(body.len() < 16, "{probe} says nothing about traffic: {body}");
    }
    // The UI itself is static and open; it asks for the token.
    assert_eq!(status(port, "GET", "/", None, None).0, 200);
}

#[test]
fn serve_needs_tokens_and_tells_read_from_admin() {
    let (_serve, port) = support::serve_demo(&["--speed", "max", "--api-token", READ, "--admin-token", ADMIN]);
    check_tokens(port);
}

#[test]
fn hub_needs_tokens_and_tells_read_from_admin() {
    let (workers, port) = (free_port(), free_port());
    let _hub = Terminated(
        support::trawl()
            .args(["hub", "--workers", &format!("127.0.0.1:{workers}"), "--listen", &format!("127.0.0.1:{port}")])
            .args(["--token", "w0rker", "--api-token", READ])
            .env("TRAWL_ADMIN_TOKEN", ADMIN)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("trawl hub", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    check_tokens(port);
}

#[test]
fn open_on_loopback_refuses_a_foreign_host() {
    let (_serve, port) = support::serve_demo(&["--speed", "max", "--allowed-host", "trawl.example"]);
    assert_eq!(status(port, "GET", "/api/map", None, None).0, 200, "loopback without a token stays open");
    assert_eq!(status(port, "GET", "/api/map", None, Some(&format!("localhost:{port}"))).0, 200);
    assert_eq!(status(port, "GET", "/api/map", None, Some("trawl.example")).0, 200, "an --allowed-host");
    let (code, body) = status(port, "GET", "/api/map", None, Some(&format!("rebound.example:{port}")));
    assert_eq!(code, 403, "a DNS-rebound name is refused: {body}");
    assert_eq!(status(port, "PUT", "/api/capture-filters", None, Some("rebound.example")).0, 403);
    assert_eq!(status(port, "GET", "/healthz", None, Some("rebound.example")).0, 200, "probes stay open");
}

#[test]
fn a_network_address_without_a_token_does_not_start() {
    let out = support::trawl()
        .args(["serve", "--listen", &format!("0.0.0.0:{}", free_port()), "--replay"])
        .arg(support::project_root().join("examples/demo/demo.pcap"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("without a token") && err.contains("--api-token") && err.contains("--insecure-no-auth"),
        "{err}"
    );
    // --insecure-no-auth insists, loudly.
    let port = free_port();
    let mut serve = Terminated(
        support::trawl()
            .args(["serve", "--insecure-no-auth", "--listen", &format!("0.0.0.0:{port}"), "--replay"])
            .arg(support::project_root().join("examples/demo/demo.pcap"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for("trawl serve", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(serve.0.stderr.as_mut().unwrap()), &mut first).unwrap();
    assert!(first.contains("WARNING") && first.contains("--insecure-no-auth"), "{first}");
}
