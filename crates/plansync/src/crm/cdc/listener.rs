//! The CDC listener: drives a Bayeux session over either transport, turns what arrives into
//! `CdcItem`s on a bounded channel (a slow consumer slows the reading, nothing piles up), and
//! survives what streaming servers do: dropped connections, forgotten clients, expired
//! tokens, invalid replay ids, garbage frames.
//!
//! Position: each channel resubscribes after the replay id of the last event *delivered* to
//! the channel (the `send` completed), so a reconnect neither skips nor loses an event; the
//! consumer sees at worst a repeat of an event it already had.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;

use tokio::sync::mpsc;

use crate::crm::CrmError;
use crate::crm::cdc::bayeux::{self, Message, MetaOutcome, Reconnect, ReplayFrom, Session};
use crate::crm::cdc::event::{
    CdcEvent, EventProblem, Gap, Overflow, ParseContext, Parsed, ProblemKind, parse_data,
};
use crate::crm::cdc::longpoll::LongPollConn;
use crate::crm::cdc::transport::{Conn, Frame, TransportError};
use crate::crm::cdc::ws::{WsConn, ws_url};
use crate::crm::client::{AccessToken, CrmClient};

/// Which transport carries the Bayeux messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    /// What a real Salesforce org offers.
    LongPolling,
}

impl Transport {
    pub fn connection_type(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::LongPolling => "long-polling",
        }
    }
}

/// What the listener is configured with. The instance URL and token come from the client.
#[derive(Debug, Clone)]
pub struct CdcConfig {
    /// `59.0` style; the endpoint is `{instance}/cometd/{api_version}`.
    pub api_version: String,
    /// Channels (`/data/AccountChangeEvent`, `/data/ChangeEvents`) and where each starts.
    pub channels: Vec<(String, ReplayFrom)>,
    pub transport: Transport,
    /// Our writes carry `Sforce-Call-Options: client=<this>`; events whose `changeOrigin`
    /// names it are marked `ours`.
    pub our_client_id: String,
    /// Object → its field names (flattened). When given, events for other objects or naming
    /// other fields are reported as problems instead of delivered.
    pub known_fields: Option<HashMap<String, HashSet<String>>>,
    pub backoff: Backoff,
    /// Frames larger than this are dropped and reported (`ProblemKind::FrameDropped`).
    pub max_frame_bytes: usize,
    /// Added to the server's advised `/meta/connect` hold time before we call it dead.
    pub timeout_margin: Duration,
    /// Give up after this many failures in a row without a successful `/meta/connect`
    /// (`None`: keep trying).
    pub max_consecutive_failures: Option<u32>,
    /// Report [`CdcItem::Alive`] after a `/meta/connect` reply, at most this often (`None`:
    /// never). A quiet channel delivers nothing for hours; this tells it from a dead one.
    pub alive_every: Option<Duration>,
}

impl CdcConfig {
    pub fn new(
        api_version: impl Into<String>,
        channels: Vec<(String, ReplayFrom)>,
        transport: Transport,
        our_client_id: impl Into<String>,
    ) -> Self {
        CdcConfig {
            api_version: api_version.into(),
            channels,
            transport,
            our_client_id: our_client_id.into(),
            known_fields: None,
            backoff: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(60),
            },
            max_frame_bytes: 1 << 20,
            timeout_margin: Duration::from_secs(30),
            max_consecutive_failures: None,
            alive_every: None,
        }
    }
}

/// What the listener reports.
#[derive(Debug, Clone, PartialEq)]
pub enum CdcItem {
    /// A change event (call `to_changes` for the engine).
    Event(CdcEvent),
    /// Records changed but the event had no values: re-read them.
    Gap(Gap),
    /// Changes were not sent one by one: re-read the whole object.
    Overflow(Overflow),
    /// The server refused to resume `channel` after `replay_id` (expired or unknown). The
    /// listener has resubscribed from the tip (new events only); the engine must reconcile
    /// the channel's objects in full to cover what was missed.
    ReplayInvalid {
        channel: String,
        replay_id: i64,
        message: String,
    },
    /// Something arrived that could not be used; it was skipped and the stream goes on.
    /// With the problem's `entity`/`record_ids` the engine can re-read what it was about.
    Problem {
        channel: String,
        problem: EventProblem,
        /// The start of the message, for the log.
        excerpt: String,
    },
    /// Handshake done and every channel subscribed.
    Connected { transport: Transport },
    /// The session ended; the listener will reconnect unless it stops (`run` returns).
    Disconnected { reason: String },
    /// The server answered a `/meta/connect`: the session is alive, whether or not any event
    /// came (only with [`CdcConfig::alive_every`]).
    Alive,
}

