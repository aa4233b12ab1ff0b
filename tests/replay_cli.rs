#![allow(clippy::unwrap_used, clippy::expect_used)]
mod support;
#[test]
fn placeholder_cli() {}
