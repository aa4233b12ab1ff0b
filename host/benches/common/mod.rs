//! The first-party dissectors linked natively (dev-dependencies only: the
//! product binary loads its plugins, it never links them), for benches
//! that compare them with the sandboxed wasm builds.

use std::sync::Arc;
use trawl_host::plugins::SharedPlugin;
use trawl_host::plugins::native::native_plugin;

pub(crate) fn native_first_party() -> Vec<SharedPlugin> {
    vec![
        Arc::new(native_plugin::<trawl_plugin_http::Http>()),
        Arc::new(native_plugin::<trawl_plugin_dns::Dns>()),
        Arc::new(native_plugin::<trawl_plugin_redis::Redis>()),
        Arc::new(native_plugin::<trawl_plugin_kafka::Kafka>()),
        Arc::new(native_plugin::<trawl_plugin_grpc::Grpc>()),
    ]
}
