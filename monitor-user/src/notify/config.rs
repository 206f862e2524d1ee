//! Notifier configuration: the `[[notifier]]` array and the `[notify]` table of the daemon's TOML
//! config file.
//!
//! ```toml
//! [notify]                 # optional: delivery options shared by every notifier
//! retry_initial = "1s"     # first retry delay; doubles after each failure...
//! retry_max = "60s"        # ...up to this cap (at most 1d)
//! max_age = "24h"          # dropped (error log) when still undelivered after this (at most 30d)
//! timeout = "10s"          # one HTTP request or SMTP session (10ms to 1h)
//! external_url = "http://monitor.example:8001"   # generatorURL / externalURL (default http://INSTANCE)
//!
//! [[notifier]]
//! kind = "alertmanager"
//! url = "http://127.0.0.1:9093"
//!
//! [[notifier]]
//! kind = "webhook"
//! url = "http://127.0.0.1:8080/hook"
//!
//! [[notifier]]
//! kind = "webhook"
//! url_file = "/etc/monitor/chat-hook-url"   # a URL with a token: read from a file, never shown
//!
//! [[notifier]]
//! kind = "email"
//! smtp = "mail.example:587"
//! from = "monitor@example"
//! to = ["oncall@example"]
//! starttls = true
//! username = "monitor"
//! password_file = "/etc/monitor/smtp-password"
//! # allow_insecure_auth = true   # needed to send username and password without tls/starttls
//!
//! [[notifier]]
//! kind = "log"
//!
//! [[notifier]]
//! kind = "dingtalk"          # also slack, telegram, wecom, feishu: see `ImConfig`
//! url_file = "/etc/monitor/dingtalk-url"
//! secret_file = "/etc/monitor/dingtalk-secret"
//! mentions = ["13800000000"]
//! ```
//!
//! Every notifier also takes an optional `name` (its outbox queue directory and the `channel`
//! label of the metrics); the default is the kind, suffixed `-2`, `-3`... for repeats.
use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::redact::{Secret, SecretUrl};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// toml's message carries the line, column and key.
    #[error("notifier configuration: {0}")]
    Toml(String),
    /// `url` without its password (redact::url).
    #[error("notifier {name}: url {url:?} is not an absolute http:// or https:// URL")]
    BadUrl { name: String, url: String },
    #[error("notifier {name}: give url or url_file (one of them)")]
    UrlSource { name: String },
    #[error("notifier {name}: cannot read url_file {}: {source}", path.display())]
    UrlFile {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "notifier name {0:?} is used twice (each notifier needs its own name: it names its outbox queue)"
    )]
    DuplicateName(String),
    #[error(
        "notifier name {0:?} may only contain letters, digits, '-', '_' and '.' (it names a directory)"
    )]
    BadName(String),
    #[error(
        "notifier {name}: username and password would cross the network in clear text to {smtp}: \
         set starttls = true (or tls = true), or allow_insecure_auth = true to accept that \
         (a relay on this host, say)"
    )]
    InsecureAuth { name: String, smtp: String },
    #[error("[notify] {0}")]
    Options(String),
    /// A key of the `index`-th `[[notifier]]` (from 0); the line is added where the text is
    /// at hand ([`parse_notify_settings`]).
    #[error("{}notifier {name}: {key}: {message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Key {
        index: usize,
        line: Option<usize>,
        name: String,
        key: &'static str,
        message: String,
    },
    #[error("notifier {name}: cannot read {key} {}: {source}", path.display())]
    SecretFile {
        name: String,
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One notification channel (`[[notifier]]` entry), selected by its `kind` key. Its `Debug`
/// shows no secret: passwords print as `***`, URLs without their password.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum NotifierConfig {
    /// Prometheus Alertmanager, API v2: `POST {url}/api/v2/alerts`.
    Alertmanager {
        /// Base URL, e.g. `http://127.0.0.1:9093` (no `/api/v2/alerts`).
        #[serde(default)]
        url: SecretUrl,
        /// Or read the URL from this file (one line), so a token in it stays out of the config:
        /// it is never shown past its host.
        #[serde(default)]
        url_file: Option<PathBuf>,
        #[serde(default)]
        name: Option<String>,
    },
    /// Any HTTP receiver of Alertmanager's webhook body (chat bridges and the like).
    Webhook {
        #[serde(default)]
        url: SecretUrl,
        /// As for `alertmanager`.
        #[serde(default)]
        url_file: Option<PathBuf>,
        #[serde(default)]
        name: Option<String>,
    },
    /// One email per alert over SMTP.
    Email {
        /// `host:port` (port defaults to 25, or 587 with `starttls`, 465 with `tls`).
        smtp: String,
        from: String,
        to: Vec<String>,
        /// Upgrade with STARTTLS and refuse to send without it.
        #[serde(default)]
        starttls: bool,
        /// Implicit TLS from the first byte (SMTPS).
        #[serde(default)]
        tls: bool,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<Secret>,
        /// Read the password from this file (trailing newline stripped), so the config file
        /// itself can stay world-readable.
        #[serde(default)]
        password_file: Option<PathBuf>,
        /// Authenticate over plain SMTP (neither `tls` nor `starttls`), sending the username
        /// and password in clear text: refused unless set, and warned about at start.
        #[serde(default)]
        allow_insecure_auth: bool,
        #[serde(default)]
        name: Option<String>,
    },
    /// Every notification as a structured `tracing` event.
    Log {
        #[serde(default)]
        name: Option<String>,
    },
    /// Slack incoming webhook (mrkdwn text).
    Slack(ImConfig),
    /// Telegram Bot API `sendMessage` (HTML), to one chat.
    Telegram(ImConfig),
    /// DingTalk custom robot (markdown), optionally signed.
    Dingtalk(ImConfig),
    /// WeCom (WeChat Work) group robot (markdown).
    Wecom(ImConfig),
    /// Feishu / Lark custom bot (interactive card), optionally signed.
    Feishu(ImConfig),
}

