//! History: each edge's metrics per interval, in three tiers (10 s for
//! the last hour, 1 min for the last day, 10 min beyond as far as the
//! budget allows), on disk, so a restarted hub still answers past windows.
//!
//! Ingest adds flow deltas and records to the open 10 s intervals (by
//! the data's own time: capture time in replay, wall time live). An
//! interval closes once time has moved [`GRACE_SECS`] past its end; it is
//! then rolled up into the open minute and ten minutes, and queued for a
//! writer thread, which commits it with the new watermark. Data for an
//! interval already closed is late: counted, and not added (a worker
//! re-sending its journal to a restarted hub adds nothing twice).
//!
//! A query reads a consistent snapshot of the file and the intervals not
//! yet written, without holding the graph state while it reads.

pub mod store;

use redb::ReadableDatabase;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;
pub use store::StoreError;
use trawl_core::history::{EdgeKey, IntervalSamples, Sample};
use trawl_core::{FlowDelta, Timestamp, Workload};

/// A tier: its interval, and how long it is kept (the last, as long as
/// the budget allows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tier {
    pub step: u64,
    pub keep: Option<u64>,
}

impl Tier {
    pub const ALL: [Tier; 3] =
        [Tier { step: 10, keep: Some(3_600) }, Tier { step: 60, keep: Some(86_400) }, Tier { step: 600, keep: None }];
}

/// How long past its end an interval stays open for late data (a
/// worker's lag, a response that completes a slow request).
pub const GRACE_SECS: u64 = 30;
/// Distinct edges one open interval holds at most; past it, new edges'
/// samples are counted in `history_refused` (bounds ingest's memory).
pub const MAX_EDGES_PER_INTERVAL: usize = 100_000;
/// Closed intervals waiting for the writer at most, and samples in them
/// (about 300 bytes each in memory); past either (a replay at full speed,
/// a disk that cannot keep up), ingest waits for the writer a while, then
/// lets the oldest go and counts it.
pub const MAX_PENDING: usize = 512;
pub const MAX_PENDING_SAMPLES: usize = 200_000;
/// Closed intervals committed in one transaction at most.
const WRITE_BATCH: usize = 16;
/// How far behind the watermark late data is still merged, in seconds.
pub const MAX_LATE_SECS: u64 = 3_600;
/// How long ingest waits for the writer when [`MAX_PENDING`] intervals
/// wait already.
pub const PENDING_WAIT: Duration = Duration::from_secs(10);
/// Default `--history-bytes`.
pub const DEFAULT_BUDGET: u64 = 1 << 30;

/// A closed interval on its way to disk.
#[derive(Debug)]
pub struct Closed {
    pub seq: u64,
    pub tier: usize,
    pub start: u64,
    pub samples: IntervalSamples,
    /// The 10 s watermark once this closed: what the writer records.
    pub closed_end: u64,
    pub origin: u64,
}

/// What history counts (for `/metrics` and `/api/health`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HistoryStats {
    /// Samples too late to keep: older than [`MAX_LATE_SECS`] behind the
    /// watermark, or than this process's start (on disk already).
    pub late_samples: u64,
    /// Samples for intervals already closed, added to them.
    pub late_merged_samples: u64,
    /// Samples of new edges past an interval's edge limit.
    pub refused_samples: u64,
    /// Closed intervals let go before the writer took them.
    pub pending_dropped: u64,
    pub intervals_written: u64,
    /// Intervals let go for retention or the byte budget.
    pub intervals_evicted: u64,
    pub write_errors: u64,
    /// Bytes of values and dictionary stored, and the file's size.
    pub stored_bytes: u64,
    /// Bytes of the file's pages in use.
    pub allocated_bytes: u64,
    pub file_bytes: u64,
    pub budget_bytes: u64,
    pub edges: u64,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<VecDeque<Arc<Closed>>>,
    wake: Condvar,
    /// Signalled when the writer has taken intervals off `pending`.
    room: Condvar,
    stop: AtomicBool,
    stats: Mutex<HistoryStats>,
    db: Arc<redb::Database>,
}

/// Where history lives and how much it may take.
#[derive(Clone, Debug)]
pub struct HistoryConfig {
    /// The store file; `None`: a temporary file, removed at exit.
    pub dir: Option<PathBuf>,
    pub budget: u64,
    /// Seconds an interval waits past its end for late data.
    pub grace_secs: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig { dir: None, budget: DEFAULT_BUDGET, grace_secs: GRACE_SECS }
    }
}

