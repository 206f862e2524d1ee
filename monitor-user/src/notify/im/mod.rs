//! Instant-messaging notifiers: Slack, Telegram, DingTalk, WeCom and Feishu robots.
//!
//! Each platform has its own body, its own way of saying "ok", "too fast" and "never" (often in
//! the body of a 200), and a documented rate limit; the files here hold those differences
//! (`slack.rs`, `telegram.rs`, `dingtalk.rs`, `wecom.rs`, `feishu.rs`). What they share: the
//! message (`message.rs`, one MiniJinja template for all), the pacing under the rate limit
//! (`pace.rs`), and this channel, which packs as many queued alert groups into one message as
//! the platform's size limit allows.
mod dingtalk;
mod feishu;
mod message;
mod pace;
mod slack;
mod telegram;
mod wecom;

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

pub use message::{Markup, MessageTemplate};
pub use pace::RateLimit;

use super::{
    Context,
    config::{ChatId, ConfigError, ImConfig, resolve_url},
    http::{HttpClient, HttpError, Reply},
    redact::{Secret, SecretUrl},
};
use crate::alerts::{Alert, AlertStatus};
use message::Message;
use pace::Pace;

/// The platforms, with what differs between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Slack,
    Telegram,
    DingTalk,
    WeCom,
    Feishu,
}

impl Platform {
    pub fn from_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "slack" => Self::Slack,
            "telegram" => Self::Telegram,
            "dingtalk" => Self::DingTalk,
            "wecom" => Self::WeCom,
            "feishu" => Self::Feishu,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Telegram => "telegram",
            Self::DingTalk => "dingtalk",
            Self::WeCom => "wecom",
            Self::Feishu => "feishu",
        }
    }

    fn markup(self) -> Markup {
        match self {
            Self::Slack => Markup::Slack,
            Self::Telegram => Markup::Html,
            Self::DingTalk | Self::WeCom | Self::Feishu => Markup::Markdown,
        }
    }

    /// The platform's documented limits (see each platform's file).
    fn rate_limits(self, chat: Option<&ChatId>) -> Vec<RateLimit> {
        match self {
            Self::Slack => slack::RATE_LIMITS.to_vec(),
            Self::Telegram => telegram::rate_limits(chat),
            Self::DingTalk => dingtalk::RATE_LIMITS.to_vec(),
            Self::WeCom => wecom::RATE_LIMITS.to_vec(),
            Self::Feishu => feishu::RATE_LIMITS.to_vec(),
        }
    }
}

/// The markup of a notifier kind (for checking its templates).
pub fn markup(kind: &str) -> Markup {
    Platform::from_kind(kind).map_or(Markup::Markdown, Platform::markup)
}

/// Why a message was not delivered. URLs are shown without their token.
#[derive(Debug, thiserror::Error)]
pub enum ImError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{platform} {url} is rate limiting: {detail}")]
    RateLimited {
        platform: &'static str,
        url: String,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// Sending the same again cannot succeed: a bad token, signature, chat or body.
    #[error("{platform} {url} refused the message: {detail}")]
    Refused {
        platform: &'static str,
        url: String,
        detail: String,
    },
    #[error("{platform} {url} failed: {detail}")]
    Failed {
        platform: &'static str,
        url: String,
        detail: String,
    },
}

impl ImError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }

    /// The wait a "too fast" answer asked for; `Some(ZERO)` when it named none.
    pub fn rate_limited(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(retry_after.unwrap_or_default()),
            _ => None,
        }
    }
}

/// What a platform's answer means.
#[derive(Debug, PartialEq)]
enum Verdict {
    Delivered,
    TooFast(Option<Duration>, String),
    Refused(String),
    Retry(String),
}

