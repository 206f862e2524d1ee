//! Slack incoming webhook: `POST https://hooks.slack.com/services/T.../B.../...` with mrkdwn text.
//!
//! Documented: about one message a second per webhook (short bursts allowed), 429 with
//! `Retry-After` past it; Slack advises text under 4,000 characters. Errors are plain-text
//! bodies with their status (`invalid_payload` 400, `invalid_token` 403, `no_service` 404,
//! `channel_is_archived` 410). Mentions: `<@U123>` users, `<!subteam^S123>` groups,
//! `<!here>` / `<!channel>`.
use serde_json::{Value, json};

use super::{Markup, Message, RateLimit, Reply, Verdict, http_verdict, is_all};

pub const RATE_LIMITS: [RateLimit; 1] = [RateLimit::new(1, 1)];

const MAX_TEXT_CHARS: usize = 4000;

fn text(m: &Message) -> String {
    format!("{}\n\n{}", Markup::Slack.bold(&m.title), m.text)
}

pub fn fits(m: &Message) -> bool {
    text(m).chars().count() <= MAX_TEXT_CHARS
}

pub fn mentions(configured: &[String]) -> Vec<String> {
    configured
        .iter()
        .map(|m| {
            let bare = m.trim().trim_start_matches(['@', '!']);
            if is_all(m) {
                let all = if bare == "all" { "channel" } else { bare };
                format!("<!{all}>")
            } else if bare.starts_with('S') {
                format!("<!subteam^{bare}>")
            } else {
                format!("<@{bare}>")
            }
        })
        .collect()
}

pub fn body(m: &Message) -> Value {
    json!({"text": text(m), "mrkdwn": true})
}

pub(super) fn verdict(reply: &Reply) -> Verdict {
    http_verdict(reply).unwrap_or(Verdict::Delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_in_slack_syntax() {
        let m: Vec<String> = ["U024BE7LH", "@here", "S0614TZR7", "all"]
            .map(String::from)
            .into();
        assert_eq!(
            mentions(&m),
            [
                "<@U024BE7LH>",
                "<!here>",
                "<!subteam^S0614TZR7>",
                "<!channel>"
            ]
        );
    }

    #[test]
    fn status_says_it_all() {
        let reply = |status, body: &str, retry_after| Reply {
            retry_after,
            ..Reply::new(status, body)
        };
        let second = Some(std::time::Duration::from_secs(1));
        assert_eq!(verdict(&reply(200, "ok", None)), Verdict::Delivered);
        assert!(
            matches!(verdict(&reply(429, "rate_limited", second)), Verdict::TooFast(s, _) if s == second)
        );
        assert!(
            matches!(verdict(&reply(403, "invalid_token", None)), Verdict::Refused(d) if d.contains("invalid_token"))
        );
        assert!(matches!(verdict(&reply(503, "", None)), Verdict::Retry(_)));
    }
}
