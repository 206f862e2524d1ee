//! Feishu / Lark custom bot: `POST https://open.feishu.cn/open-apis/bot/v2/hook/...` with an
//! interactive card (a coloured header with the title, the body as lark_md).
//!
//! Documented limits: 100 requests a minute and 5 a second per bot, a request body of at most
//! 20 KB; past the rate the bot answers code 11232 ("frequency limited"). Signing (the bot's
//! "签名校验" setting): `sign = base64(HMAC-SHA256(key = timestamp_s + "\n" + secret,
//! message = empty))` — the string is the key, not the message — sent with `timestamp` in the
//! body; a timestamp more than an hour off is refused (code 19021).
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{Message, RateLimit, Reply, Verdict, hmac_base64, http_verdict, is_all};
use crate::alerts::{Alert, AlertStatus, Severity};

pub const RATE_LIMITS: [RateLimit; 2] = [RateLimit::new(100, 60), RateLimit::new(5, 1)];

/// The documented 20 KB, less room for the signature fields.
const MAX_BODY_BYTES: usize = 20_000 - 200;

pub fn fits(m: &Message) -> bool {
    serde_json::to_vec(&card(m, "red")).is_ok_and(|b| b.len() <= MAX_BODY_BYTES)
}

pub fn mentions(configured: &[String]) -> Vec<String> {
    configured
        .iter()
        .map(|m| {
            if is_all(m) {
                "<at id=all></at>".to_owned()
            } else {
                format!("<at id={}></at>", m.trim())
            }
        })
        .collect()
}

/// Red for critical, orange for warning, blue for info while firing; green once resolved.
fn colour(alerts: &[Alert]) -> &'static str {
    let firing = alerts.iter().filter(|a| a.status == AlertStatus::Firing);
    match firing.map(|a| a.severity).max() {
        None => "green",
        Some(Severity::Critical) => "red",
        Some(Severity::Warning) => "orange",
        Some(Severity::Info) => "blue",
    }
}

fn card(m: &Message, colour: &str) -> Value {
    json!({
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": true},
            "header": {
                "template": colour,
                "title": {"tag": "plain_text", "content": m.title},
            },
            "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": m.text}}],
        },
    })
}

pub fn body(m: &Message, alerts: &[Alert], secret: Option<&str>, now: SystemTime) -> Value {
    let mut body = card(m, colour(alerts));
    if let Some(secret) = secret {
        let ts = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        body["timestamp"] = ts.to_string().into();
        body["sign"] = sign(ts, secret).into();
    }
    body
}

fn sign(timestamp_s: u64, secret: &str) -> String {
    hmac_base64(format!("{timestamp_s}\n{secret}").as_bytes(), b"")
}

pub(super) fn verdict(reply: &Reply) -> Verdict {
    let v = super::json(reply);
    // Feishu answers some refusals with HTTP 400 and its code in the body: read the code first.
    let code = v
        .get("code")
        .or_else(|| v.get("StatusCode"))
        .and_then(Value::as_i64);
    let Some(code) = code else {
        return http_verdict(reply).unwrap_or_else(|| {
            Verdict::Retry(format!("not Feishu's answer: {}", reply.excerpt()))
        });
    };
    let msg = v
        .get("msg")
        .or_else(|| v.get("StatusMessage"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let detail = format!("code {code}: {msg}");
    let lower = msg.to_ascii_lowercase();
    match code {
        0 => Verdict::Delivered,
        11_232 => Verdict::TooFast(reply.retry_after, detail),
        _ if lower.contains("frequency limited") || lower.contains("too many request") => {
            Verdict::TooFast(reply.retry_after, detail)
        }
        _ if reply.status >= 500 => Verdict::Retry(detail),
        // 19001 token, 19021 signature, 19022 IP, 19024 keyword, 9499 a malformed body.
        _ => Verdict::Refused(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::{alert, resolved};

    /// Feishu's documented Python:
    /// `base64.b64encode(hmac.new(f"{ts}\n{secret}".encode(), b"", sha256).digest())`,
    /// computed with Python 3.11 for these inputs.
    #[test]
    fn signs_with_the_string_as_the_key() {
        assert_eq!(
            sign(1_599_360_473, "this is secret"),
            "/eYKrXQBzTjUZJ3s6NX16VxGbTwmK7AEs8/FnvC1CSw="
        );
        let m = Message {
            title: "t".into(),
            text: "x".into(),
        };
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_599_360_473);
        let b = body(&m, &[alert("A")], Some("this is secret"), t);
        assert_eq!(b["timestamp"], "1599360473");
        assert_eq!(b["sign"], "/eYKrXQBzTjUZJ3s6NX16VxGbTwmK7AEs8/FnvC1CSw=");
        assert!(body(&m, &[alert("A")], None, t).get("sign").is_none());
    }

    #[test]
    fn the_card_is_coloured_by_what_fires() {
        let m = Message {
            title: "t".into(),
            text: "x".into(),
        };
        let now = SystemTime::now();
        assert_eq!(
            body(&m, &[alert("A")], None, now)["card"]["header"]["template"],
            "orange"
        );
        assert_eq!(
            body(&m, &[resolved("A")], None, now)["card"]["header"]["template"],
            "green"
        );
    }

    #[test]
    fn answers_are_read_from_code() {
        let reply = Reply::new;
        assert_eq!(
            verdict(&reply(200, r#"{"code":0,"msg":"success"}"#)),
            Verdict::Delivered
        );
        assert_eq!(
            verdict(&reply(200, r#"{"StatusCode":0}"#)),
            Verdict::Delivered
        );
        assert!(matches!(
            verdict(&reply(
                200,
                r#"{"code":11232,"msg":"frequency limited psm[x]"}"#
            )),
            Verdict::TooFast(..)
        ));
        assert!(matches!(
            verdict(&reply(200, r#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}"#)),
            Verdict::Refused(d) if d.starts_with("code 19021: sign match fail")
        ));
        assert!(matches!(
            verdict(&reply(400, r#"{"code":9499,"msg":"Bad Request"}"#)),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            verdict(&reply(502, "bad gateway")),
            Verdict::Retry(_)
        ));
    }
}