/// One robot, bot or webhook.
pub struct ImChannel {
    platform: Platform,
    /// Where messages are posted (Telegram: `{api_url}/bot{token}/sendMessage`).
    url: SecretUrl,
    secret: Option<Secret>,
    chat_id: Option<ChatId>,
    message_thread_id: Option<i64>,
    /// As configured; each platform writes them its way.
    mentions: Vec<String>,
    template: MessageTemplate,
    /// The default, for when a config template fails on a real alert: an alert must not be
    /// lost to a template.
    fallback: Option<MessageTemplate>,
    pace: Mutex<Pace>,
    /// When each firing episode (alert labels and start) was last delivered: the engine
    /// re-sends firing alerts every few minutes to keep Alertmanager's alive, and a phone
    /// should not buzz for each.
    delivered: Mutex<HashMap<Episode, SystemTime>>,
    repeat_interval: Duration,
    client: HttpClient,
}

/// A firing episode: the alert's labels (with name and severity) and when it started.
type Episode = (BTreeMap<String, String>, SystemTime);

fn episode(a: &Alert) -> Episode {
    (a.all_labels(), a.starts_at)
}

/// Alertmanager's default `repeat_interval`.
const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

impl std::fmt::Debug for ImChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn read_secret(name: &str, key: &'static str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| ConfigError::SecretFile {
            name: name.to_owned(),
            key,
            path: path.to_owned(),
            source,
        })
}

impl ImChannel {
    /// Reads the files the config names (checked already by `check_notifiers`).
    pub fn new(
        kind: &str,
        c: &ImConfig,
        name: &str,
        client: HttpClient,
    ) -> Result<Self, ConfigError> {
        let platform = Platform::from_kind(kind).expect("an instant-messaging kind");
        let url = if platform == Platform::Telegram {
            let token = match (&c.token, &c.token_file) {
                (_, Some(path)) => read_secret(name, "token_file", path)?,
                (Some(token), None) => token.expose().to_owned(),
                (None, None) => String::new(),
            };
            let api = c.api_url.as_deref().unwrap_or(telegram::API_URL);
            SecretUrl::from_file(format!(
                "{}/bot{token}/sendMessage",
                api.trim_end_matches('/')
            ))
        } else {
            // Robots carry their token in the URL: an inline `url` is a secret whole too (see
            // ImConfig), so neither form is shown past the host.
            resolve_url(name, &c.url, c.url_file.as_deref())?
        };
        let secret = match (&c.secret, &c.secret_file) {
            (_, Some(path)) => Some(Secret::from(
                read_secret(name, "secret_file", path)?.as_str(),
            )),
            (secret, None) => secret.clone(),
        };
        let template = |body, title| {
            MessageTemplate::new(platform.markup(), body, title).map_err(|message| {
                ConfigError::Key {
                    index: 0,
                    line: None,
                    name: name.to_owned(),
                    key: "template",
                    message,
                }
            })
        };
        let custom = c.template.is_some() || c.title.is_some();
        let limits = match &c.rate_limit {
            Some(text) => vec![RateLimit::parse(text).map_err(|message| ConfigError::Key {
                index: 0,
                line: None,
                name: name.to_owned(),
                key: "rate_limit",
                message,
            })?],
            None => platform.rate_limits(c.chat_id.as_ref()),
        };
        Ok(Self {
            platform,
            url,
            secret,
            chat_id: c.chat_id.clone(),
            message_thread_id: c.message_thread_id,
            mentions: c.mentions.clone(),
            template: template(c.template.as_deref(), c.title.as_deref())?,
            fallback: if custom {
                Some(template(None, None)?)
            } else {
                None
            },
            pace: Mutex::new(Pace::new(limits)),
            delivered: Mutex::new(HashMap::new()),
            repeat_interval: c.repeat_interval.unwrap_or(DEFAULT_REPEAT_INTERVAL),
            client,
        })
    }

    /// `alerts` without the repeats of firing episodes delivered less than `repeat_interval`
    /// ago. The first notification of an episode, and its resolution, always go.
    pub fn without_recent_repeats(&self, alerts: Vec<Alert>) -> Vec<Alert> {
        let delivered = super::queue::lock(&self.delivered);
        let now = SystemTime::now();
        alerts
            .into_iter()
            .filter(|a| {
                a.status != AlertStatus::Firing
                    || delivered.get(&episode(a)).is_none_or(|&at| {
                        now.duration_since(at).unwrap_or_default() >= self.repeat_interval
                    })
            })
            .collect()
    }

