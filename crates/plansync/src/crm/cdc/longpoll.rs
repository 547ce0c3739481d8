//! Bayeux over HTTP long-polling (reqwest): each frame we send is one POST whose response
//! body is the reply frame. The server's session and load-balancer cookies must come back
//! on every request, so a tiny cookie jar keeps them (reqwest's `cookies` feature is off).

use std::collections::VecDeque;
use std::time::Duration;

use crate::crm::cdc::transport::{Frame, TransportError};
use crate::secret::Secret;

/// Cookies set by one server: `name=value` pairs, sent back as one `Cookie` header.
/// Attributes (path, domain, expiry dates) are ignored: the jar serves a single endpoint for
/// the life of one listener; `Max-Age=0` or an empty value deletes a cookie.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CookieJar {
    cookies: Vec<(String, String)>,
}

impl CookieJar {
    /// Stores what one `Set-Cookie` header says.
    pub fn store(&mut self, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            return;
        };
        let (name, value) = (name.trim(), value.trim().trim_matches('"'));
        if name.is_empty() {
            return;
        }
        let expired = parts.any(|attr| {
            attr.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("max-age") && v.trim().starts_with(['0', '-'])
            })
        });
        self.cookies.retain(|(n, _)| n != name);
        if !expired && !value.is_empty() {
            self.cookies.push((name.to_string(), value.to_string()));
        }
    }

    /// The `Cookie` header to send, if any cookie is held.
    pub fn header(&self) -> Option<String> {
        if self.cookies.is_empty() {
            return None;
        }
        Some(
            self.cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

pub(crate) struct LongPollConn {
    http: reqwest::Client,
    url: String,
    token: Secret,
    cookies: CookieJar,
    replies: VecDeque<Frame>,
    max_frame: usize,
}

impl LongPollConn {
    pub fn new(http: reqwest::Client, url: String, token: Secret, max_frame: usize) -> Self {
        LongPollConn {
            http,
            url,
            token,
            cookies: CookieJar::default(),
            replies: VecDeque::new(),
            max_frame,
        }
    }

    pub async fn send(&mut self, text: String, timeout: Duration) -> Result<(), TransportError> {
        let mut request = self
            .http
            .post(&self.url)
            .bearer_auth(self.token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(timeout)
            .body(text);
        if let Some(cookies) = self.cookies.header() {
            request = request.header(reqwest::header::COOKIE, cookies);
        }
        let mut response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                TransportError::Timeout(timeout)
            } else {
                TransportError::Io(format!("long-polling POST: {}", e.without_url()))
            }
        })?;
        for value in response.headers().get_all(reqwest::header::SET_COOKIE) {
            if let Ok(v) = value.to_str() {
                self.cookies.store(v);
            }
        }
        let status = response.status().as_u16();
        if status == 401 {
            return Err(TransportError::Unauthorized);
        }
        let mut body = Vec::new();
        let mut oversized = 0usize;
        loop {
            let chunk = response.chunk().await.map_err(|e| {
                TransportError::Io(format!(
                    "reading the long-polling reply: {}",
                    e.without_url()
                ))
            })?;
            let Some(chunk) = chunk else { break };
            if oversized > 0 || body.len() + chunk.len() > self.max_frame {
                // Keep reading (and discarding) so the connection can be reused.
                oversized = oversized.max(body.len()) + chunk.len();
                body.clear();
                continue;
            }
            body.extend_from_slice(&chunk);
        }
        if oversized > 0 {
            self.replies.push_back(Frame::Oversized { len: oversized });
            return Ok(());
        }
        // Bayeux errors come as `successful:false` messages, usually with 200; a JSON array
        // under another status is still a reply to read.
        let looks_like_messages = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        if !(200..300).contains(&status) && !looks_like_messages {
            return Err(TransportError::Io(format!(
                "long-polling POST answered {status}: {}",
                crate::secret::excerpt(&body)
            )));
        }
        self.replies.push_back(Frame::Data(body));
        Ok(())
    }

    pub fn recv(&mut self) -> Result<Frame, TransportError> {
        self.replies
            .pop_front()
            .ok_or_else(|| TransportError::Closed("no reply to read".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_jar_keeps_replaces_and_expires() {
        let mut jar = CookieJar::default();
        assert_eq!(jar.header(), None);
        jar.store("BAYEUX_BROWSER=56a9-mg; Path=/; HttpOnly");
        jar.store("sfdc-stream=!abc==; Path=/; Secure");
        assert_eq!(
            jar.header().unwrap(),
            "BAYEUX_BROWSER=56a9-mg; sfdc-stream=!abc=="
        );
        jar.store("BAYEUX_BROWSER=new");
        assert_eq!(
            jar.header().unwrap(),
            "sfdc-stream=!abc==; BAYEUX_BROWSER=new"
        );
        jar.store("sfdc-stream=gone; Max-Age=0");
        assert_eq!(jar.header().unwrap(), "BAYEUX_BROWSER=new");
        jar.store("garbage");
        jar.store("=novalue");
        assert_eq!(jar.header().unwrap(), "BAYEUX_BROWSER=new");
    }
}
