//! The admin listener (`admin.addr`, never the app port): `GET /` (the status page),
//! `/healthz`, `/readyz`, `/metrics`, `/status`; `POST /cache/purge`; and `POST /webhooks/bigcommerce` unless the
//! webhooks have a listener of their own (`webhooks.addr`, serving only that path). Admin calls
//! are not access-logged and spend no budget.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;

use crate::VERSION;
use crate::server::{self, ServeOptions, Stopped};
use crate::status::Status;
use crate::webhooks::{self, Webhooks};

/// How recent the store's last answer must be for `/readyz` not to probe it.
pub const READY_WITHIN: Duration = Duration::from_secs(60);
/// Where a purge is asked for.
pub const PURGE_PATH: &str = "/cache/purge";
/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;

/// What the admin listener serves.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The proxy's status.
    pub status: Arc<Status>,
    /// The webhook endpoint, when this listener serves it.
    pub webhooks: Option<Arc<Webhooks>>,
}

fn options(name: &'static str) -> ServeOptions {
    ServeOptions {
        name,
        header_timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(1),
        max_connections: 64,
        tls: None,
        refusal: Bytes::new(),
    }
}

/// Serves the admin endpoints until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    admin: Admin,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    server::serve(
        listener,
        options("admin"),
        move |_conn| {
            let admin = admin.clone();
            hyper::service::service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&admin, req).await) }
            })
        },
        shutdown,
    )
    .await
}

/// Serves only the webhook path (`webhooks.addr`), for an ingress to expose without the rest.
pub async fn serve_webhooks(
    listener: TcpListener,
    webhooks: Arc<Webhooks>,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    server::serve(
        listener,
        options("webhooks"),
        move |_conn| {
            let webhooks = webhooks.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let webhooks = webhooks.clone();
                async move {
                    let response = if req.uri().path() != webhooks::PATH {
                        not_found("this listener serves only POST /webhooks/bigcommerce\n")
                    } else if req.method() != Method::POST {
                        not_allowed("POST")
                    } else {
                        deliver(&webhooks, req).await
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            })
        },
        shutdown,
    )
    .await
}

async fn answer(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let status = &admin.status;
    let read = req.method() == Method::GET || req.method() == Method::HEAD;
    match (req.uri().path(), read) {
        ("/", true) => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            crate::page::render(status).await,
        ),
        ("/healthz", true) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        ("/readyz", true) => {
            if let Some(code) = status.credential_refused() {
                let body = json!({ "ready": false, "reason": format!("the store refuses the proxy's credential ({code}): check upstream.api_key (or the token) and its scopes") });
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    body.to_string(),
                )
            } else if status.is_draining() {
                let body = json!({ "ready": false, "reason": "draining: shutting down, finishing the calls in flight" });
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    body.to_string(),
                )
            } else if status.store_reachable(READY_WITHIN).await {
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
        ("/metrics", true) => reply(
            StatusCode::OK,
            crate::metrics::CONTENT_TYPE,
            status.metrics().render(status.settled_snapshot().await),
        ),
        ("/status", true) => reply(
            StatusCode::OK,
            "application/json",
            status_json(status).await.to_string(),
        ),
        ("/" | "/healthz" | "/readyz" | "/metrics" | "/status", false) => not_allowed("GET, HEAD"),
        (PURGE_PATH, _) if req.method() == Method::POST => purge(status, req).await,
        (PURGE_PATH, _) => not_allowed("POST"),
        (webhooks::PATH, _) => match &admin.webhooks {
            Some(webhooks) if req.method() == Method::POST => deliver(webhooks, req).await,
            Some(_) => not_allowed("POST"),
            None => not_found(
                "webhooks are off here: set webhooks.secret_file or webhooks.header (or they have a listener of their own, webhooks.addr)\n",
            ),
        },
        _ => not_found(
            "not found: try GET / (the status page), /healthz, /readyz, /metrics or /status, or POST /cache/purge\n",
        ),
    }
}

async fn deliver(webhooks: &Webhooks, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let (status, answer) = webhooks.deliver(&parts.headers, body).await;
    reply(status, "application/json", answer.to_string())
}