    fn note_delivered(&self, alerts: &[Alert]) {
        let mut delivered = super::queue::lock(&self.delivered);
        let now = SystemTime::now();
        // An episode not repeated for repeat_interval would be sent anyway: forget it, so that
        // alerts that never resolve (a rule removed, a daemon restarted) do not pile up here.
        delivered
            .retain(|_, at| now.duration_since(*at).unwrap_or_default() < self.repeat_interval);
        for a in alerts {
            match a.status {
                AlertStatus::Firing => {
                    delivered.insert(episode(a), now);
                }
                AlertStatus::Resolved => {
                    delivered.remove(&episode(a));
                }
            }
        }
    }

    pub fn describe(&self) -> String {
        let limits: Vec<String> = super::queue::lock(&self.pace)
            .limits()
            .iter()
            .map(ToString::to_string)
            .collect();
        format!(
            "{} {} ({})",
            self.platform.name(),
            self.url,
            limits.join(", ")
        )
    }

    /// How long the rate limit wants the next message to wait.
    pub fn pace_wait(&self) -> Duration {
        super::queue::lock(&self.pace).wait(Instant::now())
    }

    /// How many of the leading `groups` go into one message (at least one: a group too big
    /// alone is cut to fit).
    pub fn fit(&self, groups: &[Vec<Alert>], ctx: &Context) -> usize {
        let now = SystemTime::now();
        let mut alerts: Vec<Alert> = Vec::new();
        let mut fits = 0;
        for group in groups {
            // A group with nothing left to send (repeats) leaves the message as it was.
            if group.is_empty() {
                fits += 1;
                continue;
            }
            alerts.extend(group.iter().cloned());
            let Ok((_, size_ok)) = self.message(&alerts, ctx, now) else {
                break;
            };
            if !size_ok {
                break;
            }
            fits += 1;
        }
        fits.max(1)
    }

    /// The rendered message and whether it is within the platform's size limit.
    fn message(
        &self,
        alerts: &[Alert],
        ctx: &Context,
        now: SystemTime,
    ) -> Result<(Message, bool), String> {
        self.message_with(&self.template, alerts, ctx, now)
    }

    fn message_with(
        &self,
        template: &MessageTemplate,
        alerts: &[Alert],
        ctx: &Context,
        now: SystemTime,
    ) -> Result<(Message, bool), String> {
        let view = message::view(alerts, ctx, now);
        let firing = alerts.iter().any(|a| a.status == AlertStatus::Firing);
        // People are called when something fires, not when it is over.
        let mentions = if firing {
            self.platform_mentions()
        } else {
            Vec::new()
        };
        let message = template.render(&view, &mentions)?;
        let fits = self.within_limit(&message);
        Ok((message, fits))
    }

    fn platform_mentions(&self) -> Vec<String> {
        match self.platform {
            Platform::Slack => slack::mentions(&self.mentions),
            Platform::Telegram => telegram::mentions(&self.mentions),
            Platform::DingTalk => dingtalk::mentions(&self.mentions),
            Platform::WeCom => wecom::mentions(&self.mentions),
            Platform::Feishu => feishu::mentions(&self.mentions),
        }
    }

    fn within_limit(&self, m: &Message) -> bool {
        match self.platform {
            Platform::Slack => slack::fits(m),
            Platform::Telegram => telegram::fits(m),
            Platform::DingTalk => dingtalk::fits(m),
            Platform::WeCom => wecom::fits(m),
            Platform::Feishu => feishu::fits(m),
        }
    }

