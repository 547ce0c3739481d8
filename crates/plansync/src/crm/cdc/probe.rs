//! A one-shot check that change-event channels can be subscribed, for `plansync check`:
//! handshake, the first connect (answered at once), a subscribe of every channel from the tip
//! (so no event is replayed), then a disconnect. It uses the listener's session and transports,
//! so it exercises the same messages the engine will send; it reads no event and keeps no
//! position.

use std::time::Duration;

use tokio::time::Instant;

use crate::crm::CrmError;
use crate::crm::cdc::bayeux::{self, Message, MetaOutcome, ReplayFrom, Session};
use crate::crm::cdc::listener::{Transport, open_conn};
use crate::crm::cdc::transport::{Conn, Frame, TransportError};
use crate::crm::client::CrmClient;

/// How one channel's subscription went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelProbe {
    pub channel: String,
    /// The server's error (`400::The channel you requested to subscribe to doesn't exist …`).
    pub refused: Option<String>,
}

/// Why no channel could be tried.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("could not get a CRM token: {0}")]
    Auth(#[from] CrmError),
    #[error("the streaming endpoint refused the access token")]
    Unauthorized,
    #[error("streaming endpoint: {0}")]
    Transport(String),
    #[error("Bayeux handshake refused: {0}")]
    Handshake(String),
    #[error("Bayeux connect refused: {0}")]
    Connect(String),
    #[error("the streaming endpoint did not answer in time")]
    Timeout,
}

impl From<TransportError> for ProbeError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Unauthorized => ProbeError::Unauthorized,
            TransportError::Timeout(_) => ProbeError::Timeout,
            other => ProbeError::Transport(other.to_string()),
        }
    }
}

/// Subscribes each of `channels` once on a fresh session, all within `timeout`, and reports
/// each channel's answer.
pub async fn probe_channels(
    client: &CrmClient,
    api_version: &str,
    transport: Transport,
    channels: &[String],
    timeout: Duration,
) -> Result<Vec<ChannelProbe>, ProbeError> {
    let deadline = Instant::now() + timeout;
    let token = client.token().await?;
    let url = format!("{}/cometd/{api_version}", token.instance_url);
    let mut conn = open_conn(client, transport, &url, &token, 1 << 20, timeout).await?;
    let from: Vec<(String, ReplayFrom)> = channels
        .iter()
        .map(|c| (c.clone(), ReplayFrom::Tip))
        .collect();
    let mut session = Session::new(transport.connection_type(), &from);
    let result = subscribe_all(&mut conn, &mut session, deadline).await;
    // Leave no session behind on the server, whatever happened; its answer does not matter.
    if session.client_id().is_some() {
        let bye = session.disconnect();
        if conn.send(bye, Duration::from_secs(2)).await.is_ok() {
            let _ = conn.recv(Duration::from_millis(500)).await;
        }
    }
    conn.close().await;
    result
}

async fn subscribe_all(
    conn: &mut Conn,
    session: &mut Session,
    deadline: Instant,
) -> Result<Vec<ChannelProbe>, ProbeError> {
    let handshake = session.handshake();
    exchange(
        conn,
        session,
        handshake,
        deadline,
        |outcome| match outcome {
            MetaOutcome::HandshakeOk => Some(Ok(())),
            MetaOutcome::HandshakeFailed { error, .. } => Some(Err(ProbeError::Handshake(error))),
            _ => None,
        },
    )
    .await?;
    let connect = session.connect();
    exchange(conn, session, connect, deadline, |outcome| match outcome {
        MetaOutcome::ConnectOk => Some(Ok(())),
        MetaOutcome::ConnectFailed { error, .. } => Some(Err(ProbeError::Connect(error))),
        _ => None,
    })
    .await?;
    let all: Vec<usize> = (0..session.channels.len()).collect();
    let subscribe = session.subscribe(&all);
    let mut answers: Vec<ChannelProbe> = Vec::new();
    let wanted = session.channels.len();
    exchange(conn, session, subscribe, deadline, |outcome| {
        match outcome {
            MetaOutcome::Subscribed { channel } => answers.push(ChannelProbe {
                channel,
                refused: None,
            }),
            MetaOutcome::SubscribeFailed { channel, error, .. } => answers.push(ChannelProbe {
                channel,
                refused: Some(error),
            }),
            _ => return None,
        }
        (answers.len() >= wanted).then_some(Ok(()))
    })
    .await?;
    // In the order asked, each channel once (a server may answer out of order).
    Ok(session
        .channels
        .iter()
        .map(|c| {
            answers
                .iter()
                .find(|a| a.channel == c.name)
                .cloned()
                .unwrap_or_else(|| ChannelProbe {
                    channel: c.name.clone(),
                    refused: Some("the server did not answer the subscribe".into()),
                })
        })
        .collect())
}

/// Sends `frame`, then reads meta replies until `done` returns an answer. Data messages are
/// skipped: a probe delivers nothing.
async fn exchange(
    conn: &mut Conn,
    session: &mut Session,
    frame: String,
    deadline: Instant,
    mut done: impl FnMut(MetaOutcome) -> Option<Result<(), ProbeError>>,
) -> Result<(), ProbeError> {
    let left = |d: Instant| d.saturating_duration_since(Instant::now());
    conn.send(frame, left(deadline)).await?;
    loop {
        let remaining = left(deadline);
        if remaining.is_zero() {
            return Err(ProbeError::Timeout);
        }
        let bytes = match conn.recv(remaining).await? {
            Frame::Data(bytes) => bytes,
            Frame::Oversized { .. } => continue,
        };
        let messages = bayeux::split_frame(&bytes).map_err(|e| {
            ProbeError::Transport(format!("{e}: {}", crate::secret::excerpt(&bytes)))
        })?;
        for raw in messages {
            let Ok(msg) = serde_json::from_str::<Message<'_>>(raw.get()) else {
                continue;
            };
            if !msg.is_meta() {
                continue;
            }
            let outcome = session.on_meta(&msg);
            if let Some(answer) = done(outcome) {
                return answer;
            }
        }
    }
}
