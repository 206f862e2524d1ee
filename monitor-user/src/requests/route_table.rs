//! Turning request paths into a bounded set of route templates.
//!
//! Metrics are labelled by route, so the label set must stay small however
//! many distinct URLs a target serves: `/api/orders/17` and `/api/orders/18`
//! must both become `/api/orders/{order_id}`. This file owns that mapping and
//! the cap that guarantees the label set stays bounded even when the mapping
//! guesses wrong.
//!
//! Resolution order, most trusted first:
//! 0. templates the application announced itself (`monitor:route TEMPLATE` tags, any method);
//! 1. the user's patterns from the configuration (any method);
//! 2. the target's OpenAPI templates for the request's method, then for any
//!    method (a `PUT` to a path only documented for `GET` is still that path);
//! 3. a per-segment heuristic that replaces id-like segments with `{id}`
//!    (see [`is_id_like`]).
//!
//! Within 1 and 2, when several templates match, the most specific wins:
//! segments are compared left to right and a literal beats `{param}`, which
//! beats `{rest:path}`, so `/users/me` wins over `/users/{id}`.
//!
//! Cost: a call walks the path's segments once per template (no allocation
//! for user and OpenAPI matches; the heuristic reuses one buffer), and looks
//! the template up in a set of routes already handed out. Nothing is cached
//! by raw path, which would grow with every distinct id.

use std::collections::HashSet;
use std::sync::Arc;

use super::http_line::{Method, strip_query_and_fragment};

/// A route label: the method and the path template it resolved to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    pub method: Method,
    pub template: Arc<str>,
}

/// The template handed out once the cap is reached.
pub const OTHER_TEMPLATE: &str = "other";

/// The template the heuristic puts in place of an id-like segment.
pub const ID_SEGMENT: &str = "{id}";

/// The template for a CONNECT request's authority-form target (`host:port`),
/// which has no path to template.
pub const AUTHORITY_TEMPLATE: &str = "{authority}";

/// Why a path template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route pattern `{pattern}`: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: PatternErrorReason,
}

/// What is wrong with a path template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternErrorReason {
    #[error("must start with `/`")]
    NoLeadingSlash,
    #[error("unbalanced braces in segment `{0}`")]
    UnbalancedBraces(String),
    #[error("a `{{name}}` must be a whole segment, not part of `{0}`")]
    PartialSegmentParameter(String),
    #[error("empty parameter name in segment `{0}`")]
    EmptyName(String),
    #[error("parameter name `{0}` may only hold letters, digits, `_`, `-` and `.`")]
    BadName(String),
    #[error("unknown converter `{converter}` for `{name}` (only `path` is known)")]
    UnknownConverter { name: String, converter: String },
    #[error("`{{{0}:path}}` must be the last segment")]
    PathNotLast(String),
    #[error("parameter `{0}` appears twice")]
    DuplicateName(String),
    #[error("matches the same paths as `{0}`")]
    Duplicate(String),
}

/// One segment of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    /// `{name}`: exactly one non-empty segment.
    Param,
    /// `{name:path}` (last only): the rest of the path, non-empty.
    Rest,
}

impl Segment {
    /// Precedence when two templates match the same path: higher wins.
    fn specificity(&self) -> u8 {
        match self {
            Segment::Literal(_) => 2,
            Segment::Param => 1,
            Segment::Rest => 0,
        }
    }
}

/// A parsed path template together with the text it is labelled by.
#[derive(Clone, Debug)]
struct Template {
    segments: Vec<Segment>,
    text: Arc<str>,
}

