//! `X-Consul-Results-Filtered-By-ACLs: true` on an answer some of whose results the request's
//! token may not see. As Consul, the header is only set for a request that names a token, so an
//! anonymous caller learns nothing of what it cannot read.
//!
//! The handler's [`super::Access`] records each removal into a flag scoped to the request (a task
//! local, since a request is served within one task); [`mark`] turns it into the header.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    static FILTERED: Arc<AtomicBool>;
}

/// Records that the request being served had results removed by its ACLs.
pub(crate) fn note() {
    // Outside a request (a test, a background duty) there is nothing to mark.
    let _ = FILTERED.try_with(|flag| flag.store(true, Ordering::Relaxed));
}

/// Middleware: serves the request with a fresh flag, and sets the header when it was raised.
pub(crate) async fn mark(request: Request, next: Next) -> Response {
    let flag = Arc::new(AtomicBool::new(false));
    let mut response = FILTERED.scope(Arc::clone(&flag), next.run(request)).await;
    if flag.load(Ordering::Relaxed) {
        response.headers_mut().insert(
            "x-consul-results-filtered-by-acls",
            HeaderValue::from_static("true"),
        );
    }
    response
}
