//! Streaming API: Bayeux/CometD as Salesforce runs it, over HTTP long-polling at `/cometd/XX.X`
//! (and the `/cometd/XX.X/<type>` suffix forms), and the same messages over a WebSocket on the
//! same path. Handshake, connect (held until events exist or the advice timeout), subscribe with
//! the replay extension, unsubscribe, disconnect; Salesforce's error strings. A subscribe wakes
//! the client's held connect, so events it replays (`-2`, a stored id) are delivered at once.
//!
//! Delivery builds each message as `{"channel":…,"data":<shared text>}` around the event data
//! serialised once at commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Sim;
use super::http::{self, form_decode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    LongPolling,
    WebSocket,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::LongPolling => "long-polling",
            Transport::WebSocket => "websocket",
        }
    }
}

#[derive(Debug)]
struct Subscription {
    /// The table of a per-object channel; `None` for `/data/ChangeEvents`.
    entity: Option<usize>,
    /// Last replay id delivered (or the starting point).
    cursor: u64,
}

#[derive(Debug)]
struct Session {
    token: String,
    subs: HashMap<String, Subscription>,
    last_seen: Instant,
    /// A connect is being held for this client (it is not idle).
    waiting: bool,
    connected: bool,
}

/// Streaming clients by clientId.
#[derive(Debug, Default)]
pub struct Sessions {
    map: HashMap<String, Session>,
    /// While set, every handshake is refused with this error and advice `none`, as an org
    /// over its daily event delivery allocation refuses them (test hook).
    pub refusal: Option<String>,
}

impl Sessions {
    /// Forgets clients that neither hold a connect nor came back within `idle`.
    fn sweep(&mut self, idle: Duration) {
        self.map
            .retain(|_, s| s.waiting || s.last_seen.elapsed() < idle);
    }

