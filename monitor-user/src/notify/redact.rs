//! Keeping the secrets of the notifier config out of messages: passwords ([`Secret`]) and the
//! credentials of URLs ([`SecretUrl`], [`url`]). `http://user:password@host/...` is how
//! Alertmanager and most webhook receivers take basic auth, and delivery errors are logged on
//! every retry.
//!
//! The password is shown as `***` and the user kept, as Go's `url.URL.Redacted` does: whoever
//! reads the log can tell which account is used and that a password is set. A user part
//! without a password is masked whole: that is how tokens are passed (`https://TOKEN@host/`).

use std::fmt;

use serde::Deserialize;

/// A password from the config. `Debug` prints `***`, so no `{:?}` of a config shows it; the
/// value itself is only had through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

/// A URL from the config, which may carry `user:password@`. `Debug` and `Display` show it as
/// [`url`] does, so it can be put in any message; the URL to send to is [`SecretUrl::expose`].
/// A URL read from a `url_file` is a secret whole (robots and chat webhooks carry their token
/// in the path or query): it is shown as its origin and `/***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretUrl {
    url: String,
    whole_secret: bool,
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

impl SecretUrl {
    /// A URL read from a file: nothing after its host is ever shown.
    pub fn from_file(url: String) -> Self {
        Self {
            url,
            whole_secret: true,
        }
    }

    pub fn expose(&self) -> &str {
        &self.url
    }

    pub fn is_empty(&self) -> bool {
        self.url.is_empty()
    }

    /// `text` (an error from an HTTP library, say) with this URL's secrets masked wherever
    /// they appear.
    pub fn scrub(&self, text: &str) -> String {
        if self.whole_secret {
            let mut text = text.replace(&self.url, &self.to_string());
            // The path and query alone, as some errors quote them.
            if let Some(rest) = self.url.split_once("://").map(|(_, r)| r)
                && let Some(i) = rest.find(['/', '?'])
                && rest.len() - i > 1
            {
                text = text.replace(&rest[i..], "/***");
            }
            url_in(&text, &self.url)
        } else {
            url_in(text, &self.url)
        }
    }

    fn shown(&self) -> String {
        if !self.whole_secret {
            return url(&self.url);
        }
        let (scheme, rest) = self.url.split_once("://").unwrap_or(("", &self.url));
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        format!("{scheme}://{host}/***")
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.shown(), f)
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        Self {
            url,
            whole_secret: false,
        }
    }
}

impl From<&str> for SecretUrl {
    fn from(s: &str) -> Self {
        Self::from(s.to_owned())
    }
}

/// `url` as it may be shown: `http://alice:***@host/hook`, `https://***@host/`. Anything
/// without userinfo comes back unchanged, so it is safe on any configured string.
pub fn url(url: &str) -> String {
    match userinfo(url) {
        Some((start, end)) => format!(
            "{}{}{}",
            &url[..start],
            masked(&url[start..end]),
            &url[end..]
        ),
        None => url.to_string(),
    }
}

/// `text` (an error from an HTTP library, say) with the userinfo of `url` masked wherever it
/// appears, as [`url`] masks it.
pub fn url_in(text: &str, url: &str) -> String {
    match userinfo(url) {
        Some((start, end)) => {
            let raw = &url[start..end];
            text.replace(&format!("{raw}@"), &format!("{}@", masked(raw)))
        }
        None => text.to_string(),
    }
}

fn masked(userinfo: &str) -> String {
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => "***".into(),
    }
}

/// The byte range of the userinfo (before its `@`), if there is one. Per RFC 3986 the authority
/// ends at the first `/`, `?` or `#`; but passwords get written unencoded, and generated ones
/// (base64) hold `/`. So when the text before that `/` cannot be a `host:port` (as in
/// `alice:ab/cd@host`, whose "port" is not a number), the `/` is taken to be the password's and
/// the userinfo to run to the last `@` before any `?` or `#`.
fn userinfo(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if let Some(at) = authority.rfind('@') {
        return Some((start, start + at));
    }
    let (_, port) = authority.rsplit_once(':')?;
    if authority.ends_with(']') || port.bytes().all(|b| b.is_ascii_digit()) {
        return None; // `[v6]` or `host:port`: an `@` later on is the path's.
    }
    let before_query = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    before_query.rfind('@').map(|at| (start, start + at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_from_a_file_shows_only_its_origin() {
        let u = SecretUrl::from_file(
            "https://bot:pw@oapi.example:8443/robot/send?access_token=T0KEN".into(),
        );
        assert_eq!(u.to_string(), "https://oapi.example:8443/***");
        assert_eq!(format!("{u:?}"), "\"https://oapi.example:8443/***\"");
        let error = format!(
            "POST {} failed: 400 for /robot/send?access_token=T0KEN",
            u.expose()
        );
        let shown = u.scrub(&error);
        assert!(!shown.contains("T0KEN") && !shown.contains("pw"), "{shown}");
    }

    #[test]
    fn passwords_and_lone_tokens_are_masked() {
        for (raw, shown) in [
            (
                "http://alice:s3cret@127.0.0.1:9/hook",
                "http://alice:***@127.0.0.1:9/hook",
            ),
            ("https://alice:@am.example", "https://alice:***@am.example"),
            (
                "https://TOKEN@hooks.example/x",
                "https://***@hooks.example/x",
            ),
            // An `@` in the password, unencoded: the last one ends the userinfo.
            ("http://alice:p@ss@host/", "http://alice:***@host/"),
            // A base64 password with its `/` unencoded.
            (
                "http://alice:ab/c+d==@host/hook",
                "http://alice:***@host/hook",
            ),
            // No scheme (refused as a URL, but named in the error).
            (
                "alice:s3cret@127.0.0.1:8080/x",
                "alice:***@127.0.0.1:8080/x",
            ),
            // No userinfo: unchanged, `@` in paths and queries included.
            ("http://127.0.0.1:9093", "http://127.0.0.1:9093"),
            (
                "https://matrix.example/hook/@bot:example.org",
                "https://matrix.example/hook/@bot:example.org",
            ),
            (
                "https://host:8443/hook/@bot:example.org",
                "https://host:8443/hook/@bot:example.org",
            ),
            ("http://[::1]/hook/@team", "http://[::1]/hook/@team"),
            (
                "https://host/hook?to=a@b.example",
                "https://host/hook?to=a@b.example",
            ),
            ("", ""),
        ] {
            assert_eq!(url(raw), shown, "{raw}");
        }
    }

    #[test]
    fn the_userinfo_is_masked_inside_other_text() {
        let raw = "http://alice:s3cret@host/hook";
        assert_eq!(
            url_in(&format!("bad uri: {raw} is missing scheme"), raw),
            "bad uri: http://alice:***@host/hook is missing scheme"
        );
        assert_eq!(url_in("connection refused", raw), "connection refused");
    }
}
