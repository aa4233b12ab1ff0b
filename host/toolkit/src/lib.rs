//! The plugin toolkit behind `trawl plugin …`: what a protocol author
//! needs besides the SDK.
//!
//! - [`scaffold`]: `trawl plugin new`, a complete plugin crate with the SDK
//!   (and its dependencies) alongside, so it builds offline;
//! - [`builder`]: `trawl plugin build`, the wasm in release mode, checked
//!   the way the agent checks it;
//! - [`conformance`]: `trawl plugin test`, the plugin in the agent's sandbox
//!   over captures, with records, a report and golden files.
#![forbid(unsafe_code)]

pub mod builder;
pub mod bundle;
pub mod conformance;
pub mod scaffold;
