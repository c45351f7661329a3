//! The admin listener (`admin.addr`, never the app port): `/healthz`, `/readyz`, `/metrics`,
//! `/status`. Admin calls are not access-logged and spend no budget.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;

use crate::VERSION;
use crate::server::{self, ServeOptions, Stopped};
use crate::status::Status;

/// How recent the store's last answer must be for `/readyz` not to probe it.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// Serves the admin endpoints until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    status: Arc<Status>,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    let options = ServeOptions {
        name: "admin",
        header_timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(1),
        max_connections: 64,
        tls: None,
        refusal: Bytes::new(),
    };
    server::serve(
        listener,
        options,
        move |_conn| {
            let status = status.clone();
            hyper::service::service_fn(move |req| {
                let status = status.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&status, req).await) }
            })
        },
        shutdown,
    )
    .await
}

async fn answer(status: &Status, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            if status.store_reachable(READY_WITHIN).await {
                reply(
                    StatusCode::OK,
                    "application/json",
                    json!({ "ready": true }).to_string(),
                )
            } else {
                let body = json!({ "ready": false, "reason": "the store has not answered in the last minute and cannot be reached" });
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    body.to_string(),
                )
            }
        }
        "/metrics" => reply(
            StatusCode::OK,
            crate::metrics::CONTENT_TYPE,
            status.metrics().render(status.snapshot()),
        ),
        "/status" => reply(
            StatusCode::OK,
            "application/json",
            status_json(status).to_string(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz, /readyz, /metrics or /status\n".into(),
        ),
    }
}

fn status_json(status: &Status) -> serde_json::Value {
    let s = status.snapshot();
    let c = &s.counts;
    json!({
        "version": VERSION,
        "uptime_s": s.uptime.as_secs(),
        "upstream": {
            "url": status.upstream_url(),
            "last_answer_s_ago": status.last_answer_ago().map(|d| d.as_secs()),
        },
        "budget": {
            "dialect": status.dialect().as_str(),
            "remaining": s.budget.remaining,
            "limit": s.budget.limit,
            "window_s": s.budget.window.as_secs(),
            "paused": s.budget.paused,
            "in_flight": s.budget.in_flight,
            "sent": c.sent,
            "store_throttles": c.store_throttles,
            "throttle_answers": c.throttled,
            "upstream_errors": c.upstream_errors,
        },
        "queue": { "depth": s.budget.queued, "waited": c.queued },
        "cache": {
            "enabled": status.cache_enabled(),
            "entries": s.cache_entries,
            "bytes": s.cache_bytes,
            "hits": c.hits,
            "misses": c.misses,
            "stale": c.stale,
            "coalesced": c.coalesced,
            "bypass": c.bypass,
        },
        "clients": status.client_names(),
    })
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