impl Template {
    fn parse(pattern: &str) -> Result<Template, PatternError> {
        let fail = |reason| PatternError {
            pattern: pattern.to_owned(),
            reason,
        };
        let Some(after_slash) = pattern.strip_prefix('/') else {
            return Err(fail(PatternErrorReason::NoLeadingSlash));
        };
        let raw_segments: Vec<&str> = after_slash.split('/').collect();
        let mut segments = Vec::with_capacity(raw_segments.len());
        let mut names: Vec<&str> = Vec::new();
        for (index, raw) in raw_segments.iter().enumerate() {
            let opens = raw.matches('{').count();
            let closes = raw.matches('}').count();
            if opens == 0 && closes == 0 {
                segments.push(Segment::Literal((*raw).into()));
                continue;
            }
            if opens != closes || opens > 1 || raw.find('{') > raw.find('}') {
                return Err(fail(PatternErrorReason::UnbalancedBraces(
                    (*raw).to_owned(),
                )));
            }
            let Some(inner) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) else {
                return Err(fail(PatternErrorReason::PartialSegmentParameter(
                    (*raw).to_owned(),
                )));
            };
            let (name, converter) = match inner.split_once(':') {
                Some((name, converter)) => (name, Some(converter)),
                None => (inner, None),
            };
            if name.is_empty() {
                return Err(fail(PatternErrorReason::EmptyName((*raw).to_owned())));
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(fail(PatternErrorReason::BadName(name.to_owned())));
            }
            if names.contains(&name) {
                return Err(fail(PatternErrorReason::DuplicateName(name.to_owned())));
            }
            names.push(name);
            match converter {
                None => segments.push(Segment::Param),
                Some("path") if index + 1 == raw_segments.len() => segments.push(Segment::Rest),
                Some("path") => return Err(fail(PatternErrorReason::PathNotLast(name.to_owned()))),
                Some(converter) => {
                    return Err(fail(PatternErrorReason::UnknownConverter {
                        name: name.to_owned(),
                        converter: converter.to_owned(),
                    }));
                }
            }
        }
        Ok(Template {
            segments,
            text: pattern.into(),
        })
    }

    /// Whether `path` (starting with `/`, query already cut) fits.
    fn matches(&self, path: &str) -> bool {
        let Some(mut rest) = path.strip_prefix('/') else {
            return false;
        };
        let last = self.segments.len().saturating_sub(1);
        for (index, segment) in self.segments.iter().enumerate() {
            let (piece, remainder) = match rest.split_once('/') {
                Some((piece, remainder)) => (piece, Some(remainder)),
                None => (rest, None),
            };
            match segment {
                Segment::Rest => return !rest.is_empty(),
                Segment::Literal(literal) if **literal != *piece => return false,
                Segment::Param if piece.is_empty() => return false,
                Segment::Literal(_) | Segment::Param => {}
            }
            match remainder {
                Some(remainder) if index < last => rest = remainder,
                // Path has more segments than the template.
                Some(_) => return false,
                // Path ran out: a match only if the template did too.
                None => return index == last,
            }
        }
        false
    }

    /// Whether `self` should win over `other` when both match one path.
    fn beats(&self, other: &Template) -> bool {
        for (mine, theirs) in self.segments.iter().zip(&other.segments) {
            match mine.specificity().cmp(&theirs.specificity()) {
                std::cmp::Ordering::Greater => return true,
                std::cmp::Ordering::Less => return false,
                std::cmp::Ordering::Equal => {}
            }
        }
        // Same shape up to the shorter one: the longer spells out more.
        self.segments.len() > other.segments.len()
    }

    /// Whether both match exactly the same paths (names aside).
    fn same_shape(&self, other: &Template) -> bool {
        self.segments == other.segments
    }
}

/// The most specific template among `candidates` matching `path`.
fn best_match<'t>(
    candidates: impl Iterator<Item = &'t Template>,
    path: &str,
) -> Option<&'t Template> {
    let mut best: Option<&Template> = None;
    for template in candidates {
        if template.matches(path) && best.is_none_or(|best| template.beats(best)) {
            best = Some(template);
        }
    }
    best
}

/// Maps (method, path) to a [`Route`], handing out at most `cap` distinct ones.
#[derive(Debug)]
pub struct RouteTable {
    /// Templates the application announced, and their texts for a quick repeat check.
    announced: Vec<Template>,
    announced_texts: HashSet<String>,
    patterns: Vec<Template>,
    openapi: Vec<(Method, Template)>,
    /// Routes handed out so far, per method (indexed like `Method::ALL`), so a
    /// lookup by `&str` needs no allocation.
    known: [HashSet<Arc<str>>; Method::ALL.len() + 1],
    known_len: usize,
    cap: usize,
    dropped: u64,
    other: Arc<str>,
    /// Reused buffer for heuristic templates.
    scratch: String,
}