/// The keys of the instant-messaging kinds. One table for all five so that unknown keys are
/// still refused by name; which keys each kind takes is checked by [`check_notifiers`].
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImConfig {
    /// The robot's webhook URL (all but telegram). Shown only as its origin: robots carry
    /// their token in the path or query.
    #[serde(default, deserialize_with = "secret_whole")]
    pub url: SecretUrl,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// The signing secret (dingtalk, feishu): `SEC...` from the robot's security settings.
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The bot token (telegram).
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The chat (telegram): a number (`-100...` for groups and channels) or `@channelname`.
    #[serde(default)]
    pub chat_id: Option<ChatId>,
    /// A forum topic of the chat (telegram).
    #[serde(default)]
    pub message_thread_id: Option<i64>,
    /// The Bot API server (telegram); default `https://api.telegram.org`.
    #[serde(default)]
    pub api_url: Option<String>,
    /// Who is notified when something fires, in the platform's terms (see the README).
    #[serde(default)]
    pub mentions: Vec<String>,
    /// A MiniJinja template for the message body, replacing the default.
    #[serde(default)]
    pub template: Option<String>,
    /// A MiniJinja template for the title (preview line, card header).
    #[serde(default)]
    pub title: Option<String>,
    /// `N/DURATION`: at most N messages in any such window, instead of the platform's
    /// documented limit.
    #[serde(default)]
    pub rate_limit: Option<String>,
    /// How often a still-firing alert is sent again (default 4h, as Alertmanager's
    /// `repeat_interval`; `0s` sends every repeat of `[alerting] repeat_interval`).
    #[serde(default, with = "humantime_serde")]
    pub repeat_interval: Option<Duration>,
    #[serde(default)]
    pub name: Option<String>,
}

/// A URL that is a secret whole (a robot's token is in its path or query).
fn secret_whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretUrl, D::Error> {
    String::deserialize(d).map(SecretUrl::from_file)
}

/// A Telegram chat: its number, or `@username` of a public channel.
#[derive(Clone, Debug, Deserialize, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum ChatId {
    Id(i64),
    Name(String),
}

impl NotifierConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Alertmanager { .. } => "alertmanager",
            Self::Webhook { .. } => "webhook",
            Self::Email { .. } => "email",
            Self::Log { .. } => "log",
            Self::Slack(_) => "slack",
            Self::Telegram(_) => "telegram",
            Self::Dingtalk(_) => "dingtalk",
            Self::Wecom(_) => "wecom",
            Self::Feishu(_) => "feishu",
        }
    }

    fn explicit_name(&self) -> Option<&str> {
        match self {
            Self::Alertmanager { name, .. }
            | Self::Webhook { name, .. }
            | Self::Email { name, .. }
            | Self::Log { name } => name.as_deref(),
            Self::Slack(c)
            | Self::Telegram(c)
            | Self::Dingtalk(c)
            | Self::Wecom(c)
            | Self::Feishu(c) => c.name.as_deref(),
        }
    }
}

