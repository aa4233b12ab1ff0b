//! `trawl mcp`: the MCP server over stdio, reading a hub's (or a `serve`'s)
//! API, for an assistant that starts it as a subprocess.

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub(crate) struct McpArgs {
    /// The API to read: a hub's or `trawl serve`'s base URL (for example a
    /// `kubectl port-forward` to the hub).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8899")]
    url: String,
    /// The API's read token, if it needs one.
    #[arg(long, env = "TRAWL_API_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    api_token: Option<String>,
}

pub(crate) fn run(a: McpArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.url.starts_with("http://"),
        "--url {}: only http:// is read (use a port-forward, or the hub's in-cluster address)",
        a.url
    );
    trawl_mcp::run_stdio(&a.url, a.api_token.filter(|t| !t.is_empty())).context("the MCP session failed")
}