/// Why the listener stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    #[error("CDC authentication failed: {0}")]
    Auth(#[from] CrmError),
    #[error("the streaming server told us to stop: {error}")]
    Stopped { error: String },
    #[error("subscribing to {channel} failed: {error}")]
    Subscribe { channel: String, error: String },
    #[error("gave up after {failures} failures in a row; the last: {last}")]
    GaveUp { failures: u32, last: String },
    #[error("CDC configuration: {0}")]
    Config(String),
}

/// A CDC listener, ready to `run`.
pub struct CdcListener {
    client: CrmClient,
    config: CdcConfig,
}

/// How one session ended, and what to do next.
enum Step {
    /// Send `/meta/connect` again on the same session (advice `retry`).
    Retry(String),
    /// Handshake again on the same connection (advice `handshake`, `403::Unknown client`).
    Rehandshake(String),
    /// Drop the connection, wait, open a new one.
    Reconnect(String),
    /// The token was refused: get a new one, then reconnect.
    Reauth(String),
    Stop(CdcError),
    /// The consumer dropped its receiver: nothing left to do.
    ReceiverGone,
}

/// What `pump` waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    Handshake,
    Connect,
    Subscriptions,
}

impl CdcListener {
    pub fn new(client: CrmClient, config: CdcConfig) -> Result<CdcListener, CdcError> {
        if config.channels.is_empty() {
            return Err(CdcError::Config("no channel to subscribe to".into()));
        }
        let mut seen = HashSet::new();
        for (channel, _) in &config.channels {
            if !channel.starts_with('/') || channel.starts_with("/meta/") {
                return Err(CdcError::Config(format!(
                    "`{channel}` is not a data channel"
                )));
            }
            if !seen.insert(channel) {
                return Err(CdcError::Config(format!("`{channel}` is listed twice")));
            }
        }
        Ok(CdcListener { client, config })
    }

    /// Runs until `shutdown` completes, the receiver is dropped, or the server or the
    /// credentials leave no way to go on (then the error says why).
    pub async fn run(
        self,
        tx: mpsc::Sender<CdcItem>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), CdcError> {
        let session = Session::new(
            self.config.transport.connection_type(),
            &self.config.channels,
        );
        let mut driver = Driver {
            client: self.client,
            config: self.config,
            session,
            tx,
            failures: 0,
            reauths_in_a_row: 0,
            alive_sent: None,
        };
        tokio::select! {
            biased;
            () = shutdown => Ok(()),
            result = driver.run() => result,
        }
    }
}

struct Driver {
    client: CrmClient,
    config: CdcConfig,
    session: Session,
    tx: mpsc::Sender<CdcItem>,
    /// Failures since the last successful `/meta/connect`.
    failures: u32,
    /// Token refusals since the last successful `/meta/connect`: a second one in a row means
    /// a fresh token does not help, and we stop instead of hammering the token endpoint.
    reauths_in_a_row: u32,
    /// When [`CdcItem::Alive`] was last reported.
    alive_sent: Option<std::time::Instant>,
}

