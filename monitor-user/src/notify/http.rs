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

    pub async fn post_json(&self, url: &SecretUrl, body: Vec<u8>) -> Result<(), HttpError> {
        let agent = self.agent.clone();
        let owned_url = url.clone();
        let result = tokio::task::spawn_blocking(move || post(&agent, &owned_url, body)).await;
        result.unwrap_or_else(|_| {
            Err(HttpError::Join {
                url: url.to_string(),
            })
        })
    }
}

fn post(agent: &ureq::Agent, url: &SecretUrl, body: Vec<u8>) -> Result<(), HttpError> {
    let transport = |source: ureq::Error| HttpError::Transport {
        url: url.to_string(),
        detail: url.scrub(&source.to_string()),
    };
    let mut response = agent
        .post(url.expose())
        .content_type("application/json")
        .send(&body[..])
        .map_err(transport)?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    // The receiver's own words (Alertmanager says which field it rejected), kept short.
    let text = response
        .body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_default();
    let mut body: String = text.trim().chars().take(300).collect();
    if body.is_empty() {
        body = "(empty body)".into();
    }
    Err(HttpError::Status {
        url: url.to_string(),
        status,
        body,
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