    pub fn drop_all(&mut self) {
        self.map.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

fn client_id() -> String {
    let mut s = String::with_capacity(24);
    for _ in 0..24 {
        let c = fastrand::u8(0..36);
        s.push(if c < 10 {
            (b'0' + c) as char
        } else {
            (b'a' + c - 10) as char
        });
    }
    s
}

/// What processing one incoming message produced.
pub(super) enum Step {
    Reply(Value),
    /// A connect to hold until events arrive or the timeout passes.
    Hold {
        id: Option<Value>,
        client: String,
    },
}

fn with_id(mut v: Value, id: &Option<Value>) -> Value {
    if let (Value::Object(m), Some(id)) = (&mut v, id) {
        m.insert("id".into(), id.clone());
    }
    v
}

fn timeout_ms(sim: &Sim) -> u64 {
    u64::try_from(sim.config.connect_timeout.as_millis()).unwrap_or(u64::MAX)
}

fn connect_ok(sim: &Sim, client: &str, id: &Option<Value>, advice: bool) -> Value {
    let mut v = json!({"channel": "/meta/connect", "clientId": client, "successful": true});
    if advice && let Value::Object(m) = &mut v {
        m.insert(
            "advice".into(),
            json!({"reconnect": "retry", "interval": 0, "timeout": timeout_ms(sim)}),
        );
    }
    with_id(v, id)
}

fn unknown_client(channel: &str, id: &Option<Value>) -> Value {
    with_id(
        json!({"channel": channel, "error": "403::Unknown client", "successful": false,
               "advice": {"reconnect": "handshake", "interval": 0}}),
        id,
    )
}

/// Maps a subscription channel to its entity filter; `None` if no such channel.
fn channel_entity(sim: &Sim, channel: &str) -> Option<Option<usize>> {
    if channel == "/data/ChangeEvents" {
        return Some(None);
    }
    let org = sim.org_lock();
    org.tables
        .iter()
        .position(|t| t.def.channel == channel)
        .map(Some)
}

pub(super) fn process(sim: &Sim, msg: &Value, token: Option<&str>, transport: Transport) -> Step {
    let channel = msg.get("channel").and_then(Value::as_str).unwrap_or("");
    let id = msg.get("id").cloned();
    let client = msg
        .get("clientId")
        .and_then(Value::as_str)
        .map(str::to_string);
    match channel {
        "/meta/handshake" => {
            let Some(token) = token else {
                return Step::Reply(with_id(
                    json!({"channel": channel, "successful": false, "error": "401::Request requires authentication",
                           "advice": {"reconnect": "none", "interval": 0}}),
                    &id,
                ));
            };
            if let Some(refusal) = sim.streaming_lock().refusal.clone() {
                return Step::Reply(with_id(
                    json!({"channel": channel, "successful": false, "error": refusal,
                           "advice": {"reconnect": "none", "interval": 0}}),
                    &id,
                ));
            }
            if sim.tokens_lock().check(token).is_none() {
                return Step::Reply(with_id(
                    json!({"channel": channel, "successful": false, "error": "403::Handshake denied",
                           "ext": {"sfdc": {"failureReason": "401::Authentication invalid"}},
                           "advice": {"reconnect": "none", "interval": 0}}),
                    &id,
                ));
            }
            let cid = client_id();
            let mut sessions = sim.streaming_lock();
            sessions.sweep(sim.config.session_idle_timeout);
            sessions.map.insert(
                cid.clone(),
                Session {
                    token: token.to_string(),
                    subs: HashMap::new(),
                    last_seen: Instant::now(),
                    waiting: false,
                    connected: false,
                },
            );
            let types: Vec<&str> = match transport {
                Transport::LongPolling => vec!["long-polling"],
                Transport::WebSocket => vec!["websocket", "long-polling"],
            };
            Step::Reply(with_id(
                json!({"channel": channel, "version": "1.0", "minimumVersion": "1.0", "clientId": cid,
                       "supportedConnectionTypes": types, "ext": {"replay": true, "payload.format": true},
                       "successful": true}),
                &id,
            ))
        }
        "/meta/connect" => {
            let Some(cid) = client else {
                return Step::Reply(unknown_client(channel, &id));
            };
            let conn_type = msg
                .get("connectionType")
                .and_then(Value::as_str)
                .unwrap_or(transport.name());
            let mut sessions = sim.streaming_lock();
            sessions.sweep(sim.config.session_idle_timeout);
            let Some(session) = sessions.map.get_mut(&cid) else {
                return Step::Reply(unknown_client(channel, &id));
            };
            if sim.tokens_lock().check(&session.token).is_none() {
                sessions.map.remove(&cid);
                return Step::Reply(with_id(
                    json!({"channel": channel, "clientId": cid, "successful": false, "error": "401::Authentication invalid",
                           "advice": {"reconnect": "none", "interval": 0}}),
                    &id,
                ));
            }
            if conn_type != transport.name() {
                return Step::Reply(with_id(
                    json!({"channel": channel, "clientId": cid, "successful": false,
                           "error": format!("400::Invalid connection type {{{conn_type}}}")}),
                    &id,
                ));
            }
            session.last_seen = Instant::now();
            if !session.connected {
                session.connected = true;
                return Step::Reply(connect_ok(sim, &cid, &id, true));
            }
            session.waiting = true;
            Step::Hold { id, client: cid }
        }
        "/meta/subscribe" => subscribe(sim, msg, channel, client, id),
        "/meta/unsubscribe" => {
            let Some(cid) = client else {
                return Step::Reply(unknown_client(channel, &id));
            };
            let sub = msg
                .get("subscription")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut sessions = sim.streaming_lock();
            match sessions.map.get_mut(&cid) {
                Some(s) => {
                    s.subs.remove(&sub);
                    s.last_seen = Instant::now();
                    Step::Reply(with_id(
                        json!({"channel": channel, "clientId": cid, "subscription": sub, "successful": true}),
                        &id,
                    ))
                }
                None => Step::Reply(unknown_client(channel, &id)),
            }
        }
        "/meta/disconnect" => {
            let Some(cid) = client else {
                return Step::Reply(unknown_client(channel, &id));
            };
            let removed = sim.streaming_lock().map.remove(&cid).is_some();
            sim.notify();
            if removed {
                Step::Reply(with_id(
                    json!({"channel": channel, "clientId": cid, "successful": true}),
                    &id,
                ))
            } else {
                Step::Reply(unknown_client(channel, &id))
            }
        }
        _ => Step::Reply(with_id(
            json!({"channel": channel, "successful": false, "error": format!("403:{channel}:Publish denied")}),
            &id,
        )),
    }
}

fn subscribe(
    sim: &Sim,
    msg: &Value,
    channel: &str,
    client: Option<String>,
    id: Option<Value>,
) -> Step {
    let Some(cid) = client else {
        return Step::Reply(unknown_client(channel, &id));
    };
    let sub = msg
        .get("subscription")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let fail = |error: String| {
        Step::Reply(with_id(
            json!({"channel": channel, "clientId": cid, "subscription": sub, "successful": false, "error": error}),
            &id,
        ))
    };
    let Some(entity) = channel_entity(sim, &sub) else {
        return fail(format!(
            "400::The channel you requested to subscribe to doesn't exist {{{sub}}}"
        ));
    };
    let replay_map = msg.get("ext").and_then(|e| e.get("replay"));
    let requested = match replay_map {
        None | Some(Value::Null) => Some(-1),
        Some(Value::Object(m)) => match m.get(&sub) {
            Some(v) => v.as_i64(),
            None => {
                let shown = m
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return fail(format!(
                    "400::The replayId for channel {{{sub}}} wasn't found using the provided replay ID map {{{{{shown}}}}}. Please provide a valid replay ID map."
                ));
            }
        },
        Some(_) => None,
    };
    let invalid = |shown: String| {
        format!(
            "400::The replayId {{{shown}}} you provided was invalid. Please provide a valid ID, -2 to replay all events, or -1 to replay only new events."
        )
    };
    let Some(requested) = requested else {
        let shown = replay_map
            .and_then(|m| m.get(&sub))
            .map(Value::to_string)
            .unwrap_or_default();
        return fail(invalid(shown));
    };
    let mut sessions = sim.streaming_lock();
    let Some(session) = sessions.map.get_mut(&cid) else {
        return Step::Reply(unknown_client(channel, &id));
    };
    let cursor = {
        let mut org = sim.org_lock();
        org.events.expire(super::org::now_ms());
        match requested {
            -1 => Some(org.events.last_replay_id()),
            -2 => Some(org.events.before_oldest()),
            n if n >= 0 && org.events.can_resume_after(n as u64) => Some(n as u64),
            _ => None,
        }
    };
    let Some(cursor) = cursor else {
        drop(sessions);
        return fail(invalid(requested.to_string()));
    };
    session
        .subs
        .insert(sub.clone(), Subscription { entity, cursor });
    session.last_seen = Instant::now();
    drop(sessions);
    // A connect this client holds (long-polling: on another HTTP request) is answered as soon
    // as there is something to deliver, and a replay from -2 or a stored id may have events
    // now; wake the held connects so they look, rather than wait for the next commit.
    sim.notify();
    Step::Reply(with_id(
        json!({"channel": channel, "clientId": cid, "subscription": sub, "successful": true}),
        &id,
    ))
}

pub(super) enum Collected {
    Events(Vec<String>),
    Nothing,
    Gone,
}

/// Takes the events waiting for `client`'s subscriptions, advancing their cursors.
pub(super) fn collect(sim: &Sim, client: &str) -> Collected {
    let mut sessions = sim.streaming_lock();
    let Some(session) = sessions.map.get_mut(client) else {
        return Collected::Gone;
    };
    let max = sim.config.max_events_per_connect.max(1);
    let org = sim.org_lock();
    let mut out: Vec<(u64, String)> = Vec::new();
    for (channel, sub) in session.subs.iter_mut() {
        let events = org.events.after(sub.cursor, sub.entity, max);
        if let Some(last) = events.last() {
            sub.cursor = last.replay_id;
        }
        let name = serde_json::to_string(channel).unwrap_or_default();
        for e in events {
            let mut m = String::with_capacity(e.data.len() + name.len() + 24);
            m.push_str("{\"channel\":");
            m.push_str(&name);
            m.push_str(",\"data\":");
            m.push_str(&e.data);
            m.push('}');
            out.push((e.replay_id, m));
        }
    }
    drop(org);
    if out.is_empty() {
        return Collected::Nothing;
    }
    out.sort_by_key(|(r, _)| *r);
    Collected::Events(out.into_iter().map(|(_, m)| m).collect())
}

pub(super) fn finish_hold(sim: &Sim, client: &str) {
    if let Some(s) = sim.streaming_lock().map.get_mut(client) {
        s.waiting = false;
        s.last_seen = Instant::now();
    }
}

/// Holds a connect: events as soon as they exist, or the plain reply at the timeout. Returns the
/// messages to send (events first, then the connect reply).
async fn hold(sim: &Sim, id: Option<Value>, client: String) -> Vec<String> {
    let mut pulse = sim.pulse.subscribe();
    let mut closing = sim.closing.subscribe();
    let deadline = tokio::time::Instant::now() + sim.config.connect_timeout;
    loop {
        match collect(sim, &client) {
            Collected::Gone => return vec![unknown_client("/meta/connect", &id).to_string()],
            Collected::Events(mut msgs) => {
                finish_hold(sim, &client);
                msgs.push(connect_ok(sim, &client, &id, false).to_string());
                return msgs;
            }
            Collected::Nothing => {}
        }
        tokio::select! {
            changed = pulse.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = closed(&mut closing) => break,
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    finish_hold(sim, &client);
    let still_there = sim.streaming_lock().map.contains_key(&client);
    if still_there {
        vec![connect_ok(sim, &client, &id, false).to_string()]
    } else {
        vec![unknown_client("/meta/connect", &id).to_string()]
    }
}

/// Completes when the server stops.
async fn closed(rx: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped within this statement, keeping callers `Send`.
    let _ = rx.wait_for(|c| *c).await.is_ok();
}

pub(super) fn parse_messages(headers: &HeaderMap, body: &[u8]) -> Option<Vec<Value>> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let value: Value = if form {
        let pairs = form_decode(body)?;
        let text = pairs.into_iter().find(|(k, _)| k == "message")?.1;
        serde_json::from_str(&text).ok()?
    } else {
        serde_json::from_slice(body).ok()?
    };
    match value {
        Value::Array(list) => Some(list),
        obj @ Value::Object(_) => Some(vec![obj]),
        _ => None,
    }
}

fn json_array(parts: &[String]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(p);
    }
    out.push(']');
    out
}

fn bad_request(text: &str) -> Response {
    (StatusCode::BAD_REQUEST, text.to_string()).into_response()
}

const NO_VERSION: &str = "API version in the URI is mandatory. URI format: '/cometd/59.0'";

pub async fn no_version() -> Response {
    bad_request(NO_VERSION)
}

pub async fn long_poll_suffix(
    State(sim): State<Arc<Sim>>,
    Path((version, _rest)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    long_poll(State(sim), Path(version), headers, body).await
}

/// `POST /cometd/XX.X`: one batch of Bayeux messages over long-polling.
pub async fn long_poll(
    State(sim): State<Arc<Sim>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if http::api_version(&format!("v{version}")).is_none() {
        return bad_request(NO_VERSION);
    }
    if body.len() > 32_768 {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Maximum Request Size Exceeded",
        )
            .into_response();
    }
    let Some(messages) = parse_messages(&headers, &body) else {
        return bad_request("400::Invalid message");
    };
    let token = http::bearer(&headers).map(str::to_string);
    let mut out: Vec<String> = Vec::new();
    let mut held = None;
    for m in &messages {
        match process(&sim, m, token.as_deref(), Transport::LongPolling) {
            Step::Reply(v) => out.push(v.to_string()),
            Step::Hold { id, client } => held = Some((id, client)),
        }
    }
    if let Some((id, client)) = held {
        out.extend(hold(&sim, id, client).await);
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=UTF-8"),
        )],
        json_array(&out),
    )
        .into_response()
}

