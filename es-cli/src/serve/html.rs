//! HTML by hand: escaping, URLs, the page frame and its security headers.
//!
//! Every value that comes from the store (ids, names, payloads, metadata, errors) is untrusted:
//! it goes through [`escape`] in text and attributes, and through [`encode`] in URLs. The pages
//! also carry a Content-Security-Policy that runs only the scripts the page itself marks with a
//! per-response nonce, so a payload that slipped through unescaped still could not run script.

use std::fmt::Write as _;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use es_core::StreamId;
use serde_json::Value;

/// `text` with the characters that mean something in HTML text or a quoted attribute
/// (`& < > " '`) replaced by their entities.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// `text` percent-encoded as one URL path segment or query value: every byte but the
/// unreserved ones (`A-Z a-z 0-9 - . _ ~`), so a `/`, `?`, `#` or `&` in an id stays inside it.
pub(crate) fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// The page of a stream's events.
pub(crate) fn stream_url(stream: &StreamId) -> String {
    format!(
        "/streams/{}/{}",
        encode(&stream.aggregate_type),
        encode(&stream.aggregate_id)
    )
}

/// The page of a stream's state after `version`.
pub(crate) fn state_url(stream: &StreamId, version: u64) -> String {
    format!("{}/state?version={version}", stream_url(stream))
}

/// A link: `href` and `text` are escaped here.
pub(crate) fn link(href: &str, text: &str) -> String {
    format!("<a href=\"{}\">{}</a>", escape(href), escape(text))
}

/// A link with an element id, for tests and scripts to find it.
pub(crate) fn link_with_id(id: &str, href: &str, text: &str) -> String {
    format!(
        "<a id=\"{}\" href=\"{}\">{}</a>",
        escape(id),
        escape(href),
        escape(text)
    )
}

/// `value` pretty-printed in a `<pre>` of class `class`, escaped.
pub(crate) fn json_block(class: &str, value: &Value) -> String {
    format!(
        "<pre class=\"{}\">{}</pre>",
        escape(class),
        escape(&crate::output::pretty(value))
    )
}

/// A table: `headers` are static text; each cell of `rows` is HTML its caller built (and
/// escaped).
pub(crate) fn table(id: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut html = format!("<table id=\"{}\"><thead><tr>", escape(id));
    for header in headers {
        let _ = write!(html, "<th>{}</th>", escape(header));
    }
    let _ = write!(html, "</tr></thead><tbody id=\"{}-rows\">", escape(id));
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(html, "<td>{cell}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
    html
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; }
nav { background: #23395d; padding: .6em 1.2em; }
nav a { color: #fff; margin-right: 1.4em; text-decoration: none; font-weight: 600; }
main { padding: 1em 1.6em; max-width: 72em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.05em; margin: 0 0 .4em; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #ddd; vertical-align: top; }
th { background: #eef1f5; }
tr.new { background: #fff7d6; }
pre { background: #f3f3f3; padding: .6em; overflow-x: auto; margin: .3em 0; }
.event { background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: .8em; margin: .8em 0; }
.muted { color: #666; font-weight: normal; }
.error { color: #a00; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; margin: .3em 0; font-size: .9em; }
dl.meta dt { color: #666; } dl.meta dd { margin: 0; font-family: monospace; }
.pager a, .steps a { margin-right: 1em; }
form { margin: .6em 0 1em; }
form.search label { margin-right: 1em; }
";

/// A whole page: the navigation bar, `title`, `body` (HTML its caller built and escaped), and
/// `script` (static JavaScript of this crate, never store data) run under the page's nonce.
pub(crate) fn page(status: StatusCode, title: &str, body: &str, script: Option<&str>) -> Response {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let script = script.map_or_else(String::new, |script| {
        format!("<script nonce=\"{nonce}\">{script}</script>")
    });
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · event store</title><style nonce=\"{nonce}\">{STYLE}</style></head>\
         <body><nav><a href=\"/\">Streams</a><a href=\"/log\">Global log</a>\
         <a href=\"/projections\">Projections</a></nav><main>{body}</main>{script}</body></html>\n",
        title = escape(title),
    );
    let policy = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; \
         img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    secure(headers);
    response
}

/// A page that says what went wrong.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<h1>{}</h1><p class=\"error\" id=\"error\">{}</p>",
        escape(title),
        escape(message)
    );
    page(status, title, &body, None)
}

/// `value` as a JSON response.
pub(crate) fn json_response(value: &Value) -> Response {
    let mut response = (StatusCode::OK, value.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    secure(headers);
    response
}

/// Headers every response carries: no MIME sniffing, no framing, no referrer leaving the page.
fn secure(headers: &mut axum::http::HeaderMap) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_quoted_attributes() {
        assert_eq!(
            escape(r#"<script>alert("1" & '2')</script>"#),
            "&lt;script&gt;alert(&quot;1&quot; &amp; &#39;2&#39;)&lt;/script&gt;"
        );
        assert_eq!(escape("plain ticket T-1 é"), "plain ticket T-1 é");
        assert_eq!(escape("&amp;"), "&amp;amp;", "escaping twice shows the entity as text");
        let attribute = format!("<a title=\"{}\">", escape("\" onmouseover=\"alert(1)"));
        assert_eq!(attribute, "<a title=\"&quot; onmouseover=&quot;alert(1)\">");
    }

    #[test]
    fn urls_keep_every_character_inside_its_segment() {
        assert_eq!(encode("T-1_a.b~"), "T-1_a.b~");
        assert_eq!(encode("a/b?c#d&e f"), "a%2Fb%3Fc%23d%26e%20f");
        assert_eq!(encode("é<"), "%C3%A9%3C");
        assert_eq!(
            stream_url(&StreamId::new("ticket", "x/\"y")),
            "/streams/ticket/x%2F%22y"
        );
        assert_eq!(
            state_url(&StreamId::new("ticket", "T-1"), 3),
            "/streams/ticket/T-1/state?version=3"
        );
        assert_eq!(link("/?a=1&b=2", "<b>"), "<a href=\"/?a=1&amp;b=2\">&lt;b&gt;</a>");
    }

    #[test]
    fn a_payload_in_a_block_is_text() {
        let block = json_block("payload", &serde_json::json!({ "title": "<script>alert(1)</script>" }));
        assert!(block.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{block}");
        assert!(!block.contains("<script>"), "{block}");
    }
}
