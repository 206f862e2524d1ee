//! JSON POSTs for the HTTP notifiers. ureq is blocking, so each request runs on tokio's blocking
//! pool; alert traffic is a few requests a minute, which does not justify an async HTTP stack.
use std::time::Duration;

use super::redact::SecretUrl;

/// Every `url` here is shown without its password: these errors are logged on each retry.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// ureq's error as text with the URL's userinfo masked, rather than the error itself as the
    /// source: some of its messages quote the URL.
    #[error("POST {url} failed: {detail}")]
    Transport { url: String, detail: String },
    #[error("POST {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("POST {url}: the request task ended abnormally")]
    Join { url: String },
}

impl HttpError {
    /// A rejection that resending the same body cannot fix: the payload itself was refused.
    /// Kept narrow on purpose (400, 413, 422): 401/403/404 are configuration or deployment
    /// problems an operator fixes, after which the queued notifications should still go out.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Status {
                status: 400 | 413 | 422,
                ..
            }
        )
    }
}

#[derive(Clone, Debug)]
pub struct HttpClient {
    agent: ureq::Agent,
}

impl HttpClient {
    pub fn new(timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // Statuses are looked at here, with the body, to tell permanent from transient.
            .http_status_as_error(false)
            .user_agent(concat!("monitor/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self { agent }
    }

    /// POSTs and returns whatever was answered; only a failed exchange is an error.
    pub async fn exchange_json(&self, url: &SecretUrl, body: Vec<u8>) -> Result<Reply, HttpError> {
        let agent = self.agent.clone();
        let owned_url = url.clone();
        let result = tokio::task::spawn_blocking(move || exchange(&agent, &owned_url, body)).await;
        result.unwrap_or_else(|_| {
            Err(HttpError::Join {
                url: url.to_string(),
            })
        })
    }

    /// POSTs; any answer but a 2xx is an error carrying the receiver's own words.
    pub async fn post_json(&self, url: &SecretUrl, body: Vec<u8>) -> Result<(), HttpError> {
        let reply = self.exchange_json(url, body).await?;
        if (200..300).contains(&reply.status) {
            return Ok(());
        }
        // The receiver's own words (Alertmanager says which field it rejected), kept short.
        Err(HttpError::Status {
            url: url.to_string(),
            status: reply.status,
            body: url.scrub(&reply.excerpt()),
        })
    }
}

/// What a receiver answered: the instant-messaging platforms say "ok", "too fast" or "bad
/// signature" in the body of a 200, so their channels read it themselves.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// At most 64 KiB of it.
    pub body: String,
    /// The `Retry-After` header in seconds (Slack's 429).
    pub retry_after: Option<Duration>,
}

impl Reply {
    /// An answer with no `Retry-After`, as the platforms' verdict tests give them.
    #[cfg(test)]
    pub fn new(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.into(),
            retry_after: None,
        }
    }

    /// The body as shown in messages: trimmed, at most 300 characters.
    pub fn excerpt(&self) -> String {
        let body: String = self.body.trim().chars().take(300).collect();
        if body.is_empty() {
            "(empty body)".into()
        } else {
            body
        }
    }
}

fn exchange(agent: &ureq::Agent, url: &SecretUrl, body: Vec<u8>) -> Result<Reply, HttpError> {
    let transport = |source: ureq::Error| HttpError::Transport {
        url: url.to_string(),
        detail: url.scrub(&source.to_string()),
    };
    let mut response = agent
        .post(url.expose())
        .content_type("application/json")
        .send(&body[..])
        .map_err(transport)?;
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    Ok(Reply {
        status: response.status().as_u16(),
        body,
        retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_name_the_url_without_its_password() {
        let client = HttpClient::new(Duration::from_secs(2));
        // Nothing listens on the discard port.
        let e = client
            .post_json(
                &"http://alice:s3cret@127.0.0.1:9/hook".into(),
                b"[]".to_vec(),
            )
            .await
            .unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("POST http://alice:***@127.0.0.1:9/hook"),
            "{shown}"
        );
    }
}
