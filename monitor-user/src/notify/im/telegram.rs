//! Telegram Bot API: `POST {api_url}/bot{token}/sendMessage` with HTML text, to one chat.
//!
//! Documented (Bot FAQ): no more than one message a second in a chat, and no more than 20 a
//! minute in a group; past that, 429 with `parameters.retry_after`. Text of at most 4096
//! characters. Errors: 401 a bad token, 400 "chat not found" or unparsable HTML, 403 the bot
//! was removed. Mentions: `@username`, or a numeric user id as a `tg://user` link.
use std::time::Duration;

use serde_json::{Value, json};

use super::{ChatId, Markup, Message, RateLimit, Reply, Verdict, http_verdict};

pub const API_URL: &str = "https://api.telegram.org";

const MAX_TEXT_CHARS: usize = 4096;

/// One a second; groups and channels (negative ids, `@names`) also 20 a minute.
pub fn rate_limits(chat: Option<&ChatId>) -> Vec<RateLimit> {
    let group = match chat {
        Some(ChatId::Id(id)) => *id < 0,
        Some(ChatId::Name(_)) => true,
        None => false,
    };
    let mut limits = vec![RateLimit::new(1, 1)];
    if group {
        limits.push(RateLimit::new(20, 60));
    }
    limits
}

fn text(m: &Message) -> String {
    format!("{}\n\n{}", Markup::Html.bold(&m.title), m.text)
}

pub fn fits(m: &Message) -> bool {
    text(m).chars().count() <= MAX_TEXT_CHARS
}

/// `text` without its HTML tags and entities, for a message that had to be cut.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

pub fn mentions(configured: &[String]) -> Vec<String> {
    configured
        .iter()
        .map(|m| {
            let m = m.trim();
            if !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()) {
                format!("<a href=\"tg://user?id={m}\">{m}</a>")
            } else {
                let name = m.trim_start_matches('@');
                format!("@{}", Markup::Html.escape(name))
            }
        })
        .collect()
}

/// `plain`: a message that had to be cut goes as plain text (a cut may split a tag).
pub fn body(m: &Message, chat: Option<&ChatId>, thread: Option<i64>, plain_text: bool) -> Value {
    let mut body = json!({
        "chat_id": chat,
        "text": if plain_text { format!("{}\n\n{}", plain(&m.title), plain(&m.text)) } else { text(m) },
        "link_preview_options": {"is_disabled": true},
    });
    if !plain_text {
        body["parse_mode"] = "HTML".into();
    }
    if let Some(thread) = thread {
        body["message_thread_id"] = thread.into();
    }
    body
}

pub(super) fn verdict(reply: &Reply) -> Verdict {
    let v = super::json(reply);
    if v.get("ok").and_then(Value::as_bool) == Some(true) {
        return Verdict::Delivered;
    }
    let description = v
        .get("description")
        .and_then(Value::as_str)
        .map_or_else(|| reply.excerpt(), str::to_owned);
    let retry_after = v
        .pointer("/parameters/retry_after")
        .and_then(Value::as_u64)
        .map(Duration::from_secs)
        .or(reply.retry_after);
    match reply.status {
        429 => Verdict::TooFast(retry_after, format!("429 {description}")),
        status @ 400..=499 => Verdict::Refused(format!("{status} {description}")),
        _ => http_verdict(reply).unwrap_or(Verdict::Retry(description)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_body_to_the_chat() {
        let m = Message {
            title: "FIRING: A".into(),
            text: "<b>x</b> &amp; y".into(),
        };
        let b = body(&m, Some(&ChatId::Id(-100_123)), Some(7), false);
        assert_eq!(b["chat_id"], -100_123);
        assert_eq!(b["parse_mode"], "HTML");
        assert_eq!(b["text"], "<b>FIRING: A</b>\n\n<b>x</b> &amp; y");
        assert_eq!(b["message_thread_id"], 7);
        assert_eq!(plain("<b>x</b> &lt;y&gt; &amp;"), "x <y> &");
        assert_eq!(rate_limits(Some(&ChatId::Id(-1))).len(), 2);
        assert_eq!(rate_limits(Some(&ChatId::Id(42))), [RateLimit::new(1, 1)]);
    }

    #[test]
    fn answers() {
        let reply = Reply::new;
        assert_eq!(
            verdict(&reply(200, r#"{"ok":true,"result":{}}"#)),
            Verdict::Delivered
        );
        assert_eq!(
            verdict(&reply(
                429,
                r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 5","parameters":{"retry_after":5}}"#
            )),
            Verdict::TooFast(
                Some(Duration::from_secs(5)),
                "429 Too Many Requests: retry after 5".into()
            )
        );
        assert_eq!(
            verdict(&reply(
                401,
                r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#
            )),
            Verdict::Refused("401 Unauthorized".into())
        );
        assert!(matches!(verdict(&reply(502, "")), Verdict::Retry(_)));
        assert_eq!(
            mentions(&["@alice".into(), "12345".into()]),
            ["@alice", "<a href=\"tg://user?id=12345\">12345</a>"]
        );
    }
}
