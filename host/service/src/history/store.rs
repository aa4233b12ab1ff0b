//! History on disk: one redb file holding each closed interval's samples
//! as one value, keyed by tier and start, and a dictionary of the edges
//! they name.
//!
//! redb, not SQLite: it is pure Rust (nothing to build from C), a single
//! file with copy-on-write B-trees that survive a crash at any point, and
//! its readers see a consistent snapshot while the writer commits, which
//! is what a time-travel query needs. History's data is a time-ordered
//! key-value log, so SQL would add nothing.

use super::{Closed, Tier};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use trawl_core::history::{EdgeKey, Sample};

/// `(tier, interval start in unix seconds, chunk)` → postcard
/// `(edge id, Sample)` rows, one after another. An interval is cut into
/// chunks of about [`CHUNK_BYTES`] so B-tree pages stay full: one large
/// value per interval would take a page rounded up to a power of two.
const INTERVALS: TableDefinition<'_, (u8, u64, u16), &[u8]> = TableDefinition::new("intervals");
/// Bytes per stored chunk, about: a few per 4 KiB page.
const CHUNK_BYTES: usize = 1000;
/// Bytes a stored key takes, counted with its value.
const KEY_BYTES: u64 = 11;

type Intervals<'t> = redb::Table<'t, (u8, u64, u16), &'static [u8]>;

/// Rows of one chunk.
fn decode_rows(mut bytes: &[u8], out: &mut Vec<(u32, Sample)>) -> Result<(), postcard::Error> {
    while !bytes.is_empty() {
        let (row, rest) = postcard::take_from_bytes::<(u32, Sample)>(bytes)?;
        out.push(row);
        bytes = rest;
    }
    Ok(())
}

/// Every chunk of intervals of `tier` starting in `[from, to)` leaves the
/// table; returns the bytes freed and the intervals.
fn cut(intervals: &mut Intervals<'_>, tier: usize, from: u64, to: u64) -> Result<(u64, usize), redb::StorageError> {
    let (mut freed, mut n, mut last) = (0u64, 0, None);
    for row in intervals.extract_if((tier as u8, from, 0)..(tier as u8, to, 0), |_, _| true)? {
        let (k, v) = row?;
        freed += v.value().len() as u64 + KEY_BYTES;
        let start = k.value().1;
        if last != Some(start) {
            n += 1;
            last = Some(start);
        }
    }
    Ok((freed, n))
}
/// Edge id → postcard [`EdgeKey`].
const EDGES: TableDefinition<'_, u32, &[u8]> = TableDefinition::new("edges");
/// Watermarks: `closed_end` (10 s tier), `origin`, `dropped_before/N`,
/// and `committed` (this process's sequence number of the newest commit).
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// redb's page cache: what history may hold in memory for reads.
pub const CACHE_BYTES: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history store {path}: {source}")]
    Open { path: String, source: redb::DatabaseError },
    #[error("history store: {0}")]
    Db(String),
    #[error("history store: a stored value does not decode: {0}")]
    Decode(#[from] postcard::Error),
}

fn dberr<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// What is stored: the watermarks a restarted process starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// Every 10 s interval before this is closed (unix seconds).
    pub closed_end: u64,
    /// The start of the oldest data ever kept.
    pub origin: u64,
    /// Per tier: intervals before this were let go (retention, budget).
    pub dropped_before: [u64; 3],
}

/// The writer's view of the file: the dictionary, and the bytes each
/// tier's values take.
#[derive(Debug)]
pub struct Store {
    db: Arc<Database>,
    ids: HashMap<EdgeKey, u32>,
    /// Per edge id: the end of the newest interval that names it.
    last_used: HashMap<u32, u64>,
    next_id: u32,
    /// Bytes of stored values per tier, and of the dictionary.
    pub tier_bytes: [u64; 3],
    pub edge_bytes: u64,
    /// Stored bytes per byte of pages redb allocates for them (page fill,
    /// B-tree branches, pages not yet free), as last measured.
    fill: f64,
}

