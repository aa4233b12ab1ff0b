//! Capture sources. Each one feeds frames to a `trawl_core::Engine`.

pub mod file;
pub mod live;

pub use file::{CaptureError, CaptureFile, Frame};