impl RouteTable {
    /// A table with the user's `patterns` (tried in any order: the most
    /// specific match wins) that hands out at most `cap` distinct routes.
    pub fn new(patterns: &[String], cap: usize) -> Result<Self, PatternError> {
        let parsed = parse_unique(patterns.iter().map(String::as_str))?;
        Ok(RouteTable {
            announced: Vec::new(),
            announced_texts: HashSet::new(),
            patterns: parsed,
            openapi: Vec::new(),
            known: Default::default(),
            known_len: 0,
            cap,
            dropped: 0,
            other: OTHER_TEMPLATE.into(),
            scratch: String::new(),
        })
    }

    /// Replaces the OpenAPI templates. Templates that cannot be parsed (for
    /// example a parameter in the middle of a segment, `/f/{name}.json`) are
    /// left out and returned, so the caller can log them; the rest are used.
    /// Routes already handed out stay known.
    pub fn set_openapi(&mut self, templates: Vec<(Method, String)>) -> Vec<PatternError> {
        let mut rejected = Vec::new();
        self.openapi.clear();
        for (method, text) in templates {
            match Template::parse(&text) {
                Ok(template) => self.openapi.push((method, template)),
                Err(error) => rejected.push(error),
            }
        }
        rejected
    }

    /// A template the application announced (a `monitor:route` tag): tried before every other
    /// source from now on. Returns whether it is new; a malformed one is refused. At most `cap`
    /// are kept (an application announcing raw paths would otherwise grow this forever).
    pub fn announce(&mut self, text: &str) -> Result<bool, PatternError> {
        if self.announced_texts.contains(text) {
            return Ok(false);
        }
        let template = Template::parse(text)?;
        if self.announced.len() >= self.cap {
            self.dropped += 1;
            return Ok(false);
        }
        self.announced_texts.insert(text.to_owned());
        self.announced.push(template);
        Ok(true)
    }

    /// Whether `path` matches the announced template `text` (for requests read before it was).
    pub fn announced_matches(&self, text: &str, path: &str) -> bool {
        let path = strip_query_and_fragment(path);
        self.announced
            .iter()
            .find(|t| &*t.text == text)
            .is_some_and(|t| best_match(std::iter::once(t), path).is_some())
    }

    /// The route of tagged work named `name`, under the same cap as requests'.
    pub fn tag(&mut self, name: &str) -> Route {
        self.admit(Method::Tag, TemplateText::Scratch(name))
    }

    /// The route for a request. Never fails: past the cap it is
    /// `Route { method, template: "other" }`, counted by [`Self::dropped`].
    pub fn route(&mut self, method: Method, path: &str) -> Route {
        let path = strip_query_and_fragment(path);
        let from_table = if path == "*" {
            None
        } else {
            best_match(self.announced.iter(), path)
                .or_else(|| best_match(self.patterns.iter(), path))
                .or_else(|| {
                    let same_method = self.openapi.iter().filter(|(m, _)| *m == method);
                    best_match(same_method.map(|(_, template)| template), path)
                })
                .or_else(|| best_match(self.openapi.iter().map(|(_, t)| t), path))
        };
        match from_table {
            Some(template) => {
                let text = Arc::clone(&template.text);
                self.admit(method, TemplateText::Shared(text))
            }
            None => {
                let mut scratch = std::mem::take(&mut self.scratch);
                heuristic_template(path, &mut scratch);
                let route = self.admit(method, TemplateText::Scratch(&scratch));
                self.scratch = scratch;
                route
            }
        }
    }

    /// Hands out the route for `template` if it is known or fits under the cap.
    fn admit(&mut self, method: Method, template: TemplateText<'_>) -> Route {
        let index = method_index(method);
        if let Some(known) = self.known[index].get(template.as_str()) {
            return Route {
                method,
                template: Arc::clone(known),
            };
        }
        if self.known_len >= self.cap {
            self.dropped += 1;
            return Route {
                method,
                template: Arc::clone(&self.other),
            };
        }
        let text = match template {
            TemplateText::Shared(text) => text,
            TemplateText::Scratch(text) => Arc::from(text),
        };
        self.known[index].insert(Arc::clone(&text));
        self.known_len += 1;
        Route {
            method,
            template: text,
        }
    }