impl Driver {
    async fn run(&mut self) -> Result<(), CdcError> {
        let mut conn: Option<Conn> = None;
        let mut stale: Option<Arc<AccessToken>> = None;
        let mut last_reason = String::new();
        loop {
            if let Some(max) = self.config.max_consecutive_failures
                && self.failures >= max
            {
                return Err(CdcError::GaveUp {
                    failures: self.failures,
                    last: last_reason,
                });
            }
            let token = match stale.take() {
                Some(old) => self.client.reauthenticate(&old).await,
                None => self.client.token().await,
            };
            let token = match token {
                Ok(t) => t,
                Err(e) if e.is_transient() => {
                    last_reason = e.to_string();
                    self.failures += 1;
                    tokio::time::sleep(self.config.backoff.wait(self.failures)).await;
                    continue;
                }
                Err(e) => return Err(CdcError::Auth(e)),
            };
            let mut open = match conn.take() {
                Some(c) => c,
                None => match self.open(&token).await {
                    Ok(c) => c,
                    Err(e) => {
                        last_reason = e.to_string();
                        if e == TransportError::Unauthorized {
                            self.reauths_in_a_row += 1;
                            if self.reauths_in_a_row > 1 {
                                return Err(CdcError::Stopped {
                                    error: "the streaming endpoint refuses a fresh token".into(),
                                });
                            }
                            stale = Some(token);
                            continue;
                        }
                        self.failures += 1;
                        tokio::time::sleep(self.config.backoff.wait(self.failures)).await;
                        continue;
                    }
                },
            };
            let step = self.session(&mut open).await;
            let reason = match &step {
                Step::Retry(r) | Step::Rehandshake(r) | Step::Reconnect(r) | Step::Reauth(r) => {
                    r.clone()
                }
                Step::Stop(e) => e.to_string(),
                Step::ReceiverGone => return Ok(()),
            };
            tracing::info!(event = "cdc_session_ended", reason = %reason, "the CDC session ended");
            if self
                .tx
                .send(CdcItem::Disconnected {
                    reason: reason.clone(),
                })
                .await
                .is_err()
            {
                return Ok(());
            }
            last_reason = reason;
            self.failures += 1;
            match step {
                Step::Stop(e) => return Err(e),
                Step::ReceiverGone => return Ok(()),
                Step::Retry(_) | Step::Rehandshake(_) => {
                    // The first re-handshake follows the server's interval; repeated ones back off.
                    let wait = if self.failures <= 1 {
                        Duration::from_millis(self.session.interval_ms)
                    } else {
                        self.config.backoff.wait(self.failures)
                    };
                    tokio::time::sleep(wait).await;
                    conn = Some(open);
                }
                Step::Reconnect(_) => {
                    open.close().await;
                    tokio::time::sleep(self.config.backoff.wait(self.failures)).await;
                }
                Step::Reauth(_) => {
                    open.close().await;
                    self.reauths_in_a_row += 1;
                    if self.reauths_in_a_row > 1 {
                        return Err(CdcError::Stopped {
                            error: format!(
                                "the token was refused again after re-authenticating: {last_reason}"
                            ),
                        });
                    }
                    stale = Some(token);
                }
            }
        }
    }

    fn endpoint(&self, token: &AccessToken) -> String {
        format!("{}/cometd/{}", token.instance_url, self.config.api_version)
    }

    fn hold_timeout(&self) -> Duration {
        Duration::from_millis(self.session.timeout_ms) + self.config.timeout_margin
    }

    async fn open(&self, token: &AccessToken) -> Result<Conn, TransportError> {
        open_conn(
            &self.client,
            self.config.transport,
            &self.endpoint(token),
            token,
            self.config.max_frame_bytes,
            self.config.timeout_margin,
        )
        .await
    }