/// Delivery options shared by every notifier (`[notify]` table).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyOptions {
    /// Delay before the first retry; it doubles after each failed attempt...
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// ...up to this cap.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Notifications still undelivered this long after they were queued are dropped with an
    /// error: a day-old "firing" is noise, and a dead receiver must not grow the outbox forever.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Bound on one HTTP request or SMTP session.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// `generatorURL` of each alert and the webhook's `externalURL`; default `http://INSTANCE`.
    pub external_url: Option<String>,
}

impl Default for NotifyOptions {
    fn default() -> Self {
        Self {
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            max_age: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
            external_url: None,
        }
    }
}

/// One HTTP request or SMTP session: a receiver silent for an hour is down (and ureq adds the
/// timeout to an `Instant`, which panics past what one holds).
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest wait between two attempts: more, and a receiver that is back waits a day.
const MAX_RETRY_MAX: Duration = Duration::from_secs(24 * 3600);
/// The longest an undelivered notification is kept: a month-old "firing" is history.
const MAX_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

impl NotifyOptions {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: String| Err(ConfigError::Options(what));
        for (key, d, max) in [
            ("timeout", self.timeout, MAX_TIMEOUT),
            ("retry_max", self.retry_max, MAX_RETRY_MAX),
            ("max_age", self.max_age, MAX_MAX_AGE),
        ] {
            if d > max {
                return bad(format!(
                    "{key} = {} is above the {} maximum",
                    humantime::format_duration(d),
                    humantime::format_duration(max)
                ));
            }
        }
        if self.retry_initial < Duration::from_millis(10) {
            return bad(format!(
                "retry_initial = {:?} is below the 10ms minimum",
                self.retry_initial
            ));
        }
        if self.retry_max < self.retry_initial {
            return bad(format!(
                "retry_max ({:?}) is shorter than retry_initial ({:?})",
                self.retry_max, self.retry_initial
            ));
        }
        if self.timeout < Duration::from_millis(10) {
            return bad(format!(
                "timeout = {:?} is below the 10ms minimum",
                self.timeout
            ));
        }
        if self.max_age.is_zero() {
            return bad("max_age must be positive".into());
        }
        if let Some(url) = &self.external_url
            && !is_http_url(url)
        {
            return bad(format!(
                "external_url {:?} is not an absolute http:// or https:// URL",
                super::redact::url(url)
            ));
        }
        Ok(())
    }
}

/// The notifier part of a config file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct NotifySettings {
    #[serde(default)]
    pub notify: NotifyOptions,
    #[serde(default, rename = "notifier")]
    pub notifiers: Vec<NotifierConfig>,
}

/// Reads `[notify]` and `[[notifier]]` from a whole config file's text; other keys are left to
/// the daemon's own parser (unknown keys *inside* these are errors).
pub fn parse_notify_settings(text: &str) -> Result<NotifySettings, ConfigError> {
    let settings: NotifySettings =
        toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
    settings.notify.validate()?;
    check_notifiers(&settings.notifiers).map_err(|e| at_line(e, text))?;
    Ok(settings)
}

/// Where each key of each `[[notifier]]` is written.
#[derive(Default, Deserialize)]
struct NotifierSpans {
    #[serde(default)]
    notifier: Vec<std::collections::BTreeMap<String, toml::Spanned<toml::Value>>>,
}

/// A key error with the line of the key (or of its notifier's `kind` when the key is missing).
fn at_line(e: ConfigError, text: &str) -> ConfigError {
    let ConfigError::Key {
        index,
        name,
        key,
        message,
        ..
    } = e
    else {
        return e;
    };
    let spans: NotifierSpans = toml::from_str(text).unwrap_or_default();
    let line = spans.notifier.get(index).and_then(|keys| {
        let span = keys.get(key).or_else(|| keys.get("kind"))?.span();
        let offset = span.start.min(text.len());
        Some(
            text.as_bytes()[..offset]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1,
        )
    });
    ConfigError::Key {
        index,
        line,
        name,
        key,
        message,
    }
}

