//! HTTP/1.x request-line and status-line recognition on captured socket bytes.
//!
//! The kernel side hands user space the first bytes of each read (up to 256)
//! and of each write (up to 16) on a target's sockets. This file owns turning
//! those raw prefixes into facts: "this read holds these request lines" and
//! "this write starts with status N". It is the only place that knows HTTP/1.x
//! framing, so that route templating (`route_table.rs`) only ever sees a path.
//!
//! Why it is written the way it is:
//! - Everything here runs once per captured read, so nothing allocates: the
//!   parsers borrow from the buffer and `request_lines` is an iterator.
//! - The bytes come from arbitrary programs (TLS, HTTP/2, Redis, garbage), so
//!   every function is total: it answers for any input and never panics or
//!   indexes out of bounds. The tests fuzz this.
//! - The capture is a prefix, so the parser distinguishes "could still become
//!   a request line" (`Incomplete`) from "cannot" (`Invalid`); the caller uses
//!   that to decide whether a connection is worth watching.

/// A request method this profiler recognises (RFC 9110 §9 plus PATCH).
///
/// Unknown or extension methods are deliberately not represented: a token that
/// is not one of these makes the line `Invalid`, which is what keeps other
/// protocols (`PING`, `PRI * HTTP/2.0`, …) from being taken for HTTP/1.x.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    /// Not HTTP: work the application tagged itself (`monitor:begin NAME`). Never parsed from
    /// a request line (it is not in `ALL`).
    Tag,
}

impl Method {
    /// Every method, in declaration order (also the order of `as index`).
    pub const ALL: [Method; 9] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Connect,
        Method::Options,
        Method::Trace,
        Method::Patch,
    ];

    /// The method's token as it appears on the wire (upper case).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Tag => "TAG",
        }
    }

    /// The method whose wire token is exactly `token`. Methods are
    /// case-sensitive (RFC 9110 §9.1), so `get` is not GET.
    pub fn from_token(token: &[u8]) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|method| method.as_str().as_bytes() == token)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The HTTP/1.x version named on a request line.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    Http10,
    Http11,
}

/// One parsed request line, borrowing its path from the captured buffer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RequestLine<'a> {
    pub method: Method,
    /// The path without query and fragment: origin-form `/p?q` and
    /// absolute-form `http://host/p?q` both give `/p`, `http://host` gives
    /// `/`, `OPTIONS *` gives `*`, and CONNECT's authority-form target is
    /// given as is (`host:443`).
    pub path: &'a str,
    pub version: Version,
    /// Bytes from the start of the line up to and including its line end.
    pub len: usize,
}

/// What a buffer's first bytes are, as far as a request line goes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LineParse<'a> {
    Complete(RequestLine<'a>),
    /// A strict prefix of something that could still become a request line.
    Incomplete,
    /// Can never become a request line, whatever bytes follow.
    Invalid,
}

/// Longest request target accepted, in bytes. Real servers cap it near here
/// (8 KiB); anything longer is not a request we want to label.
pub const MAX_TARGET_LEN: usize = 8 * 1024;

/// Longest method token (`CONNECT`, `OPTIONS`).
const MAX_METHOD_LEN: usize = 7;

/// Both accepted versions are this long: `HTTP/1.x`.
const VERSION_LEN: usize = 8;

/// Parses the request line at the start of `buf`.
///
/// Strict where it matters for telling HTTP/1.x apart from other bytes:
/// single spaces between the three parts, a known method, a target of
/// visible ASCII only (no controls, spaces or bytes >= 0x80) of at most
/// [`MAX_TARGET_LEN`] bytes, and exactly `HTTP/1.0` or `HTTP/1.1`. The line
/// may end in `\r\n` or a bare `\n`.
pub fn parse_request_line(buf: &[u8]) -> LineParse<'_> {
    match parse_line(buf) {
        Ok(line) => LineParse::Complete(line),
        Err(Short::Incomplete) => LineParse::Incomplete,
        Err(Short::Invalid) => LineParse::Invalid,
    }
}

/// Why a parse stopped short; internal twin of the non-`Complete` variants so
/// the parser can use `?`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Short {
    Incomplete,
    Invalid,
}

