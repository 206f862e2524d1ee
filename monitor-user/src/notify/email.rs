//! Email over SMTP (lettre): one plain-text message per alert, to every configured address.
use std::{fmt::Write as _, path::PathBuf, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::{
        authentication::Credentials,
        client::{Tls, TlsParameters},
        extension::ClientId,
    },
};

use super::{Context, annotations_with_value, labels_with_instance, rfc3339};
use crate::alerts::{Alert, AlertStatus};

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("notifier {name}: smtp {smtp:?} is not HOST or HOST:PORT")]
    BadServer { name: String, smtp: String },
    #[error("notifier {name}: {field} address {address:?} is invalid: {source}")]
    BadAddress {
        name: String,
        field: &'static str,
        address: String,
        source: lettre::address::AddressError,
    },
    #[error("notifier {name}: {what}")]
    Config { name: String, what: String },
    #[error("notifier {name}: cannot read password_file {path}: {source}")]
    PasswordFile {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("notifier {name}: tls setup for {host}: {source}")]
    Tls {
        name: String,
        host: String,
        source: lettre::transport::smtp::Error,
    },
    #[error("building the email for {alert}: {source}")]
    Build {
        alert: String,
        source: lettre::error::Error,
    },
    #[error("smtp {server}: {source}")]
    Send {
        server: String,
        source: lettre::transport::smtp::Error,
    },
}

impl EmailError {
    /// The server refused this message for good (5xx), other than for authentication, which
    /// an operator fixes and after which queued mail should still go out.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Send { source, .. } => {
                source.is_permanent()
                    && !source
                        .status()
                        .is_some_and(|c| matches!(u16::from(c), 530 | 534 | 535 | 538))
            }
            Self::Build { .. } => true,
            _ => false,
        }
    }
}

/// The `kind = "email"` fields, gathered for [`EmailChannel::new`].
pub struct EmailConfig<'a> {
    pub name: &'a str,
    pub smtp: &'a str,
    pub from: &'a str,
    pub to: &'a [String],
    pub starttls: bool,
    pub tls: bool,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub password_file: Option<&'a std::path::Path>,
    /// Credentials may go over plain SMTP (config::check_notifiers refuses them otherwise).
    pub allow_insecure_auth: bool,
}

pub struct EmailChannel {
    /// `host:port` as configured, for messages.
    pub server: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailChannel")
            .field("server", &self.server)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// `host`, `host:port`, `[v6]:port` → (host, port).
fn split_server(smtp: &str) -> Option<(String, Option<u16>)> {
    let smtp = smtp.trim();
    if let Some(rest) = smtp.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match smtp.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            Some((host.to_string(), Some(port.parse().ok()?)))
        }
        Some(_) => None,
        None if !smtp.is_empty() && !smtp.contains(char::is_whitespace) => {
            Some((smtp.to_string(), None))
        }
        None => None,
    }
}