    /// Sends `alerts` as one message.
    pub async fn deliver(&self, alerts: &[Alert], ctx: &Context) -> Result<(), ImError> {
        let now = SystemTime::now();
        let (mut message, fits) = match self.message(alerts, ctx, now) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(
                    "{}: the configured template failed ({e}); sending with the default",
                    self.describe()
                );
                let fallback = self.fallback.as_ref().unwrap_or(&self.template);
                self.message_with(fallback, alerts, ctx, now)
                    .map_err(|detail| ImError::Refused {
                        platform: self.platform.name(),
                        url: self.url.to_string(),
                        detail,
                    })?
            }
        };
        if !fits {
            self.cut(&mut message);
        }
        let (url, body) = self.request(&message, alerts, !fits);
        let reply = self
            .client
            .exchange_json(&url, serde_json::to_vec(&body).unwrap_or_default())
            .await?;
        let verdict = match self.platform {
            Platform::Slack => slack::verdict(&reply),
            Platform::Telegram => telegram::verdict(&reply),
            Platform::DingTalk => dingtalk::verdict(&reply),
            Platform::WeCom => wecom::verdict(&reply),
            Platform::Feishu => feishu::verdict(&reply),
        };
        let platform = self.platform.name();
        let shown = self.url.to_string();
        let scrub = |detail: String| url.scrub(&self.url.scrub(&detail));
        let mut pace = super::queue::lock(&self.pace);
        match verdict {
            Verdict::Delivered => {
                pace.record(Instant::now());
                drop(pace);
                self.note_delivered(alerts);
                Ok(())
            }
            Verdict::TooFast(retry_after, detail) => {
                if let Some(wait) = retry_after {
                    pace.hold(Instant::now() + wait);
                }
                Err(ImError::RateLimited {
                    platform,
                    url: shown,
                    detail: scrub(detail),
                    retry_after,
                })
            }
            Verdict::Refused(detail) => {
                // It may still count against the limit.
                pace.record(Instant::now());
                Err(ImError::Refused {
                    platform,
                    url: shown,
                    detail: scrub(detail),
                })
            }
            Verdict::Retry(detail) => Err(ImError::Failed {
                platform,
                url: shown,
                detail: scrub(detail),
            }),
        }
    }

    /// Cuts a message that is too long alone to the platform's limit, saying so.
    fn cut(&self, message: &mut Message) {
        const NOTE: &str = "\n… (cut: longer than the platform takes)";
        let mut keep = message.text.len();
        while keep > 0 && !self.within_limit(message) {
            keep = keep.saturating_sub((keep / 8).max(64));
            while !message.text.is_char_boundary(keep) {
                keep -= 1;
            }
            let mut text = message.text[..keep].to_owned();
            text.push_str(NOTE);
            message.text = text;
        }
    }

    /// The URL to post to (DingTalk signs it) and the JSON body; `cut` when the text was cut.
    fn request(&self, m: &Message, alerts: &[Alert], cut: bool) -> (SecretUrl, serde_json::Value) {
        let firing = alerts.iter().any(|a| a.status == AlertStatus::Firing);
        let mentions: &[String] = if firing { &self.mentions } else { &[] };
        let secret = self.secret.as_ref().map(Secret::expose);
        match self.platform {
            Platform::Slack => (self.url.clone(), slack::body(m)),
            Platform::Telegram => (
                self.url.clone(),
                telegram::body(m, self.chat_id.as_ref(), self.message_thread_id, cut),
            ),
            Platform::DingTalk => (
                dingtalk::signed_url(&self.url, secret, SystemTime::now()),
                dingtalk::body(m, mentions),
            ),
            Platform::WeCom => (self.url.clone(), wecom::body(m)),
            Platform::Feishu => (
                self.url.clone(),
                feishu::body(m, alerts, secret, SystemTime::now()),
            ),
        }
    }
}

/// A platform's JSON answer, or `Null` when the body is not JSON.
fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(&reply.body).unwrap_or(serde_json::Value::Null)
}

