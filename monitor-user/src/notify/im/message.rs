//! What an instant message says: the view of a group of alerts (status and severity first, the
//! alert, target and instance, the value against the threshold, for how long, the spike context,
//! a link back) rendered through a MiniJinja template, the default or the config's own.
//!
//! One template serves every platform: `bold(text)` and `link(url, text)` write each platform's
//! markup, and values are escaped as its markup needs (Telegram's HTML and Slack's mrkdwn take
//! `&`, `<`, `>` as markup; the markdown robots have no escaping to speak of).
use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use minijinja::{Environment, UndefinedBehavior, Value, context};
use serde::Serialize;

use crate::{
    alerts::{Alert, AlertStatus, Severity},
    notify::{Context, labels_with_instance},
};

/// How a platform writes bold text and links, and what it needs escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Markup {
    /// DingTalk, WeCom, Feishu's lark_md.
    Markdown,
    /// Telegram's `parse_mode = HTML`.
    Html,
    /// Slack's mrkdwn.
    Slack,
}

impl Markup {
    pub(super) fn escape(self, text: &str) -> String {
        match self {
            Self::Markdown => text.to_owned(),
            Self::Html | Self::Slack => text
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;"),
        }
    }

    pub(super) fn bold(self, text: &str) -> String {
        let text = self.escape(text);
        match self {
            Self::Markdown => format!("**{text}**"),
            Self::Html => format!("<b>{text}</b>"),
            Self::Slack => format!("*{text}*"),
        }
    }

    fn link(self, url: &str, text: &str) -> String {
        let label = self.escape(text);
        match self {
            Self::Markdown => format!("[{label}]({url})"),
            Self::Html => format!(
                "<a href=\"{}\">{label}</a>",
                self.escape(url).replace('"', "&quot;")
            ),
            Self::Slack => format!("<{}|{label}>", self.escape(url).replace('|', "%7C")),
        }
    }
}

/// The default message body: one block per alert, then the link and the mentions.
pub const DEFAULT_BODY: &str = r#"{%- for a in alerts %}
{%- if not loop.first %}

{% endif -%}
{{ a.icon }} {{ bold(a.status | upper) }} · {{ a.severity }} · {{ bold(a.name) }}
{{ a.summary }}
target {{ a.target }} · instance {{ a.instance }}
{% if a.description %}{{ a.description }}{% else %}value {{ a.value }}{% endif %}
{% if a.status == "firing" %}firing for {{ a.duration }}, since {{ a.starts_at }}{% else %}fired for {{ a.duration }}, {{ a.starts_at }} to {{ a.ends_at }}{% endif %}
{%- if a.top_syscalls %}
top syscalls: {% for s in a.top_syscalls %}{{ s.syscall }} +{{ s.per_sec }}/s{% if not loop.last %}, {% endif %}{% endfor %}
{%- endif %}
{%- if a.top_route %}
top route: {{ a.top_route }}
{%- endif %}
{%- endfor %}

{{ link(external_url, "Open monitor") }}
{%- if mentions %}
{% for m in mentions %}{{ m }}{% if not loop.last %} {% endif %}{% endfor %}
{%- endif %}"#;

/// The default title: the notification preview on a phone, and the card header where there is
/// one. It names the alert when there is one; several are counted (the body names each once).
pub const DEFAULT_TITLE: &str = r#"{% if alerts | length == 1 %}{{ status | upper }}: {{ alerts[0].name }}{% elif firing and resolved %}FIRING {{ firing }} · RESOLVED {{ resolved }}{% else %}{{ status | upper }}: {{ alerts | length }} alerts{% endif %}{% if target %} on {{ target }}{% endif %}"#;

/// A rendered message.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub title: String,
    pub text: String,
}

/// The template of one channel, parsed and checked once.
#[derive(Debug)]
pub struct MessageTemplate {
    env: Environment<'static>,
}

/// Enough for any message of a few hundred alerts; a loop gone wrong in a config's template
/// stops here instead of hanging the sender.
const FUEL: u64 = 2_000_000;