    /// One Bayeux session on an open connection: handshake, connect, subscribe, then the
    /// connect loop until something ends it.
    async fn session(&mut self, conn: &mut Conn) -> Step {
        let handshake = self.session.handshake();
        if let Err(step) = self.exchange(conn, handshake, Wait::Handshake).await {
            return step;
        }
        let connect = self.session.connect();
        match self.exchange(conn, connect, Wait::Connect).await {
            Ok(()) | Err(Step::Retry(_)) => {}
            Err(step) => return step,
        }
        let all: Vec<usize> = (0..self.session.channels.len()).collect();
        let subscribe = self.session.subscribe(&all);
        if let Err(step) = self.exchange(conn, subscribe, Wait::Subscriptions).await {
            return match step {
                Step::Retry(r) => Step::Rehandshake(r),
                other => other,
            };
        }
        if self
            .tx
            .send(CdcItem::Connected {
                transport: self.config.transport,
            })
            .await
            .is_err()
        {
            return Step::ReceiverGone;
        }
        loop {
            let connect = self.session.connect();
            match self.exchange(conn, connect, Wait::Connect).await {
                Ok(()) => {
                    self.failures = 0;
                    self.reauths_in_a_row = 0;
                    if self.session.interval_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(self.session.interval_ms)).await;
                    }
                }
                Err(Step::Retry(reason)) => {
                    self.failures += 1;
                    if let Some(max) = self.config.max_consecutive_failures
                        && self.failures >= max
                    {
                        return Step::Reconnect(reason);
                    }
                    let wait = Duration::from_millis(self.session.interval_ms)
                        .max(self.config.backoff.wait(self.failures));
                    tokio::time::sleep(wait).await;
                }
                Err(step) => return step,
            }
        }
    }

    async fn exchange(&mut self, conn: &mut Conn, frame: String, wait: Wait) -> Result<(), Step> {
        conn.send(frame, self.hold_timeout())
            .await
            .map_err(transport_step)?;
        self.pump(conn, wait).await
    }

    /// Reads frames, delivering data and acting on meta replies, until `wait` is satisfied.
    async fn pump(&mut self, conn: &mut Conn, wait: Wait) -> Result<(), Step> {
        let mut pending: HashSet<String> = if wait == Wait::Subscriptions {
            self.session
                .channels
                .iter()
                .map(|c| c.name.clone())
                .collect()
        } else {
            HashSet::new()
        };
        loop {
            let frame = conn
                .recv(self.hold_timeout())
                .await
                .map_err(transport_step)?;
            let bytes = match frame {
                Frame::Oversized { len } => {
                    self.problem(
                        String::new(),
                        None,
                        ProblemKind::FrameDropped,
                        format!(
                            "a frame of {len} bytes is over the {} byte cap; its events were not read",
                            self.config.max_frame_bytes
                        ),
                        String::new(),
                    )
                    .await?;
                    continue;
                }
                Frame::Data(bytes) => bytes,
            };
            let messages = match bayeux::split_frame(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    self.problem(
                        String::new(),
                        None,
                        ProblemKind::Malformed,
                        e.to_string(),
                        crate::secret::excerpt(&bytes),
                    )
                    .await?;
                    continue;
                }
            };
            let mut done = false;
            let mut step: Option<Step> = None;
            let mut resubscribe: Vec<usize> = Vec::new();
            for raw in messages {
                let msg: Message<'_> = match serde_json::from_str(raw.get()) {
                    Ok(m) => m,
                    Err(e) => {
                        self.problem(
                            String::new(),
                            None,
                            ProblemKind::Malformed,
                            format!("not a Bayeux message: {e}"),
                            crate::secret::excerpt(raw.get().as_bytes()),
                        )
                        .await?;
                        continue;
                    }
                };
                if !msg.is_meta() {
                    self.data(&msg, raw.get()).await?;
                    continue;
                }
                match self.session.on_meta(&msg) {
                    MetaOutcome::HandshakeOk => done |= wait == Wait::Handshake,
                    MetaOutcome::HandshakeFailed { error, advice } => {
                        step.get_or_insert(if error.contains("401::") {
                            Step::Reauth(error)
                        } else if advice == Reconnect::None {
                            Step::Stop(CdcError::Stopped { error })
                        } else {
                            Step::Reconnect(format!("handshake refused: {error}"))
                        });
                    }
                    MetaOutcome::ConnectOk => {
                        done |= wait == Wait::Connect;
                        if let Some(every) = self.config.alive_every
                            && self.alive_sent.is_none_or(|at| at.elapsed() >= every)
                        {
                            self.alive_sent = Some(std::time::Instant::now());
                            self.send(CdcItem::Alive).await?;
                        }
                    }
                    MetaOutcome::ConnectFailed { error, advice } => {
                        step.get_or_insert(failed_step(error, advice));
                    }
                    MetaOutcome::Subscribed { channel } => {
                        pending.remove(&channel);
                        done |= wait == Wait::Subscriptions && pending.is_empty();
                    }
                    MetaOutcome::SubscribeFailed {
                        channel,
                        error,
                        invalid_replay,
                        advice,
                    } => match (invalid_replay, self.session.channel_index(&channel)) {
                        (Some(replay_id), Some(index)) => {
                            tracing::warn!(event = "replay_id_refused", %channel, replay_id, "replay id refused; resubscribing from the tip");
                            self.send(CdcItem::ReplayInvalid {
                                channel: channel.clone(),
                                replay_id,
                                message: error,
                            })
                            .await?;
                            self.session.channels[index].from = ReplayFrom::Tip;
                            resubscribe.push(index);
                        }
                        _ => {
                            step.get_or_insert(match advice {
                                _ if error.contains("401::") => Step::Reauth(error),
                                Reconnect::Handshake => Step::Rehandshake(error),
                                _ => Step::Stop(CdcError::Subscribe { channel, error }),
                            });
                        }
                    },
                    MetaOutcome::Other => {}
                }
            }
            if let Some(step) = step {
                return Err(step);
            }
            if !resubscribe.is_empty() {
                let frame = self.session.subscribe(&resubscribe);
                conn.send(frame, self.hold_timeout())
                    .await
                    .map_err(transport_step)?;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// A data message: parse, deliver, advance the channel's position.
    async fn data(&mut self, msg: &Message<'_>, raw: &str) -> Result<(), Step> {
        let channel = msg.channel.to_string();
        let Some(index) = self.session.channel_index(&channel) else {
            return self
                .problem(
                    channel.clone(),
                    None,
                    ProblemKind::UnknownChannel,
                    format!("data on `{channel}`, which we did not subscribe to"),
                    crate::secret::excerpt(raw.as_bytes()),
                )
                .await;
        };
        let Some(data) = msg.data else {
            return self
                .problem(
                    channel,
                    None,
                    ProblemKind::Malformed,
                    "data message without `data`".into(),
                    crate::secret::excerpt(raw.as_bytes()),
                )
                .await;
        };
        let context = ParseContext {
            our_client_id: &self.config.our_client_id,
            known_fields: self.config.known_fields.as_ref(),
        };
        let parsed = parse_data(&channel, data.get(), &context);
        let replay_id = parsed.replay_id();
        let item = match parsed {
            Parsed::Event(event) => CdcItem::Event(event),
            Parsed::Gap(gap) => CdcItem::Gap(gap),
            Parsed::Overflow(overflow) => CdcItem::Overflow(overflow),
            Parsed::Problem(problem) => {
                tracing::warn!(event = "cdc_event_skipped", %channel, kind = ?problem.kind, replay_id, reason = %problem.reason, "skipped a CDC event");
                CdcItem::Problem {
                    channel,
                    problem,
                    excerpt: crate::secret::excerpt(raw.as_bytes()),
                }
            }
        };
        self.send(item).await?;
        if let Some(id) = replay_id {
            self.session.delivered(index, id);
        }
        Ok(())
    }

    async fn problem(
        &mut self,
        channel: String,
        replay: Option<i64>,
        kind: ProblemKind,
        reason: String,
        excerpt: String,
    ) -> Result<(), Step> {
        tracing::warn!(event = "cdc_input_skipped", %channel, ?kind, reason = %reason, "skipped CDC input");
        self.send(CdcItem::Problem {
            channel,
            problem: EventProblem {
                kind,
                replay_id: replay,
                entity: None,
                record_ids: Vec::new(),
                reason,
            },
            excerpt,
        })
        .await
    }

    async fn send(&self, item: CdcItem) -> Result<(), Step> {
        self.tx.send(item).await.map_err(|_| Step::ReceiverGone)
    }
}

