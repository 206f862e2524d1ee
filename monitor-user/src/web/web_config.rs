//! The web configuration file (`--web.config.file`, `web_config_file` in the TOML): TLS, basic
//! auth and extra response headers, in the format of Prometheus' exporter-toolkit, so that one
//! file serves monitor and the exporters beside it, and `promtool check web-config` checks it.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: monitor.crt          # or `cert:` inline PEM; relative to this file's directory
//!   key_file: monitor.key           # or `key:`
//!   client_auth_type: RequireAndVerifyClientCert   # NoClientCert (default), RequestClientCert,
//!                                   # RequireAnyClientCert, VerifyClientCertIfGiven
//!   client_ca_file: clients-ca.crt  # or `client_ca:`
//!   client_allowed_sans: [prometheus.example]      # DNS names or IP addresses
//!   min_version: TLS12              # TLS12 (default) or TLS13; max_version likewise
//!   cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]   # TLS 1.2 only, as in Go
//!   curve_preferences: [X25519, CurveP256]
//!   prefer_server_cipher_suites: true
//! http_server_config:
//!   http2: true
//!   headers: {Strict-Transport-Security: max-age=31536000}
//! basic_auth_users:
//!   prometheus: $2y$10$...          # bcrypt, e.g. `htpasswd -nBC 10 prometheus`
//! ```
//!
//! Stricter than exporter-toolkit where Go would fail later or serve something weaker: TLS 1.0
//! and 1.1, CBC and RSA-key-exchange suites and CurveP521 are refused (rustls has none of them),
//! and verifying client certificates without a CA to verify them against is an error here, not
//! a server that rejects every client. `rate_limit` (newer exporter-toolkits) is refused by name:
//! monitor limits concurrent connections instead ([http] max_connections).
use std::{
    collections::BTreeMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Deserializer, de};

/// The checked content of a web config file, with file paths made absolute.
#[derive(Clone, Debug, PartialEq)]
pub struct WebConfig {
    pub path: PathBuf,
    /// None: plain HTTP (no TLS key in the file, as exporter-toolkit decides).
    pub tls: Option<TlsSettings>,
    /// User name to bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, BcryptHash>,
    /// Added to every response the handler did not set itself.
    pub headers: Vec<(String, String)>,
    pub http2: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TlsSettings {
    pub cert: Pem,
    pub key: Pem,
    pub client_ca: Option<Pem>,
    pub client_auth: ClientAuth,
    /// TLS 1.2 suites in preference order (empty: rustls' defaults); TLS 1.3 suites are not
    /// configurable, as in Go.
    pub cipher_suites: Vec<String>,
    pub curves: Vec<Curve>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    pub prefer_server_cipher_suites: bool,
    pub client_allowed_sans: Option<Vec<String>>,
}

/// PEM text, from a file (re-read when it changes) or written in the config itself.
#[derive(Clone, PartialEq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

impl fmt::Debug for Pem {
    // A key written inline is a secret: never in a log or a panic message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "File({})", p.display()),
            Self::Inline(_) => f.write_str("Inline(***)"),
        }
    }
}

