//! Error codes in response bodies that carry them per topic or partition:
//! the first non-zero one is the response's error, as a client would report
//! it. Each walker follows the response schema of every version up to the
//! newest trawl knows (fields added by later versions are tagged, so they
//! are skipped generically). `None`: the body ended early or lied.

use crate::wire::Reader;

/// Returns early with the first non-zero error code.
macro_rules! check {
    ($e:expr) => {{
        let e: i16 = $e;
        if e != 0 {
            return Some(e);
        }
    }};
}

/// `topics[name-or-id partitions[…] tagged]`: `partition` reads one
/// partition (its tagged fields included) and returns its error code.
fn per_partition(
    r: &mut Reader<'_>,
    f: bool,
    topic_id: bool,
    mut partition: impl FnMut(&mut Reader<'_>) -> Option<i16>,
) -> Option<i16> {
    for _ in 0..r.array(f)?.unwrap_or(0) {
        if topic_id {
            r.bytes(16)?;
        } else {
            r.str(f)?;
        }
        for _ in 0..r.array(f)?.unwrap_or(0) {
            check!(partition(r)?);
        }
        r.tagged(f)?;
    }
    Some(0)
}

fn int32_array(r: &mut Reader<'_>, f: bool) -> Option<()> {
    let n = r.array(f)?.unwrap_or(0);
    r.bytes(n.checked_mul(4)?)?;
    Some(())
}

/// Produce (0): responses[name partitions[index error_code …]].
pub(crate) fn produce(r: &mut Reader<'_>, v: i16, f: bool) -> Option<i16> {
    per_partition(r, f, false, |r| {
        r.i32()?;
        let error = r.i16()?;
        r.i64()?; // base_offset
        if v >= 2 {
            r.i64()?; // log_append_time_ms
        }
        if v >= 5 {
            r.i64()?; // log_start_offset
        }
        if v >= 8 {
            for _ in 0..r.array(f)?.unwrap_or(0) {
                r.i32()?;
                r.str(f)?;
                r.tagged(f)?;
            }
            r.str(f)?; // error_message
        }
        r.tagged(f)?;
        Some(error)
    })
}

/// Fetch (1): [throttle] [error_code session_id] responses[topic
/// partitions[index error_code …]].
pub(crate) fn fetch(r: &mut Reader<'_>, v: i16, f: bool) -> Option<i16> {
    if v >= 1 {
        r.i32()?;
    }
    if v >= 7 {
        check!(r.i16()?);
        r.i32()?;
    }
    per_partition(r, f, v >= 13, |r| {
        r.i32()?;
        let error = r.i16()?;
        r.i64()?; // high_watermark
        if v >= 4 {
            r.i64()?; // last_stable_offset
        }
        if v >= 5 {
            r.i64()?; // log_start_offset
        }
        if v >= 4 {
            for _ in 0..r.array(f)?.unwrap_or(0) {
                r.i64()?;
                r.i64()?;
                r.tagged(f)?;
            }
        }
        if v >= 11 {
            r.i32()?; // preferred_read_replica
        }
        r.skip_bytes(f)?; // records
        r.tagged(f)?;
        Some(error)
    })
}

/// ListOffsets (2): [throttle] topics[name partitions[index error_code …]].
pub(crate) fn list_offsets(r: &mut Reader<'_>, v: i16, f: bool) -> Option<i16> {
    if v >= 2 {
        r.i32()?;
    }
    per_partition(r, f, false, |r| {
        r.i32()?;
        let error = r.i16()?;
        if v == 0 {
            let n = r.array(f)?.unwrap_or(0);
            r.bytes(n.checked_mul(8)?)?;
        } else {
            r.i64()?;
            r.i64()?;
        }
        if v >= 4 {
            r.i32()?;
        }
        r.tagged(f)?;
        Some(error)
    })
}

/// Metadata (3): topics[error_code name … partitions[error_code …]].
pub(crate) fn metadata(r: &mut Reader<'_>, v: i16, f: bool) -> Option<i16> {
    if v >= 3 {
        r.i32()?;
    }
    for _ in 0..r.array(f)?.unwrap_or(0) {
        r.i32()?;
        r.str(f)?;
        r.i32()?;
        if v >= 1 {
            r.str(f)?; // rack
        }
        r.tagged(f)?;
    }
    if v >= 2 {
        r.str(f)?; // cluster_id
    }
    if v >= 1 {
        r.i32()?; // controller_id
    }
    for _ in 0..r.array(f)?.unwrap_or(0) {
        check!(r.i16()?);
        r.str(f)?;
        if v >= 10 {
            r.bytes(16)?;
        }
        if v >= 1 {
            r.i8()?; // is_internal
        }
        for _ in 0..r.array(f)?.unwrap_or(0) {
            check!(r.i16()?);
            r.i32()?; // index
            r.i32()?; // leader
            if v >= 7 {
                r.i32()?; // leader_epoch
            }
            int32_array(r, f)?;
            int32_array(r, f)?;
            if v >= 5 {
                int32_array(r, f)?;
            }
            r.tagged(f)?;
        }
        if v >= 8 {
            r.i32()?; // topic_authorized_operations
        }
        r.tagged(f)?;
    }
    Some(0)
}

/// OffsetCommit (8): [throttle] topics[name partitions[index error_code]].
pub(crate) fn offset_commit(r: &mut Reader<'_>, v: i16, f: bool) -> Option<i16> {
    if v >= 3 {
        r.i32()?;
    }
    per_partition(r, f, false, |r| {
        r.i32()?;
        let error = r.i16()?;
        r.tagged(f)?;
        Some(error)
    })
}

fn offset_fetch_topics(r: &mut Reader<'_>, v: i16, f: bool) -> Option<i16> {
    per_partition(r, f, false, |r| {
        r.i32()?;
        r.i64()?;
        if v >= 5 {
            r.i32()?;
        }
        r.str(f)?; // metadata
        let error = r.i16()?;
        r.tagged(f)?;
        Some(error)
    })
}

/// OffsetFetch (9): per-partition errors, then the group's (v2+); from v8
/// the same per group.
pub(crate) fn offset_fetch(r: &mut Reader<'_>, v: i16, f: bool) -> Option<i16> {
    if v >= 3 {
        r.i32()?;
    }
    if v >= 8 {
        for _ in 0..r.array(f)?.unwrap_or(0) {
            r.str(f)?;
            check!(offset_fetch_topics(r, v, f)?);
            check!(r.i16()?);
            r.tagged(f)?;
        }
        return Some(0);
    }
    check!(offset_fetch_topics(r, v, f)?);
    if v >= 2 {
        check!(r.i16()?);
    }
    Some(0)
}

/// CreateTopics (19): [throttle] topics[name [topic_id] error_code …].
pub(crate) fn create_topics(r: &mut Reader<'_>, v: i16, f: bool) -> Option<i16> {
    if v >= 2 {
        r.i32()?;
    }
    for _ in 0..r.array(f)?.unwrap_or(0) {
        r.str(f)?;
        if v >= 7 {
            r.bytes(16)?;
        }
        check!(r.i16()?);
        if v >= 1 {
            r.str(f)?; // error_message
        }
        if v >= 5 {
            r.i32()?;
            r.i16()?;
            for _ in 0..r.array(f)?.unwrap_or(0) {
                r.str(f)?;
                r.str(f)?;
                r.i8()?;
                r.i8()?;
                r.i8()?;
                r.tagged(f)?;
            }
        }
        r.tagged(f)?;
    }
    Some(0)
}

/// DeleteTopics (20): [throttle] responses[name [topic_id] error_code …].
pub(crate) fn delete_topics(r: &mut Reader<'_>, v: i16, f: bool) -> Option<i16> {
    if v >= 1 {
        r.i32()?;
    }
    for _ in 0..r.array(f)?.unwrap_or(0) {
        r.str(f)?;
        if v >= 6 {
            r.bytes(16)?;
        }
        check!(r.i16()?);
        if v >= 5 {
            r.str(f)?;
        }
        r.tagged(f)?;
    }
    Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_nonzero_partition_error_of_a_later_topic() {
        // Produce v7: two topics; the second's second partition failed (6).
        let mut b = 2i32.to_be_bytes().to_vec();
        for (name, errors) in [("a", [0i16, 0]), ("b", [0, 6])] {
            b.extend_from_slice(&(name.len() as i16).to_be_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&2i32.to_be_bytes());
            for (i, e) in errors.iter().enumerate() {
                b.extend_from_slice(&(i as i32).to_be_bytes());
                b.extend_from_slice(&e.to_be_bytes());
                b.extend_from_slice(&[0; 24]); // base offset, append time, log start
            }
        }
        b.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(produce(&mut Reader::new(&b), 7, false), Some(6));
        assert_eq!(produce(&mut Reader::new(&b[..30]), 7, false), None);
    }

    #[test]
    fn metadata_topic_error() {
        // Metadata v1: no brokers, controller 1, one topic with error 3.
        let mut b = 0i32.to_be_bytes().to_vec();
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&3i16.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b.push(b't');
        assert_eq!(metadata(&mut Reader::new(&b), 1, false), Some(3));
    }
}
