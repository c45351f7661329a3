//! The store side: the pooled HTTPS client, request and response rewriting, and credential
//! injection. This is the only module that sees the store's credential.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_LOCATION, HOST, LOCATION,
    PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{Body, BoxError, UpstreamBody};
use crate::budget::Slot;
use crate::call::Trip;
use crate::config::{self, AuthMode, UpstreamUrl};
use crate::dialect::{X_AUTH_CLIENT, X_AUTH_TOKEN};
use crate::error::CallError;
use crate::headers::REQUEST_ID;
use crate::telemetry;

/// How long an idle pooled connection to the store is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// The store's credential, ready to put on the wire. Its `Debug` never shows the value.
#[derive(Clone)]
pub enum Credential {
    /// `Authorization: Basic base64(username:api_key)`.
    Basic(HeaderValue),
    /// `X-Auth-Token` plus an optional `X-Auth-Client`.
    Token {
        /// The access token.
        token: HeaderValue,
        /// The app's client id.
        client: Option<HeaderValue>,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic(_) => f.write_str("Credential::Basic(<redacted>)"),
            Credential::Token { .. } => f.write_str("Credential::Token(<redacted>)"),
        }
    }
}

/// The credential settings cannot be put in a header.
#[derive(Debug, thiserror::Error)]
#[error("{0} cannot be sent in an HTTP header")]
pub struct BadCredential(&'static str);

impl Credential {
    /// Builds the credential from a validated `[upstream]` section.
    pub fn from_settings(up: &config::Upstream) -> Result<Credential, BadCredential> {
        let sensitive = |v: HeaderValue| {
            let mut v = v;
            v.set_sensitive(true);
            v
        };
        match up.auth {
            AuthMode::Basic => {
                let raw = format!("{}:{}", up.username, up.api_key.expose());
                let value = HeaderValue::try_from(format!("Basic {}", BASE64.encode(raw)))
                    .map_err(|_| BadCredential("upstream.username"))?;
                Ok(Credential::Basic(sensitive(value)))
            }
            AuthMode::Token => {
                let token = HeaderValue::from_str(up.api_key.expose())
                    .map_err(|_| BadCredential("upstream.api_key"))?;
                let client = if up.client_id.is_empty() {
                    None
                } else {
                    Some(
                        HeaderValue::from_str(&up.client_id)
                            .map_err(|_| BadCredential("upstream.client_id"))?,
                    )
                };
                Ok(Credential::Token {
                    token: sensitive(token),
                    client,
                })
            }
        }
    }

    fn apply(&self, headers: &mut HeaderMap) {
        match self {
            Credential::Basic(value) => {
                headers.insert(AUTHORIZATION, value.clone());
            }
            Credential::Token { token, client } => {
                headers.insert(X_AUTH_TOKEN, token.clone());
                if let Some(client) = client {
                    headers.insert(X_AUTH_CLIENT, client.clone());
                }
            }
        }
    }
}

/// A connector whose every connection (TCP and, for https, TLS) must be made within a time.
#[derive(Debug, Clone)]
pub struct Bounded<C> {
    inner: C,
    timeout: Duration,
}

/// No connection to the store could be made within `upstream.connect_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("no connection (TCP and TLS) within {}", humantime::format_duration(*.0))]
pub struct ConnectTimeout(pub Duration);

impl<C> tower_service::Service<Uri> for Bounded<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(ConnectTimeout(timeout).into()),
            }
        })
    }
}

/// The store: where calls go, with what credential, through which client.
#[derive(Debug)]
pub struct Upstream {
    client: Client<Bounded<HttpsConnector<HttpConnector>>, Body>,
    url: UpstreamUrl,
    /// Replaced whole by a reload (key rotation).
    credential: RwLock<Arc<Credential>>,
    timeout: Duration,
    connect_timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
}

/// The upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The trust roots could not be loaded.
    #[error("upstream.ca_file: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The credential is not a valid header value.
    #[error(transparent)]
    Credential(#[from] BadCredential),
}