    /// Calls that got `other` because the cap was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Distinct routes handed out so far (`other` not counted).
    #[cfg(test)]
    pub fn routes_handed_out(&self) -> usize {
        self.known_len
    }
}

/// A template's text, either already shared or still in the scratch buffer
/// (copied into an `Arc` only when it is new).
enum TemplateText<'a> {
    Shared(Arc<str>),
    Scratch(&'a str),
}

impl TemplateText<'_> {
    fn as_str(&self) -> &str {
        match self {
            TemplateText::Shared(text) => text,
            TemplateText::Scratch(text) => text,
        }
    }
}

/// The index of `method` in `RouteTable::known`: `Method::ALL`'s, then Tag's.
fn method_index(method: Method) -> usize {
    Method::ALL
        .iter()
        .position(|&m| m == method)
        .unwrap_or(Method::ALL.len())
}

/// Parses `patterns`, refusing one that matches the same paths as an earlier.
fn parse_unique<'p>(
    patterns: impl Iterator<Item = &'p str>,
) -> Result<Vec<Template>, PatternError> {
    let mut parsed: Vec<Template> = Vec::new();
    for pattern in patterns {
        let template = Template::parse(pattern)?;
        if let Some(earlier) = parsed.iter().find(|earlier| earlier.same_shape(&template)) {
            return Err(PatternError {
                pattern: pattern.to_owned(),
                reason: PatternErrorReason::Duplicate(earlier.text.to_string()),
            });
        }
        parsed.push(template);
    }
    Ok(parsed)
}

/// Writes `path` into `out` with id-like segments replaced by [`ID_SEGMENT`].
/// `*` stays `*`, a trailing slash stays, and a target that is not a path
/// (CONNECT's `host:port`) becomes [`AUTHORITY_TEMPLATE`].
fn heuristic_template(path: &str, out: &mut String) {
    out.clear();
    if path == "*" {
        out.push('*');
        return;
    }
    let Some(after_slash) = path.strip_prefix('/') else {
        out.push_str(if path.is_empty() {
            "/"
        } else {
            AUTHORITY_TEMPLATE
        });
        return;
    };
    for segment in after_slash.split('/') {
        out.push('/');
        out.push_str(if is_id_like(segment) {
            ID_SEGMENT
        } else {
            segment
        });
    }
}

