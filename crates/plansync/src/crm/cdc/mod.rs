//! The change-data-capture listener: a Bayeux client over WebSocket or HTTP long-polling,
//! one message layer for both, turning change events into plansync changes.
//!
//! - `channel.rs`: which channel carries which object's events;
//! - `bayeux.rs`: message types, frame splitting, session state (shared by both transports);
//! - `transport.rs`, `ws.rs`, `longpoll.rs`: moving frames;
//! - `event.rs`: change event payloads → `CdcEvent` → `model::Change`;
//! - `listener.rs`: the driver (`CdcListener::run`), reconnects, advice, positions;
//! - `probe.rs`: a one-shot handshake + subscribe + disconnect, for `plansync check`;
//! - `fuzz.rs`: the pure parser as a fuzz target body.

pub mod bayeux;
pub mod channel;
pub mod event;
mod fuzz;
pub mod listener;
pub mod longpoll;
pub mod probe;
mod transport;
pub mod ws;

pub use crate::backoff::Backoff;
pub use bayeux::ReplayFrom;
pub use event::{CdcEvent, EventProblem, Gap, Overflow, ParseContext, Parsed, ProblemKind, Replay};
#[doc(hidden)]
pub use fuzz::fuzz_cdc;
pub use listener::{CdcConfig, CdcError, CdcItem, CdcListener, Transport};
