//! One delivery channel: the kind of receiver and how one outbox entry is sent to it.
use super::*;
use redact::Secret;

pub(super) enum Channel {
    Log,
    Alertmanager(alertmanager::AlertmanagerChannel),
    Webhook(webhook::WebhookChannel),
    Email(email::EmailChannel),
    Im(Box<im::ImChannel>),
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
            NotifierConfig::Slack(c)
            | NotifierConfig::Telegram(c)
            | NotifierConfig::Dingtalk(c)
            | NotifierConfig::Wecom(c)
            | NotifierConfig::Feishu(c) => Self::Im(Box::new(im::ImChannel::new(
                config.kind(),
                c,
                name,
                client.clone(),
            )?)),
            NotifierConfig::Log { .. } => Self::Log,
            NotifierConfig::Alertmanager { url, url_file, .. } => {
                let url = config::resolve_url(name, url, url_file.as_deref())?;
                Self::Alertmanager(alertmanager::AlertmanagerChannel::new(&url, client.clone()))
            }
            NotifierConfig::Webhook { url, url_file, .. } => {
                let url = config::resolve_url(name, url, url_file.as_deref())?;
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
            Self::Im(c) => c.describe(),
        }
    }

    /// How long its platform's rate limit wants the next message to wait.
    pub(super) fn pace_wait(&self) -> Duration {
        match self {
            Self::Im(c) => c.pace_wait(),
            _ => Duration::ZERO,
        }
    }

    /// `alerts` less what this channel does not repeat (chat robots: a still-firing alert
    /// delivered recently).
    pub(super) fn without_recent_repeats(&self, alerts: Vec<Alert>) -> Vec<Alert> {
        match self {
            Self::Im(c) => c.without_recent_repeats(alerts),
            _ => alerts,
        }
    }

    /// Whether it merges pending notifications into one message.
    pub(super) fn merges(&self) -> bool {
        matches!(self, Self::Im(_))
    }

    /// How many of the leading queued groups one delivery sends: the instant-messaging
    /// channels merge what is pending into one message, up to the platform's size limit.
    pub(super) fn fit(&self, groups: &[Vec<Alert>], ctx: &Context) -> usize {
        match self {
            Self::Im(c) => c.fit(groups, ctx),
            _ => 1,
        }
    }

    /// The delivery units of a batch: each becomes one queue entry, sent or retried as a whole.
    pub(super) fn split(&self, alerts: &[Alert]) -> Vec<Vec<Alert>> {
        match self {
            Self::Log | Self::Alertmanager(_) => vec![alerts.to_vec()],
            Self::Webhook(_) | Self::Im(_) => webhook::groups(alerts),
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
            Self::Im(c) => Ok(c.deliver(alerts, ctx).await?),
        }
    }
}