fn parse_line(buf: &[u8]) -> Result<RequestLine<'_>, Short> {
    // Method: a known token followed by one space.
    let Some(method_end) = buf
        .iter()
        .take(MAX_METHOD_LEN + 1)
        .position(|&byte| byte == b' ')
    else {
        let could_grow = buf.len() <= MAX_METHOD_LEN
            && Method::ALL
                .iter()
                .any(|method| method.as_str().as_bytes().starts_with(buf));
        return Err(if could_grow {
            Short::Incomplete
        } else {
            Short::Invalid
        });
    };
    let method = Method::from_token(&buf[..method_end]).ok_or(Short::Invalid)?;

    // Target: visible ASCII up to the next space.
    let target_start = method_end + 1;
    let rest = &buf[target_start..];
    let scan_limit = rest.len().min(MAX_TARGET_LEN + 1);
    let mut target_len = None;
    for (index, &byte) in rest[..scan_limit].iter().enumerate() {
        if byte == b' ' {
            target_len = Some(index);
            break;
        }
        if !is_target_byte(byte) {
            return Err(Short::Invalid);
        }
    }
    let Some(target_len) = target_len else {
        if scan_limit > MAX_TARGET_LEN {
            return Err(Short::Invalid);
        }
        // Unterminated target: worth waiting for only if its start fits a form.
        return match target_path(method, &rest[..scan_limit], false) {
            Err(short) => Err(short),
            Ok(_) => Err(Short::Incomplete),
        };
    };
    if target_len == 0 {
        return Err(Short::Invalid);
    }
    let path = target_path(method, &rest[..target_len], true)?;

    // Version and line end.
    let version_start = target_start + target_len + 1;
    let after_target = &buf[version_start..];
    let (version, version_len) = parse_version(after_target)?;
    let line_end_len = match &after_target[version_len..] {
        [] => return Err(Short::Incomplete),
        [b'\n', ..] => 1,
        [b'\r'] => return Err(Short::Incomplete),
        [b'\r', b'\n', ..] => 2,
        _ => return Err(Short::Invalid),
    };
    Ok(RequestLine {
        method,
        path,
        version,
        len: version_start + version_len + line_end_len,
    })
}

/// Bytes allowed in a request target: visible US-ASCII. Excluding >= 0x80
/// keeps the path valid UTF-8 without a check and matches RFC 3986.
fn is_target_byte(byte: u8) -> bool {
    (0x21..=0x7e).contains(&byte)
}

/// Parses `HTTP/1.0` or `HTTP/1.1` at the start of `bytes`, reporting a
/// strict prefix of either as incomplete.
fn parse_version(bytes: &[u8]) -> Result<(Version, usize), Short> {
    const HTTP10: &[u8] = b"HTTP/1.0";
    const HTTP11: &[u8] = b"HTTP/1.1";
    if bytes.len() < VERSION_LEN {
        return if HTTP10.starts_with(bytes) || HTTP11.starts_with(bytes) {
            Err(Short::Incomplete)
        } else {
            Err(Short::Invalid)
        };
    }
    match &bytes[..VERSION_LEN] {
        HTTP10 => Ok((Version::Http10, VERSION_LEN)),
        HTTP11 => Ok((Version::Http11, VERSION_LEN)),
        _ => Err(Short::Invalid),
    }
}

/// The path part of a target, for a `complete` target; for an unterminated
/// one (`complete == false`) only whether its start fits one of the forms
/// (the returned path is then meaningless).
fn target_path(method: Method, target: &[u8], complete: bool) -> Result<&str, Short> {
    // Every byte was checked by `is_target_byte`, so this cannot fail; the
    // error arm only keeps the function total.
    let text = std::str::from_utf8(target).map_err(|_| Short::Invalid)?;
    match target.first() {
        None => Ok(""),
        Some(b'/') => Ok(strip_query_and_fragment(text)),
        Some(b'*') if method == Method::Options => {
            if target.len() == 1 {
                Ok("*")
            } else {
                Err(Short::Invalid)
            }
        }
        // CONNECT takes authority-form (`host:port`); there is no path to cut.
        _ if method == Method::Connect => Ok(text),
        _ => absolute_form_path(text, complete),
    }
}

