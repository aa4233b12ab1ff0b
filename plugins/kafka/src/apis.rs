//! What trawl knows per Kafka API: names, the first flexible version, and
//! how to find topics, groups and error codes in requests and responses.

use crate::errors;
use crate::wire::Reader;

/// `(api_key, name, first flexible version)`; `i16::MAX` = never flexible.
const APIS: &[(i16, &str, i16)] = &[
    (0, "Produce", 9),
    (1, "Fetch", 12),
    (2, "ListOffsets", 6),
    (3, "Metadata", 9),
    (4, "LeaderAndIsr", 4),
    (5, "StopReplica", 2),
    (6, "UpdateMetadata", 6),
    (7, "ControlledShutdown", 3),
    (8, "OffsetCommit", 8),
    (9, "OffsetFetch", 6),
    (10, "FindCoordinator", 3),
    (11, "JoinGroup", 6),
    (12, "Heartbeat", 4),
    (13, "LeaveGroup", 4),
    (14, "SyncGroup", 4),
    (15, "DescribeGroups", 5),
    (16, "ListGroups", 3),
    (17, "SaslHandshake", i16::MAX),
    (18, "ApiVersions", 3),
    (19, "CreateTopics", 5),
    (20, "DeleteTopics", 4),
    (21, "DeleteRecords", 2),
    (22, "InitProducerId", 2),
    (23, "OffsetForLeaderEpoch", 4),
    (24, "AddPartitionsToTxn", 3),
    (25, "AddOffsetsToTxn", 3),
    (26, "EndTxn", 3),
    (27, "WriteTxnMarkers", 1),
    (28, "TxnOffsetCommit", 3),
    (29, "DescribeAcls", 2),
    (30, "CreateAcls", 2),
    (31, "DeleteAcls", 2),
    (32, "DescribeConfigs", 4),
    (33, "AlterConfigs", 2),
    (34, "AlterReplicaLogDirs", 2),
    (35, "DescribeLogDirs", 2),
    (36, "SaslAuthenticate", 2),
    (37, "CreatePartitions", 2),
    (38, "CreateDelegationToken", 2),
    (39, "RenewDelegationToken", 2),
    (40, "ExpireDelegationToken", 2),
    (41, "DescribeDelegationToken", 2),
    (42, "DeleteGroups", 2),
    (43, "ElectLeaders", 2),
    (44, "IncrementalAlterConfigs", 1),
    (45, "AlterPartitionReassignments", 0),
    (46, "ListPartitionReassignments", 0),
    (47, "OffsetDelete", i16::MAX),
    (48, "DescribeClientQuotas", 1),
    (49, "AlterClientQuotas", 1),
    (50, "DescribeUserScramCredentials", 0),
    (51, "AlterUserScramCredentials", 0),
    (55, "DescribeQuorum", 0),
    (57, "UpdateFeatures", 0),
    (60, "DescribeCluster", 0),
    (61, "DescribeProducers", 0),
    (64, "UnregisterBroker", 0),
    (65, "DescribeTransactions", 0),
    (66, "ListTransactions", 0),
    (68, "ConsumerGroupHeartbeat", 0),
    (69, "ConsumerGroupDescribe", 0),
];

pub fn name(key: i16) -> String {
    APIS.iter().find(|a| a.0 == key).map_or_else(|| format!("Unknown({key})"), |a| a.1.to_string())
}

/// Whether this request uses the flexible encoding (header v2).
pub fn flexible(key: i16, version: i16) -> bool {
    APIS.iter().find(|a| a.0 == key).is_some_and(|a| version >= a.2)
}

/// Topics and group a request names.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub topics: Vec<String>,
    pub group: Option<String>,
}

/// Most topic names kept per request.
const MAX_TOPICS: usize = 32;

fn push(topics: &mut Vec<String>, t: Option<String>) {
    if let Some(t) = t
        && topics.len() < MAX_TOPICS
        && !topics.contains(&t)
    {
        topics.push(t);
    }
}