/// HTTP-level verdicts shared by every platform: 5xx and odd statuses are worth a retry.
fn http_verdict(reply: &Reply) -> Option<Verdict> {
    match reply.status {
        200..=299 => None,
        429 => Some(Verdict::TooFast(
            reply.retry_after,
            format!("HTTP 429: {}", reply.excerpt()),
        )),
        400..=499 => Some(Verdict::Refused(format!(
            "HTTP {}: {}",
            reply.status,
            reply.excerpt()
        ))),
        status => Some(Verdict::Retry(format!(
            "HTTP {status}: {}",
            reply.excerpt()
        ))),
    }
}

/// DingTalk's and WeCom's answer: `{"errcode": N, "errmsg": "..."}` in a 200. `too_fast` are
/// the codes that mean "too many messages"; -1 is "system busy" (worth a retry); any other
/// code is a refusal the same message would get again.
fn errcode_verdict(reply: &Reply, platform: &str, too_fast: &[i64]) -> Verdict {
    if let Some(v) = http_verdict(reply) {
        return v;
    }
    let v = json(reply);
    let Some(code) = v.get("errcode").and_then(serde_json::Value::as_i64) else {
        return Verdict::Retry(format!("not {platform}'s answer: {}", reply.excerpt()));
    };
    let detail = format!(
        "errcode {code}: {}",
        v.get("errmsg")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
    );
    match code {
        0 => Verdict::Delivered,
        code if too_fast.contains(&code) => Verdict::TooFast(None, detail),
        -1 => Verdict::Retry(detail),
        _ => Verdict::Refused(detail),
    }
}

/// HMAC-SHA256 then base64: what DingTalk and Feishu sign with (ring's HMAC).
fn hmac_base64(key: &[u8], message: &[u8]) -> String {
    use base64::Engine as _;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, message).as_ref())
}

/// Whether a mention means the whole chat.
fn is_all(m: &str) -> bool {
    matches!(
        m.trim().trim_start_matches(['@', '!']),
        "all" | "everyone" | "here" | "channel"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::{alert, resolved};

    fn channel(repeat_interval: Option<Duration>) -> ImChannel {
        let config = ImConfig {
            url: SecretUrl::from_file("http://127.0.0.1:9/services/T/B/x".into()),
            repeat_interval,
            ..ImConfig::default()
        };
        ImChannel::new(
            "slack",
            &config,
            "slack",
            HttpClient::new(Duration::from_secs(1)),
        )
        .unwrap()
    }

    #[test]
    fn a_still_firing_alert_is_not_repeated_within_repeat_interval() {
        let c = channel(None);
        let names = |alerts: Vec<Alert>| alerts.iter().map(|a| a.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(c.without_recent_repeats(vec![alert("A"), alert("B")])),
            ["A", "B"]
        );
        c.note_delivered(&[alert("A")]);
        // A's repeat waits four hours; its resolution and a new episode go at once.
        let mut again = alert("A");
        again.starts_at += Duration::from_secs(600);
        assert_eq!(
            names(c.without_recent_repeats(vec![alert("A"), resolved("A"), again, alert("B")])),
            ["A", "A", "B"]
        );
        c.note_delivered(&[resolved("A")]);
        assert_eq!(names(c.without_recent_repeats(vec![alert("A")])), ["A"]);
        // 0s: every repeat goes.
        let every = channel(Some(Duration::ZERO));
        every.note_delivered(&[alert("A")]);
        assert_eq!(names(every.without_recent_repeats(vec![alert("A")])), ["A"]);
    }

    #[test]
    fn the_url_and_token_are_never_shown() {
        let c = channel(None);
        assert_eq!(c.describe(), "slack http://127.0.0.1:9/*** (1 per 1s)");
        let config = ImConfig {
            token: Some(Secret::from("123456:SECRETTOKEN")),
            chat_id: Some(ChatId::Id(42)),
            ..ImConfig::default()
        };
        let t = ImChannel::new(
            "telegram",
            &config,
            "t",
            HttpClient::new(Duration::from_secs(1)),
        )
        .unwrap();
        assert_eq!(
            t.describe(),
            "telegram https://api.telegram.org/*** (1 per 1s)"
        );
        assert!(!format!("{t:?}").contains("SECRETTOKEN"));
    }
}
