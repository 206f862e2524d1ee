//! DingTalk custom robot: `POST https://oapi.dingtalk.com/robot/send?access_token=...` with a
//! markdown message.
//!
//! Documented limit: 20 messages a minute per robot; past it the robot answers errcode 130101
//! ("send too fast") and is throttled for ten minutes. Signing (the robot's "加签" setting):
//! `sign = urlencode(base64(HMAC-SHA256(key = secret, message = timestamp_ms + "\n" + secret)))`,
//! sent as `&timestamp=...&sign=...`; the robot refuses a timestamp more than an hour off.
//! Mentions are `@mobile` (or `@userid`) in the text plus the `at` object; `all` is `isAtAll`.
use std::time::{SystemTime, UNIX_EPOCH};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use super::{Message, RateLimit, Reply, SecretUrl, Verdict, errcode_verdict, hmac_base64, is_all};

pub const RATE_LIMITS: [RateLimit; 1] = [RateLimit::new(20, 60)];

/// monitor's bound on `markdown.text`: a phone shows a few screens of it at most.
const MAX_TEXT_BYTES: usize = 5000;

/// The text as sent: the title as a heading, and hard line breaks (DingTalk's markdown joins
/// single newlines into one line).
fn text(m: &Message) -> String {
    format!("### {}\n\n{}", m.title, m.text).replace('\n', "  \n")
}

pub fn fits(m: &Message) -> bool {
    text(m).len() <= MAX_TEXT_BYTES
}

fn is_mobile(m: &str) -> bool {
    !m.is_empty()
        && m.chars()
            .all(|c| c.is_ascii_digit() || c == '+' || c == '-')
}

pub fn mentions(configured: &[String]) -> Vec<String> {
    configured
        .iter()
        .filter(|m| !is_all(m))
        .map(|m| format!("@{}", m.trim().trim_start_matches('@')))
        .collect()
}

pub fn body(m: &Message, mentions: &[String]) -> Value {
    let bare = |m: &String| m.trim().trim_start_matches('@').to_owned();
    let mobiles: Vec<String> = mentions.iter().map(bare).filter(|m| is_mobile(m)).collect();
    let user_ids: Vec<String> = mentions
        .iter()
        .filter(|m| !is_all(m))
        .map(bare)
        .filter(|m| !is_mobile(m))
        .collect();
    json!({
        "msgtype": "markdown",
        "markdown": {"title": m.title, "text": text(m)},
        "at": {
            "atMobiles": mobiles,
            "atUserIds": user_ids,
            "isAtAll": mentions.iter().any(|m| is_all(m)),
        },
    })
}

/// The robot URL with `timestamp` and `sign` added when the robot has a secret.
pub fn signed_url(url: &SecretUrl, secret: Option<&str>, now: SystemTime) -> SecretUrl {
    let Some(secret) = secret else {
        return url.clone();
    };
    let ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let sign = sign(ms, secret);
    let sep = if url.expose().contains('?') { '&' } else { '?' };
    SecretUrl::from_file(format!(
        "{}{sep}timestamp={ms}&sign={}",
        url.expose(),
        utf8_percent_encode(&sign, NON_ALPHANUMERIC)
    ))
}

fn sign(timestamp_ms: u128, secret: &str) -> String {
    hmac_base64(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    )
}

/// 130101 (and its sibling 130102) is "send too fast, exceed 20 times per minute"; 310000 the
/// keywords, signature or IP allow-list, 300001 and 400013 a token or robot gone, 40035 a
/// malformed body.
pub(super) fn verdict(reply: &Reply) -> Verdict {
    errcode_verdict(reply, "DingTalk", &[130_101, 130_102])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DingTalk's documented example: Python's
    /// `base64.b64encode(hmac.new(secret, f"{ts}\n{secret}", sha256).digest())`, computed
    /// with Python 3.11 for these inputs.
    #[test]
    fn signs_as_the_documentation_says() {
        assert_eq!(
            sign(1_577_262_236_757, "this is secret"),
            "hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM="
        );
        let url = SecretUrl::from("https://oapi.dingtalk.com/robot/send?access_token=T");
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_577_262_236_757);
        assert_eq!(
            signed_url(&url, Some("this is secret"), t).expose(),
            "https://oapi.dingtalk.com/robot/send?access_token=T&timestamp=1577262236757\
             &sign=hmPWwU%2B7lVdm3ZZz0r9tSfx0L4Q26jWOZr9%2BGs6EZQM%3D"
        );
        assert_eq!(signed_url(&url, None, t), url);
    }

    #[test]
    fn answers_are_read_from_errcode() {
        let reply = |body: &str| Reply::new(200, body);
        assert_eq!(
            verdict(&reply(r#"{"errcode":0,"errmsg":"ok"}"#)),
            Verdict::Delivered
        );
        assert!(matches!(
            verdict(&reply(r#"{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}"#)),
            Verdict::TooFast(None, d) if d.contains("send too fast")
        ));
        assert!(matches!(
            verdict(&reply(r#"{"errcode":310000,"errmsg":"sign not match"}"#)),
            Verdict::Refused(d) if d == "errcode 310000: sign not match"
        ));
        assert!(matches!(verdict(&reply("<html>")), Verdict::Retry(_)));
    }

    #[test]
    fn mentions_go_in_the_text_and_the_at_object() {
        let configured: Vec<String> = ["13800000000", "@manager01", "all"]
            .map(String::from)
            .into();
        assert_eq!(mentions(&configured), ["@13800000000", "@manager01"]);
        let m = Message {
            title: "FIRING: A".into(),
            text: "line one\nline two".into(),
        };
        let b = body(&m, &configured);
        assert_eq!(b["markdown"]["title"], "FIRING: A");
        assert_eq!(
            b["markdown"]["text"],
            "### FIRING: A  \n  \nline one  \nline two"
        );
        assert_eq!(b["at"]["atMobiles"], json!(["13800000000"]));
        assert_eq!(b["at"]["atUserIds"], json!(["manager01"]));
        assert_eq!(b["at"]["isAtAll"], true);
    }
}
