//! Bayeux over WebSocket (tokio-tungstenite): one JSON array of messages per text frame, the
//! same messages as long-polling, data messages pushed at any time.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::crm::cdc::transport::{Frame, TransportError};
use crate::secret::Secret;

pub(crate) struct WsConn {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    max_frame: usize,
}

/// `https://host/cometd/59.0` → `wss://host/cometd/59.0` (and `http` → `ws`).
pub fn ws_url(http_url: &str) -> Option<String> {
    if let Some(rest) = http_url.strip_prefix("https://") {
        Some(format!("wss://{rest}"))
    } else {
        http_url
            .strip_prefix("http://")
            .map(|rest| format!("ws://{rest}"))
    }
}

impl WsConn {
    pub async fn open(
        url: &str,
        token: &Secret,
        max_frame: usize,
        timeout: Duration,
    ) -> Result<WsConn, TransportError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| TransportError::Io(format!("bad WebSocket URL: {e}")))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| TransportError::Io("the access token is not a valid header".into()))?;
        auth.set_sensitive(true);
        request.headers_mut().insert("Authorization", auth);
        // Frames over our cap but under this hard limit are read and reported as dropped;
        // beyond it tungstenite closes the connection (and we reconnect).
        let hard_limit = max_frame.saturating_mul(4).max(16 << 20);
        let config = WebSocketConfig::default()
            .max_message_size(Some(hard_limit))
            .max_frame_size(Some(hard_limit));
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        let (stream, _response) = match tokio::time::timeout(timeout, connect).await {
            Err(_) => return Err(TransportError::Timeout(timeout)),
            Ok(Err(WsError::Http(response))) if response.status().as_u16() == 401 => {
                return Err(TransportError::Unauthorized);
            }
            Ok(Err(e)) => return Err(TransportError::Io(format!("WebSocket connect: {e}"))),
            Ok(Ok(ok)) => ok,
        };
        Ok(WsConn { stream, max_frame })
    }

    pub async fn send(&mut self, text: String, timeout: Duration) -> Result<(), TransportError> {
        match tokio::time::timeout(timeout, self.stream.send(Message::text(text))).await {
            Err(_) => Err(TransportError::Timeout(timeout)),
            Ok(Err(e)) => Err(TransportError::Closed(e.to_string())),
            Ok(Ok(())) => Ok(()),
        }
    }

    pub async fn recv(&mut self, timeout: Duration) -> Result<Frame, TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next()).await;
            let message = match next {
                Err(_) => return Err(TransportError::Timeout(timeout)),
                Ok(None) => return Err(TransportError::Closed("end of stream".into())),
                Ok(Some(Err(e))) => return Err(TransportError::Closed(e.to_string())),
                Ok(Some(Ok(m))) => m,
            };
            let bytes: Vec<u8> = match message {
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Binary(b) => b.to_vec(),
                Message::Close(frame) => {
                    return Err(TransportError::Closed(frame.map_or_else(
                        || "closed by the server".into(),
                        |f| f.reason.to_string(),
                    )));
                }
                // Pings are answered by tungstenite itself.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            if bytes.len() > self.max_frame {
                return Ok(Frame::Oversized { len: bytes.len() });
            }
            return Ok(Frame::Data(bytes));
        }
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.close(None)).await;
    }
}