/// The path of an absolute-form target (`http://host:port/p?q` → `/p`).
fn absolute_form_path(text: &str, complete: bool) -> Result<&str, Short> {
    const SCHEMES: [&str; 2] = ["http://", "https://"];
    for scheme in SCHEMES {
        if text.len() < scheme.len() {
            // Only a prefix of a scheme so far.
            if !complete && scheme.as_bytes()[..text.len()].eq_ignore_ascii_case(text.as_bytes()) {
                return Ok("");
            }
            continue;
        }
        let (head, after_scheme) = text.split_at(scheme.len());
        if !head.eq_ignore_ascii_case(scheme) {
            continue;
        }
        let authority_len = after_scheme
            .find(['/', '?', '#'])
            .unwrap_or(after_scheme.len());
        if complete && authority_len == 0 {
            return Err(Short::Invalid);
        }
        let after_authority = &after_scheme[authority_len..];
        return Ok(if after_authority.starts_with('/') {
            strip_query_and_fragment(after_authority)
        } else {
            "/"
        });
    }
    Err(Short::Invalid)
}

/// `path` up to its first `?` or `#`.
pub(crate) fn strip_query_and_fragment(path: &str) -> &str {
    match path.find(['?', '#']) {
        Some(end) => &path[..end],
        None => path,
    }
}

/// Iterator over the request lines of pipelined requests in one buffer.
///
/// Yields the request at offset 0 (after skipping empty lines, which RFC 9112
/// §2.2 lets a client send between requests), then, as long as each
/// request's framing is known from the captured bytes, the next one. It stops
/// at the first thing it cannot frame: an incomplete or invalid line, an
/// unterminated header block, a chunked or otherwise unknown-length body, a
/// body running past the buffer, or the end of the buffer.
#[derive(Clone, Debug)]
pub struct RequestLines<'a> {
    buf: &'a [u8],
    /// Offset of the next request, or `None` once framing is lost.
    next: Option<usize>,
}

/// The request lines in `buf`: see [`RequestLines`].
pub fn request_lines(buf: &[u8]) -> RequestLines<'_> {
    RequestLines { buf, next: Some(0) }
}

impl<'a> Iterator for RequestLines<'a> {
    type Item = RequestLine<'a>;

    fn next(&mut self) -> Option<RequestLine<'a>> {
        let start = skip_empty_lines(self.buf, self.next.take()?);
        let request = self.buf.get(start..)?;
        let LineParse::Complete(line) = parse_request_line(request) else {
            return None;
        };
        let headers = HeaderBlock::scan(request.get(line.len..).unwrap_or_default());
        self.next = match (headers.end, headers.body) {
            (Some(headers_end), BodyFraming::Length(body_len)) => start
                .checked_add(line.len)
                .and_then(|offset| offset.checked_add(headers_end))
                .and_then(|offset| offset.checked_add(body_len))
                // A next request needs at least one byte after the body.
                .filter(|&offset| offset < self.buf.len()),
            _ => None,
        };
        Some(line)
    }
}

/// Skips up to two empty lines (`\r\n` or `\n`) at `offset`; more than that
/// is not a client being sloppy and is left to fail as a request line.
fn skip_empty_lines(buf: &[u8], mut offset: usize) -> usize {
    for _ in 0..2 {
        match buf.get(offset..) {
            Some([b'\r', b'\n', ..]) => offset += 2,
            Some([b'\n', ..]) => offset += 1,
            _ => break,
        }
    }
    offset
}

/// How a request's body is delimited, as far as its headers tell.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum BodyFraming {
    /// `Content-Length: N`, or no body header at all (N = 0).
    Length(usize),
    /// Chunked, another transfer coding, or a bad or conflicting length:
    /// the next request's offset cannot be known from a prefix.
    Unknown,
}

/// What one scan of a header block found.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct HeaderBlock {
    /// Offset just past the empty line ending the block, if it was captured.
    end: Option<usize>,
    body: BodyFraming,
    expects_continue: bool,
}