impl Pem {
    pub fn read(&self, key: &str) -> Result<Vec<u8>, String> {
        match self {
            Self::File(p) => {
                std::fs::read(p).map_err(|e| format!("{key}: reading {}: {e}", p.display()))
            }
            Self::Inline(text) => Ok(text.as_bytes().to_vec()),
        }
    }

    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::File(p) => Some(p),
            Self::Inline(_) => None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ClientAuth {
    #[default]
    NoClientCert,
    /// Asks for a certificate, takes any or none.
    RequestClientCert,
    /// Requires a certificate, not verified against a CA.
    #[serde(alias = "RequireClientCert")]
    RequireAnyClientCert,
    /// Verifies a certificate when one is presented.
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    fn verifies(self) -> bool {
        matches!(
            self,
            Self::VerifyClientCertIfGiven | Self::RequireAndVerifyClientCert
        )
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    TLS10,
    TLS11,
    TLS12,
    TLS13,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum Curve {
    CurveP256,
    CurveP384,
    CurveP521,
    X25519,
}

/// A bcrypt hash whose form and cost parse (what Go's `bcrypt.Cost` accepts).
#[derive(Clone, PartialEq)]
pub struct BcryptHash(pub String);

impl fmt::Debug for BcryptHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BcryptHash(***)")
    }
}

impl BcryptHash {
    pub fn cost(&self) -> u32 {
        self.0
            .parse::<bcrypt::HashParts>()
            .map(|p| p.get_cost())
            .unwrap_or(0)
    }
}

/// The headers exporter-toolkit lets a config add, with the values it allows (empty: any).
const SETTABLE_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

struct Headers(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default();
        for (name, value) in &map {
            let Some((_, allowed)) = SETTABLE_HEADERS.iter().find(|(n, _)| n == name) else {
                let names: Vec<&str> = SETTABLE_HEADERS.iter().map(|(n, _)| *n).collect();
                return Err(de::Error::custom(format!(
                    "HTTP header {name:?} can not be configured (one of {names:?})"
                )));
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(de::Error::custom(format!(
                    "invalid value for {name}: expected one of {allowed:?}, got {value:?}"
                )));
            }
            if axum::http::HeaderValue::from_str(value).is_err() {
                return Err(de::Error::custom(format!(
                    "{name}: {value:?} is not a valid header value"
                )));
            }
        }
        Ok(Self(map.into_iter().collect()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    #[serde(default)]
    tls_server_config: Option<TlsForm>,
    #[serde(default)]
    http_server_config: Option<HttpForm>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
    #[serde(default)]
    rate_limit: Option<serde_yaml_ng::Value>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsForm {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca_file: Option<String>,
    client_auth_type: Option<ClientAuth>,
    #[serde(default)]
    cipher_suites: Vec<String>,
    #[serde(default)]
    curve_preferences: Vec<Curve>,
    min_version: Option<TlsVersion>,
    max_version: Option<TlsVersion>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpForm {
    http2: Option<bool>,
    #[serde(default)]
    headers: Option<Headers>,
}

/// What is wrong with a web config file, naming the file, and the line and key where the YAML
/// parser or the check knows them.
#[derive(Debug, thiserror::Error)]
#[error("web config file {}: {message}", path.display())]
pub struct WebConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl WebConfig {
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        Self::load_with_tls(path).map(|(config, _)| config)
    }

    /// The config and the rustls configuration its TLS settings make (built once: that is also
    /// the check that its certificates, key and CA load).
    pub fn load_with_tls(
        path: &Path,
    ) -> Result<(Self, Option<Arc<rustls::ServerConfig>>), WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| WebConfigError {
            path: path.to_owned(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::parse_with_tls(&text, path)
    }

    #[cfg(test)]
    pub fn parse(text: &str, path: &Path) -> Result<Self, WebConfigError> {
        Self::parse_with_tls(text, path).map(|(config, _)| config)
    }

    fn parse_with_tls(
        text: &str,
        path: &Path,
    ) -> Result<(Self, Option<Arc<rustls::ServerConfig>>), WebConfigError> {
        let fail = |message: String| WebConfigError {
            path: path.to_owned(),
            message,
        };
        // An empty file is an empty config, as in Go.
        let form: FileForm = if text.trim().is_empty() {
            FileForm {
                tls_server_config: None,
                http_server_config: None,
                basic_auth_users: None,
                rate_limit: None,
            }
        } else {
            // serde_yaml's message carries the key path, line and column.
            serde_yaml_ng::from_str(text).map_err(|e| fail(e.to_string()))?
        };
        let at = |key: &str| match top_level_line(text, key) {
            Some(line) => format!("line {line}: {key}"),
            None => key.to_owned(),
        };
        if form.rate_limit.is_some() {
            return Err(fail(format!(
                "{}: not supported by monitor; it limits concurrent connections instead \
                 ([http] max_connections in its TOML config)",
                at("rate_limit")
            )));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let tls = form
            .tls_server_config
            .map(|t| tls_settings(t, dir))
            .transpose()
            .map_err(|e| fail(format!("{}.{e}", at("tls_server_config"))))?
            .flatten();
        let http = form.http_server_config;
        let mut users = BTreeMap::new();
        for (user, hash) in form.basic_auth_users.unwrap_or_default() {
            let line = user_line(text, &user)
                .map(|l| format!("line {l}: "))
                .unwrap_or_default();
            if user.is_empty() {
                return Err(fail(format!(
                    "{line}basic_auth_users: a user with an empty name"
                )));
            }
            if let Err(e) = hash.parse::<bcrypt::HashParts>() {
                return Err(fail(format!(
                    "{line}basic_auth_users.{user}: not a bcrypt hash ({e}); make one with \
                     `htpasswd -nBC 10 {user}`"
                )));
            }
            users.insert(user, BcryptHash(hash));
        }
        let config = Self {
            path: path.to_owned(),
            tls,
            users,
            headers: http
                .as_ref()
                .and_then(|h| h.headers.as_ref())
                .map(|h| h.0.clone())
                .unwrap_or_default(),
            http2: http.as_ref().and_then(|h| h.http2).unwrap_or(true),
        };
        // Certificates, keys and CAs must load now: a typo is found at start, not at the first
        // scrape.
        let tls = config
            .tls
            .as_ref()
            .map(|tls| super::tls::server_config(tls, config.http2))
            .transpose()
            .map_err(|e| fail(format!("{}.{e}", at("tls_server_config"))))?;
        Ok((config, tls))
    }

    /// The files whose change means a reload: this one and the PEM files it names.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        if let Some(tls) = &self.tls {
            files.extend(
                [Some(&tls.cert), Some(&tls.key), tls.client_ca.as_ref()]
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.file().map(Path::to_owned)),
            );
        }
        files
    }
}

/// None when the table turns nothing on (exporter-toolkit's `IsEnabled`: no cert, key, CA or
/// client auth type), so `min_version` alone leaves plain HTTP.
fn tls_settings(t: TlsForm, dir: &Path) -> Result<Option<TlsSettings>, String> {
    let enabled = t.cert.is_some()
        || t.key.is_some()
        || t.cert_file.is_some()
        || t.key_file.is_some()
        || t.client_ca.is_some()
        || t.client_ca_file.is_some()
        || t.client_auth_type.is_some();
    if !enabled {
        return Ok(None);
    }
    let pem = |file: Option<String>, inline: Option<String>, key: &str| match (
        file.filter(|f| !f.is_empty()),
        inline.filter(|i| !i.is_empty()),
    ) {
        (Some(_), Some(_)) => Err(format!("{key}_file and {key}: give one of them")),
        (Some(f), None) => Ok(Some(Pem::File(dir.join(f)))),
        (None, Some(i)) => Ok(Some(Pem::Inline(i))),
        (None, None) => Ok(None),
    };
    let cert = pem(t.cert_file, t.cert, "cert")?
        .ok_or("cert_file: missing (one of cert or cert_file is needed for TLS)")?;
    let key = pem(t.key_file, t.key, "key")?
        .ok_or("key_file: missing (one of key or key_file is needed for TLS)")?;
    let client_ca = pem(t.client_ca_file, t.client_ca, "client_ca")?;
    let client_auth = t.client_auth_type.unwrap_or_default();
    if client_ca.is_some() && client_auth == ClientAuth::NoClientCert {
        return Err(
            "client_ca_file: client CAs are configured without a client auth policy \
             (set client_auth_type)"
                .into(),
        );
    }
    if client_auth.verifies() && client_ca.is_none() {
        return Err(format!(
            "client_ca_file: client_auth_type {client_auth:?} verifies client certificates \
             and needs the CA that signs them (client_ca_file or client_ca)"
        ));
    }
    if let Some(sans) = &t.client_allowed_sans {
        if !client_auth.verifies() {
            return Err(format!(
                "client_allowed_sans: checked only on verified client certificates; \
                 client_auth_type is {client_auth:?}"
            ));
        }
        if let Some(bad) = sans.iter().find(|s| !is_dns_or_ip(s)) {
            return Err(format!(
                "client_allowed_sans: {bad:?}: monitor matches DNS names and IP addresses only"
            ));
        }
    }
    let min_version = t.min_version.unwrap_or(TlsVersion::TLS12);
    let max_version = t.max_version.unwrap_or(TlsVersion::TLS13);
    if max_version < TlsVersion::TLS12 {
        return Err(format!(
            "max_version: {max_version:?}: monitor serves TLS 1.2 and 1.3 only"
        ));
    }
    if min_version > max_version {
        return Err(format!(
            "min_version: {min_version:?} is above max_version {max_version:?}"
        ));
    }
    if t.curve_preferences.contains(&Curve::CurveP521) {
        return Err(
            "curve_preferences: CurveP521 is not available (rustls offers X25519, CurveP256, \
             CurveP384)"
                .into(),
        );
    }
    Ok(Some(TlsSettings {
        cert,
        key,
        client_ca,
        client_auth,
        cipher_suites: t.cipher_suites,
        curves: t.curve_preferences,
        min_version,
        max_version,
        prefer_server_cipher_suites: t.prefer_server_cipher_suites.unwrap_or(true),
        client_allowed_sans: t.client_allowed_sans,
    }))
}

fn is_dns_or_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
        || rustls::pki_types::DnsName::try_from(s.to_owned()).is_ok() && !s.contains('@')
}

/// The 1-based line of a top-level `key:` (for checks made after parsing, which serde_yaml
/// cannot place).
fn top_level_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|i| i + 1)
}