fn uuid(r: &mut Reader<'_>) -> Option<String> {
    let b = r.bytes(16)?;
    Some(format!("topic_id:{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()))
}

/// Reads the body of a request for its topics and group. Best effort: what
/// was read before a short or unknown field is kept.
pub fn request_summary(key: i16, v: i16, body: &[u8]) -> Summary {
    let mut s = Summary::default();
    let f = flexible(key, v);
    let mut r = Reader::new(body);
    let _ = summarise(key, v, f, &mut r, &mut s);
    s
}

fn summarise(key: i16, v: i16, f: bool, r: &mut Reader<'_>, s: &mut Summary) -> Option<()> {
    match key {
        // Produce: [transactional_id] acks timeout topics[name partitions[index records]]
        0 => {
            if v >= 3 {
                r.str(f)?;
            }
            r.i16()?;
            r.i32()?;
            for _ in 0..r.array(f)?.unwrap_or(0) {
                push(&mut s.topics, r.str(f)?);
                for _ in 0..r.array(f)?.unwrap_or(0) {
                    r.i32()?;
                    r.skip_bytes(f)?;
                    r.tagged(f)?;
                }
                r.tagged(f)?;
            }
        }
        // Fetch: replica max_wait min_bytes [max_bytes] [isolation] [session] topics[…]
        1 => {
            r.i32()?;
            r.i32()?;
            r.i32()?;
            if v >= 3 {
                r.i32()?;
            }
            if v >= 4 {
                r.i8()?;
            }
            if v >= 7 {
                r.i32()?;
                r.i32()?;
            }
            for _ in 0..r.array(f)?.unwrap_or(0) {
                let topic = if v >= 13 { Some(uuid(r)?) } else { r.str(f)? };
                push(&mut s.topics, topic);
                for _ in 0..r.array(f)?.unwrap_or(0) {
                    r.i32()?;
                    if v >= 9 {
                        r.i32()?;
                    }
                    r.i64()?;
                    if v >= 12 {
                        r.i32()?;
                    }
                    if v >= 5 {
                        r.i64()?;
                    }
                    r.i32()?;
                    r.tagged(f)?;
                }
                r.tagged(f)?;
            }
        }
        // ListOffsets: replica [isolation] topics[name …]
        2 => {
            r.i32()?;
            if v >= 2 {
                r.i8()?;
            }
            if r.array(f)?.unwrap_or(0) > 0 {
                push(&mut s.topics, r.str(f)?);
            }
        }
        // Metadata: topics[[topic_id] name]
        3 => {
            for _ in 0..r.array(f)?.unwrap_or(0) {
                if v >= 10 {
                    r.bytes(16)?;
                }
                push(&mut s.topics, r.str(f)?);
                r.tagged(f)?;
            }
        }
        // OffsetCommit / TxnOffsetCommit: group_id first, topics later.
        8 | 28 => {
            s.group = r.str(f)?;
            if key == 8 {
                if v >= 1 {
                    r.i32()?;
                    r.str(f)?;
                }
                if v >= 7 {
                    r.str(f)?;
                }
                if (2..=4).contains(&v) {
                    r.i64()?;
                }
                if r.array(f)?.unwrap_or(0) > 0 {
                    push(&mut s.topics, r.str(f)?);
                }
            }
        }
        // OffsetFetch: group_id topics[name partitions] (v8+: groups[…])
        9 => {
            if v >= 8 {
                if r.array(f)?.unwrap_or(0) > 0 {
                    s.group = r.str(f)?;
                    if v >= 9 {
                        r.str(f)?;
                        r.i32()?;
                    }
                    if r.array(f)?.unwrap_or(0) > 0 {
                        push(&mut s.topics, r.str(f)?);
                    }
                }
            } else {
                s.group = r.str(f)?;
                if r.array(f)?.unwrap_or(0) > 0 {
                    push(&mut s.topics, r.str(f)?);
                }
            }
        }
        // FindCoordinator: key (v4+: keys[])
        10 => {
            if v >= 4 {
                r.i8()?;
                if r.array(f)?.unwrap_or(0) > 0 {
                    s.group = r.str(f)?;
                }
            } else {
                s.group = r.str(f)?;
            }
        }
        // Group membership: group_id first.
        11..=14 | 15 | 42 => {
            if key == 15 || key == 42 {
                if r.array(f)?.unwrap_or(0) > 0 {
                    s.group = r.str(f)?;
                }
            } else {
                s.group = r.str(f)?;
            }
        }
        // CreateTopics: topics[name …]
        19 if r.array(f)?.unwrap_or(0) > 0 => push(&mut s.topics, r.str(f)?),
        // DeleteTopics: topic_names[] (v6+: topics[name topic_id])
        20 => {
            for _ in 0..r.array(f)?.unwrap_or(0) {
                push(&mut s.topics, r.str(f)?);
                if v >= 6 {
                    r.bytes(16)?;
                    r.tagged(f)?;
                }
            }
        }
        _ => {}
    }
    Some(())
}

/// The error code a response reports: the top-level one, or the first
/// non-zero one per topic or partition, where trawl knows where to look.
/// `None`: not known for this API/version, or a body that ended early.
pub fn response_error(key: i16, v: i16, body: &[u8]) -> Option<i16> {
    let f = flexible(key, v);
    let mut r = Reader::new(body);
    // Version from which a throttle_time_ms precedes the error code.
    let throttled_since = match key {
        10 | 12..=14 => Some(1),
        11 => Some(2),
        _ => None,
    };
    match key {
        18 => r.i16(),
        10 if v >= 4 => None,
        10..=14 => {
            if throttled_since.is_some_and(|since| v >= since) {
                r.i32()?;
            }
            r.i16()
        }
        22 | 25 | 26 => {
            r.i32()?;
            r.i16()
        }
        0 => errors::produce(&mut r, v, f),
        1 => errors::fetch(&mut r, v, f),
        2 => errors::list_offsets(&mut r, v, f),
        3 => errors::metadata(&mut r, v, f),
        8 => errors::offset_commit(&mut r, v, f),
        9 => errors::offset_fetch(&mut r, v, f),
        19 => errors::create_topics(&mut r, v, f),
        20 => errors::delete_topics(&mut r, v, f),
        _ => None,
    }
}