impl HeaderBlock {
    /// Scans header lines from the start of `bytes` (just after a request
    /// line) to the empty line that ends them.
    fn scan(bytes: &[u8]) -> HeaderBlock {
        let mut block = HeaderBlock {
            end: None,
            body: BodyFraming::Length(0),
            expects_continue: false,
        };
        let mut content_length: Option<usize> = None;
        let mut offset = 0;
        while let Some((line, next)) = next_line(bytes, offset) {
            offset = next;
            if line.is_empty() {
                block.end = Some(offset);
                break;
            }
            let Some(colon) = line.iter().position(|&byte| byte == b':') else {
                continue;
            };
            let name = &line[..colon];
            let value = trim_ows(&line[colon + 1..]);
            if name.eq_ignore_ascii_case(b"content-length") {
                match (parse_decimal(value), content_length) {
                    (Some(length), None) => content_length = Some(length),
                    (Some(length), Some(seen)) if length == seen => {}
                    // Unparsable or conflicting lengths: RFC 9112 §6.3 makes
                    // the message unframeable, so stop following it.
                    _ => block.body = BodyFraming::Unknown,
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // Any transfer coding (chunked or not) hides the body length.
                block.body = BodyFraming::Unknown;
            } else if name.eq_ignore_ascii_case(b"expect") {
                block.expects_continue |= value.eq_ignore_ascii_case(b"100-continue");
            }
        }
        if block.body != BodyFraming::Unknown {
            block.body = BodyFraming::Length(content_length.unwrap_or(0));
        }
        block
    }
}

/// The line starting at `offset` without its line end, and the offset after
/// that line end; `None` when no complete line starts there.
fn next_line(bytes: &[u8], offset: usize) -> Option<(&[u8], usize)> {
    let rest = bytes.get(offset..)?;
    let newline = rest.iter().position(|&byte| byte == b'\n')?;
    let line = &rest[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, offset + newline + 1))
}

/// `value` without leading and trailing spaces and tabs (RFC 9110 OWS).
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |byte: &u8| *byte == b' ' || *byte == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    value.get(start..end).unwrap_or_default()
}

/// A non-empty run of ASCII digits as a `usize`, `None` on anything else or
/// on overflow.
fn parse_decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0usize, |total, &byte| {
        if byte.is_ascii_digit() {
            total.checked_mul(10)?.checked_add(usize::from(byte - b'0'))
        } else {
            None
        }
    })
}

/// Whether the first request in `buf` carries `Expect: 100-continue`.
///
/// Such a client sends its headers, waits for `100 Continue`, and only then
/// sends the body, so the body does not follow the headers in this read and
/// the caller should not expect a second request in it either.
pub fn expects_continue(buf: &[u8]) -> bool {
    let start = skip_empty_lines(buf, 0);
    let Some(request) = buf.get(start..) else {
        return false;
    };
    let LineParse::Complete(line) = parse_request_line(request) else {
        return false;
    };
    HeaderBlock::scan(request.get(line.len..).unwrap_or_default()).expects_continue
}

/// Bytes of a status line needed to read its code: `HTTP/1.x NNN` and one
/// byte after it.
pub const STATUS_LINE_PREFIX_LEN: usize = 13;

