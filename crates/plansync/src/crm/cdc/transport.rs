//! What the two transports have in common: a frame in, a frame out, and the few ways moving
//! them can fail. The listener drives either through `Conn` without knowing which it is.

use std::time::Duration;

use crate::crm::cdc::longpoll::LongPollConn;
use crate::crm::cdc::ws::WsConn;

/// One frame received: a JSON array of Bayeux messages, or the size of one we refused to
/// read because it was over the cap.
#[derive(Debug)]
pub(crate) enum Frame {
    Data(Vec<u8>),
    Oversized { len: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TransportError {
    /// The server refused our token (HTTP 401): re-authenticate, then reconnect.
    #[error("the server refused the access token")]
    Unauthorized,
    #[error("no frame within {0:?}")]
    Timeout(Duration),
    #[error("connection closed: {0}")]
    Closed(String),
    #[error("{0}")]
    Io(String),
}

/// An open connection of either kind. The socket is boxed: its buffers make it large, and
/// there is one per listener.
pub(crate) enum Conn {
    Ws(Box<WsConn>),
    LongPoll(LongPollConn),
}

impl Conn {
    /// Sends one frame. For long-polling this is the whole HTTP exchange (it can take as
    /// long as the server holds a `/meta/connect`, hence the timeout); the reply is queued for
    /// `recv`.
    pub async fn send(&mut self, text: String, timeout: Duration) -> Result<(), TransportError> {
        match self {
            Conn::Ws(c) => c.send(text, timeout).await,
            Conn::LongPoll(c) => c.send(text, timeout).await,
        }
    }

    pub async fn recv(&mut self, timeout: Duration) -> Result<Frame, TransportError> {
        match self {
            Conn::Ws(c) => c.recv(timeout).await,
            Conn::LongPoll(c) => c.recv(),
        }
    }

    pub async fn close(self) {
        if let Conn::Ws(c) = self {
            (*c).close().await;
        }
    }
}