/// Whether a path segment looks like an identifier rather than a name.
///
/// Deliberately simple rules, any one of which is enough:
/// - all ASCII digits (`42`);
/// - a UUID, 8-4-4-4-12 hex digits in any case;
/// - 8 or more hex digits including at least one decimal digit
///   (`5f3a9c01`, a hash or object id; `deadbeef` or `facade` stay);
/// - 16 or more characters from the base64url alphabet (`A-Za-z0-9-_`)
///   mixing letters and digits (tokens, slugs with numbers, short ids).
///
/// A miss costs a label, not correctness: the cap bounds what gets through.
pub fn is_id_like(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let has_digit = bytes.iter().any(u8::is_ascii_digit);
    if !has_digit {
        return false;
    }
    if bytes.iter().all(u8::is_ascii_digit) || is_uuid(bytes) {
        return true;
    }
    if bytes.len() >= 8 && bytes.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    bytes.len() >= 16
        && bytes.iter().any(u8::is_ascii_alphabetic)
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_uuid(bytes: &[u8]) -> bool {
    const HYPHENS: [usize; 4] = [8, 13, 18, 23];
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, byte)| {
            if HYPHENS.contains(&index) {
                *byte == b'-'
            } else {
                byte.is_ascii_hexdigit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(patterns: &[&str], cap: usize) -> RouteTable {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        match RouteTable::new(&patterns, cap) {
            Ok(table) => table,
            Err(error) => panic!("{error}"),
        }
    }

    fn template(table: &mut RouteTable, method: Method, path: &str) -> String {
        table.route(method, path).template.to_string()
    }

    fn pattern_error(pattern: &str) -> PatternErrorReason {
        match RouteTable::new(&[pattern.to_owned()], 10) {
            Ok(_) => panic!("`{pattern}` was accepted"),
            Err(error) => {
                assert_eq!(error.pattern, pattern);
                error.reason
            }
        }
    }

    #[test]
    fn heuristic_replaces_ids() {
        let mut routes = table(&[], 100);
        for (path, expected) in [
            ("/api/orders/42", "/api/orders/{id}"),
            ("/api/orders/42/items/7", "/api/orders/{id}/items/{id}"),
            ("/u/550E8400-e29b-41d4-a716-446655440000", "/u/{id}"),
            ("/blob/5f3a9c01", "/blob/{id}"),
            ("/blob/deadbeef", "/blob/deadbeef"),
            ("/t/aZ3kP9qL2mN8xV4w", "/t/{id}"),
            ("/t/abcdefghijklmnopqrst", "/t/abcdefghijklmnopqrst"),
            ("/api/v2/health", "/api/v2/health"),
            ("/api/orders/", "/api/orders/"),
            ("/", "/"),
            ("*", "*"),
            ("/search?q=1", "/search"),
            ("/a//b", "/a//b"),
            ("example.com:443", AUTHORITY_TEMPLATE),
            ("", "/"),
        ] {
            assert_eq!(template(&mut routes, Method::Get, path), expected, "{path}");
        }
    }

    #[test]
    fn many_ids_give_one_route() {
        let mut routes = table(&[], 1000);
        for id in 0..10_000u32 {
            routes.route(Method::Get, &format!("/api/orders/{id}"));
            let uuid = format!(
                "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                id,
                id % 65536,
                id % 4096,
                id % 4096,
                u64::from(id) * 7919
            );
            routes.route(Method::Get, &format!("/api/users/{uuid}/profile"));
        }
        assert_eq!(routes.routes_handed_out(), 2);
        assert_eq!(routes.dropped(), 0);
        assert_eq!(
            template(&mut routes, Method::Get, "/api/orders/1"),
            "/api/orders/{id}"
        );
    }

    #[test]
    fn cap_hands_out_other() {
        let mut routes = table(&[], 3);
        let handed: Vec<String> = ["/a", "/b", "/c", "/d", "/e"]
            .iter()
            .map(|path| template(&mut routes, Method::Get, path))
            .collect();
        assert_eq!(handed, ["/a", "/b", "/c", OTHER_TEMPLATE, OTHER_TEMPLATE]);
        assert_eq!(routes.routes_handed_out(), 3);
        assert_eq!(routes.dropped(), 2);
        // Known routes keep resolving; a new method on a known path is new.
        assert_eq!(template(&mut routes, Method::Get, "/b"), "/b");
        assert_eq!(template(&mut routes, Method::Post, "/b"), OTHER_TEMPLATE);
        assert_eq!(routes.dropped(), 3);
    }

    #[test]
    fn user_pattern_beats_openapi_beats_heuristic() {
        let mut routes = table(&["/api/orders/{order}"], 100);
        let _ = routes.set_openapi(vec![
            (Method::Get, "/api/orders/{order_id}".to_owned()),
            (Method::Get, "/api/analysis/{symbol}".to_owned()),
        ]);
        assert_eq!(
            template(&mut routes, Method::Get, "/api/orders/5"),
            "/api/orders/{order}"
        );
        assert_eq!(
            template(&mut routes, Method::Get, "/api/analysis/AAPL"),
            "/api/analysis/{symbol}"
        );
        // OpenAPI for another method still beats the heuristic.
        assert_eq!(
            template(&mut routes, Method::Put, "/api/analysis/AAPL"),
            "/api/analysis/{symbol}"
        );
        assert_eq!(
            template(&mut routes, Method::Get, "/api/other/5"),
            "/api/other/{id}"
        );
    }

    #[test]
    fn openapi_for_the_method_beats_other_methods() {
        let mut routes = table(&[], 100);
        let _ = routes.set_openapi(vec![
            (Method::Get, "/items/{item_id}".to_owned()),
            (Method::Post, "/items/{name}".to_owned()),
        ]);
        assert_eq!(
            template(&mut routes, Method::Post, "/items/x"),
            "/items/{name}"
        );
        assert_eq!(
            template(&mut routes, Method::Get, "/items/x"),
            "/items/{item_id}"
        );
        assert_eq!(
            template(&mut routes, Method::Delete, "/items/x"),
            "/items/{item_id}"
        );
    }

    #[test]
    fn literal_beats_param() {
        let mut routes = table(
            &[
                "/users/{id}",
                "/users/me",
                "/users/{id}/posts",
                "/{any:path}",
            ],
            100,
        );
        assert_eq!(template(&mut routes, Method::Get, "/users/me"), "/users/me");
        assert_eq!(
            template(&mut routes, Method::Get, "/users/bob"),
            "/users/{id}"
        );
        assert_eq!(
            template(&mut routes, Method::Get, "/users/bob/posts"),
            "/users/{id}/posts"
        );
        assert_eq!(
            template(&mut routes, Method::Get, "/users/bob/likes"),
            "/{any:path}"
        );
        assert_eq!(template(&mut routes, Method::Get, "/users/"), "/{any:path}");
        assert_eq!(template(&mut routes, Method::Get, "/"), "/");
        let mut openapi = table(&[], 100);
        let _ = openapi.set_openapi(vec![
            (Method::Get, "/users/{user_id}".to_owned()),
            (Method::Get, "/users/me".to_owned()),
        ]);
        assert_eq!(
            template(&mut openapi, Method::Get, "/users/me"),
            "/users/me"
        );
    }

    #[test]
    fn params_match_one_non_empty_segment() {
        let mut routes = table(&["/files/{name}", "/static/{file:path}"], 100);
        assert_eq!(
            template(&mut routes, Method::Get, "/files/a"),
            "/files/{name}"
        );
        assert_eq!(template(&mut routes, Method::Get, "/files/"), "/files/");
        assert_eq!(template(&mut routes, Method::Get, "/files/a/"), "/files/a/");
        assert_eq!(
            template(&mut routes, Method::Get, "/files/a/b"),
            "/files/a/b"
        );
        assert_eq!(
            template(&mut routes, Method::Get, "/static/a/b/c.css"),
            "/static/{file:path}"
        );
        assert_eq!(
            template(&mut routes, Method::Get, "/static/x"),
            "/static/{file:path}"
        );
        assert_eq!(template(&mut routes, Method::Get, "/static/"), "/static/");
        assert_eq!(template(&mut routes, Method::Get, "/static"), "/static");
    }

    #[test]
    fn bad_patterns_are_named() {
        assert_eq!(pattern_error("api/x"), PatternErrorReason::NoLeadingSlash);
        assert!(matches!(
            pattern_error("/a/{id"),
            PatternErrorReason::UnbalancedBraces(_)
        ));
        assert!(matches!(
            pattern_error("/a/id}"),
            PatternErrorReason::UnbalancedBraces(_)
        ));
        assert!(matches!(
            pattern_error("/a/}id{"),
            PatternErrorReason::UnbalancedBraces(_)
        ));
        assert!(matches!(
            pattern_error("/a/{{id}}"),
            PatternErrorReason::UnbalancedBraces(_)
        ));
        assert!(matches!(
            pattern_error("/a/{}"),
            PatternErrorReason::EmptyName(_)
        ));
        assert!(matches!(
            pattern_error("/a/{:path}"),
            PatternErrorReason::EmptyName(_)
        ));
        assert!(matches!(
            pattern_error("/a/x{id}"),
            PatternErrorReason::PartialSegmentParameter(_)
        ));
        assert!(matches!(
            pattern_error("/a/{rest:path}/b"),
            PatternErrorReason::PathNotLast(_)
        ));
        assert!(matches!(
            pattern_error("/a/{id:int}"),
            PatternErrorReason::UnknownConverter { .. }
        ));
        assert!(matches!(
            pattern_error("/a/{i d}"),
            PatternErrorReason::BadName(_)
        ));
        assert!(matches!(
            pattern_error("/a/{id}/{id}"),
            PatternErrorReason::DuplicateName(_)
        ));
        let duplicate = RouteTable::new(&["/a/{x}".to_owned(), "/a/{y}".to_owned()], 10);
        match duplicate {
            Err(error) => {
                assert_eq!(
                    error.reason,
                    PatternErrorReason::Duplicate("/a/{x}".to_owned())
                );
                assert_eq!(
                    error.to_string(),
                    "route pattern `/a/{y}`: matches the same paths as `/a/{x}`"
                );
            }
            Ok(_) => panic!("duplicate accepted"),
        }
    }

    #[test]
    fn set_openapi_reports_and_skips_unusable_templates() {
        let mut routes = table(&[], 100);
        let rejected = routes.set_openapi(vec![
            (Method::Get, "/f/{name}.json".to_owned()),
            (Method::Get, "/g/{name}".to_owned()),
        ]);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].pattern, "/f/{name}.json");
        assert_eq!(template(&mut routes, Method::Get, "/g/x"), "/g/{name}");
        // Replacing drops the old templates but keeps handed-out routes.
        let _ = routes.set_openapi(vec![]);
        assert_eq!(template(&mut routes, Method::Get, "/g/x"), "/g/x");
        assert_eq!(routes.routes_handed_out(), 2);
    }

    #[test]
    fn id_rules() {
        assert!(is_id_like("0"));
        assert!(is_id_like("123456789012345678901234567890"));
        assert!(is_id_like("550e8400-E29B-41d4-a716-446655440000"));
        assert!(!is_uuid(b"550e8400-e29b-41d4-a716-44665544000g"));
        assert!(!is_uuid(b"550e8400e29b-41d4-a716-446655440000-"));
        assert!(!is_id_like("v1.2.3"));
        assert!(is_id_like("a1b2c3d4"));
        assert!(!is_id_like("a1b2c3d"));
        assert!(!is_id_like("deadbeefcafe"));
        assert!(is_id_like("my-post-title-2024"));
        assert!(!is_id_like("v2"));
        assert!(!is_id_like("index.html"));
        assert!(!is_id_like("very-long-words-without-digits"));
        assert!(!is_id_like(""));
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{1,6}",
            "[0-9]{1,6}",
            "[0-9a-f]{8,12}",
            "[{}:a-z*?#%]{0,5}",
            "\\PC{0,6}",
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::collection::vec(segment(), 0..6)
                .prop_map(|segments| format!("/{}", segments.join("/"))),
            "\\PC{0,20}",
            Just("*".to_owned()),
        ]
    }

    proptest! {
        #[test]
        fn never_panics_and_respects_the_cap(
            patterns in proptest::collection::vec(path(), 0..5),
            openapi in proptest::collection::vec((proptest::sample::select(Method::ALL.to_vec()), path()), 0..5),
            requests in proptest::collection::vec((proptest::sample::select(Method::ALL.to_vec()), path()), 0..60),
            cap in 0usize..8,
        ) {
            let mut routes = RouteTable::new(&patterns, cap).or_else(|_| RouteTable::new(&[], cap));
            let Ok(routes) = routes.as_mut() else {
                return Err(TestCaseError::fail("empty table refused"));
            };
            let _ = routes.set_openapi(openapi);
            let mut seen = HashSet::new();
            for (method, path) in requests {
                let route = routes.route(method, &path);
                prop_assert!(!route.template.is_empty());
                prop_assert!(!route.template.contains('?'));
                seen.insert(route);
            }
            let others = seen.iter().filter(|r| &*r.template == OTHER_TEMPLATE).map(|r| r.method).collect::<HashSet<_>>();
            let distinct_templates = seen.iter().map(|r| r.template.clone()).collect::<HashSet<_>>().len();
            prop_assert!(seen.len() <= cap + others.len());
            prop_assert!(distinct_templates <= cap + 1);
            prop_assert!(routes.routes_handed_out() <= cap);
        }

        #[test]
        fn numeric_ids_collapse(ids in proptest::collection::vec(any::<u64>(), 1..50)) {
            let mut routes = RouteTable::new(&[], 10).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for id in ids {
                prop_assert_eq!(&*routes.route(Method::Get, &format!("/o/{id}/x")).template, "/o/{id}/x");
            }
            prop_assert_eq!(routes.routes_handed_out(), 1);
        }
    }
}