impl EmailChannel {
    pub fn new(c: &EmailConfig, hello: &str, timeout: Duration) -> Result<Self, EmailError> {
        let name = c.name.to_string();
        let config_err = |what: &str| EmailError::Config {
            name: name.clone(),
            what: what.into(),
        };
        let (host, port) = split_server(c.smtp).ok_or_else(|| EmailError::BadServer {
            name: name.clone(),
            // Not a URL, but `user:password@host` is a mistake that would end up here.
            smtp: super::redact::url(c.smtp),
        })?;
        let parse = |field, address: &str| {
            address
                .parse::<Mailbox>()
                .map_err(|source| EmailError::BadAddress {
                    name: name.clone(),
                    field,
                    address: address.into(),
                    source,
                })
        };
        let from = parse("from", c.from)?;
        let to =
            c.to.iter()
                .map(|a| parse("to", a))
                .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(config_err("to is empty: give at least one address"));
        }
        if c.starttls && c.tls {
            return Err(config_err(
                "starttls and tls are exclusive (starttls upgrades a plain connection, tls is TLS from the start)",
            ));
        }
        let tls_params = || {
            TlsParameters::new(host.clone()).map_err(|source| EmailError::Tls {
                name: name.clone(),
                host: host.clone(),
                source,
            })
        };
        let (tls, default_port) = if c.tls {
            (Tls::Wrapper(tls_params()?), 465)
        } else if c.starttls {
            (Tls::Required(tls_params()?), 587)
        } else {
            (Tls::None, 25)
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port.unwrap_or(default_port))
            .tls(tls)
            .timeout(Some(timeout))
            .hello_name(ClientId::Domain(hello.to_string()));
        let password = match (c.password, c.password_file) {
            (Some(_), Some(_)) => {
                return Err(config_err("give password or password_file, not both"));
            }
            (Some(p), None) => Some(p.to_string()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| EmailError::PasswordFile {
                        name: name.clone(),
                        path: path.to_path_buf(),
                        source,
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            (None, None) => None,
        };
        match (c.username, password) {
            (Some(user), Some(pass)) => {
                if !c.tls && !c.starttls {
                    // config::check_notifiers refuses this already; checked again so that no
                    // other way of building a channel can skip it.
                    if !c.allow_insecure_auth {
                        return Err(config_err(
                            "username and password would cross the network in clear text: set \
                             starttls = true (or tls = true), or allow_insecure_auth = true",
                        ));
                    }
                    // The operator chose this: say what it costs every time the daemon starts.
                    tracing::warn!(
                        "notifier {name}: SMTP AUTH WITHOUT TLS to {} (allow_insecure_auth = true): \
                         the username and password cross the network in clear text",
                        c.smtp
                    );
                }
                builder = builder.credentials(Credentials::new(user.into(), pass));
            }
            (None, None) => {}
            _ => return Err(config_err("username and password go together")),
        }
        Ok(Self {
            server: c.smtp.to_string(),
            from,
            to,
            transport: builder.build(),
        })
    }

    /// Sends one entry: a single alert (see [`Channel::split`](super::Channel)).
    pub async fn deliver(&self, alerts: &[Alert], ctx: &Context) -> Result<(), EmailError> {
        for alert in alerts {
            let mut builder = Message::builder()
                .from(self.from.clone())
                .subject(subject(alert, &ctx.instance))
                .header(ContentType::TEXT_PLAIN);
            for to in &self.to {
                builder = builder.to(to.clone());
            }
            let message = builder
                .body(body(alert, ctx))
                .map_err(|source| EmailError::Build {
                    alert: alert.name.clone(),
                    source,
                })?;
            self.transport
                .send(message)
                .await
                .map_err(|source| EmailError::Send {
                    server: self.server.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

fn target(alert: &Alert, instance: &str) -> String {
    alert
        .labels
        .get("target")
        .or_else(|| alert.labels.get("instance"))
        .cloned()
        .unwrap_or_else(|| instance.to_string())
}

/// `[FIRING] HighMemory on trading-api (warning)`.
pub fn subject(alert: &Alert, instance: &str) -> String {
    let status = match alert.status {
        AlertStatus::Firing => "FIRING",
        AlertStatus::Resolved => "RESOLVED",
    };
    format!(
        "[{status}] {} on {} ({})",
        alert.name,
        target(alert, instance),
        alert.severity.as_str()
    )
}

pub fn body(alert: &Alert, ctx: &Context) -> String {
    let mut text = String::new();
    let target = target(alert, &ctx.instance);
    let state = match alert.status {
        AlertStatus::Firing => "is firing",
        AlertStatus::Resolved => "has resolved",
    };
    // Writing to a String cannot fail.
    let _ = writeln!(
        text,
        "{} {state} on {target} (severity {}).\n",
        alert.name,
        alert.severity.as_str()
    );
    if let Some(summary) = alert.annotations.get("summary") {
        let _ = writeln!(text, "{summary}");
    }
    if let Some(description) = alert.annotations.get("description") {
        let _ = writeln!(text, "{description}");
    }
    let _ = writeln!(text, "\nValue:   {}", alert.value);
    let _ = writeln!(text, "Started: {}", rfc3339(alert.starts_at));
    if let Some(ends_at) = alert.ends_at {
        let _ = writeln!(text, "Ended:   {}", rfc3339(ends_at));
    }
    let _ = writeln!(text, "\nLabels:");
    for (k, v) in labels_with_instance(alert, &ctx.instance) {
        let _ = writeln!(text, "  {k} = {v}");
    }
    let _ = writeln!(text, "\nAnnotations:");
    for (k, v) in annotations_with_value(alert) {
        let _ = writeln!(text, "  {k} = {v}");
    }
    let _ = writeln!(text, "\n-- \nmonitor at {}", ctx.external_url);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::{Logs, alert, ctx, resolved};

    #[test]
    fn subject_and_body() {
        let a = alert("HighMemory");
        assert_eq!(
            subject(&a, "host"),
            "[FIRING] HighMemory on trading-api (warning)"
        );
        assert_eq!(
            subject(&resolved("Down"), "host"),
            "[RESOLVED] Down on trading-api (warning)"
        );
        let b = body(&a, &ctx());
        assert!(b.contains("HighMemory is firing on trading-api"), "{b}");
        assert!(b.contains("Value:   1536"), "{b}");
        assert!(b.contains("Started: 2024-03-01T12:00:00.000Z"), "{b}");
        assert!(b.contains("  severity = warning"), "{b}");
        assert!(b.contains("  summary = memory high"), "{b}");
    }

    #[test]
    fn servers_and_bad_config() {
        assert_eq!(
            split_server("127.0.0.1:2525"),
            Some(("127.0.0.1".into(), Some(2525)))
        );
        assert_eq!(
            split_server("mail.example"),
            Some(("mail.example".into(), None))
        );
        assert_eq!(split_server("[::1]:25"), Some(("::1".into(), Some(25))));
        assert_eq!(split_server("mail:x"), None);
        assert_eq!(split_server(""), None);
        let to = vec!["oncall@example".to_string()];
        let mut c = EmailConfig {
            name: "email",
            smtp: "127.0.0.1:25",
            from: "not an address",
            to: &to,
            starttls: false,
            tls: false,
            username: None,
            password: None,
            password_file: None,
            allow_insecure_auth: false,
        };
        let e = EmailChannel::new(&c, "host", Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("not an address"), "{e}");
        c.from = "monitor@example";
        c.starttls = true;
        c.tls = true;
        assert!(EmailChannel::new(&c, "host", Duration::from_secs(1)).is_err());
        c.tls = false;
        EmailChannel::new(&c, "host", Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn credentials_over_plain_smtp_are_refused_or_warned_about_at_start() {
        let logs = Logs::default();
        let _capture = logs.capture();
        let to = vec!["oncall@example".to_string()];
        let mut c = EmailConfig {
            name: "ops-mail",
            smtp: "127.0.0.1:25",
            from: "monitor@example",
            to: &to,
            starttls: true,
            tls: false,
            username: Some("monitor"),
            password: Some("hunter2"),
            password_file: None,
            allow_insecure_auth: false,
        };
        EmailChannel::new(&c, "host", Duration::from_secs(1)).unwrap();
        assert!(!logs.text().contains("WITHOUT TLS"), "{}", logs.text());
        c.starttls = false;
        let e = EmailChannel::new(&c, "host", Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("allow_insecure_auth"), "{e}");
        c.allow_insecure_auth = true;
        EmailChannel::new(&c, "host", Duration::from_secs(1)).unwrap();
        let text = logs.text();
        assert!(
            text.contains("WARN") && text.contains("notifier ops-mail: SMTP AUTH WITHOUT TLS"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }
}