/// The status code at the start of a response, if `buf` starts with
/// `HTTP/1.0 ` or `HTTP/1.1 `, three digits making 100–599, then a space or
/// `\r` (an empty reason phrase). Reads only the first
/// [`STATUS_LINE_PREFIX_LEN`] bytes, which fits in the 16 bytes captured per
/// write.
pub fn parse_status_line(buf: &[u8]) -> Option<u16> {
    let prefix = buf.get(..STATUS_LINE_PREFIX_LEN)?;
    let (version, rest) = prefix.split_at(9);
    if version != b"HTTP/1.0 " && version != b"HTTP/1.1 " {
        return None;
    }
    let [hundreds, tens, units, after] = *rest else {
        return None;
    };
    if !(after == b' ' || after == b'\r') {
        return None;
    }
    let mut code = 0u16;
    for digit in [hundreds, tens, units] {
        if !digit.is_ascii_digit() {
            return None;
        }
        code = code * 10 + u16::from(digit - b'0');
    }
    (100..=599).contains(&code).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn complete(buf: &[u8]) -> RequestLine<'_> {
        match parse_request_line(buf) {
            LineParse::Complete(line) => line,
            other => panic!(
                "{:?}: expected Complete, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn paths(buf: &[u8]) -> Vec<(Method, &str)> {
        request_lines(buf)
            .map(|line| (line.method, line.path))
            .collect()
    }

    #[test]
    fn method_tokens_round_trip() {
        for method in Method::ALL {
            assert_eq!(Method::from_token(method.as_str().as_bytes()), Some(method));
        }
        assert_eq!(Method::from_token(b"get"), None);
        assert_eq!(Method::from_token(b""), None);
        assert_eq!(Method::from_token(b"GETS"), None);
        assert_eq!(Method::from_token("GÉT".as_bytes()), None);
    }

    #[test]
    fn simple_get() {
        let line = complete(b"GET /api/orders/42?x=1#frag HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(line.method, Method::Get);
        assert_eq!(line.path, "/api/orders/42");
        assert_eq!(line.version, Version::Http11);
        assert_eq!(line.len, "GET /api/orders/42?x=1#frag HTTP/1.1\r\n".len());
    }

    #[test]
    fn bare_lf_and_http10() {
        let line = complete(b"HEAD / HTTP/1.0\nHost: a\n\n");
        assert_eq!(line.method, Method::Head);
        assert_eq!(line.path, "/");
        assert_eq!(line.version, Version::Http10);
        assert_eq!(line.len, "HEAD / HTTP/1.0\n".len());
    }

    #[test]
    fn absolute_form() {
        assert_eq!(
            complete(b"GET http://host:8080/p?q HTTP/1.1\r\n").path,
            "/p"
        );
        assert_eq!(complete(b"GET http://host HTTP/1.1\r\n").path, "/");
        assert_eq!(complete(b"GET HTTPS://host?q=1 HTTP/1.1\r\n").path, "/");
        assert_eq!(complete(b"GET https://h/a/b/ HTTP/1.1\r\n").path, "/a/b/");
        assert_eq!(
            parse_request_line(b"GET http:///p HTTP/1.1\r\n"),
            LineParse::Invalid
        );
        assert_eq!(
            parse_request_line(b"GET ftp://h/p HTTP/1.1\r\n"),
            LineParse::Invalid
        );
        assert_eq!(parse_request_line(b"GET htt"), LineParse::Incomplete);
        assert_eq!(parse_request_line(b"GET http://ho"), LineParse::Incomplete);
        assert_eq!(parse_request_line(b"GET x"), LineParse::Invalid);
    }

    #[test]
    fn asterisk_and_authority_forms() {
        assert_eq!(complete(b"OPTIONS * HTTP/1.1\r\n").path, "*");
        assert_eq!(
            parse_request_line(b"OPTIONS *x HTTP/1.1\r\n"),
            LineParse::Invalid
        );
        assert_eq!(
            parse_request_line(b"GET * HTTP/1.1\r\n"),
            LineParse::Invalid
        );
        assert_eq!(
            complete(b"CONNECT example.com:443 HTTP/1.1\r\n").path,
            "example.com:443"
        );
    }

    #[test]
    fn incomplete_prefixes() {
        for prefix in [
            &b""[..],
            b"G",
            b"GE",
            b"GET",
            b"GET ",
            b"GET /api/or",
            b"GET /x ",
            b"GET /x HTTP/1.",
            b"GET /x HTTP/1.1",
            b"GET /x HTTP/1.1\r",
            b"OPTIONS *",
            b"DELETE /a",
        ] {
            assert_eq!(
                parse_request_line(prefix),
                LineParse::Incomplete,
                "{:?}",
                String::from_utf8_lossy(prefix)
            );
        }
    }

    #[test]
    fn invalid_lines() {
        for garbage in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"\x16\x03\x01",
            b"PING\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /x HTTP/2.0\r\n",
            b"GET /x HTTP/1.2\r\n",
            b"GET /x http/1.1\r\n",
            b"get /x HTTP/1.1\r\n",
            b"GET  /x HTTP/1.1\r\n",
            b"GET /x  HTTP/1.1\r\n",
            b"GET /a\tb HTTP/1.1\r\n",
            b"GET /a\x00b HTTP/1.1\r\n",
            b"GET /a\rb HTTP/1.1\r\n",
            "GET /caf\u{e9} HTTP/1.1\r\n".as_bytes(),
            b"GET /x HTTP/1.1\rX",
            b"GET /x HTTP/1.1 \r\n",
            b"G\xc3\x89T /x HTTP/1.1\r\n",
            b"GETX /x HTTP/1.1\r\n",
            b"*3\r\n$3\r\nSET\r\n",
            b" GET /x HTTP/1.1\r\n",
        ] {
            assert_eq!(
                parse_request_line(garbage),
                LineParse::Invalid,
                "{:?}",
                String::from_utf8_lossy(garbage)
            );
        }
    }

    #[test]
    fn target_length_limit() {
        let mut at_limit = b"GET /".to_vec();
        at_limit.resize(4 + MAX_TARGET_LEN, b'a');
        let mut open = at_limit.clone();
        assert_eq!(parse_request_line(&open), LineParse::Incomplete);
        at_limit.extend_from_slice(b" HTTP/1.1\r\n");
        assert_eq!(complete(&at_limit).path.len(), MAX_TARGET_LEN);
        open.push(b'a');
        assert_eq!(parse_request_line(&open), LineParse::Invalid);
        open.extend_from_slice(b" HTTP/1.1\r\n");
        assert_eq!(parse_request_line(&open), LineParse::Invalid);
    }

    #[test]
    fn keep_alive_single_request() {
        let buf = b"GET /health HTTP/1.1\r\nHost: localhost:8000\r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(paths(buf), vec![(Method::Get, "/health")]);
    }

    #[test]
    fn three_pipelined_gets() {
        let buf = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b/1 HTTP/1.1\r\nHost: h\r\n\r\nGET /c?x HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(
            paths(buf),
            vec![
                (Method::Get, "/a"),
                (Method::Get, "/b/1"),
                (Method::Get, "/c")
            ]
        );
    }

    #[test]
    fn post_with_body_then_get() {
        let buf = b"POST /api/orders HTTP/1.1\r\nHost: h\r\ncontent-LENGTH: 13\r\n\r\n{\"qty\": 1000}GET /api/orders/7 HTTP/1.1\r\n\r\n";
        assert_eq!(
            paths(buf),
            vec![
                (Method::Post, "/api/orders"),
                (Method::Get, "/api/orders/7")
            ]
        );
    }

    #[test]
    fn body_that_looks_like_a_request_is_skipped() {
        let body = b"GET /inside HTTP/1.1\r\n\r\n";
        let mut buf =
            format!("PUT /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        buf.extend_from_slice(body);
        buf.extend_from_slice(b"DELETE /y HTTP/1.1\r\n\r\n");
        assert_eq!(
            paths(&buf),
            vec![(Method::Put, "/x"), (Method::Delete, "/y")]
        );
    }

    #[test]
    fn pipelining_stops_where_framing_is_lost() {
        // Chunked body: whatever follows is not looked at.
        let chunked = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(paths(chunked), vec![(Method::Post, "/a")]);
        // Body running past the capture.
        let truncated = b"POST /a HTTP/1.1\r\nContent-Length: 500\r\n\r\n{\"x\":";
        assert_eq!(paths(truncated), vec![(Method::Post, "/a")]);
        // Header block cut off by the capture.
        let open_headers = b"GET /a HTTP/1.1\r\nHost: h\r\nUser-Ag";
        assert_eq!(paths(open_headers), vec![(Method::Get, "/a")]);
        // Conflicting lengths.
        let conflicting = b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(paths(conflicting), vec![(Method::Post, "/a")]);
        // Second request line cut off.
        let second_cut = b"GET /a HTTP/1.1\r\n\r\nGET /b HT";
        assert_eq!(paths(second_cut), vec![(Method::Get, "/a")]);
        // Garbage after the first request.
        let garbage_after = b"GET /a HTTP/1.1\r\n\r\n\x16\x03\x01";
        assert_eq!(paths(garbage_after), vec![(Method::Get, "/a")]);
        // Huge length must not overflow.
        let huge = b"POST /a HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(paths(huge), vec![(Method::Post, "/a")]);
    }

    #[test]
    fn empty_lines_between_requests_are_skipped() {
        let buf = b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi\r\nGET /b HTTP/1.1\n\n";
        assert_eq!(paths(buf), vec![(Method::Post, "/a"), (Method::Get, "/b")]);
        let leading = b"\r\nGET /c HTTP/1.1\r\n\r\n";
        assert_eq!(paths(leading), vec![(Method::Get, "/c")]);
    }

    #[test]
    fn no_request_lines_in_garbage() {
        assert_eq!(paths(b""), vec![]);
        assert_eq!(paths(b"\x16\x03\x01\x00\xa5\x01"), vec![]);
        assert_eq!(paths(b"PING\r\n"), vec![]);
        assert_eq!(paths(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), vec![]);
        assert_eq!(paths(b"GET /x HTTP/1."), vec![]);
    }

    #[test]
    fn expect_continue() {
        assert!(expects_continue(
            b"POST /up HTTP/1.1\r\nContent-Length: 9000\r\nexpect:  100-Continue \r\n\r\n"
        ));
        assert!(!expects_continue(
            b"POST /up HTTP/1.1\r\nContent-Length: 9\r\n\r\n"
        ));
        assert!(!expects_continue(
            b"POST /up HTTP/1.1\r\n\r\nExpect: 100-continue\r\n\r\n"
        ));
        assert!(!expects_continue(b"PING\r\nExpect: 100-continue\r\n"));
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 404 Not"), Some(404));
        assert_eq!(parse_status_line(b"HTTP/1.1 100\r\n"), Some(100));
        assert_eq!(parse_status_line(b"HTTP/1.1 599 X"), Some(599));
        assert_eq!(parse_status_line(b"HTTP/1.1 600 X"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 099 X"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 OK"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 200"), None);
        assert_eq!(parse_status_line(b"HTTP/2.0 200 OK"), None);
        assert_eq!(parse_status_line(b"http/1.1 200 OK"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2x0 OK"), None);
        assert_eq!(parse_status_line(b""), None);
        assert_eq!(
            parse_status_line(b"\x16\x03\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
            None
        );
    }

    #[test]
    fn large_garbage_does_not_hang_or_panic() {
        let mut garbage = Vec::with_capacity(64 * 1024);
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        while garbage.len() < 64 * 1024 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            garbage.extend_from_slice(&state.to_le_bytes());
        }
        let _ = parse_request_line(&garbage);
        let _ = request_lines(&garbage).count();
        let _ = expects_continue(&garbage);
        let _ = parse_status_line(&garbage);
        // A 64 KiB target of valid bytes is refused, not waited on.
        let mut long = b"GET /".to_vec();
        long.resize(64 * 1024, b'a');
        assert_eq!(parse_request_line(&long), LineParse::Invalid);
    }

    /// Valid request lines to mutate and truncate.
    fn valid_request() -> impl Strategy<Value = Vec<u8>> {
        let method = proptest::sample::select(Method::ALL.to_vec());
        let path = "(/[a-zA-Z0-9._~%-]{0,12}){1,5}(\\?[a-z=&0-9]{0,10})?";
        let version = prop_oneof![Just("HTTP/1.0"), Just("HTTP/1.1")];
        let ending = prop_oneof![Just("\r\n"), Just("\n")];
        (method, path, version, ending).prop_map(|(method, path, version, ending)| {
            format!("{method} {path} {version}{ending}Host: h\r\n\r\n").into_bytes()
        })
    }

    fn exercise_everything(buf: &[u8]) {
        if let LineParse::Complete(line) = parse_request_line(buf) {
            assert!(line.len <= buf.len());
            assert!(line.path.len() <= MAX_TARGET_LEN);
            assert!(matches!(buf.get(line.len - 1), Some(b'\n')));
            // Every strict prefix of a complete line is incomplete.
            for cut in 0..line.len {
                assert_eq!(
                    parse_request_line(&buf[..cut]),
                    LineParse::Incomplete,
                    "cut {cut}"
                );
            }
        }
        for line in request_lines(buf) {
            assert!(line.len <= buf.len());
        }
        let _ = expects_continue(buf);
        let _ = parse_status_line(buf);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            exercise_everything(&buf);
        }

        #[test]
        fn valid_requests_parse(request in valid_request()) {
            let line = complete(&request);
            prop_assert!(line.path.starts_with('/'));
            prop_assert!(!line.path.contains('?'));
            exercise_everything(&request);
            // Pipelined twice: both found.
            let twice = [request.clone(), request.clone()].concat();
            prop_assert_eq!(request_lines(&twice).count(), 2);
        }

        #[test]
        fn mutated_requests_never_panic(
            request in valid_request(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        ) {
            let mut buf = request;
            for (index, byte, kind) in edits {
                let at = index.index(buf.len() + 1);
                match kind {
                    0 if at < buf.len() => buf[at] = byte,
                    1 => buf.insert(at, byte),
                    _ if at < buf.len() => { buf.remove(at); }
                    _ => buf.push(byte),
                }
            }
            exercise_everything(&buf);
        }

        #[test]
        fn truncated_requests_are_incomplete(request in valid_request(), cut in any::<prop::sample::Index>()) {
            let line_len = complete(&request).len;
            let cut = cut.index(line_len);
            prop_assert_eq!(parse_request_line(&request[..cut]), LineParse::Incomplete);
        }
    }
}
