//! Explicit tags: the markers an application writes to fd -1 to name its own work.
//!
//! A marker is `monitor:` and then one of:
//! - `begin NAME`: a unit of work named NAME starts on this thread (a job, a queue message, a
//!   request type the application names itself); its CPU and syscalls are NAME's until `end`;
//! - `end` or `end STATUS`: the innermost unit open on this thread ends (STATUS, a number up to
//!   999, is counted like an HTTP status; 0 when left out);
//! - `route TEMPLATE`: the application's template for paths it serves (`/api/orders/{id}`),
//!   used before the config's patterns, its OpenAPI document and the heuristic.
//!
//! A trailing newline is allowed (`echo`-style writers). Names are 1 to 128 printable ASCII
//! bytes without spaces, so a tag cannot smuggle a label value that breaks the exposition.

/// A marker, borrowing the tag's bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Marker<'a> {
    Begin(&'a str),
    End(u16),
    Route(&'a str),
}

/// The longest name a `begin` tag may give.
pub const MAX_NAME_LEN: usize = 128;

/// Parses a tag's bytes (with the `monitor:` prefix); None when it is not a marker.
pub fn parse_marker(bytes: &[u8]) -> Option<Marker<'_>> {
    let text = std::str::from_utf8(bytes.strip_prefix(b"monitor:")?).ok()?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let (verb, arg) = match text.split_once(' ') {
        Some((verb, arg)) => (verb, Some(arg)),
        None => (text, None),
    };
    match (verb, arg) {
        ("begin", Some(name)) if is_name(name) => Some(Marker::Begin(name)),
        ("end", None) => Some(Marker::End(0)),
        ("end", Some(status)) => {
            let status: u16 = status.parse().ok()?;
            (status <= 999).then_some(Marker::End(status))
        }
        ("route", Some(template)) if is_name(template) && template.starts_with('/') => {
            Some(Marker::Route(template))
        }
        _ => None,
    }
}

fn is_name(s: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_and_what_is_refused() {
        assert_eq!(
            parse_marker(b"monitor:begin nightly-report"),
            Some(Marker::Begin("nightly-report"))
        );
        assert_eq!(parse_marker(b"monitor:end\n"), Some(Marker::End(0)));
        assert_eq!(parse_marker(b"monitor:end 500"), Some(Marker::End(500)));
        assert_eq!(
            parse_marker(b"monitor:route /api/orders/{order_id}"),
            Some(Marker::Route("/api/orders/{order_id}"))
        );
        for bad in [
            &b"monitor:begin"[..],
            b"monitor:begin two words",
            b"monitor:begin \"quoted\"x\x01",
            b"monitor:end 1000",
            b"monitor:end -1",
            b"monitor:route orders",
            b"monitor:pause",
            b"monitor:",
            b"monitor:begin \xff",
            b"other:begin x",
        ] {
            assert_eq!(
                parse_marker(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("monitor:begin {}", "x".repeat(MAX_NAME_LEN + 1));
        assert_eq!(parse_marker(long.as_bytes()), None);
    }
}
