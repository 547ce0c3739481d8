//! The Bayeux message layer shared by both transports: message types, frame splitting,
//! the messages we send, and the session state (client id, advice, subscriptions and the
//! last delivered replay id of each channel).
//!
//! The transports only move frames; every decision about what a reply means is made here or
//! in `listener.rs`, so WebSocket and long-polling behave the same.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    /// Only new events (`-1`).
    Tip,
    /// Every retained event (`-2`).
    Earliest,
    /// Events after this replay id.
    After(i64),
}

impl ReplayFrom {
    pub fn value(self) -> i64 {
        match self {
            ReplayFrom::Tip => -1,
            ReplayFrom::Earliest => -2,
            ReplayFrom::After(id) => id,
        }
    }
}

/// Server advice (`reconnect`, `interval`, `timeout` in milliseconds).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Advice {
    #[serde(default)]
    pub reconnect: Option<String>,
    #[serde(default)]
    pub interval: Option<i64>,
    #[serde(default)]
    pub timeout: Option<i64>,
}

/// One Bayeux message as received. Strings borrow from the frame where they can; `data` and
/// `ext` stay raw until someone needs them.
#[derive(Debug, Deserialize)]
pub struct Message<'a> {
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(rename = "clientId", default, borrow)]
    pub client_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub successful: Option<bool>,
    #[serde(default, borrow)]
    pub error: Option<Cow<'a, str>>,
    #[serde(default)]
    pub advice: Option<Advice>,
    #[serde(default, borrow)]
    pub subscription: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub ext: Option<&'a RawValue>,
}

impl Message<'_> {
    pub fn is_meta(&self) -> bool {
        self.channel.starts_with("/meta/")
    }

    /// The subscribed channel of a `/meta/subscribe` reply (a string, or the first of a list).
    pub fn subscription(&self) -> Option<String> {
        let raw = self.subscription?;
        match serde_json::from_str::<serde_json::Value>(raw.get()).ok()? {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Array(items) => items.first()?.as_str().map(str::to_string),
            _ => None,
        }
    }

    /// The error text, including Salesforce's `ext.sfdc.failureReason` when the error itself
    /// is generic (`403::Handshake denied` for an expired token).
    pub fn error_text(&self) -> String {
        let mut text = self.error.as_deref().unwrap_or("").to_string();
        if let Some(ext) = self.ext
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(ext.get())
            && let Some(reason) = v.pointer("/sfdc/failureReason").and_then(|r| r.as_str())
        {
            text.push_str(" (");
            text.push_str(reason);
            text.push(')');
        }
        text
    }
}

/// Why a frame could not be split into messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame is not a JSON array of messages: {0}")]
    NotJson(String),
}

/// Splits a frame (a JSON array of messages, or a single message object) into raw messages,
/// without parsing them: one bad message must not take its neighbours down with it.
pub fn split_frame(frame: &[u8]) -> Result<Vec<&RawValue>, FrameError> {
    let first = frame.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        let one: &RawValue =
            serde_json::from_slice(frame).map_err(|e| FrameError::NotJson(e.to_string()))?;
        return Ok(vec![one]);
    }
    serde_json::from_slice(frame).map_err(|e| FrameError::NotJson(e.to_string()))
}

/// What a meta reply means for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaOutcome {
    HandshakeOk,
    HandshakeFailed {
        error: String,
        advice: Reconnect,
    },
    ConnectOk,
    ConnectFailed {
        error: String,
        advice: Reconnect,
    },
    Subscribed {
        channel: String,
    },
    SubscribeFailed {
        channel: String,
        error: String,
        /// The replay id the server refused as invalid or expired, if that was the reason.
        invalid_replay: Option<i64>,
        advice: Reconnect,
    },
    /// A reply to something we do not track (`/meta/unsubscribe`, `/meta/disconnect`).
    Other,
}

/// The server's `advice.reconnect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Connect again after `interval` (also when no advice was given).
    Retry,
    /// Handshake again (new client id) and resubscribe.
    Handshake,
    /// Stop: the server will not take us back as we are.
    None,
}

impl Reconnect {
    fn from_advice(advice: Option<&Advice>) -> Option<Reconnect> {
        match advice?.reconnect.as_deref()? {
            "retry" => Some(Reconnect::Retry),
            "handshake" => Some(Reconnect::Handshake),
            "none" => Some(Reconnect::None),
            _ => None,
        }
    }
}

/// One subscription and how far its events have been delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    pub name: String,
    /// Where to (re)subscribe from: the configured start until an event is delivered, then
    /// `After(last delivered replay id)`.
    pub from: ReplayFrom,
    pub subscribed: bool,
}