/// Only the `[[notifier]]` array of a whole config file's text (`[notify]` is validated too).
#[allow(
    dead_code,
    reason = "the daemon's choice: this, parse_notify_settings, or the types in its own Config"
)]
pub fn parse_notifiers(text: &str) -> Result<Vec<NotifierConfig>, ConfigError> {
    parse_notify_settings(text).map(|s| s.notifiers)
}

/// Checks what can be checked of the `[[notifier]]` entries without connecting anywhere or
/// reading files (the same at `check-config` and at start) and returns their names, in order.
pub fn check_notifiers(configs: &[NotifierConfig]) -> Result<Vec<String>, ConfigError> {
    let names = channel_names(configs)?;
    for (index, (config, name)) in configs.iter().zip(&names).enumerate() {
        match config {
            NotifierConfig::Alertmanager { url, url_file, .. }
            | NotifierConfig::Webhook { url, url_file, .. } => {
                if url.is_empty() == url_file.is_none() {
                    return Err(ConfigError::UrlSource { name: name.clone() });
                }
                // A url_file is read and checked when the channel starts.
                if url_file.is_none() && !is_http_url(url.expose()) {
                    return Err(ConfigError::BadUrl {
                        name: name.clone(),
                        url: url.to_string(),
                    });
                }
            }
            NotifierConfig::Email {
                smtp,
                starttls: false,
                tls: false,
                username,
                password,
                password_file,
                allow_insecure_auth: false,
                ..
            } if username.is_some() || password.is_some() || password_file.is_some() => {
                return Err(ConfigError::InsecureAuth {
                    name: name.clone(),
                    smtp: super::redact::url(smtp),
                });
            }
            NotifierConfig::Email { .. } | NotifierConfig::Log { .. } => {}
            NotifierConfig::Slack(c)
            | NotifierConfig::Telegram(c)
            | NotifierConfig::Dingtalk(c)
            | NotifierConfig::Wecom(c)
            | NotifierConfig::Feishu(c) => {
                check_im(config.kind(), c).map_err(|(key, message)| ConfigError::Key {
                    index,
                    line: None,
                    name: name.clone(),
                    key,
                    message,
                })?
            }
        }
    }
    Ok(names)
}

/// The keys an instant-messaging kind needs and takes: `(key, what is wrong)`.
fn check_im(kind: &str, c: &ImConfig) -> Result<(), (&'static str, String)> {
    let telegram = kind == "telegram";
    let signed = matches!(kind, "dingtalk" | "feishu");
    let not_for = |key: &'static str| Err((key, format!("not a {kind} key")));
    if telegram {
        if !c.url.is_empty() || c.url_file.is_some() {
            return not_for(if c.url.is_empty() { "url_file" } else { "url" });
        }
        if c.token.is_some() == c.token_file.is_some() {
            return Err((
                "token_file",
                "give token_file (or token), one of them".into(),
            ));
        }
        if c.chat_id.is_none() {
            return Err((
                "chat_id",
                "missing: the chat to send to (a number, or @channel)".into(),
            ));
        }
        if let Some(ChatId::Name(name)) = &c.chat_id
            && !(name.starts_with('@') && name.len() > 1)
        {
            return Err((
                "chat_id",
                format!("{name:?} is neither a number nor @channelname"),
            ));
        }
        if let Some(api) = &c.api_url
            && !is_http_url(api)
        {
            return Err((
                "api_url",
                format!("{api:?} is not an absolute http:// or https:// URL"),
            ));
        }
    } else {
        for (key, set) in [
            ("token", c.token.is_some()),
            ("token_file", c.token_file.is_some()),
            ("chat_id", c.chat_id.is_some()),
            ("message_thread_id", c.message_thread_id.is_some()),
            ("api_url", c.api_url.is_some()),
        ] {
            if set {
                return not_for(key);
            }
        }
        if c.url.is_empty() == c.url_file.is_none() {
            return Err(("url", "give url or url_file, one of them".into()));
        }
        if c.url_file.is_none() && !is_http_url(c.url.expose()) {
            return Err((
                "url",
                format!("{} is not an absolute http:// or https:// URL", c.url),
            ));
        }
    }
    if !signed {
        if c.secret.is_some() {
            return not_for("secret");
        }
        if c.secret_file.is_some() {
            return not_for("secret_file");
        }
    } else if c.secret.is_some() && c.secret_file.is_some() {
        return Err(("secret", "give secret or secret_file, not both".into()));
    }
    if let Some(m) = c.mentions.iter().find(|m| m.trim().is_empty()) {
        return Err(("mentions", format!("{m:?} is empty")));
    }
    if let Some(d) = c.repeat_interval
        && d > Duration::from_secs(30 * 24 * 3600)
    {
        return Err(("repeat_interval", "above the 30d maximum".into()));
    }
    if let Some(limit) = &c.rate_limit {
        super::im::RateLimit::parse(limit).map_err(|e| ("rate_limit", e))?;
    }
    let markup = super::im::markup(kind);
    super::im::MessageTemplate::new(markup, c.template.as_deref(), c.title.as_deref()).map_err(
        |e| match e.split_once(": ") {
            Some(("title", rest)) => ("title", rest.to_owned()),
            Some((_, rest)) => ("template", rest.to_owned()),
            None => ("template", e),
        },
    )?;
    Ok(())
}