impl Upstream {
    /// Builds the pooled client (HTTP/1.1 and h2 by ALPN over rustls) for a validated
    /// `[upstream]` section.
    pub fn new(up: &config::Upstream) -> Result<Upstream, UpstreamError> {
        let tls = Arc::new(crate::tls::client_config(up.ca_file.as_deref())?);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(up.connect_timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let connector = Bounded {
            inner: connector,
            timeout: up.connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Upstream {
            client,
            url: up.url().clone(),
            credential: RwLock::new(Arc::new(Credential::from_settings(up)?)),
            timeout: up.timeout,
            connect_timeout: up.connect_timeout,
            tls,
        })
    }

    /// The store's URL, for display.
    pub fn url_string(&self) -> String {
        self.url.to_string()
    }

    /// Takes the credential of a reloaded configuration (a rotated key) for the calls that
    /// follow.
    pub fn set_credential(&self, up: &config::Upstream) -> Result<(), UpstreamError> {
        let credential = Arc::new(Credential::from_settings(up)?);
        *self
            .credential
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = credential;
        Ok(())
    }

    /// True when a TCP (and, for https, TLS) connection to the store can be made within the
    /// connect timeout. Sends no request, so it spends no budget.
    pub async fn probe(&self) -> bool {
        let host = self
            .url
            .authority()
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let https = *self.url.scheme() == http::uri::Scheme::HTTPS;
        let port = self
            .url
            .authority()
            .port_u16()
            .unwrap_or(if https { 443 } else { 80 });
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .ok()?;
            if https {
                let name = rustls_pki_types::ServerName::try_from(host.clone()).ok()?;
                tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name, tcp)
                    .await
                    .ok()?;
            }
            Some(())
        };
        matches!(
            tokio::time::timeout(self.connect_timeout, attempt).await,
            Ok(Some(()))
        )
    }

    /// Sends a call to the store and returns its response head; the body streams after.
    /// `slot` is the call's budget slot, held until the body is read; it is marked sent unless
    /// no connection could be made (then the call certainly never left, and its budget is
    /// given back). An answer whose framing breaks the protocol is a 502.
    pub async fn send(
        &self,
        req: Request<Body>,
        request_id: &HeaderValue,
        mut slot: Option<Slot>,
        trip: &mut Trip,
    ) -> Result<Response<UpstreamBody>, CallError> {
        let (mut parts, body) = req.into_parts();
        let credential = self
            .credential
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        rewrite_request(&mut parts, &self.url, &credential, request_id)?;
        let req = Request::from_parts(parts, body);

        let sent = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.client.request(req)).await;
        trip.upstream_ms = Some(telemetry::ms(sent.elapsed()));
        let never_left = matches!(&result, Ok(Err(e)) if e.is_connect());
        if let Some(slot) = slot.as_mut().filter(|_| !never_left) {
            slot.mark_sent();
        }
        let response = match result {
            Err(_) => return Err(CallError::Timeout(self.timeout)),
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(response)) => response,
        };

        let (mut parts, body) = response.into_parts();
        trip.upstream_status = Some(parts.status.as_u16());
        if let Some(violation) = framing_violation(&parts.headers) {
            return Err(CallError::BadGateway(format!(
                "the store's answer broke the HTTP protocol: {violation}"
            )));
        }
        strip_hop_by_hop(&mut parts.headers);
        // The store's own id reaches the app as `x-upstream-request-id` (set by the
        // pipeline's `finish` from the trip); its `x-request-id` is the app's.
        trip.upstream_id = parts.headers.remove(&REQUEST_ID);
        if parts.status.is_redirection() {
            tracing::warn!(
                request_id = %String::from_utf8_lossy(request_id.as_bytes()),
                status = parts.status.as_u16(),
                location = parts.headers.get(LOCATION).and_then(|v| v.to_str().ok()),
                hint = "the store redirected; is upstream.url the store's current address?",
                "upstream.redirect"
            );
        }
        let body = UpstreamBody::new(body, self.timeout, slot);
        Ok(Response::from_parts(parts, body))
    }

    /// Points `Location` and `Content-Location` at the store back at the address the app
    /// called.
    pub fn rewrite_locations(&self, headers: &mut HeaderMap, app_origin: Option<&str>) {
        rewrite_locations(headers, &self.url, app_origin);
    }
}

/// Why an answer's framing cannot be trusted: both `Content-Length` and `Transfer-Encoding`,
/// or more than one length (RFC 9112 §6.3 calls both an error in a proxy's upstream answer).
fn framing_violation(headers: &HeaderMap) -> Option<&'static str> {
    let lengths = headers.get_all(CONTENT_LENGTH).iter().count();
    let chunked = headers.contains_key(TRANSFER_ENCODING);
    if lengths > 0 && chunked {
        Some("both Content-Length and Transfer-Encoding")
    } else if lengths > 1 {
        Some("more than one Content-Length")
    } else {
        None
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    UPGRADE,
];

