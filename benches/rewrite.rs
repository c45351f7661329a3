//! Micro-benchmark of the per-call header work: turning an app's request head into the store's
//! (URI, hop-by-hop headers, credential injection) and cleaning the store's response head.

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Request, Response};
use std::hint::black_box;

use bcproxy::config::UpstreamUrl;
use bcproxy::upstream::{Credential, rewrite_request, rewrite_response};

fn app_request() -> http::request::Parts {
    Request::put("/api/v2/products/42?include=skus")
        .header("host", "127.0.0.1:8080")
        .header("user-agent", "bigcommerce-api-python/0.23.4")
        .header("accept", "application/json")
        .header("accept-encoding", "gzip, deflate")
        .header("content-type", "application/json")
        .header("content-length", "128")
        .header("authorization", "Basic ZXJwOmVycC10b2tlbg==")
        .header("connection", "keep-alive")
        .header("x-request-id", "app-1234")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn store_response() -> http::response::Parts {
    Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .header("content-length", "512")
        .header(
            "location",
            "https://store-abc123.mybigcommerce.com/api/v2/products/43",
        )
        .header("x-bc-apilimit-remaining", "19876")
        .header("x-request-id", "store-5678")
        .header("connection", "keep-alive")
        .header("date", "Thu, 26 Nov 2026 11:00:00 GMT")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn rewrite(c: &mut Criterion) {
    let url = UpstreamUrl::parse("https://store-abc123.mybigcommerce.com").unwrap();
    let credential = Credential::Basic(HeaderValue::from_static("Basic YWRtaW46c2VjcmV0"));
    let id = HeaderValue::from_static("0123456789abcdef-00000001");
    let request = app_request();
    c.bench_function("rewrite_request", |b| {
        b.iter_batched(
            || request.clone(),
            |mut parts| {
                rewrite_request(&mut parts, black_box(&url), &credential, &id).unwrap();
                parts
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let response = store_response();
    c.bench_function("rewrite_response", |b| {
        b.iter_batched(
            || response.headers.clone(),
            |mut headers| {
                rewrite_response(&mut headers, black_box(&url), Some("http://127.0.0.1:8080"));
                headers
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, rewrite);
criterion_main!(benches);