impl MessageTemplate {
    /// `body` and `title` override the defaults. A syntax error, or a template that fails on a
    /// sample alert (an unknown filter, a misspelt field), is refused here with MiniJinja's
    /// message (which gives the template's line).
    pub fn new(markup: Markup, body: Option<&str>, title: Option<&str>) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_fuel(Some(FUEL));
        env.set_formatter(move |out, state, value| {
            if value.is_safe() || value.as_str().is_none() {
                return minijinja::escape_formatter(out, state, value);
            }
            let text = value.as_str().unwrap_or_default();
            out.write_str(&markup.escape(text))?;
            Ok(())
        });
        env.add_function("bold", move |text: String| {
            Value::from_safe_string(markup.bold(&text))
        });
        env.add_function("link", move |url: String, text: String| {
            Value::from_safe_string(markup.link(&url, &text))
        });
        env.add_template_owned("body", body.unwrap_or(DEFAULT_BODY).to_owned())
            .map_err(|e| format!("template: {}", describe(&e)))?;
        env.add_template_owned("title", title.unwrap_or(DEFAULT_TITLE).to_owned())
            .map_err(|e| format!("title: {}", describe(&e)))?;
        let template = Self { env };
        template.render(&sample_view(), &[])?;
        Ok(template)
    }

    /// Renders `view`; `mentions` are already in the platform's markup (not escaped again).
    pub fn render(&self, view: &View, mentions: &[String]) -> Result<Message, String> {
        let mentions: Vec<Value> = mentions
            .iter()
            .map(|m| Value::from_safe_string(m.clone()))
            .collect();
        let ctx = context! { mentions => mentions, ..Value::from_serialize(view) };
        let render = |name: &str| {
            self.env
                .get_template(name)
                .and_then(|t| t.render(&ctx))
                .map_err(|e| {
                    let key = if name == "body" { "template" } else { name };
                    format!("{key}: {}", describe(&e))
                })
        };
        Ok(Message {
            title: render("title")?.trim().to_owned(),
            text: render("body")?.trim().to_owned(),
        })
    }
}

