//! Reading route templates from a target's OpenAPI (or Swagger 2.0) document.
//!
//! Frameworks such as FastAPI publish their exact path templates
//! (`/api/orders/{order_id}`) at a well-known URL. Using them gives route
//! labels that match the application's own names instead of the heuristic's
//! `{id}` guesses. This file owns fetching that document from the target on
//! loopback and extracting `(method, template)` pairs from it; applying them
//! is `route_table.rs`'s job.
//!
//! Fetching is blocking and bounded (timeout, 4 MiB body, no redirects) so the
//! caller can run it on a blocking thread without risking the daemon.

use std::time::Duration;

use serde_json::{Map, Value};

use super::http_line::Method;

/// Largest document body accepted: real specs are well under 1 MiB, and a
/// bigger answer is most likely not a spec at all.
pub const MAX_DOCUMENT_BYTES: u64 = 4 * 1024 * 1024;

/// What went wrong reading or fetching an OpenAPI document.
#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    #[error("not JSON at line {line} column {column}: {message}")]
    NotJson {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("the document is not a JSON object")]
    NotAnObject,
    #[error("no `openapi` or `swagger` version field: not an OpenAPI document")]
    NoVersion,
    #[error("unsupported version `{0}` (OpenAPI 3.x and Swagger 2.0 are supported)")]
    UnsupportedVersion(String),
    #[error("no `paths` object")]
    NoPaths,
    #[error("`paths` entry `{0}` is not an object")]
    PathItemNotAnObject(String),
    #[error("`paths` key `{0}` does not start with `/`")]
    PathWithoutSlash(String),
    #[error("document path `{0}` must start with `/`")]
    BadRequestPath(String),
    #[error("GET {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("GET {url}: status {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: body larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
}

/// Operation keys of a Path Item object and the methods they stand for
/// (OpenAPI 3.x §4.8.9; Swagger 2.0 has the same minus `trace`).
const OPERATION_KEYS: [(&str, Method); 8] = [
    ("get", Method::Get),
    ("put", Method::Put),
    ("post", Method::Post),
    ("delete", Method::Delete),
    ("options", Method::Options),
    ("head", Method::Head),
    ("patch", Method::Patch),
    ("trace", Method::Trace),
];

/// Every `(method, path template)` in the document's `paths` object.
///
/// Keys other than operations (`parameters`, `summary`, `servers`, `$ref`,
/// `x-…`) are ignored, as are `x-…` extension entries of `paths` itself. A
/// Swagger 2.0 `basePath` other than `/` is prefixed to each path, since that
/// is where the API is served; OpenAPI 3.x `servers` are not applied (they
/// usually name a proxy prefix the application never sees). The result is
/// sorted by path then method, without duplicates.
pub fn templates_from_openapi(json: &[u8]) -> Result<Vec<(Method, String)>, OpenApiError> {
    let document: Value = serde_json::from_slice(json).map_err(|error| OpenApiError::NotJson {
        line: error.line(),
        column: error.column(),
        message: error.to_string(),
    })?;
    let document = document.as_object().ok_or(OpenApiError::NotAnObject)?;
    let base_path = base_path(document)?;
    let paths = document
        .get("paths")
        .and_then(Value::as_object)
        .ok_or(OpenApiError::NoPaths)?;

    let mut templates = Vec::new();
    for (path, item) in paths {
        if path.starts_with("x-") {
            continue;
        }
        if !path.starts_with('/') {
            return Err(OpenApiError::PathWithoutSlash(path.clone()));
        }
        let item = item
            .as_object()
            .ok_or_else(|| OpenApiError::PathItemNotAnObject(path.clone()))?;
        let full_path = match base_path {
            Some(base) => format!("{base}{path}"),
            None => path.clone(),
        };
        for (key, method) in OPERATION_KEYS {
            if item.contains_key(key) {
                templates.push((method, full_path.clone()));
            }
        }
    }
    templates.sort_by(|(method_a, path_a), (method_b, path_b)| {
        path_a.cmp(path_b).then(method_a.cmp(method_b))
    });
    templates.dedup();
    Ok(templates)
}