/// Each notifier's name, in order: explicit, or its kind (`-2`, `-3`... for repeats). Names are
/// directory names and metric labels, so they are checked here.
pub fn channel_names(configs: &[NotifierConfig]) -> Result<Vec<String>, ConfigError> {
    let mut names: Vec<String> = Vec::with_capacity(configs.len());
    let mut seen_kind = std::collections::HashMap::<&str, usize>::new();
    for config in configs {
        let n = seen_kind.entry(config.kind()).or_default();
        *n += 1;
        let name = match config.explicit_name() {
            Some(name) => name.to_string(),
            None if *n == 1 => config.kind().to_string(),
            None => format!("{}-{n}", config.kind()),
        };
        let valid = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(ConfigError::BadName(name));
        }
        if names.contains(&name) {
            return Err(ConfigError::DuplicateName(name));
        }
        names.push(name);
    }
    Ok(names)
}

/// `url`, or the URL in `url_file` (its first line), marked secret whole.
pub(super) fn resolve_url(
    name: &str,
    url: &SecretUrl,
    url_file: Option<&std::path::Path>,
) -> Result<SecretUrl, ConfigError> {
    let Some(path) = url_file else {
        return Ok(url.clone());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::UrlFile {
        name: name.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    let url = SecretUrl::from_file(text.lines().next().unwrap_or("").trim().to_owned());
    if !is_http_url(url.expose()) {
        return Err(ConfigError::BadUrl {
            name: name.to_owned(),
            url: format!("{url} (from {})", path.display()),
        });
    }
    Ok(url)
}

pub(crate) fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && url.parse::<ureq::http::Uri>().is_ok()
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_deserializes() {
        let text = "listen = \"127.0.0.1:8001\"\n[cadence]\nvms = \"1s\"\n\n\
                    [[notifier]]\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\n";
        let n = parse_notifiers(text).unwrap();
        assert_eq!(
            n,
            vec![NotifierConfig::Alertmanager {
                url: "http://127.0.0.1:9093".into(),
                url_file: None,
                name: None
            }]
        );
    }

    #[test]
    fn every_kind_and_the_options() {
        let text = r#"
[notify]
retry_initial = "200ms"
retry_max = "5s"
max_age = "1h"

[[notifier]]
kind = "webhook"
url = "http://127.0.0.1:8080/hook"

[[notifier]]
kind = "webhook"
url = "http://127.0.0.1:8081/hook"

[[notifier]]
kind = "email"
smtp = "127.0.0.1:2525"
from = "monitor@localhost"
to = ["a@localhost", "b@localhost"]

[[notifier]]
kind = "log"
name = "journal"
"#;
        let s = parse_notify_settings(text).unwrap();
        assert_eq!(s.notify.retry_initial, Duration::from_millis(200));
        assert_eq!(s.notify.max_age, Duration::from_secs(3600));
        assert_eq!(s.notify.timeout, Duration::from_secs(10));
        assert_eq!(
            channel_names(&s.notifiers).unwrap(),
            ["webhook", "webhook-2", "email", "journal"]
        );
        assert!(
            matches!(&s.notifiers[2], NotifierConfig::Email { to, starttls: false, .. } if to.len() == 2)
        );
    }

    #[test]
    fn unknown_keys_and_kinds_are_errors() {
        let e = parse_notifiers(
            "[[notifier]]\nkind = \"alertmanager\"\nurl = \"http://x\"\nurll = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("urll") && e.contains("line"), "{e}");
        let e = parse_notifiers("[[notifier]]\nkind = \"pager\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pager"), "{e}");
        let e = parse_notifiers("[notify]\nretry = \"1s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("retry"), "{e}");
        let e = parse_notifiers(
            "[[notifier]]\nkind = \"log\"\n[[notifier]]\nkind = \"log\"\nname = \"log\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"log\" is used twice"), "{e}");
        let e = parse_notifiers("[[notifier]]\nkind = \"log\"\nname = \"../x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("../x"), "{e}");
        let e = parse_notifiers("[notify]\nretry_initial = \"2m\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("retry_max"), "{e}");
    }

    #[test]
    fn smtp_credentials_without_tls_need_an_explicit_opt_in() {
        let email = |extra: &str| {
            format!(
                "[[notifier]]\nkind = \"email\"\nname = \"ops-mail\"\nsmtp = \"mail.example:25\"\n\
                 from = \"monitor@example\"\nto = [\"oncall@example\"]\n{extra}"
            )
        };
        for credentials in [
            "username = \"monitor\"\npassword = \"hunter2\"\n",
            "username = \"monitor\"\npassword_file = \"/etc/monitor/smtp\"\n",
        ] {
            let e = parse_notify_settings(&email(credentials))
                .unwrap_err()
                .to_string();
            for part in [
                "ops-mail",
                "clear text",
                "starttls",
                "tls",
                "allow_insecure_auth",
            ] {
                assert!(e.contains(part), "{part} not in {e}");
            }
            assert!(!e.contains("hunter2"), "{e}");
            for encrypted in ["starttls = true\n", "tls = true\n"] {
                parse_notify_settings(&email(&format!("{credentials}{encrypted}"))).unwrap();
            }
            let s = parse_notify_settings(&email(&format!(
                "{credentials}allow_insecure_auth = true\n"
            )))
            .unwrap();
            assert!(matches!(
                &s.notifiers[0],
                NotifierConfig::Email {
                    allow_insecure_auth: true,
                    ..
                }
            ));
        }
        // No credentials: plain SMTP to a relay is fine.
        parse_notify_settings(&email("")).unwrap();
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let text = r#"
[[notifier]]
kind = "webhook"
url = "http://alice:s3cret@127.0.0.1:8080/hook"

[[notifier]]
kind = "alertmanager"
url = "https://TOKEN123@am.example"

[[notifier]]
kind = "email"
smtp = "mail.example:587"
from = "monitor@example"
to = ["oncall@example"]
starttls = true
username = "monitor"
password = "hunter2"
"#;
        let settings = parse_notify_settings(text).unwrap();
        let shown = format!("{settings:?}\n{:#?}", settings.notifiers);
        for secret in ["s3cret", "TOKEN123", "hunter2"] {
            assert!(!shown.contains(secret), "{secret} in\n{shown}");
        }
        // Still what a reader of the debug output needs to tell the notifiers apart.
        for shown_part in ["alice:***@127.0.0.1:8080/hook", "am.example", "\"monitor\""] {
            assert!(shown.contains(shown_part), "{shown_part} not in\n{shown}");
        }
    }

    #[test]
    fn delivery_options_out_of_their_range_are_refused_naming_the_key() {
        for (key, value) in [
            ("timeout", "500000000000y"),
            ("timeout", "2h"),
            ("retry_max", "2d"),
            ("max_age", "31d"),
        ] {
            let e = parse_notify_settings(&format!("[notify]\n{key} = \"{value}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("[notify] {key} = ")), "{key}: {e}");
        }
        parse_notify_settings(
            "[notify]\ntimeout = \"1h\"\nretry_max = \"1d\"\nmax_age = \"30d\"\n",
        )
        .unwrap();
    }

    #[test]
    fn urls() {
        assert!(is_http_url("http://127.0.0.1:9093"));
        assert!(is_http_url("https://am.example/base"));
        assert!(!is_http_url("127.0.0.1:9093"));
        assert!(!is_http_url("http://"));
        assert!(!is_http_url("ftp://x"));
        assert!(!is_http_url("http://exa mple"));
    }
}