/// Drops what a path names (`?path=` or `{"path": …}`), as a write to it would; a collection
/// whole, `/` everything.
async fn purge(status: &Status, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("path="))
            .map(str::to_string)
    });
    let body = tokio::time::timeout(
        Duration::from_secs(10),
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await;
    let from_body = match body {
        Ok(Ok(collected)) => serde_json::from_slice::<serde_json::Value>(&collected.to_bytes())
            .ok()
            .and_then(|v| v.get("path")?.as_str().map(str::to_string)),
        _ => None,
    };
    let Some(path) = from_query.or(from_body).filter(|p| p.starts_with('/')) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "application/json",
            json!({"error": "name what to purge: ?path=/api/v2/products (a collection), /api/v2/products/5 (a resource), or / (everything)"}).to_string(),
        );
    };
    let dropped = status.purge(&path).await;
    tracing::info!(path = %path, dropped, "cache.purge");
    reply(
        StatusCode::OK,
        "application/json",
        json!({ "path": path, "dropped": dropped }).to_string(),
    )
}

fn not_found(text: &str) -> Response<Full<Bytes>> {
    reply(StatusCode::NOT_FOUND, "text/plain", text.to_string())
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = reply(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain",
        format!("only {allow}\n"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

async fn status_json(status: &Status) -> serde_json::Value {
    let (s, w) = status.window().await;
    let c = &s.counts;
    let by_kind = |errors: &[(crate::error::UpstreamFailure, u64)]| {
        errors
            .iter()
            .map(|(kind, n)| (kind.as_str().to_string(), json!(n)))
            .collect::<serde_json::Map<_, _>>()
    };
    let wc = &w.counts;
    json!({
        "version": VERSION,
        "uptime_s": s.uptime.as_secs(),
        "draining": status.is_draining(),
        "credential_refused": status.credential_refused(),
        "upstream": {
            "url": status.upstream_url(),
            "last_answer_s_ago": status.last_answer_ago().map(|d| d.as_secs()),
            "errors": by_kind(&s.upstream_errors),
        },
        "budget": {
            "dialect": status.dialect().as_str(),
            "remaining": s.budget.remaining,
            "limit": s.budget.limit,
            "window_s": s.budget.window.as_secs(),
            "paused": s.budget.paused,
            "pause_left_ms": s.budget.pause_left.map(|d| d.as_millis() as u64),
            "reported_remaining": s.budget.reported,
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
            "shared": c.shared,
            "bypass": c.bypass,
        },
        "clients": status.client_names(),
        "recent_store_throttles": status.recent_throttles().iter().map(|t| json!({
            "at": humantime::format_rfc3339_millis(t.at).to_string(),
            "status": t.status,
            "pause_ms": t.pause.map(|d| d.as_millis() as u64),
            "reason": t.reason,
        })).collect::<Vec<_>>(),
        "window": {
            "span_s": w.span.as_secs(),
            "calls": wc.calls,
            "sent": wc.sent,
            "queued": wc.queued,
            "store_throttles": wc.store_throttles,
            "throttle_answers": wc.throttled,
            "cache": {
                "hits": wc.hits,
                "misses": wc.misses,
                "stale": wc.stale,
                "coalesced": wc.coalesced,
                "shared": wc.shared,
                "bypass": wc.bypass,
            },
            "clients": w.clients.iter().map(|c| json!({
                "client": c.client.as_deref(),
                "calls": c.calls,
                "throttle_answers": c.throttled,
            })).collect::<Vec<_>>(),
            "queue_wait_ms": { "p50": w.wait_ms.0, "p99": w.wait_ms.1 },
            "upstream_ms": { "p50": w.upstream_ms.0, "p99": w.upstream_ms.1 },
            "upstream_errors": by_kind(&w.errors),
            "series": w.series.iter().map(|p| json!({
                "ago_ms": p.ago.as_millis() as u64,
                "sent": p.sent,
                "remaining": p.remaining,
                "reported": p.reported,
            })).collect::<Vec<_>>(),
        },
        "cluster": s.cluster.as_ref().map(|cl| json!({
            "name": cl.name,
            "instance": cl.instance,
            "mode": cl.mode,
            "reason": cl.reason,
            "instances": cl.instances.iter().map(|(name, ago)| json!({
                "instance": name,
                "seen_ms_ago": ago.as_millis() as u64,
            })).collect::<Vec<_>>(),
            "sharing": cl.sharing,
            "recovering": cl.recovering,
            "shared_cache": cl.shared_cache,
            "budget": {
                "remaining": s.budget.remaining,
                "limit": s.budget.limit,
                "window_s": s.budget.window.as_secs(),
                "paused": s.budget.paused,
                "view": if cl.mode == "connected" { "cluster" } else { "this process alone" },
            },
            "shared_hits": cl.counts.shared_hits,
            "invalidations_sent": cl.counts.invalidations_sent,
            "invalidations_received": cl.counts.invalidations_received,
            "redis_errors": cl.counts.errors,
            "times_degraded": cl.counts.degraded,
        })),
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
