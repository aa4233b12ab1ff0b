//! The WebSocket protocol as types: every message either way is a tagged
//! enum variant (`{"type": …}`), so a message the service does not know is
//! a clear error, and the shapes are written once (see [`super::api`] for
//! the protocol in prose).

use super::filter::FilterError;
use super::subscription::{SpecError, SubscriptionSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// A new subscription, or a change to the current one.
    Subscribe(SubscriptionSpec),
    /// One edge in full.
    Detail { id: String },
}

/// What the service sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Everything to draw, after each (re)subscription.
    Snapshot { seq: u64, map: Value },
    /// What changed since the last message (nodes and edges added, changed
    /// and removed; `pending`, `totals`, `legend` when they changed).
    Delta {
        seq: u64,
        #[serde(flatten)]
        changes: serde_json::Map<String, Value>,
    },
    /// The edge a client asked for, `null` when it is gone.
    Detail { id: String, edge: Option<Value> },
    /// A message or subscription that cannot be taken (the previous
    /// subscription stays).
    Error(ErrorMessage),
}

/// Why a message was refused; for a display filter, where.
#[derive(Debug, Default, Serialize)]
pub struct ErrorMessage {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl ErrorMessage {
    pub fn new(error: impl Into<String>) -> Self {
        ErrorMessage { error: error.into(), ..ErrorMessage::default() }
    }
}

impl From<&FilterError> for ErrorMessage {
    fn from(f: &FilterError) -> Self {
        ErrorMessage {
            error: f.to_string(),
            message: Some(f.message.clone()),
            position: Some(f.position),
            line: Some(f.line),
            column: Some(f.column),
        }
    }
}

impl From<&SpecError> for ErrorMessage {
    fn from(e: &SpecError) -> Self {
        match e {
            SpecError::Filter(f) => f.into(),
            SpecError::Grouping(g) => ErrorMessage::new(g.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_keep_their_wire_shape() {
        let sub: ClientMessage =
            serde_json::from_value(json!({"type": "subscribe", "map": "l7", "filter": "dns"})).unwrap();
        assert!(matches!(sub, ClientMessage::Subscribe(ref s) if s.filter == "dns"));
        let detail: ClientMessage = serde_json::from_value(json!({"type": "detail", "id": "a|b|dns"})).unwrap();
        assert!(matches!(detail, ClientMessage::Detail { ref id } if id == "a|b|dns"));
        assert!(serde_json::from_value::<ClientMessage>(json!({"type": "shout"})).is_err());

        let mut changes = serde_json::Map::new();
        changes.insert("edges_added".into(), json!([]));
        let delta = serde_json::to_value(ServerMessage::Delta { seq: 3, changes }).unwrap();
        assert_eq!(delta, json!({"type": "delta", "seq": 3, "edges_added": []}));
        let error = serde_json::to_value(ServerMessage::Error(ErrorMessage::new("bad message"))).unwrap();
        assert_eq!(error, json!({"type": "error", "error": "bad message"}));
    }
}