impl Store {
    /// Opens (or creates) the file, loading its dictionary and sizes.
    pub fn open(path: &Path) -> Result<(Store, Marks), StoreError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        let txn = db.begin_write().map_err(dberr)?;
        {
            txn.open_table(INTERVALS).map_err(dberr)?;
            txn.open_table(EDGES).map_err(dberr)?;
            let mut meta = txn.open_table(META).map_err(dberr)?;
            meta.insert("committed", 0).map_err(dberr)?;
        }
        txn.commit().map_err(dberr)?;
        let mut store = Store {
            db: Arc::new(db),
            ids: HashMap::new(),
            last_used: HashMap::new(),
            next_id: 0,
            tier_bytes: [0; 3],
            edge_bytes: 0,
            fill: 0.5,
        };
        let txn = store.db.begin_read().map_err(dberr)?;
        let marks = read_marks(&txn)?;
        for row in txn.open_table(EDGES).map_err(dberr)?.iter().map_err(dberr)? {
            let (id, key) = row.map_err(dberr)?;
            let (id, key) = (id.value(), key.value());
            store.edge_bytes += key.len() as u64 + 4;
            store.ids.insert(postcard::from_bytes(key)?, id);
            store.last_used.insert(id, marks.closed_end);
            store.next_id = store.next_id.max(id + 1);
        }
        for row in txn.open_table(INTERVALS).map_err(dberr)?.iter().map_err(dberr)? {
            let (key, value) = row.map_err(dberr)?;
            let tier = usize::from(key.value().0).min(2);
            store.tier_bytes[tier] += value.value().len() as u64 + KEY_BYTES;
        }
        Ok((store, marks))
    }

    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// Bytes of data and dictionary: what the budget counts.
    pub fn bytes(&self) -> u64 {
        self.tier_bytes.iter().sum::<u64>() + self.edge_bytes
    }

    /// Writes closed intervals and the watermark in one transaction,
    /// numbered `seq` (readers use it to tell what is on disk).
    pub fn write(&mut self, closed: &[Arc<Closed>], closed_end: u64, origin: u64, seq: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(dberr)?;
        {
            let mut intervals = txn.open_table(INTERVALS).map_err(dberr)?;
            let mut edges = txn.open_table(EDGES).map_err(dberr)?;
            for c in closed {
                let mut earlier: Vec<(u32, Sample)> = Vec::new();
                let mut rows: Vec<(u32, &Sample)> = Vec::with_capacity(c.samples.edges.len());
                for (key, sample) in &c.samples.edges {
                    let id = match self.ids.get(key) {
                        Some(&id) => id,
                        None => {
                            let id = self.next_id;
                            self.next_id += 1;
                            let bytes = postcard::to_allocvec(key)?;
                            edges.insert(id, bytes.as_slice()).map_err(dberr)?;
                            self.edge_bytes += bytes.len() as u64 + 4;
                            self.ids.insert(key.clone(), id);
                            id
                        }
                    };
                    self.last_used.insert(id, c.start + Tier::ALL[c.tier].step);
                    rows.push((id, sample));
                }
                // An interval written before (a partial one at the end of
                // a replay, then more data) is added to, not replaced.
                let span = (c.tier as u8, c.start, 0)..=(c.tier as u8, c.start, u16::MAX);
                for chunk in intervals.extract_if(span, |_, _| true).map_err(dberr)? {
                    let (_, v) = chunk.map_err(dberr)?;
                    self.tier_bytes[c.tier] -= (v.value().len() as u64 + KEY_BYTES).min(self.tier_bytes[c.tier]);
                    decode_rows(v.value(), &mut earlier)?;
                }
                if !earlier.is_empty() {
                    let at: HashMap<u32, usize> = earlier.iter().enumerate().map(|(i, r)| (r.0, i)).collect();
                    let mut extra = Vec::new();
                    for (id, s) in rows {
                        match at.get(&id) {
                            Some(&i) => earlier[i].1.merge(s),
                            None => extra.push((id, s.clone())),
                        }
                    }
                    earlier.extend(extra);
                    rows = earlier.iter().map(|(id, s)| (*id, s)).collect();
                }
                rows.sort_unstable_by_key(|r| r.0);
                let (mut chunk, mut buf) = (0u16, Vec::with_capacity(2 * CHUNK_BYTES));
                for (i, row) in rows.iter().enumerate() {
                    buf.extend(postcard::to_allocvec(row)?);
                    if buf.len() >= CHUNK_BYTES || i + 1 == rows.len() {
                        intervals.insert((c.tier as u8, c.start, chunk), buf.as_slice()).map_err(dberr)?;
                        self.tier_bytes[c.tier] += buf.len() as u64 + KEY_BYTES;
                        chunk = chunk.saturating_add(1);
                        buf.clear();
                    }
                }
            }
            let mut meta = txn.open_table(META).map_err(dberr)?;
            meta.insert("closed_end", closed_end).map_err(dberr)?;
            meta.insert("origin", origin).map_err(dberr)?;
            meta.insert("committed", seq).map_err(dberr)?;
        }
        txn.commit().map_err(dberr)
    }

    /// Bytes of pages redb has allocated: what the file must hold.
    pub fn allocated_bytes(&mut self) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(dberr)?;
        let stats = txn.stats().map_err(dberr)?;
        let bytes = stats.allocated_pages() * stats.page_size() as u64;
        txn.abort().map_err(dberr)?;
        // A small file is mostly redb's own tables: measure once there is
        // data enough to say something.
        if bytes >= 4 << 20 && self.bytes() > 0 {
            self.fill = (self.bytes() as f64 / bytes as f64).clamp(0.25, 0.9);
        }
        Ok(bytes)
    }

    /// Lets go of intervals past their tier's retention, then the oldest
    /// of the coarsest tier that has any (then the next) while the store
    /// would need more than `budget` bytes of file; then of edges no kept
    /// interval names. Returns the intervals let go.
    ///
    /// redb doubles its file as it grows, so the pages in use are held to
    /// half the budget: the file then stays within it.
    pub fn enforce(&mut self, closed_end: u64, budget: u64) -> Result<usize, StoreError> {
        let budget = ((budget / 2) as f64 * self.fill) as u64;
        let txn = self.db.begin_write().map_err(dberr)?;
        let mut dropped = 0;
        {
            let mut intervals = txn.open_table(INTERVALS).map_err(dberr)?;
            let mut meta = txn.open_table(META).map_err(dberr)?;
            for (tier, t) in Tier::ALL.iter().enumerate() {
                let Some(keep) = t.keep else { continue };
                // Cut in whole intervals of the next tier, so the tiers
                // hand over on a boundary both have.
                let next_step = Tier::ALL.get(tier + 1).map_or(t.step, |n| n.step);
                let before = closed_end.saturating_sub(keep) / next_step * next_step;
                dropped += self.let_go(&mut intervals, &mut meta, tier, before)?;
            }
            for tier in (0..3).rev() {
                while self.bytes() > budget && self.tier_bytes[tier] > 0 {
                    let Some(first) =
                        intervals.range((tier as u8, 0, 0)..(tier as u8 + 1, 0, 0)).map_err(dberr)?.next()
                    else {
                        break;
                    };
                    let start = first.map_err(dberr)?.0.value().1;
                    let step = Tier::ALL[tier].step;
                    // One interval of the next tier at a time (the tiers then
                    // hand over on a boundary both have); an hour at the last.
                    let unit = Tier::ALL.get(tier + 1).map_or(3600, |n| n.step).max(step);
                    let before = (start / unit + 1) * unit;
                    dropped += self.let_go(&mut intervals, &mut meta, tier, before)?;
                }
            }
            if dropped > 0 {
                // Edges named by no kept interval leave the dictionary.
                let oldest = [0u8, 1, 2]
                    .iter()
                    .filter_map(|&t| {
                        intervals.range((t, 0, 0)..(t + 1, 0, 0)).ok()?.next()?.ok().map(|r| r.0.value().1)
                    })
                    .min()
                    .unwrap_or(u64::MAX);
                let gone: Vec<u32> =
                    self.last_used.iter().filter(|(_, end)| **end <= oldest).map(|(id, _)| *id).collect();
                let mut edges = txn.open_table(EDGES).map_err(dberr)?;
                for id in gone {
                    if let Some(v) = edges.remove(id).map_err(dberr)? {
                        self.edge_bytes -= (v.value().len() as u64 + 4).min(self.edge_bytes);
                    }
                    self.last_used.remove(&id);
                }
                self.ids.retain(|_, id| self.last_used.contains_key(id));
            }
        }
        txn.commit().map_err(dberr)?;
        Ok(dropped)
    }

    /// Lets go of `tier`'s intervals before `before`, and says so in the
    /// watermarks (queries then read a coarser tier there, or nothing).
    fn let_go(
        &mut self,
        intervals: &mut Intervals<'_>,
        meta: &mut redb::Table<'_, &'static str, u64>,
        tier: usize,
        before: u64,
    ) -> Result<usize, StoreError> {
        let (freed, n) = cut(intervals, tier, 0, before).map_err(dberr)?;
        self.tier_bytes[tier] -= freed.min(self.tier_bytes[tier]);
        let mark = format!("dropped_before/{tier}");
        let was = meta.get(mark.as_str()).map_err(dberr)?.map_or(0, |v| v.value());
        meta.insert(mark.as_str(), was.max(before)).map_err(dberr)?;
        Ok(n)
    }

    /// Edges in the dictionary.
    pub fn edges(&self) -> usize {
        self.ids.len()
    }
}

