//! The formatter web service of seed 000 section 9: one operation that collapses every run of
//! white space between words into one space and trims the ends, served as REST and as SOAP 1.1.
//!
//! [`handle`] maps a request to a response without any I/O, so the routing can be read in one
//! place; `main` feeds it from tiny_http's worker threads.

pub mod soap;

/// What `" ".join(text.split())` does in Python: `str.split()` splits on Unicode white space
/// as Python defines it, which is Rust's `char::is_whitespace` plus the four ASCII separators
/// U+001C..U+001F.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(is_python_space).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// A request as the routing needs it.
pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query, as sent.
    pub url: &'a str,
    pub content_type: Option<&'a str>,
    /// The `Host` header, for the address the WSDL advertises.
    pub host: Option<&'a str>,
    pub body: &'a [u8],
}

#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Set on 405 answers.
    pub allow: Option<&'static str>,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            allow: None,
        }
    }

    fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body.into())
    }

    fn json_error(status: u16, message: &str) -> Response {
        Response::new(
            status,
            "application/json",
            serde_json::json!({ "error": message }).to_string(),
        )
    }

    fn method_not_allowed(allow: &'static str) -> Response {
        Response {
            allow: Some(allow),
            ..Response::text(405, format!("method not allowed; use {allow}\n"))
        }
    }
}

/// Routes one request.
pub fn handle(req: &Request) -> Response {
    let (path, query) = req.url.split_once('?').unwrap_or((req.url, ""));
    let media = req
        .content_type
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    match (path, req.method) {
        ("/health", "GET" | "HEAD") => Response::text(200, "ok\n"),
        ("/health", _) => Response::method_not_allowed("GET"),
        ("/normalize", "POST") => rest(&media, req.body),
        ("/normalize", _) => Response::method_not_allowed("POST"),
        ("/", "GET") if query.eq_ignore_ascii_case("wsdl") => {
            let host = req.host.unwrap_or("localhost");
            Response::new(
                200,
                "text/xml; charset=utf-8",
                soap::wsdl(&format!("http://{host}/")),
            )
        }
        ("/", "GET") => Response::text(
            200,
            "formatter: POST /normalize (text or JSON), SOAP at / (WSDL: /?wsdl), GET /health\n",
        ),
        ("/", "POST") => soap::call(req.body),
        ("/", _) => Response::method_not_allowed("GET, POST"),
        _ => Response::text(404, format!("no such resource: {path}\n")),
    }
}

fn rest(media: &str, body: &[u8]) -> Response {
    if body.len() > MAX_BODY {
        return Response::text(413, format!("body over {MAX_BODY} bytes\n"));
    }
    match media {
        "text/plain" | "" => match std::str::from_utf8(body) {
            Ok(text) => Response::text(200, normalize(text)),
            Err(e) => Response::text(400, format!("body is not UTF-8: {e}\n")),
        },
        "application/json" => {
            let value: serde_json::Value = match serde_json::from_slice(body) {
                Ok(value) => value,
                Err(e) => return Response::json_error(400, &format!("malformed JSON: {e}")),
            };
            match value.get("message").and_then(|m| m.as_str()) {
                Some(text) => Response::new(
                    200,
                    "application/json",
                    serde_json::json!({ "message": normalize(text) }).to_string(),
                ),
                None => {
                    Response::json_error(400, "expected an object with a string field \"message\"")
                }
            }
        }
        other => Response::text(
            415,
            format!("unsupported content type {other:?}; use text/plain or application/json\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_pythons_split_and_join() {
        assert_eq!(normalize("  hola   que\ttal\n "), "hola que tal");
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" \u{3000}\u{a0} "), "");
        assert_eq!(normalize("a\u{1f}b\u{2028}c\u{85}d"), "a b c d");
        assert_eq!(normalize("ñandú  über"), "ñandú über");
    }

    fn get(url: &str) -> Response {
        handle(&Request {
            method: "GET",
            url,
            content_type: None,
            host: Some("h:1"),
            body: b"",
        })
    }

    #[test]
    fn routes_and_methods() {
        assert_eq!(get("/health").status, 200);
        assert_eq!(get("/nope").status, 404);
        assert_eq!(get("/normalize").status, 405);
        let wsdl = get("/?wsdl");
        assert_eq!(wsdl.status, 200);
        assert!(String::from_utf8(wsdl.body)
            .unwrap()
            .contains("location=\"http://h:1/\""));
    }
}