/// MiniJinja's error with its cause and the template line.
fn describe(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// What templates see: `alerts`, `status`, `names`, `target`, `firing`, `resolved`,
/// `external_url`, `instance`, and `mentions`.
#[derive(Clone, Debug, Serialize)]
pub struct View {
    /// "firing" when any alert fires, else "resolved".
    pub status: &'static str,
    pub alerts: Vec<AlertView>,
    /// The alert names, first three and how many more.
    pub names: String,
    /// The target every alert shares, or empty.
    pub target: String,
    pub firing: usize,
    pub resolved: usize,
    pub external_url: String,
    pub instance: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct AlertView {
    pub status: &'static str,
    /// 🔥 critical, ⚠️ warning, ℹ️ info while firing; ✅ once resolved.
    pub icon: &'static str,
    pub severity: &'static str,
    pub name: String,
    pub summary: String,
    /// The value against the threshold, in the rule's words.
    pub description: String,
    pub value: String,
    pub target: String,
    pub instance: String,
    pub route: Option<String>,
    /// `2024-03-01 12:00:00 UTC`.
    pub starts_at: String,
    pub ends_at: Option<String>,
    /// Firing: since it started (at send time). Resolved: how long it fired.
    pub duration: String,
    pub spike_context: Option<String>,
    pub top_syscalls: Vec<SyscallView>,
    pub top_route: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SyscallView {
    pub syscall: String,
    /// Calls per second added over the baseline, rounded.
    pub per_sec: String,
}

/// The view of `alerts` as of `now`.
pub fn view(alerts: &[Alert], ctx: &Context, now: SystemTime) -> View {
    let items: Vec<AlertView> = alerts.iter().map(|a| alert_view(a, ctx, now)).collect();
    let mut names: Vec<&str> = Vec::new();
    for a in alerts {
        if !names.contains(&a.name.as_str()) {
            names.push(&a.name);
        }
    }
    let shown = match names.len() {
        0..=3 => names.join(", "),
        n => format!("{} and {} more", names[..3].join(", "), n - 3),
    };
    let target = match items.first() {
        Some(first) if items.iter().all(|a| a.target == first.target) => first.target.clone(),
        _ => String::new(),
    };
    let firing = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .count();
    View {
        status: if firing > 0 { "firing" } else { "resolved" },
        names: shown,
        target,
        firing,
        resolved: alerts.len() - firing,
        external_url: ctx.external_url.clone(),
        instance: ctx.instance.clone(),
        alerts: items,
    }
}

fn alert_view(a: &Alert, ctx: &Context, now: SystemTime) -> AlertView {
    let labels = labels_with_instance(a, &ctx.instance);
    let text = |key: &str| a.annotations.get(key).cloned().unwrap_or_default();
    let (status, icon) = match (a.status, a.severity) {
        (AlertStatus::Resolved, _) => ("resolved", "✅"),
        (AlertStatus::Firing, Severity::Critical) => ("firing", "🔥"),
        (AlertStatus::Firing, Severity::Warning) => ("firing", "⚠️"),
        (AlertStatus::Firing, Severity::Info) => ("firing", "ℹ️"),
    };
    let end = match a.status {
        AlertStatus::Firing => now,
        AlertStatus::Resolved => a.ends_at.unwrap_or(now),
    };
    let top_syscalls = a
        .annotations
        .get("spike_top_syscalls")
        .and_then(|json| serde_json::from_str::<Vec<serde_json::Value>>(json).ok())
        .unwrap_or_default()
        .iter()
        .take(3)
        .filter_map(|s| {
            Some(SyscallView {
                syscall: s.get("syscall")?.as_str()?.to_owned(),
                per_sec: format!("{:.0}", s.get("added_calls_per_sec")?.as_f64()?),
            })
        })
        .collect();
    let top_route = a
        .annotations
        .get("spike_top_routes")
        .and_then(|json| serde_json::from_str::<Vec<serde_json::Value>>(json).ok())
        .and_then(|routes| {
            let r = routes.first()?;
            Some(format!(
                "{} +{:.1}% CPU",
                r.get("route")?.as_str()?,
                r.get("added_cpu_percent")?.as_f64()?
            ))
        });
    AlertView {
        status,
        icon,
        severity: a.severity.as_str(),
        name: a.name.clone(),
        summary: text("summary"),
        description: text("description"),
        value: crate::alerts::engine::num(a.value),
        target: labels.get("target").cloned().unwrap_or_default(),
        instance: labels.get("instance").cloned().unwrap_or_default(),
        route: labels.get("route").cloned(),
        starts_at: when(a.starts_at),
        ends_at: a.ends_at.map(when),
        duration: how_long(end.duration_since(a.starts_at).unwrap_or_default()),
        spike_context: a.annotations.get("spike_context").cloned(),
        top_syscalls,
        top_route,
        labels,
        annotations: a.annotations.clone(),
    }
}

/// `2024-03-01 12:00:00 UTC`.
fn when(t: SystemTime) -> String {
    let text = crate::notify::rfc3339(t);
    // 2024-03-01T12:00:00.000Z
    format!("{} UTC", text.get(..19).unwrap_or(&text).replace('T', " "))
}

/// Seconds below an hour, minutes above: `45s`, `12m 5s`, `3h 20m`.
fn how_long(d: Duration) -> String {
    let secs = d.as_secs();
    let rounded = if secs >= 3600 { secs - secs % 60 } else { secs };
    humantime::format_duration(Duration::from_secs(rounded.max(1))).to_string()
}

/// A view with every field set, to try a template on.
fn sample_view() -> View {
    let mut alert = crate::notify::test_alert("host:8001");
    alert
        .annotations
        .insert("spike_context".into(), "CPU 90%".into());
    alert.annotations.insert(
        "spike_top_syscalls".into(),
        r#"[{"syscall":"read","added_calls_per_sec":100.0}]"#.into(),
    );
    alert.annotations.insert(
        "spike_top_routes".into(),
        r#"[{"route":"GET /x","cpu_percent":5.0,"added_cpu_percent":4.0}]"#.into(),
    );
    alert.labels.insert("route".into(), "GET /x".into());
    let mut resolved = alert.clone();
    resolved.status = AlertStatus::Resolved;
    resolved.ends_at = Some(alert.starts_at + Duration::from_secs(60));
    let ctx = Context {
        instance: "host:8001".into(),
        external_url: "http://host:8001".into(),
    };
    view(&[alert, resolved], &ctx, SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::{alert, ctx, resolved};

    fn render(markup: Markup, alerts: &[Alert], mentions: &[String]) -> Message {
        let t = MessageTemplate::new(markup, None, None).unwrap();
        let now = alerts[0].starts_at + Duration::from_secs(754);
        t.render(&view(alerts, &ctx(), now), mentions).unwrap()
    }

    #[test]
    fn a_firing_alert_reads_status_first_then_what_and_where() {
        let mut a = alert("HighMemory");
        a.annotations.insert(
            "description".into(),
            "rss_mb is 91.50 MB, above the 80 MB threshold.".into(),
        );
        let m = render(Markup::Markdown, &[a], &["@13800000000".into()]);
        assert_eq!(m.title, "FIRING: HighMemory on trading-api");
        let lines: Vec<&str> = m.text.lines().collect();
        assert_eq!(
            lines[0], "⚠️ **FIRING** · warning · **HighMemory**",
            "{}",
            m.text
        );
        assert_eq!(lines[1], "memory high");
        assert_eq!(lines[2], "target trading-api · instance host:8001");
        assert_eq!(lines[3], "rss_mb is 91.50 MB, above the 80 MB threshold.");
        assert_eq!(
            lines[4],
            "firing for 12m 34s, since 2024-03-01 12:00:00 UTC"
        );
        assert!(
            m.text
                .ends_with("[Open monitor](http://host:8001)\n@13800000000"),
            "{}",
            m.text
        );
    }

    #[test]
    fn resolved_says_how_long_it_fired() {
        let m = render(Markup::Markdown, &[resolved("Down")], &[]);
        assert_eq!(m.title, "RESOLVED: Down on trading-api");
        assert!(
            m.text
                .contains("fired for 5m, 2024-03-01 12:00:00 UTC to 2024-03-01 12:05:00 UTC"),
            "{}",
            m.text
        );
        assert!(m.text.starts_with("✅ **RESOLVED**"), "{}", m.text);
    }

    #[test]
    fn spike_context_shows_top_syscalls_and_route() {
        let mut a = alert("CpuSpike");
        a.annotations.insert(
            "spike_top_syscalls".into(),
            r#"[{"syscall":"futex","added_calls_per_sec":1234.4,"added_seconds_per_sec":0.1},{"syscall":"read","added_calls_per_sec":10.0,"added_seconds_per_sec":0.0}]"#.into(),
        );
        a.annotations.insert(
            "spike_top_routes".into(),
            r#"[{"route":"POST /orders","cpu_percent":40.0,"added_cpu_percent":35.25}]"#.into(),
        );
        let m = render(Markup::Slack, &[a], &[]);
        assert!(
            m.text.contains("top syscalls: futex +1234/s, read +10/s"),
            "{}",
            m.text
        );
        assert!(
            m.text.contains("top route: POST /orders +35.2% CPU"),
            "{}",
            m.text
        );
    }

    #[test]
    fn html_and_slack_values_are_escaped_but_markup_is_not() {
        let mut a = alert("A<b>&");
        a.annotations
            .insert("summary".into(), "x < y & z > w".into());
        let html = render(Markup::Html, &[a.clone()], &[]);
        assert!(
            html.text.contains("<b>A&lt;b&gt;&amp;</b>"),
            "{}",
            html.text
        );
        assert!(
            html.text.contains("x &lt; y &amp; z &gt; w"),
            "{}",
            html.text
        );
        assert!(
            html.text
                .contains("<a href=\"http://host:8001\">Open monitor</a>")
        );
        let slack = render(Markup::Slack, &[a], &["<!here>".into()]);
        assert!(slack.text.contains("*A&lt;b&gt;&amp;*"), "{}", slack.text);
        assert!(slack.text.contains("<http://host:8001|Open monitor>"));
        assert!(slack.text.ends_with("<!here>"), "{}", slack.text);
    }

    #[test]
    fn several_alerts_share_one_message() {
        let alerts: Vec<Alert> = (1..=5).map(|i| alert(&format!("A{i}"))).collect();
        let m = render(Markup::Markdown, &alerts, &[]);
        assert_eq!(m.title, "FIRING: 5 alerts on trading-api");
        let mixed = render(Markup::Markdown, &[alert("A"), resolved("B")], &[]);
        assert_eq!(mixed.title, "FIRING 1 · RESOLVED 1 on trading-api");
        for i in 1..=5 {
            assert_eq!(
                m.text.matches(&format!("**A{i}**")).count(),
                1,
                "{}",
                m.text
            );
        }
    }

    #[test]
    fn a_config_template_is_checked_and_used() {
        let t = MessageTemplate::new(
            Markup::Markdown,
            Some("{% for a in alerts %}{{ a.name }}={{ a.value }};{% endfor %}"),
            Some("{{ firing }} firing"),
        )
        .unwrap();
        let m = t
            .render(
                &view(&[alert("A"), alert("B")], &ctx(), SystemTime::now()),
                &[],
            )
            .unwrap();
        assert_eq!(m.text, "A=1536;B=1536;");
        assert_eq!(m.title, "2 firing");
        for (body, why) in [
            ("{{ alerts | }}", "template: syntax error"),
            ("{{ alerts | nosuchfilter }}", "unknown filter"),
            ("{% for a in alerts %}{{ a.nmae }}{% endfor %}", "undefined"),
            (
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                "fuel",
            ),
        ] {
            let e = MessageTemplate::new(Markup::Markdown, Some(body), None).unwrap_err();
            assert!(
                e.starts_with("template: ") && e.contains(why),
                "{body}: {e}"
            );
        }
    }
}