/// Checks the version field and returns the Swagger 2.0 `basePath` to
/// prefix, if there is one to apply (trailing `/` removed, `/` alone ignored).
fn base_path(document: &Map<String, Value>) -> Result<Option<&str>, OpenApiError> {
    if let Some(version) = document.get("openapi") {
        let version = version.as_str().unwrap_or_default();
        return if version.starts_with("3.") {
            Ok(None)
        } else {
            Err(OpenApiError::UnsupportedVersion(version_text(
                document.get("openapi"),
            )))
        };
    }
    let Some(version) = document.get("swagger") else {
        return Err(OpenApiError::NoVersion);
    };
    if version.as_str() != Some("2.0") {
        return Err(OpenApiError::UnsupportedVersion(version_text(Some(
            version,
        ))));
    }
    let base = document
        .get("basePath")
        .and_then(Value::as_str)
        .map(|base| base.trim_end_matches('/'))
        .filter(|base| base.starts_with('/'));
    Ok(base)
}

/// A version field's value for an error message (strings without quotes).
fn version_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// Fetches `http://127.0.0.1:{port}{path}` and returns its body.
///
/// Blocking, bounded by `timeout` for the whole exchange. Refuses bodies over
/// [`MAX_DOCUMENT_BYTES`], non-2xx statuses (redirects are not followed, so a
/// 3xx is reported as such), and ignores proxy environment variables: the
/// target is on this machine.
pub fn fetch_openapi(port: u16, path: &str, timeout: Duration) -> Result<Vec<u8>, OpenApiError> {
    if !path.starts_with('/') {
        return Err(OpenApiError::BadRequestPath(path.to_owned()));
    }
    let url = format!("http://127.0.0.1:{port}{path}");
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let request_error = |url: &str, source: ureq::Error| OpenApiError::Request {
        url: url.to_owned(),
        source: Box::new(source),
    };
    let mut response = agent
        .get(&url)
        .header("Accept", "application/json")
        .call()
        .map_err(|source| request_error(&url, source))?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(OpenApiError::Status { url, status });
    }
    let too_large = |url: String| OpenApiError::TooLarge {
        url,
        limit: MAX_DOCUMENT_BYTES,
    };
    // Refuse up front when the server says how big it is.
    if response
        .body()
        .content_length()
        .is_some_and(|length| length > MAX_DOCUMENT_BYTES)
    {
        return Err(too_large(url));
    }
    match response
        .body_mut()
        .with_config()
        .limit(MAX_DOCUMENT_BYTES)
        .read_to_vec()
    {
        Ok(body) => Ok(body),
        Err(ureq::Error::BodyExceedsLimit(_)) => Err(too_large(url)),
        Err(source) => Err(request_error(&url, source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::thread;

    const FASTAPI_DOCUMENT: &str = r#"{
        "openapi": "3.1.0",
        "info": {"title": "Trading", "version": "0.1.0"},
        "paths": {
            "/api/orders/{order_id}": {
                "summary": "One order",
                "parameters": [{"name": "order_id", "in": "path", "required": true}],
                "get": {"operationId": "get_order", "responses": {"200": {"description": "ok"}}},
                "delete": {"operationId": "delete_order", "responses": {}},
                "x-internal": true
            },
            "/api/analysis/{symbol}": {
                "get": {"summary": "Analysis", "responses": {}}
            },
            "/health": {"get": {"responses": {}}},
            "x-generated-by": {"tool": "fastapi"}
        },
        "components": {"schemas": {}}
    }"#;

    fn templates(json: &str) -> Vec<(Method, String)> {
        match templates_from_openapi(json.as_bytes()) {
            Ok(templates) => templates,
            Err(error) => panic!("{error}"),
        }
    }

    fn error_of(json: &str) -> OpenApiError {
        match templates_from_openapi(json.as_bytes()) {
            Ok(templates) => panic!("accepted: {templates:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn fastapi_document() {
        assert_eq!(
            templates(FASTAPI_DOCUMENT),
            vec![
                (Method::Get, "/api/analysis/{symbol}".to_owned()),
                (Method::Get, "/api/orders/{order_id}".to_owned()),
                (Method::Delete, "/api/orders/{order_id}".to_owned()),
                (Method::Get, "/health".to_owned()),
            ]
        );
    }

    #[test]
    fn swagger_2_document_with_base_path() {
        let document = r#"{
            "swagger": "2.0",
            "basePath": "/v1/",
            "paths": {
                "/pets": {"get": {}, "post": {}, "parameters": []},
                "/pets/{petId}": {"get": {}, "put": {}, "patch": {}, "head": {}, "options": {}}
            }
        }"#;
        assert_eq!(
            templates(document),
            vec![
                (Method::Get, "/v1/pets".to_owned()),
                (Method::Post, "/v1/pets".to_owned()),
                (Method::Get, "/v1/pets/{petId}".to_owned()),
                (Method::Head, "/v1/pets/{petId}".to_owned()),
                (Method::Put, "/v1/pets/{petId}".to_owned()),
                (Method::Options, "/v1/pets/{petId}".to_owned()),
                (Method::Patch, "/v1/pets/{petId}".to_owned()),
            ]
        );
        let root_base = r#"{"swagger": "2.0", "basePath": "/", "paths": {"/a": {"trace": {}}}}"#;
        assert_eq!(templates(root_base), vec![(Method::Trace, "/a".to_owned())]);
    }

    #[test]
    fn empty_paths_is_no_templates() {
        assert_eq!(templates(r#"{"openapi": "3.0.3", "paths": {}}"#), vec![]);
    }

    #[test]
    fn broken_documents() {
        let not_json = error_of("{\n  \"openapi\": \"3.1.0\",\n  \"paths\": {,}\n}");
        assert!(
            matches!(not_json, OpenApiError::NotJson { line: 3, .. }),
            "{not_json}"
        );
        assert!(
            not_json
                .to_string()
                .starts_with("not JSON at line 3 column "),
            "{not_json}"
        );
        assert!(matches!(error_of(""), OpenApiError::NotJson { .. }));
        assert!(matches!(
            error_of("<html>docs</html>"),
            OpenApiError::NotJson { .. }
        ));
        assert!(matches!(error_of("[1, 2]"), OpenApiError::NotAnObject));
        assert!(matches!(
            error_of(r#"{"status": "ok"}"#),
            OpenApiError::NoVersion
        ));
        assert!(matches!(
            error_of(r#"{"openapi": "3.1.0"}"#),
            OpenApiError::NoPaths
        ));
        assert_eq!(
            error_of(r#"{"openapi": "3.1.0"}"#).to_string(),
            "no `paths` object"
        );
        assert!(matches!(
            error_of(r#"{"openapi": "3.1.0", "paths": []}"#),
            OpenApiError::NoPaths
        ));
        assert!(matches!(
            error_of(r#"{"openapi": "2.5", "paths": {}}"#),
            OpenApiError::UnsupportedVersion(version) if version == "2.5"
        ));
        assert!(matches!(
            error_of(r#"{"openapi": 3, "paths": {}}"#),
            OpenApiError::UnsupportedVersion(version) if version == "3"
        ));
        assert!(matches!(
            error_of(r#"{"swagger": "1.2", "paths": {}}"#),
            OpenApiError::UnsupportedVersion(_)
        ));
        assert!(matches!(
            error_of(r#"{"openapi": "3.0.0", "paths": {"/a": "get"}}"#),
            OpenApiError::PathItemNotAnObject(path) if path == "/a"
        ));
        assert!(matches!(
            error_of(r#"{"openapi": "3.0.0", "paths": {"a": {"get": {}}}}"#),
            OpenApiError::PathWithoutSlash(path) if path == "a"
        ));
    }

    /// Serves one canned HTTP response to the first connection on a loopback
    /// port, after reading the request head. Returns the port and the thread,
    /// which yields the request line it saw.
    fn serve_once(response: Vec<u8>) -> (u16, thread::JoinHandle<String>) {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(listener) => listener,
            Err(error) => panic!("bind: {error}"),
        };
        let port = match listener.local_addr() {
            Ok(address) => address.port(),
            Err(error) => panic!("local_addr: {error}"),
        };
        let server = thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return String::new();
            };
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 0) && header != "\r\n" {
                header.clear();
            }
            // The client may hang up early (body too large); that is fine.
            let _ = reader.get_mut().write_all(&response);
            request_line
        });
        (port, server)
    }

    fn response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
        let mut bytes =
            format!("HTTP/1.1 {status}\r\n{headers}Connection: close\r\n\r\n").into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn fetch_serves_the_document() {
        let body = FASTAPI_DOCUMENT.as_bytes();
        let (port, server) = serve_once(response(
            "200 OK",
            &format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ),
            body,
        ));
        let fetched = fetch_openapi(port, "/openapi.json", Duration::from_secs(5));
        let request_line = server.join().unwrap_or_default();
        assert_eq!(request_line, "GET /openapi.json HTTP/1.1\r\n");
        match fetched {
            Ok(fetched) => {
                assert_eq!(fetched, body);
                assert_eq!(templates(FASTAPI_DOCUMENT).len(), 4);
            }
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn fetch_reports_status_and_url() {
        let (port, server) = serve_once(response(
            "404 Not Found",
            "Content-Length: 9\r\n",
            b"not found",
        ));
        let fetched = fetch_openapi(port, "/openapi.json", Duration::from_secs(5));
        let _ = server.join();
        match fetched {
            Err(error @ OpenApiError::Status { status: 404, .. }) => assert_eq!(
                error.to_string(),
                format!("GET http://127.0.0.1:{port}/openapi.json: status 404")
            ),
            other => panic!("{other:?}"),
        }
        let (port, server) = serve_once(response(
            "302 Found",
            "Location: http://example.invalid/\r\nContent-Length: 0\r\n",
            b"",
        ));
        let fetched = fetch_openapi(port, "/docs", Duration::from_secs(5));
        let _ = server.join();
        assert!(
            matches!(fetched, Err(OpenApiError::Status { status: 302, .. })),
            "{fetched:?}"
        );
    }

    #[test]
    fn fetch_refuses_large_bodies() {
        // Announced length over the limit.
        let announced = format!("Content-Length: {}\r\n", MAX_DOCUMENT_BYTES + 1);
        let (port, server) = serve_once(response("200 OK", &announced, b"{}"));
        let fetched = fetch_openapi(port, "/openapi.json", Duration::from_secs(5));
        let _ = server.join();
        assert!(
            matches!(fetched, Err(OpenApiError::TooLarge { .. })),
            "{fetched:?}"
        );
        // No length, body streamed until close.
        let big = vec![b' '; usize::try_from(MAX_DOCUMENT_BYTES).unwrap_or(usize::MAX) + 1024];
        let (port, server) = serve_once(response("200 OK", "", &big));
        let fetched = fetch_openapi(port, "/openapi.json", Duration::from_secs(10));
        let _ = server.join();
        match fetched {
            Err(error @ OpenApiError::TooLarge { .. }) => {
                assert!(
                    error
                        .to_string()
                        .contains(&format!("127.0.0.1:{port}/openapi.json"))
                );
            }
            other => panic!("{:?}", other.map(|body| body.len())),
        }
    }

    #[test]
    fn fetch_times_out_and_names_the_url() {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(listener) => listener,
            Err(error) => panic!("bind: {error}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        // Accept (by the kernel's backlog) but never answer.
        let fetched = fetch_openapi(port, "/openapi.json", Duration::from_millis(300));
        drop(listener);
        match fetched {
            Err(error @ OpenApiError::Request { .. }) => {
                assert!(
                    error
                        .to_string()
                        .starts_with(&format!("GET http://127.0.0.1:{port}/openapi.json: ")),
                    "{error}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            fetch_openapi(port, "openapi.json", Duration::from_millis(10)),
            Err(OpenApiError::BadRequestPath(_))
        ));
    }

    #[test]
    fn fetch_reports_connection_refused() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap_or_default();
        // The listener is dropped: nothing listens on that port now.
        let fetched = fetch_openapi(port, "/openapi.json", Duration::from_secs(2));
        assert!(
            matches!(fetched, Err(OpenApiError::Request { .. })),
            "{fetched:?}"
        );
    }
}