/// `GET /cometd/XX.X` with an upgrade: the same messages as JSON text frames.
pub async fn websocket(
    State(sim): State<Arc<Sim>>,
    Path(version): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if http::api_version(&format!("v{version}")).is_none() {
        return bad_request(NO_VERSION);
    }
    // Browsers cannot set headers on an upgrade, so a query parameter also carries the token.
    let token = http::bearer(&headers)
        .map(str::to_string)
        .or_else(|| params.get("access_token").cloned());
    ws.on_upgrade(move |socket| serve_socket(sim, socket, token))
}

async fn serve_socket(sim: Arc<Sim>, mut socket: WebSocket, token: Option<String>) {
    let mut closing = sim.closing.subscribe();
    let mut pulse = sim.pulse.subscribe();
    // The held connect: its id, client and deadline.
    let mut pending: Option<(Option<Value>, String, tokio::time::Instant)> = None;
    loop {
        let deadline = pending.as_ref().map(|p| p.2);
        tokio::select! {
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                };
                let messages = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Array(list)) => list,
                    Ok(obj @ Value::Object(_)) => vec![obj],
                    _ => {
                        let reply = json!([{"channel": "/meta/unknown", "successful": false, "error": "400::Invalid message"}]);
                        if socket.send(Message::Text(reply.to_string().into())).await.is_err() { break; }
                        continue;
                    }
                };
                let mut out = Vec::new();
                for m in &messages {
                    match process(&sim, m, token.as_deref(), Transport::WebSocket) {
                        Step::Reply(v) => out.push(v.to_string()),
                        Step::Hold { id, client } => {
                            pending = Some((id, client, tokio::time::Instant::now() + sim.config.connect_timeout));
                        }
                    }
                }
                if !out.is_empty() && socket.send(Message::Text(json_array(&out).into())).await.is_err() {
                    break;
                }
                // Events may already be waiting for a fresh connect.
                if let Some((id, client, _)) = pending.take() {
                    match collect(&sim, &client) {
                        Collected::Events(mut msgs) => {
                            finish_hold(&sim, &client);
                            msgs.push(connect_ok(&sim, &client, &id, false).to_string());
                            if socket.send(Message::Text(json_array(&msgs).into())).await.is_err() { break; }
                        }
                        Collected::Gone => {
                            let msg = unknown_client("/meta/connect", &id).to_string();
                            if socket.send(Message::Text(json_array(&[msg]).into())).await.is_err() { break; }
                        }
                        Collected::Nothing => {
                            let d = tokio::time::Instant::now() + sim.config.connect_timeout;
                            pending = Some((id, client, d));
                        }
                    }
                }
            }
            changed = pulse.changed(), if pending.is_some() => {
                if changed.is_err() { break; }
                let Some((id, client, d)) = pending.take() else { continue };
                let msgs = match collect(&sim, &client) {
                    Collected::Events(mut msgs) => {
                        finish_hold(&sim, &client);
                        msgs.push(connect_ok(&sim, &client, &id, false).to_string());
                        msgs
                    }
                    Collected::Gone => vec![unknown_client("/meta/connect", &id).to_string()],
                    Collected::Nothing => {
                        pending = Some((id, client, d));
                        continue;
                    }
                };
                if socket.send(Message::Text(json_array(&msgs).into())).await.is_err() { break; }
            }
            _ = async { if let Some(d) = deadline { tokio::time::sleep_until(d).await } }, if deadline.is_some() => {
                if let Some((id, client, _)) = pending.take() {
                    finish_hold(&sim, &client);
                    let msg = connect_ok(&sim, &client, &id, false).to_string();
                    if socket.send(Message::Text(json_array(&[msg]).into())).await.is_err() { break; }
                }
            }
            _ = closed(&mut closing) => break,
        }
    }
    if let Some((_, client, _)) = pending {
        finish_hold(&sim, &client);
    }
}