/// Removes hop-by-hop headers, including every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(TRANSFER_ENCODING);
}

/// Turns an app's request head into the store's: absolute URI at the store (the app's path and
/// query appended to the configured prefix), hop-by-hop headers, `Host` and the app's
/// credentials removed, the request id and the store's credential set.
pub fn rewrite_request(
    parts: &mut http::request::Parts,
    url: &UpstreamUrl,
    credential: &Credential,
    request_id: &HeaderValue,
) -> Result<(), CallError> {
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let path_and_query = if url.prefix().is_empty() {
        path_and_query.to_string()
    } else {
        format!("{}{}", url.prefix(), path_and_query)
    };
    parts.uri = Uri::builder()
        .scheme(url.scheme().clone())
        .authority(url.authority().clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| CallError::BadRequest(format!("cannot build the store's URL: {e}")))?;
    // The client picks HTTP/1.1 or h2 by ALPN; an h2 request version would force h2.
    parts.version = Version::HTTP_11;

    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    headers.remove(HOST);
    headers.remove(AUTHORIZATION);
    headers.remove(X_AUTH_TOKEN);
    headers.remove(X_AUTH_CLIENT);
    headers.insert(REQUEST_ID, request_id.clone());
    credential.apply(headers);
    Ok(())
}

/// Cleans the store's response head for the app: hop-by-hop headers removed, `Location` and
/// `Content-Location` at the store rewritten to the address the app called.
pub fn rewrite_response(headers: &mut HeaderMap, url: &UpstreamUrl, app_origin: Option<&str>) {
    strip_hop_by_hop(headers);
    rewrite_locations(headers, url, app_origin);
}

fn rewrite_locations(headers: &mut HeaderMap, url: &UpstreamUrl, app_origin: Option<&str>) {
    for name in [LOCATION, CONTENT_LOCATION] {
        let rewritten = headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| rewrite_location(v, url, app_origin));
        if let Some(value) = rewritten.and_then(|v| HeaderValue::try_from(v).ok()) {
            headers.insert(name, value);
        }
    }
}

/// Maps a URL at the store (absolute, or a path under the prefix) to the same resource behind
/// the proxy. Anything pointing elsewhere is left alone.
pub fn rewrite_location(
    value: &str,
    url: &UpstreamUrl,
    app_origin: Option<&str>,
) -> Option<String> {
    let origin = url.origin();
    let at_store = value
        .get(..origin.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(&origin));
    let path = if at_store {
        let rest = value.get(origin.len()..).unwrap_or("");
        if !(rest.is_empty() || rest.starts_with(['/', '?'])) {
            return None; // a longer host name, e.g. store.example.com.evil
        }
        rest
    } else if value.starts_with('/') && !url.prefix().is_empty() {
        value
    } else {
        return None;
    };
    let under_prefix = path.strip_prefix(url.prefix())?;
    if !(under_prefix.is_empty() || under_prefix.starts_with(['/', '?'])) {
        return None;
    }
    let under_prefix = if under_prefix.starts_with('/') {
        under_prefix.to_string()
    } else {
        format!("/{under_prefix}")
    };
    if path.len() == value.len() {
        // A path relative to the store: keep it relative to the proxy.
        return Some(under_prefix);
    }
    Some(format!("{}{under_prefix}", app_origin?))
}

/// Turns a client error into what the app is told: TLS failure, unreachable, or a broken
/// exchange, with the root cause.
fn classify(err: &hyper_util::client::legacy::Error) -> CallError {
    let mut causes: Vec<String> = Vec::new();
    let mut tls = None;
    if let Some(source) = std::error::Error::source(err) {
        walk_causes(source, &mut |e| {
            if let Some(r) = e.downcast_ref::<rustls::Error>() {
                tls.get_or_insert_with(|| crate::tls::explain(r));
            }
            let text = e.to_string();
            if causes.last() != Some(&text) {
                causes.push(text);
            }
        });
    }
    let cause = if causes.is_empty() {
        err.to_string()
    } else {
        causes.join(": ")
    };
    if let Some(tls) = tls {
        CallError::Tls(tls)
    } else if err.is_connect() {
        CallError::Unreachable(cause)
    } else {
        CallError::BadGateway(cause)
    }
}