/// Opens a connection of `transport` to the Bayeux endpoint `url` (`https://…/cometd/59.0`);
/// `timeout` bounds a WebSocket's opening handshake (long-polling opens nothing until the
/// first POST).
pub(crate) async fn open_conn(
    client: &CrmClient,
    transport: Transport,
    url: &str,
    token: &AccessToken,
    max_frame: usize,
    timeout: Duration,
) -> Result<Conn, TransportError> {
    match transport {
        Transport::WebSocket => {
            let url = ws_url(url).ok_or_else(|| {
                TransportError::Io(format!("cannot make a WebSocket URL of {url}"))
            })?;
            WsConn::open(&url, &token.token, max_frame, timeout)
                .await
                .map(|c| Conn::Ws(Box::new(c)))
        }
        Transport::LongPolling => Ok(Conn::LongPoll(LongPollConn::new(
            client.http().clone(),
            url.to_string(),
            token.token.clone(),
            max_frame,
        ))),
    }
}

fn transport_step(e: TransportError) -> Step {
    match e {
        TransportError::Unauthorized => Step::Reauth(e.to_string()),
        other => Step::Reconnect(other.to_string()),
    }
}

fn failed_step(error: String, advice: Reconnect) -> Step {
    match advice {
        Reconnect::Handshake => Step::Rehandshake(error),
        Reconnect::None if error.starts_with("401::") => Step::Reauth(error),
        Reconnect::None => Step::Stop(CdcError::Stopped { error }),
        Reconnect::Retry => Step::Retry(error),
    }
}
