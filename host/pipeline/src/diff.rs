//! `trawl replay BEFORE --diff AFTER --emit diff`: the maps of two
//! captures (before and after a change), and what changed between them
//! (see [`trawl_core::diff`]). Each map's rates are per second of its own
//! capture, first frame to last.

use crate::replay::{self, Emit, ReplayOptions, ReplayOutcome};
use anyhow::Context;
use std::io::Write;
use std::path::Path;
use trawl_capture::CaptureFile;
use trawl_core::diff::{self, Window};

/// Seconds from a capture's first frame to its last.
fn span_secs(path: &Path) -> anyhow::Result<f64> {
    let mut file = CaptureFile::open(path)?;
    let (mut first, mut last) = (None, None);
    // A capture that breaks off part-way spans what came before the break.
    let _ = file.for_each_frame(|frame| {
        first.get_or_insert(frame.ts);
        last = Some(frame.ts);
    });
    let (Some(first), Some(last)) = (first, last) else { return Ok(0.0) };
    Ok(last.saturating_sub(first) as f64 / 1e9)
}

/// The map of one capture, as `--emit map` prints it, and the seconds it
/// covers.
fn map_of(opts: &ReplayOptions, capture: &Path) -> anyhow::Result<(serde_json::Value, f64, ReplayOutcome)> {
    let mut one = opts.clone();
    one.capture = capture.to_path_buf();
    one.emit = Emit::Map;
    let mut json = Vec::new();
    let outcome = replay::run(&one, &mut json).with_context(|| format!("cannot replay {}", capture.display()))?;
    let map = serde_json::from_slice(&json).context("the map is not JSON")?;
    Ok((map, span_secs(capture)?, outcome))
}

/// Replays `opts.capture` (before) and `after`, and writes their diff.
/// The outcome is the later replay's, with the first break in either.
pub fn run(opts: &ReplayOptions, after: &Path, out: &mut dyn Write) -> anyhow::Result<ReplayOutcome> {
    let (old, old_secs, first) = map_of(opts, &opts.capture)?;
    let (new, new_secs, mut outcome) = map_of(opts, after)?;
    let d =
        diff::diff(Window { map: &old, secs: old_secs }, Window { map: &new, secs: new_secs }, &opts.diff_thresholds);
    serde_json::to_writer_pretty(&mut *out, &d).context("cannot write the diff")?;
    writeln!(out).context("cannot write the diff")?;
    out.flush().context("cannot write output")?;
    outcome.partial = first.partial.or(outcome.partial);
    Ok(outcome)
}