/// Visits an error and its causes, looking inside `io::Error`s (whose `source` skips the error
/// they wrap).
fn walk_causes(
    e: &(dyn std::error::Error + 'static),
    visit: &mut impl FnMut(&(dyn std::error::Error + 'static)),
) {
    visit(e);
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        walk_causes(inner, visit);
    } else if let Some(source) = e.source() {
        walk_causes(source, visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> UpstreamUrl {
        UpstreamUrl::parse(s).unwrap()
    }

    fn basic() -> Credential {
        Credential::Basic(HeaderValue::from_static("Basic c3RvcmU6a2V5"))
    }

    #[test]
    fn request_goes_to_the_store_with_its_credential_only() {
        let req = Request::post("http://evil.example/api/v2/products?limit=5")
            .header("host", "evil.example")
            .header("authorization", "Basic YXBwOmFwcA==")
            .header("x-auth-token", "app-token")
            .header("x-auth-client", "app-client")
            .header("connection", "keep-alive, x-private")
            .header("x-private", "1")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let (mut parts, ()) = req.into_parts();
        let id = HeaderValue::from_static("rid-1");
        rewrite_request(
            &mut parts,
            &url("https://store-x.mybigcommerce.com"),
            &basic(),
            &id,
        )
        .unwrap();
        assert_eq!(
            parts.uri,
            "https://store-x.mybigcommerce.com/api/v2/products?limit=5"
        );
        let h = &parts.headers;
        assert_eq!(h["authorization"], "Basic c3RvcmU6a2V5");
        assert_eq!(h.get_all("authorization").iter().count(), 1);
        for gone in [
            "host",
            "x-auth-token",
            "x-auth-client",
            "connection",
            "x-private",
            "keep-alive",
            "te",
        ] {
            assert!(h.get(gone).is_none(), "{gone} should be removed");
        }
        assert_eq!(h["x-request-id"], "rid-1");
        assert_eq!(h["content-type"], "application/json");
    }

    #[test]
    fn token_credential_replaces_the_apps() {
        let cred = Credential::Token {
            token: HeaderValue::from_static("store-token"),
            client: Some(HeaderValue::from_static("store-client")),
        };
        let (mut parts, ()) = Request::get("/v3/catalog/products")
            .header("x-auth-token", "app-token")
            .body(())
            .unwrap()
            .into_parts();
        let id = HeaderValue::from_static("r");
        rewrite_request(
            &mut parts,
            &url("https://api.bigcommerce.com/stores/abc"),
            &cred,
            &id,
        )
        .unwrap();
        assert_eq!(
            parts.uri,
            "https://api.bigcommerce.com/stores/abc/v3/catalog/products"
        );
        assert_eq!(parts.headers["x-auth-token"], "store-token");
        assert_eq!(parts.headers["x-auth-client"], "store-client");
        assert!(parts.headers.get("authorization").is_none());
    }

    #[test]
    fn locations_at_the_store_point_back_at_the_proxy() {
        let plain = url("https://store-x.mybigcommerce.com");
        let app = Some("http://127.0.0.1:8080");
        assert_eq!(
            rewrite_location(
                "https://store-x.mybigcommerce.com/api/v2/products/5",
                &plain,
                app
            )
            .as_deref(),
            Some("http://127.0.0.1:8080/api/v2/products/5")
        );
        assert_eq!(
            rewrite_location("https://other.example/x", &plain, app),
            None
        );
        assert_eq!(
            rewrite_location("https://store-x.mybigcommerce.com.evil/x", &plain, app),
            None
        );
        assert_eq!(rewrite_location("/api/v2/products/5", &plain, app), None);
        let prefixed = url("https://api.bigcommerce.com/stores/abc");
        assert_eq!(
            rewrite_location(
                "https://api.bigcommerce.com/stores/abc/v3/catalog/products/9",
                &prefixed,
                app
            )
            .as_deref(),
            Some("http://127.0.0.1:8080/v3/catalog/products/9")
        );
        assert_eq!(
            rewrite_location(
                "https://api.bigcommerce.com/stores/other/v3",
                &prefixed,
                app
            ),
            None
        );
        assert_eq!(
            rewrite_location("https://api.bigcommerce.com/stores/abcd/v3", &prefixed, app),
            None
        );
        assert_eq!(
            rewrite_location("/stores/abc/v3/x", &prefixed, app).as_deref(),
            Some("/v3/x")
        );
        // Found by fuzzing: a multi-byte character where the origin would end.
        assert_eq!(
            rewrite_location("https://api.bigcommerce.coӎ/x", &prefixed, app),
            None
        );
    }

    #[test]
    fn credential_debug_is_redacted() {
        assert!(!format!("{:?}", basic()).contains("c3RvcmU6a2V5"));
    }
}
