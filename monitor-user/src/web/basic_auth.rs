//! HTTP basic auth against the web config's bcrypt hashes, as exporter-toolkit does it: an
//! unknown user costs one bcrypt like a known one (no timing tells which names exist), one
//! bcrypt runs at a time (a flood of guesses takes one core, not all), and verdicts are cached
//! by a digest of (user, hash, password) so a scraper's every request does not pay ~50 ms of
//! bcrypt. The cache holds digests, never a password.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use axum::http::HeaderValue;
use base64::Engine as _;

use super::web_config::BcryptHash;

/// Cached verdicts kept at most; the cache is emptied when full (a guesser fills it, a scraper
/// needs one entry).
const CACHE_ENTRIES: usize = 256;

#[derive(Default)]
pub struct BasicAuth {
    cache: Mutex<HashMap<[u8; 32], bool>>,
    /// Held for each bcrypt.
    bcrypt_turn: tokio::sync::Mutex<()>,
}

impl BasicAuth {
    /// Whether `authorization` carries a configured user and its password.
    pub async fn allows(
        &self,
        users: &BTreeMap<String, BcryptHash>,
        authorization: Option<&HeaderValue>,
    ) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        let known = users.get(&user);
        // An unknown user is checked against the costliest configured hash and always fails:
        // the same work as a wrong password.
        let Some(hash) = known.or_else(|| users.values().max_by_key(|h| h.cost())) else {
            return false;
        };
        let key = cache_key(&user, &hash.0, &password);
        if let Some(&ok) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return ok;
        }
        let turn = self.bcrypt_turn.lock().await;
        let hash_text = hash.0.clone();
        let matches = tokio::task::spawn_blocking(move || {
            bcrypt::verify(password.as_bytes(), &hash_text).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        drop(turn);
        let ok = known.is_some() && matches;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key, ok);
        ok
    }
}

/// `Basic base64(user:password)`; the scheme's case does not matter (RFC 7617).
fn credentials(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn cache_key(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    // Length-prefixed, so no two different triples share an input.
    for part in [user, hash, password] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part.as_bytes());
    }
    let mut key = [0; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {token}")).unwrap()
    }

    #[tokio::test]
    async fn only_a_configured_user_with_its_password_passes() {
        let users = BTreeMap::from([(
            "prometheus".to_owned(),
            BcryptHash(bcrypt::hash("s3cret", 4).unwrap()),
        )]);
        let auth = BasicAuth::default();
        assert!(
            auth.allows(&users, Some(&header("prometheus", "s3cret")))
                .await
        );
        // Cached, and still right.
        assert!(
            auth.allows(&users, Some(&header("prometheus", "s3cret")))
                .await
        );
        assert!(
            !auth
                .allows(&users, Some(&header("prometheus", "wrong")))
                .await
        );
        // An unknown user with a configured user's password.
        assert!(!auth.allows(&users, Some(&header("root", "s3cret"))).await);
        assert!(!auth.allows(&users, None).await);
        let lower = HeaderValue::from_str(
            header("prometheus", "s3cret")
                .to_str()
                .unwrap()
                .replace("Basic", "basic")
                .as_str(),
        )
        .unwrap();
        assert!(auth.allows(&users, Some(&lower)).await);
        assert!(
            !auth
                .allows(&users, Some(&HeaderValue::from_static("Bearer x")))
                .await
        );
        assert!(
            !auth
                .allows(&users, Some(&HeaderValue::from_static("Basic !!!")))
                .await
        );
        // No users: nobody is let in by this check (the caller skips it when none are set).
        assert!(
            !auth
                .allows(&BTreeMap::new(), Some(&header("prometheus", "s3cret")))
                .await
        );
    }
}