/// The line of `user:` inside `basic_auth_users:`.
fn user_line(text: &str, user: &str) -> Option<usize> {
    let start = top_level_line(text, "basic_auth_users")?;
    text.lines()
        .enumerate()
        .skip(start)
        .take_while(|(_, l)| l.is_empty() || l.starts_with([' ', '\t', '#']))
        .find(|(_, l)| {
            let l = l.trim_start();
            [user.to_owned(), format!("{user:?}"), format!("'{user}'")]
                .iter()
                .any(|k| {
                    l.strip_prefix(k.as_str())
                        .is_some_and(|r| r.trim_start().starts_with(':'))
                })
        })
        .map(|(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, String> {
        WebConfig::parse(text, Path::new("/etc/monitor/web.yml")).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_file_is_plain_http_without_auth() {
        let c = parse("").unwrap();
        assert!(c.tls.is_none() && c.users.is_empty() && c.headers.is_empty() && c.http2);
        // A TLS table that turns nothing on leaves plain HTTP, as exporter-toolkit does.
        assert!(
            parse("tls_server_config:\n  min_version: TLS13\n")
                .unwrap()
                .tls
                .is_none()
        );
    }

    #[test]
    fn unknown_keys_and_values_name_the_file_line_and_key() {
        let e = parse("tls_server_config:\n  cert_fil: a.crt\n").unwrap_err();
        assert!(e.contains("/etc/monitor/web.yml"), "{e}");
        assert!(e.contains("cert_fil") && e.contains("line 2"), "{e}");
        let e = parse("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS14\n")
            .unwrap_err();
        assert!(e.contains("TLS14") && e.contains("line 4"), "{e}");
        let e = parse("basic_auth_users:\n  alice: secret\n").unwrap_err();
        assert!(
            e.contains("line 2: basic_auth_users.alice: not a bcrypt hash"),
            "{e}"
        );
        let e = parse("http_server_config:\n  headers:\n    X-Frame-Options: allow\n").unwrap_err();
        assert!(e.contains("X-Frame-Options") && e.contains("line"), "{e}");
        let e = parse("http_server_config:\n  headers:\n    Server: monitor\n").unwrap_err();
        assert!(e.contains("\"Server\" can not be configured"), "{e}");
        let e = parse("\n\nrate_limit:\n  burst: 3\n").unwrap_err();
        assert!(e.contains("line 3: rate_limit"), "{e}");
    }

    #[test]
    fn tls_needs_cert_and_key_and_a_ca_to_verify_clients_with() {
        let e = parse("tls_server_config:\n  key_file: k\n").unwrap_err();
        assert!(
            e.contains("line 1: tls_server_config.cert_file: missing"),
            "{e}"
        );
        let e = parse("tls_server_config:\n  cert_file: c\n").unwrap_err();
        assert!(e.contains("key_file: missing"), "{e}");
        let e = parse("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n")
            .unwrap_err();
        assert!(e.contains("without a client auth policy"), "{e}");
        let e = parse(
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  \
             client_auth_type: RequireAndVerifyClientCert\n",
        )
        .unwrap_err();
        assert!(e.contains("needs the CA"), "{e}");
        let e = parse("tls_server_config:\n  cert_file: c\n  key_file: k\n  max_version: TLS11\n")
            .unwrap_err();
        assert!(e.contains("TLS 1.2 and 1.3 only"), "{e}");
        // The files are read at parse time, relative to the config's directory.
        let e =
            parse("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n").unwrap_err();
        assert!(e.contains("/etc/monitor/nope.crt"), "{e}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let c = parse(&format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
        let shown = format!("{c:?}");
        assert!(
            shown.contains("alice") && !shown.contains("$2y$"),
            "{shown}"
        );
        assert_eq!(c.users["alice"].cost(), 4);
    }
}