/// The Bayeux session: what is kept across reconnects and what a handshake resets.
#[derive(Debug)]
pub struct Session {
    connection_type: &'static str,
    client_id: Option<String>,
    next_id: u64,
    /// Milliseconds to wait before the next `/meta/connect`, and how long the server may hold
    /// one, from the last advice.
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub channels: Vec<ChannelState>,
}

impl Session {
    pub fn new(connection_type: &'static str, channels: &[(String, ReplayFrom)]) -> Session {
        Session {
            connection_type,
            client_id: None,
            next_id: 0,
            interval_ms: 0,
            timeout_ms: 110_000,
            channels: channels
                .iter()
                .map(|(name, from)| ChannelState {
                    name: name.clone(),
                    from: *from,
                    subscribed: false,
                })
                .collect(),
        }
    }

    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    /// A new handshake forgets the client id and every subscription (but not positions).
    pub fn handshake(&mut self) -> String {
        self.client_id = None;
        for c in &mut self.channels {
            c.subscribed = false;
        }
        let id = self.id();
        serde_json::json!([{
            "channel": "/meta/handshake",
            "version": "1.0",
            "minimumVersion": "1.0",
            "supportedConnectionTypes": [self.connection_type],
            "ext": {"replay": true},
            "id": id,
        }])
        .to_string()
    }

    pub fn connect(&mut self) -> String {
        let id = self.id();
        serde_json::json!([{
            "channel": "/meta/connect",
            "clientId": self.client_id,
            "connectionType": self.connection_type,
            "id": id,
        }])
        .to_string()
    }

    /// Subscribe messages for `channels` (by index), each from its current position.
    pub fn subscribe(&mut self, which: &[usize]) -> String {
        let mut messages = Vec::with_capacity(which.len());
        for &i in which {
            let Some(c) = self.channels.get(i) else {
                continue;
            };
            let (name, replay) = (c.name.clone(), c.from.value());
            let id = self.id();
            messages.push(serde_json::json!({
                "channel": "/meta/subscribe",
                "clientId": self.client_id,
                "subscription": name,
                "ext": {"replay": {name.as_str(): replay}},
                "id": id,
            }));
        }
        serde_json::Value::Array(messages).to_string()
    }

    pub fn disconnect(&mut self) -> String {
        let id = self.id();
        serde_json::json!([{"channel": "/meta/disconnect", "clientId": self.client_id, "id": id}])
            .to_string()
    }

    /// Index of a subscribed channel, for data messages.
    pub fn channel_index(&self, name: &str) -> Option<usize> {
        self.channels.iter().position(|c| c.name == name)
    }

    /// An event of `channel` up to `replay_id` reached the consumer: resubscribe after it.
    pub fn delivered(&mut self, channel: usize, replay_id: i64) {
        if let Some(c) = self.channels.get_mut(channel) {
            c.from = ReplayFrom::After(replay_id);
        }
    }

    /// Reads a meta reply, updating the session.
    pub fn on_meta(&mut self, msg: &Message<'_>) -> MetaOutcome {
        if let Some(advice) = &msg.advice {
            if let Some(interval) = advice.interval {
                self.interval_ms = u64::try_from(interval).unwrap_or(0);
            }
            if let Some(timeout) = advice.timeout {
                self.timeout_ms = u64::try_from(timeout).unwrap_or(0);
            }
        }
        let ok = msg.successful == Some(true);
        let advised = Reconnect::from_advice(msg.advice.as_ref());
        match msg.channel.as_ref() {
            "/meta/handshake" => match (&msg.client_id, ok) {
                (Some(client_id), true) if !client_id.is_empty() => {
                    self.client_id = Some(client_id.to_string());
                    MetaOutcome::HandshakeOk
                }
                _ => MetaOutcome::HandshakeFailed {
                    error: msg.error_text(),
                    advice: advised.unwrap_or(Reconnect::Handshake),
                },
            },
            "/meta/connect" if ok => MetaOutcome::ConnectOk,
            "/meta/connect" => {
                let error = msg.error_text();
                // `403::Unknown client` means the server forgot us; a new handshake is the only
                // way back, whatever the advice says.
                let advice = if error.starts_with("403::Unknown client") {
                    Reconnect::Handshake
                } else {
                    advised.unwrap_or(Reconnect::Retry)
                };
                MetaOutcome::ConnectFailed { error, advice }
            }
            "/meta/subscribe" => {
                let channel = msg.subscription().unwrap_or_default();
                if ok {
                    if let Some(i) = self.channel_index(&channel) {
                        self.channels[i].subscribed = true;
                    }
                    MetaOutcome::Subscribed { channel }
                } else {
                    let error = msg.error_text();
                    let invalid_replay = invalid_replay_id(&error);
                    let advice = if error.starts_with("403::Unknown client") {
                        Reconnect::Handshake
                    } else {
                        advised.unwrap_or(Reconnect::Retry)
                    };
                    MetaOutcome::SubscribeFailed {
                        channel,
                        error,
                        invalid_replay,
                        advice,
                    }
                }
            }
            _ => MetaOutcome::Other,
        }
    }
}