/// The ingest side of history, held in the graph state.
#[derive(Debug)]
pub struct History {
    shared: Arc<Shared>,
    open: BTreeMap<u64, IntervalSamples>,
    /// The open minute and ten minutes: `(start, samples so far)`.
    rollup: [Option<(u64, IntervalSamples)>; 2],
    closed_end: u64,
    /// The watermark this process started from: older data is on disk.
    resumed_at: u64,
    /// Late samples by 10 s interval, waiting to be merged into the
    /// stored intervals of every tier.
    late_open: BTreeMap<u64, IntervalSamples>,
    late_merged: u64,
    origin: u64,
    grace: u64,
    seq: u64,
    late: u64,
    refused: u64,
    dropped: u64,
    writer: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
    temporary: bool,
}

fn secs(ts: Timestamp) -> u64 {
    ts.as_nanos() / 1_000_000_000
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl History {
    /// Opens the store (creating it) and starts its writer. A store the
    /// process cannot open is an error that names the file.
    pub fn open(config: &HistoryConfig) -> Result<History, StoreError> {
        let (path, temporary) = match &config.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Db(format!("cannot create {}: {e}", dir.display())))?;
                (dir.join("history.redb"), false)
            }
            None => {
                let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                let name = format!("trawl-history-{}-{}.redb", std::process::id(), nanos.as_nanos());
                (std::env::temp_dir().join(name), true)
            }
        };
        let (store, marks) = store::Store::open(&path)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            room: Condvar::new(),
            stop: AtomicBool::new(false),
            stats: Mutex::new(HistoryStats { budget_bytes: config.budget, ..Default::default() }),
            db: Arc::clone(store.database()),
        });
        let mut history = History {
            shared: Arc::clone(&shared),
            open: BTreeMap::new(),
            rollup: [None, None],
            closed_end: marks.closed_end,
            resumed_at: marks.closed_end,
            late_open: BTreeMap::new(),
            late_merged: 0,
            origin: marks.origin,
            grace: config.grace_secs,
            seq: 0,
            late: 0,
            refused: 0,
            dropped: 0,
            writer: None,
            path: path.clone(),
            temporary,
        };
        history.rebuild_rollups()?;
        let budget = config.budget;
        let writer = std::thread::Builder::new()
            .name("trawl-history".into())
            .spawn(move || write_loop(store, &shared, budget, &path))
            .map_err(|e| StoreError::Db(format!("cannot start the history writer: {e}")))?;
        history.writer = Some(writer);
        Ok(history)
    }

    /// A restarted process carries on the minute and ten minutes that were
    /// open: their finer intervals are on disk.
    fn rebuild_rollups(&mut self) -> Result<(), StoreError> {
        if self.closed_end == 0 {
            return Ok(());
        }
        let txn = self.shared.db.begin_read().map_err(|e| StoreError::Db(e.to_string()))?;
        for tier in 1..3 {
            let step = Tier::ALL[tier].step;
            let start = self.closed_end / step * step;
            let fine_end = self.closed_end / Tier::ALL[tier - 1].step * Tier::ALL[tier - 1].step;
            let mut sums = HashMap::new();
            store::sum_intervals(&txn, tier - 1, start, fine_end, &mut sums)?;
            let acc = IntervalSamples { edges: store::named(&txn, sums)?.into_iter().collect(), ..Default::default() };
            if !acc.edges.is_empty() {
                self.rollup[tier - 1] = Some((start, acc));
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every interval before this (unix seconds) is closed.
    pub fn closed_end(&self) -> u64 {
        self.closed_end
    }

    /// Where a sample at `ts` goes: its open 10 s interval; for an
    /// interval already closed (records behind their flows' deltas, a
    /// lagging worker), a late interval merged into the stored ones; or
    /// `None` (counted) when it is older than [`MAX_LATE_SECS`] or than
    /// this process (a worker re-sending its journal to a restarted hub:
    /// history has it already).
    fn interval(&mut self, ts: Timestamp) -> Option<&mut IntervalSamples> {
        let start = secs(ts) / Tier::ALL[0].step * Tier::ALL[0].step;
        if start < self.closed_end {
            if start < self.resumed_at || start + MAX_LATE_SECS < self.closed_end {
                self.late += 1;
                return None;
            }
            self.late_merged += 1;
            self.origin = self.origin.min(start);
            let iv = self.late_open.entry(start).or_insert_with(|| IntervalSamples::with_cap(MAX_EDGES_PER_INTERVAL));
            return Some(iv);
        }
        if self.origin == 0 || start < self.origin {
            self.origin = start;
        }
        let iv = self.open.entry(start).or_insert_with(|| IntervalSamples::with_cap(MAX_EDGES_PER_INTERVAL));
        Some(iv)
    }

    pub fn add_delta(&mut self, d: &FlowDelta, client: &Workload, server: &Workload, closed_flows: u64) {
        if let Some(iv) = self.interval(d.last_ts) {
            iv.add_delta(d, client, server, closed_flows);
        }
        self.advance(secs(d.last_ts));
    }

    /// A record, with its virtual host ([`trawl_core::vhost::record_host`]).
    pub fn add_record(&mut self, r: &trawl_core::record::L7Record, src: &Workload, dst: &Workload, host: Option<&str>) {
        if let Some(iv) = self.interval(r.ts()) {
            iv.add_record_for_host(r, src, dst, host);
        }
        self.advance(secs(r.ts()));
    }

    pub fn add_counts(
        &mut self,
        protocol: &str,
        c: &trawl_core::l7map::L7Counts,
        ts: Timestamp,
        src: &Workload,
        dst: &Workload,
    ) {
        if let Some(iv) = self.interval(ts) {
            iv.add_counts(protocol, c, src, dst);
        }
        self.advance(secs(ts));
    }

    /// Time has reached `now` (unix seconds): closes the intervals that
    /// ended the grace (default [`GRACE_SECS`]) before it.
    pub fn advance(&mut self, now: u64) {
        let step = Tier::ALL[0].step;
        let through = now.saturating_sub(self.grace) / step * step;
        if through > self.closed_end && self.origin != 0 {
            self.close_through(through);
        }
    }

    /// Closes every open interval (the end of a replay).
    pub fn flush(&mut self) {
        self.merge_late();
        if let Some((&last, _)) = self.open.iter().next_back() {
            let end = last + Tier::ALL[0].step;
            self.close_through(end.max(self.closed_end));
        }
        // The open minute and ten minutes are partial, but nothing more
        // will come: store them so coarse windows see the end too.
        for tier in 1..3 {
            self.close_rollup(tier, u64::MAX);
        }
    }

    fn close_through(&mut self, through: u64) {
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() + Tier::ALL[0].step > through {
                break;
            }
            let (start, samples) = entry.remove_entry();
            self.closed_end = self.closed_end.max(start + Tier::ALL[0].step);
            self.roll(start, &samples);
            self.refused += samples.refused;
            self.push(0, start, samples);
        }
        self.closed_end = self.closed_end.max(through);
        for tier in 1..3 {
            self.close_rollup(tier, self.closed_end);
        }
        self.merge_late();
    }

    /// Sends late samples on to every tier: into the minute or ten
    /// minutes still open, or to the writer, which adds them to what it
    /// stored.
    pub fn merge_late(&mut self) {
        while let Some((start, samples)) = self.late_open.pop_first() {
            self.refused += samples.refused;
            for tier in 1..3 {
                let step = Tier::ALL[tier].step;
                let at = start / step * step;
                match &mut self.rollup[tier - 1] {
                    Some((open, acc)) if *open == at => acc.merge(&samples),
                    _ => self.push(tier, at, samples.clone()),
                }
            }
            self.push(0, start, samples);
        }
    }

    /// Adds a closed 10 s interval to the open minute (closing the minute
    /// before it, if it is done).
    fn roll(&mut self, start: u64, samples: &IntervalSamples) {
        let minute = start / Tier::ALL[1].step * Tier::ALL[1].step;
        self.close_rollup(1, minute);
        match &mut self.rollup[0] {
            Some((_, acc)) => acc.merge(samples),
            None => self.rollup[0] = Some((minute, samples.clone())),
        }
    }

    /// Closes the open interval of `tier` if it ends by `through`, rolling
    /// it into the next tier.
    fn close_rollup(&mut self, tier: usize, through: u64) {
        let step = Tier::ALL[tier].step;
        let done =
            matches!(&self.rollup[tier - 1], Some((s, _)) if s.saturating_add(step) <= through || through == u64::MAX);
        if !done {
            return;
        }
        let Some((start, samples)) = self.rollup[tier - 1].take() else { return };
        if tier + 1 < Tier::ALL.len() {
            let next = start / Tier::ALL[tier + 1].step * Tier::ALL[tier + 1].step;
            if through != u64::MAX {
                self.close_rollup(tier + 1, next);
            }
            match &mut self.rollup[tier] {
                Some((_, acc)) => acc.merge(&samples),
                None => self.rollup[tier] = Some((next, samples.clone())),
            }
        }
        self.push(tier, start, samples);
    }

    fn push(&mut self, tier: usize, start: u64, samples: IntervalSamples) {
        self.seq += 1;
        let closed = Closed { seq: self.seq, tier, start, samples, closed_end: self.closed_end, origin: self.origin };
        let mut pending = lock(&self.shared.pending);
        // A replay at full speed closes intervals faster than a disk
        // commits them: wait for the writer a while rather than lose them
        // (live, an interval closes every 10 s and this never waits).
        let deadline = std::time::Instant::now() + PENDING_WAIT;
        let full = |p: &VecDeque<Arc<Closed>>| {
            p.len() >= MAX_PENDING
                || (p.len() > 1 && p.iter().map(|c| c.samples.edges.len()).sum::<usize>() >= MAX_PENDING_SAMPLES)
        };
        while full(&pending) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                pending.pop_front();
                self.dropped += 1;
                continue;
            }
            self.shared.wake.notify_one();
            pending = self.shared.room.wait_timeout(pending, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        pending.push_back(Arc::new(closed));
        drop(pending);
        self.shared.wake.notify_one();
    }

    /// What history counts now.
    pub fn stats(&self) -> HistoryStats {
        let mut s = lock(&self.shared.stats).clone();
        s.late_samples = self.late;
        s.late_merged_samples = self.late_merged;
        s.refused_samples = self.refused + self.open.values().map(|i| i.refused).sum::<u64>();
        s.pending_dropped = self.dropped;
        s
    }

    /// What a query needs, taken while the graph state is held: cheap
    /// (the intervals not yet written are shared, the open ones copied).
    pub fn snapshot(&self) -> HistorySnapshot {
        HistorySnapshot {
            db: Arc::clone(&self.shared.db),
            pending: lock(&self.shared.pending).iter().cloned().collect(),
            open: self.open.iter().map(|(s, i)| (*s, i.clone())).collect(),
            closed_end: self.closed_end,
            origin: self.origin,
        }
    }

    /// Waits until everything closed so far is on disk (tests, shutdown).
    pub fn sync(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut pending = lock(&self.shared.pending);
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            self.shared.wake.notify_one();
            // The writer signals `room` after each commit.
            pending = self.shared.room.wait_timeout(pending, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.sync(Duration::from_secs(10));
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The writer: commits closed intervals in batches, then holds the store
/// to its retention and budget.
fn write_loop(mut store: store::Store, shared: &Shared, budget: u64, path: &Path) {
    loop {
        let batch: Vec<Arc<Closed>> = {
            let mut pending = lock(&shared.pending);
            while pending.is_empty() && !shared.stop.load(Ordering::SeqCst) {
                pending =
                    shared.wake.wait_timeout(pending, Duration::from_secs(1)).unwrap_or_else(PoisonError::into_inner).0;
            }
            if pending.is_empty() {
                return;
            }
            // A few at a time, each followed by the budget's check, so a
            // burst (a replay at full speed) never swells the file.
            pending.iter().take(WRITE_BATCH).cloned().collect()
        };
        let Some(last) = batch.last() else { continue };
        let (seq, closed_end, origin) = (last.seq, last.closed_end, last.origin);
        match store.write(&batch, closed_end, origin, seq) {
            Ok(()) => {
                lock(&shared.pending).retain(|c| c.seq > seq);
                shared.room.notify_all();
                let evicted = store.enforce(closed_end, budget).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "history: could not let old intervals go");
                    0
                });
                let allocated = store.allocated_bytes().unwrap_or(0);
                let mut s = lock(&shared.stats);
                s.allocated_bytes = allocated;
                s.intervals_written += batch.len() as u64;
                s.intervals_evicted += evicted as u64;
                s.stored_bytes = store.bytes();
                s.edges = store.edges() as u64;
                s.file_bytes = std::fs::metadata(path).map_or(0, |m| m.len());
            }
            Err(e) => {
                tracing::warn!(error = %e, intervals = batch.len(), "history: write failed; will retry");
                lock(&shared.stats).write_errors += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// The part of a window's map that history covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Covered {
    /// Unix seconds: the first interval's start and where the data ends.
    pub from: u64,
    pub to: u64,
    /// The coarsest interval used, in seconds.
    pub resolution_secs: u64,
    pub intervals: usize,
}

impl Covered {
    pub fn secs(&self) -> f64 {
        self.to.saturating_sub(self.from) as f64
    }
}

/// A consistent view of history for one query.
#[derive(Debug)]
pub struct HistorySnapshot {
    db: Arc<redb::Database>,
    pending: Vec<Arc<Closed>>,
    open: Vec<(u64, IntervalSamples)>,
    closed_end: u64,
    origin: u64,
}

impl HistorySnapshot {
    /// Every sample in `[from, to)` (unix seconds), from the coarsest
    /// tier that keeps `from` at a resolution of a sixtieth of the window
    /// or finer (a one-hour window reads minutes; ten minutes, 10 s), and
    /// from coarser tiers for what finer ones no longer keep. `now` ends
    /// the part of the window still open.
    pub fn window(
        &self,
        from: u64,
        to: u64,
        now: u64,
        mut each: impl FnMut(&EdgeKey, &Sample),
    ) -> Result<Covered, StoreError> {
        let txn = self.db.begin_read().map_err(|e| StoreError::Db(e.to_string()))?;
        let marks = store::read_marks(&txn)?;
        let committed = store::committed(&txn)?;
        let pending: Vec<&Closed> = self.pending.iter().map(|c| &**c).filter(|c| c.seq > committed).collect();
        let max_step = (to.saturating_sub(from) / 60).max(Tier::ALL[0].step);
        let covers = |t: usize, pos: u64| {
            let step = Tier::ALL[t].step;
            let origin = self.origin / step * step;
            let lo = origin.max(marks.dropped_before[t]);
            let hi = self.closed_end / step * step;
            (self.origin != 0 && lo <= pos && pos < hi).then_some(hi)
        };
        let (mut sums, mut recent) = (HashMap::new(), IntervalSamples::default());
        let mut covered = Covered { from: u64::MAX, to: from, resolution_secs: Tier::ALL[0].step, intervals: 0 };
        let mut pos = from;
        while pos < to && pos < self.closed_end {
            let fits = (0..3).rev().find(|&t| Tier::ALL[t].step <= max_step && covers(t, pos).is_some());
            let Some(t) = fits.or_else(|| (0..3).find(|&t| covers(t, pos).is_some())) else {
                // Before anything kept: start at the oldest kept.
                let oldest = (0..3)
                    .filter_map(|t| {
                        let step = Tier::ALL[t].step;
                        let lo = (self.origin / step * step).max(marks.dropped_before[t]);
                        (lo < self.closed_end / step * step && lo > pos).then_some(lo)
                    })
                    .min();
                match oldest {
                    Some(lo) => {
                        pos = lo;
                        continue;
                    }
                    None => break,
                }
            };
            let step = Tier::ALL[t].step;
            let hi = covers(t, pos).unwrap_or(pos);
            let start = pos / step * step;
            let end = to.div_ceil(step).saturating_mul(step).min(hi);
            covered.intervals += store::sum_intervals(&txn, t, start, end, &mut sums)?;
            for c in pending.iter().filter(|c| c.tier == t && c.start >= start && c.start < end) {
                recent.merge(&c.samples);
                covered.intervals += 1;
            }
            covered.from = covered.from.min(start);
            covered.to = end;
            covered.resolution_secs = covered.resolution_secs.max(step);
            pos = end;
        }
        // The part still open, from memory.
        let open_from = from.max(self.closed_end);
        if to > open_from {
            for (start, iv) in self.open.iter().filter(|(s, _)| *s + Tier::ALL[0].step > open_from && *s < to) {
                covered.from = covered.from.min(*start);
                recent.merge(iv);
                covered.intervals += 1;
            }
            covered.from = covered.from.min(open_from / Tier::ALL[0].step * Tier::ALL[0].step);
            covered.to = covered.to.max(to.min(now.max(open_from)));
        }
        if covered.from == u64::MAX {
            covered.from = from;
        }
        // Each edge is handed on once, its samples summed: grouping (which
        // names nodes) then costs per edge, not per interval.
        let mut total =
            IntervalSamples { edges: store::named(&txn, sums)?.into_iter().collect(), ..Default::default() };
        total.merge(&recent);
        for (k, s) in &total.edges {
            each(k, s);
        }
        Ok(covered)
    }
}

#[cfg(test)]
mod tests;
