//! WeCom (WeChat Work) group robot: `POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...`
//! with a markdown message.
//!
//! Documented: 20 messages a minute per robot (errcode 45009 "api freq out of limit" past it),
//! markdown content of at most 4096 bytes. No signing: the key in the URL is the secret.
//! Mentions are `<@userid>` in the markdown (`<@all>` for everyone).
use serde_json::{Value, json};

use super::{Markup, Message, RateLimit, Reply, Verdict, errcode_verdict, is_all};

pub const RATE_LIMITS: [RateLimit; 1] = [RateLimit::new(20, 60)];

const MAX_CONTENT_BYTES: usize = 4096;

fn content(m: &Message) -> String {
    format!("{}\n\n{}", Markup::Markdown.bold(&m.title), m.text)
}

pub fn fits(m: &Message) -> bool {
    content(m).len() <= MAX_CONTENT_BYTES
}

pub fn mentions(configured: &[String]) -> Vec<String> {
    configured
        .iter()
        .map(|m| {
            if is_all(m) {
                "<@all>".to_owned()
            } else {
                format!("<@{}>", m.trim().trim_start_matches('@'))
            }
        })
        .collect()
}

pub fn body(m: &Message) -> Value {
    json!({"msgtype": "markdown", "markdown": {"content": content(m)}})
}

/// 45009 is "api freq out of limit"; 93000 a wrong key, 40058 too long, 40008 a malformed body.
pub(super) fn verdict(reply: &Reply) -> Verdict {
    errcode_verdict(reply, "WeCom", &[45_009])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_with_the_title_bold_and_mentions() {
        let m = Message {
            title: "FIRING: A".into(),
            text: "x".into(),
        };
        assert_eq!(body(&m)["markdown"]["content"], "**FIRING: A**\n\nx");
        assert_eq!(
            mentions(&["zhangsan".into(), "@all".into()]),
            ["<@zhangsan>", "<@all>"]
        );
        let long = Message {
            title: "t".into(),
            text: "界".repeat(1400),
        };
        assert!(!fits(&long), "4200 bytes of text");
    }

    #[test]
    fn answers_are_read_from_errcode() {
        let reply = |body: &str| Reply::new(200, body);
        assert_eq!(
            verdict(&reply(r#"{"errcode":0,"errmsg":"ok"}"#)),
            Verdict::Delivered
        );
        assert!(matches!(
            verdict(&reply(
                r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#
            )),
            Verdict::TooFast(None, _)
        ));
        assert!(matches!(
            verdict(&reply(
                r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#
            )),
            Verdict::Refused(_)
        ));
    }
}
