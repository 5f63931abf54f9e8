//! Requests to the event browser's router, in-process: a page's status, headers and body.

#![allow(dead_code)] // each test target uses part of it

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use tower::ServiceExt;

pub struct Page {
    pub status: StatusCode,
    pub content_type: String,
    pub policy: String,
    pub body: String,
}

/// `method uri` through `router`, from a loopback `Host`.
pub async fn request(router: &Router, method: Method, uri: &str) -> Page {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "127.0.0.1:8080")
        .body(Body::empty())
        .expect("a request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let header_text = |name| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (content_type, policy) = (
        header_text(header::CONTENT_TYPE),
        header_text(header::CONTENT_SECURITY_POLICY),
    );
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    Page {
        status,
        content_type,
        policy,
        body: String::from_utf8(bytes.to_vec()).expect("utf-8"),
    }
}

/// GET `uri`, which must answer 200.
pub async fn get(router: &Router, uri: &str) -> Page {
    let page = request(router, Method::GET, uri).await;
    assert_eq!(page.status, StatusCode::OK, "GET {uri}: {}", page.body);
    page
}
