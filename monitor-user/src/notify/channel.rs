//! One delivery channel: the kind of receiver and how one outbox entry is sent to it.
use super::*;
use redact::Secret;

pub(super) enum Channel {
    Log,
    Alertmanager(alertmanager::AlertmanagerChannel),
    Webhook(webhook::WebhookChannel),
    Email(email::EmailChannel),
}

/// `url`, or the URL in `url_file` (its first line), marked secret whole.
fn resolve_url(
    name: &str,
    url: &redact::SecretUrl,
    url_file: Option<&std::path::Path>,
) -> Result<redact::SecretUrl, NotifyError> {
    let Some(path) = url_file else {
        return Ok(url.clone());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::UrlFile {
        name: name.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    let url = redact::SecretUrl::from_file(text.lines().next().unwrap_or("").trim().to_owned());
    if !config::is_http_url(url.expose()) {
        return Err(ConfigError::BadUrl {
            name: name.to_owned(),
            url: format!("{url} (from {})", path.display()),
        }
        .into());
    }
    Ok(url)
}

impl Channel {
    pub(super) fn build(
        config: &NotifierConfig,
        name: &str,
        client: &http::HttpClient,
        timeout: Duration,
    ) -> Result<Self, NotifyError> {
        // URLs and credentials were checked with the rest (config::check_notifiers).
        Ok(match config {
            NotifierConfig::Log { .. } => Self::Log,
            NotifierConfig::Alertmanager { url, url_file, .. } => {
                let url = resolve_url(name, url, url_file.as_deref())?;
                Self::Alertmanager(alertmanager::AlertmanagerChannel::new(&url, client.clone()))
            }
            NotifierConfig::Webhook { url, url_file, .. } => {
                let url = resolve_url(name, url, url_file.as_deref())?;
                Self::Webhook(webhook::WebhookChannel::new(&url, name, client.clone()))
            }
            NotifierConfig::Email {
                smtp,
                from,
                to,
                starttls,
                tls,
                username,
                password,
                password_file,
                allow_insecure_auth,
                ..
            } => Self::Email(email::EmailChannel::new(
                &email::EmailConfig {
                    name,
                    smtp,
                    from,
                    to,
                    starttls: *starttls,
                    tls: *tls,
                    username: username.as_deref(),
                    password: password.as_ref().map(Secret::expose),
                    password_file: password_file.as_deref(),
                    allow_insecure_auth: *allow_insecure_auth,
                },
                &hostname(),
                timeout,
            )?),
        })
    }

    /// Whether its queue is persisted (everything but the log, which cannot fail).
    pub(super) fn durable(&self) -> bool {
        !matches!(self, Self::Log)
    }

    /// Where it delivers, for messages (URLs without their passwords).
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Log => "the log".into(),
            Self::Alertmanager(c) => format!("alertmanager {}", c.base),
            Self::Webhook(c) => format!("webhook {}", c.url),
            Self::Email(c) => format!("smtp server {}", c.server),
        }
    }

    /// The delivery units of a batch: each becomes one queue entry, sent or retried as a whole.
    pub(super) fn split(&self, alerts: &[Alert]) -> Vec<Vec<Alert>> {
        match self {
            Self::Log | Self::Alertmanager(_) => vec![alerts.to_vec()],
            Self::Webhook(_) => webhook::groups(alerts),
            Self::Email(_) => alerts.iter().map(|a| vec![a.clone()]).collect(),
        }
    }

    pub(super) async fn deliver(
        &self,
        name: &str,
        alerts: &[Alert],
        ctx: &Context,
    ) -> Result<(), NotifyError> {
        match self {
            Self::Log => {
                log::deliver(name, alerts);
                Ok(())
            }
            Self::Alertmanager(c) => Ok(c.deliver(alerts, ctx).await?),
            Self::Webhook(c) => Ok(c.deliver(alerts, ctx).await?),
            Self::Email(c) => Ok(c.deliver(alerts, ctx).await?),
        }
    }
}
