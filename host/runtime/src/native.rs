//! The same dissector crates linked natively: no sandbox, no copies. Used to
//! measure what the sandbox costs, and by tests that compare the two.

use super::{InstanceFactory, LoadError, LoadedPlugin, PluginFault, PluginInstance, PluginSource};
use std::marker::PhantomData;
use trawl_sdk::abi::{ConnMeta, DataResult, Dir, L4, Probe};
use trawl_sdk::{Dissector, Guest};

struct NativeInstance<D: Dissector> {
    guest: Guest<D>,
}

impl<D: Dissector + Send> PluginInstance for NativeInstance<D>
where
    D::Conn: Send,
{
    fn configure(&mut self, config: &trawl_sdk::redact::PluginConfig) -> Result<(), PluginFault> {
        self.guest.configure(config.clone());
        Ok(())
    }
    fn probe(&mut self, l4: L4, dir: Dir, bytes: &[u8]) -> Result<Probe, PluginFault> {
        Ok(Guest::<D>::probe(l4, dir, bytes))
    }
    fn open(&mut self, conn: u64, meta: &ConnMeta) -> Result<DataResult, PluginFault> {
        Ok(self.guest.open(conn, meta.clone()))
    }
    fn data(
        &mut self,
        conn: u64,
        dir: Dir,
        flags: u32,
        ts: u64,
        bytes: &[u8],
        gap: u64,
    ) -> Result<DataResult, PluginFault> {
        Ok(self.guest.data(conn, dir, flags, ts, bytes, gap))
    }
    fn datagram(&mut self, conn: u64, dir: Dir, ts: u64, bytes: &[u8]) -> Result<DataResult, PluginFault> {
        Ok(self.guest.datagram(conn, dir, ts, bytes))
    }
    fn close(&mut self, conn: u64, ts: u64) -> Result<DataResult, PluginFault> {
        Ok(self.guest.close(conn, ts))
    }
    fn tick(&mut self, ts: u64) -> Result<DataResult, PluginFault> {
        Ok(self.guest.tick(ts))
    }
}

struct NativeFactory<D>(PhantomData<fn() -> D>);

impl<D: Dissector + Send> InstanceFactory for NativeFactory<D>
where
    D::Conn: Send,
{
    fn instantiate(&self) -> Result<Box<dyn PluginInstance>, LoadError> {
        Ok(Box::new(NativeInstance::<D> { guest: Guest::default() }))
    }
}

/// A natively linked dissector as a loadable plugin.
pub fn native_plugin<D: Dissector + Send>() -> LoadedPlugin
where
    D::Conn: Send,
{
    let info = Guest::<D>::info();
    LoadedPlugin {
        abi: trawl_sdk::abi::ABI_VERSION,
        hash: format!("native:{}:{}", info.name, info.version),
        info,
        fields: D::fields().map(|names| names.iter().map(|n| n.to_string()).collect()),
        source: PluginSource::Native,
        factory: Box::new(NativeFactory::<D>(PhantomData)),
    }
}

/// The first-party dissectors, linked natively: only in a build with the
/// `native-plugins` feature (benchmarks of the whole CLI); the product
/// loads its plugins and never links them.
#[cfg(feature = "native-plugins")]
pub fn first_party() -> Vec<LoadedPlugin> {
    vec![
        native_plugin::<trawl_plugin_http::Http>(),
        native_plugin::<trawl_plugin_dns::Dns>(),
        native_plugin::<trawl_plugin_redis::Redis>(),
        native_plugin::<trawl_plugin_kafka::Kafka>(),
        native_plugin::<trawl_plugin_grpc::Grpc>(),
    ]
}