/// The watermarks as of a read transaction.
pub fn read_marks(txn: &redb::ReadTransaction) -> Result<Marks, StoreError> {
    let meta = txn.open_table(META).map_err(dberr)?;
    let get = |k: &str| -> Result<u64, StoreError> { Ok(meta.get(k).map_err(dberr)?.map_or(0, |v| v.value())) };
    Ok(Marks {
        closed_end: get("closed_end")?,
        origin: get("origin")?,
        dropped_before: [get("dropped_before/0")?, get("dropped_before/1")?, get("dropped_before/2")?],
    })
}

/// The sequence number of the newest commit in this snapshot.
pub fn committed(txn: &redb::ReadTransaction) -> Result<u64, StoreError> {
    let meta = txn.open_table(META).map_err(dberr)?;
    Ok(meta.get("committed").map_err(dberr)?.map_or(0, |v| v.value()))
}

/// Adds every stored sample of `tier`'s intervals starting in
/// `[from, to)` into `sums`, by edge id (edges are named once, after:
/// see [`named`]). Returns the intervals read.
pub fn sum_intervals(
    txn: &redb::ReadTransaction,
    tier: usize,
    from: u64,
    to: u64,
    sums: &mut HashMap<u32, Sample>,
) -> Result<usize, StoreError> {
    use std::collections::hash_map::Entry;
    let intervals = txn.open_table(INTERVALS).map_err(dberr)?;
    let (mut n, mut last) = (0, None);
    let mut rows = Vec::new();
    for row in intervals.range((tier as u8, from, 0)..(tier as u8, to, 0)).map_err(dberr)? {
        let (key, value) = row.map_err(dberr)?;
        let start = key.value().1;
        if last != Some(start) {
            n += 1;
            last = Some(start);
        }
        decode_rows(value.value(), &mut rows)?;
        for (id, sample) in rows.drain(..) {
            match sums.entry(id) {
                Entry::Occupied(mut o) => o.get_mut().merge(&sample),
                Entry::Vacant(v) => {
                    v.insert(sample);
                }
            }
        }
    }
    Ok(n)
}

/// The edges of `sums`, named from the dictionary (an id it no longer
/// has, which cannot happen within one snapshot, is left out).
pub fn named(txn: &redb::ReadTransaction, sums: HashMap<u32, Sample>) -> Result<Vec<(EdgeKey, Sample)>, StoreError> {
    let edges = txn.open_table(EDGES).map_err(dberr)?;
    let mut out = Vec::with_capacity(sums.len());
    for (id, sample) in sums {
        if let Some(bytes) = edges.get(id).map_err(dberr)? {
            out.push((postcard::from_bytes(bytes.value())?, sample));
        }
    }
    Ok(out)
}
