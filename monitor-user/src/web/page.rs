//! The page's files, built into the binary: a host without internet (or reached through an SSH
//! tunnel) gets the whole page from the daemon, and nothing is fetched from anywhere else.
use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

/// (name, content type, bytes). uPlot is vendored from npm (`uplot` 1.6.32, MIT, its licence
/// next to it).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("page/index.html"),
    ),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_bytes!("page/dashboard.js"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_bytes!("page/dashboard.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("page/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("page/vendor/uPlot.min.css"),
    ),
];

/// Only the daemon's own origin, for everything: the browser itself refuses any other source,
/// so a page that would call out fails visibly instead of leaking.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn asset(name: &str) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, format!("no asset {name}")).into_response();
    };
    (
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Small, and a daemon upgrade must not leave an old script in the browser.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_weighs_at_most_300_kb() {
        // Every file the page loads, besides the feed (whose size the browser test reports).
        let weight: usize = ASSETS.iter().map(|(_, _, b)| b.len()).sum();
        assert!(weight <= 300_000, "{weight} bytes");
    }

    #[test]
    fn the_page_names_only_files_the_daemon_serves() {
        let text = |name: &str| {
            let (_, _, b) = ASSETS.iter().find(|(n, _, _)| *n == name).unwrap();
            String::from_utf8_lossy(b).into_owned()
        };
        let html = text("index.html");
        for (name, _, _) in &ASSETS[1..] {
            assert!(
                html.contains(&format!("\"assets/{name}\"")),
                "{name} not loaded"
            );
        }
        for page in ["index.html", "dashboard.js", "dashboard.css"] {
            let t = text(page);
            for external in ["http://", "https://", "//cdn", "@import"] {
                assert!(!t.contains(external), "{page} names {external}");
            }
        }
    }
}