/// `400::The replayId {82} you provided was invalid. …` → `Some(82)`.
pub fn invalid_replay_id(error: &str) -> Option<i64> {
    let rest = error.split_once("The replayId {")?.1;
    let (id, tail) = rest.split_once('}')?;
    if !tail.contains("invalid") {
        return None;
    }
    id.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(session: &mut Session, json: &str) -> MetaOutcome {
        let msg: Message<'_> = serde_json::from_str(json).unwrap();
        session.on_meta(&msg)
    }

    #[test]
    fn handshake_connect_subscribe() {
        let mut s = Session::new(
            "long-polling",
            &[("/data/AccountChangeEvent".into(), ReplayFrom::Earliest)],
        );
        let hs: serde_json::Value = serde_json::from_str(&s.handshake()).unwrap();
        assert_eq!(hs[0]["ext"]["replay"], true);
        assert_eq!(hs[0]["supportedConnectionTypes"][0], "long-polling");
        assert_eq!(
            meta(
                &mut s,
                r#"{"channel":"/meta/handshake","clientId":"abc","successful":true,"id":"1"}"#
            ),
            MetaOutcome::HandshakeOk
        );
        assert_eq!(s.client_id(), Some("abc"));
        let sub: serde_json::Value = serde_json::from_str(&s.subscribe(&[0])).unwrap();
        assert_eq!(sub[0]["ext"]["replay"]["/data/AccountChangeEvent"], -2);
        assert_eq!(sub[0]["clientId"], "abc");
        s.delivered(0, 48213);
        let sub: serde_json::Value = serde_json::from_str(&s.subscribe(&[0])).unwrap();
        assert_eq!(sub[0]["ext"]["replay"]["/data/AccountChangeEvent"], 48213);
        assert_eq!(
            meta(
                &mut s,
                r#"{"channel":"/meta/connect","successful":true,"advice":{"reconnect":"retry","interval":5,"timeout":110000}}"#
            ),
            MetaOutcome::ConnectOk
        );
        assert_eq!((s.interval_ms, s.timeout_ms), (5, 110_000));
    }

    #[test]
    fn failures_carry_their_advice() {
        let mut s = Session::new("websocket", &[("/data/X".into(), ReplayFrom::After(82))]);
        assert_eq!(
            meta(
                &mut s,
                r#"{"channel":"/meta/connect","id":"104","error":"403::Unknown client","successful":false,"advice":{"reconnect":"handshake","interval":0}}"#
            ),
            MetaOutcome::ConnectFailed {
                error: "403::Unknown client".into(),
                advice: Reconnect::Handshake
            }
        );
        assert!(matches!(
            meta(
                &mut s,
                r#"{"channel":"/meta/connect","error":"401::Authentication invalid","successful":false,"advice":{"reconnect":"none"}}"#
            ),
            MetaOutcome::ConnectFailed {
                advice: Reconnect::None,
                ..
            }
        ));
        let out = meta(
            &mut s,
            r#"{"channel":"/meta/subscribe","subscription":"/data/X","successful":false,"error":"400::The replayId {82} you provided was invalid. Please provide a valid ID, -2 to replay all events, or -1 to replay only new events."}"#,
        );
        assert!(
            matches!(
                out,
                MetaOutcome::SubscribeFailed {
                    invalid_replay: Some(82),
                    ..
                }
            ),
            "{out:?}"
        );
        let out = meta(
            &mut s,
            r#"{"channel":"/meta/handshake","successful":false,"error":"403::Handshake denied","ext":{"sfdc":{"failureReason":"401::Authentication invalid"}},"advice":{"reconnect":"none"}}"#,
        );
        assert!(
            matches!(&out, MetaOutcome::HandshakeFailed { error, advice: Reconnect::None } if error.contains("401::")),
            "{out:?}"
        );
    }

    #[test]
    fn frames_split_without_parsing_messages() {
        assert_eq!(split_frame(br#"[{"a":1},{"b":[2]}]"#).unwrap().len(), 2);
        assert_eq!(split_frame(br#" {"a":1}"#).unwrap().len(), 1);
        assert!(split_frame(b"[{").is_err());
        assert!(split_frame(b"\"x\"").is_err());
        assert_eq!(
            invalid_replay_id("400::The replayId {abc} you provided was invalid"),
            None
        );
        assert_eq!(invalid_replay_id("403::Unknown client"), None);
    }
}
