//! The OAuth gateway's v3 resources (`/stores/{hash}/v3/...`): the same data as the legacy
//! API, in v3's shapes: `{"data": ..., "meta": ...}`, 200 on create, `422` for invalid input,
//! and the v3 error object.

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{Value, json};

use super::api::{self, ApiCall, DEFAULT_LIMIT, MAX_LIMIT, Shape};
use super::format::Format;
use super::store::{CollectionPath, Invalid, Store};

/// Maps a v3 resource path to the store's collection (and record id).
fn route(resource: &str) -> Option<(CollectionPath, Option<u64>)> {
    let segments: Vec<&str> = resource.trim_end_matches('/').split('/').collect();
    let id = |s: &str| s.parse::<u64>().ok().filter(|n| *n > 0);
    let top = |name: &str| CollectionPath::top(name);
    Some(match segments.as_slice() {
        ["catalog", c @ ("products" | "categories" | "brands")] => (top(c)?, None),
        ["catalog", c @ ("products" | "categories" | "brands"), n] => (top(c)?, Some(id(n)?)),
        ["customers"] => (top("customers")?, None),
        ["customers", n] => (top("customers")?, Some(id(n)?)),
        ["catalog", "products", n, sub @ ("variants" | "images")] => (
            CollectionPath::sub("products", id(n)?, sub_name(sub))?,
            None,
        ),
        ["catalog", "products", n, sub @ ("variants" | "images"), m] => (
            CollectionPath::sub("products", id(n)?, sub_name(sub))?,
            Some(id(m)?),
        ),
        _ => return None,
    })
}

fn sub_name(v3: &str) -> &'static str {
    if v3 == "variants" { "skus" } else { "images" }
}

fn error(status: StatusCode, title: &str, errors: Option<Value>) -> Response<Bytes> {
    api::error(Shape::V3, Format::Json, status, title, errors)
}

fn data(status: StatusCode, value: Value) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Answers one v3 call.
pub fn answer(store: &mut Store, call: &ApiCall<'_>, now: SystemTime) -> Response<Bytes> {
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            "The requested resource was not found.",
            None,
        )
    };
    let Some((path, id)) = route(call.resource) else {
        return not_found();
    };
    if !store.exists(&path) {
        return not_found();
    }
    let read = call.method == Method::GET || call.method == Method::HEAD;
    match id {
        None if read => list(store, &path, call.query),
        None if call.method == Method::POST => match body(call) {
            Ok(fields) => match store.create(&path, fields, now) {
                Ok(record) => data(StatusCode::OK, json!({ "data": record, "meta": {} })),
                Err(invalid) => refused(invalid),
            },
            Err(why) => unparsable(why),
        },
        None => not_allowed("GET, HEAD, POST"),
        Some(id) if read => match store.get(&path, id) {
            Some(record) => data(StatusCode::OK, json!({ "data": record, "meta": {} })),
            None => not_found(),
        },
        Some(id) if call.method == Method::PUT => match body(call) {
            Ok(fields) => match store.update(&path, id, fields, now) {
                Ok(Some(record)) => data(StatusCode::OK, json!({ "data": record, "meta": {} })),
                Ok(None) => not_found(),
                Err(invalid) => refused(invalid),
            },
            Err(why) => unparsable(why),
        },
        Some(id) if call.method == Method::DELETE => {
            if store.delete(&path, id) {
                let mut response = Response::new(Bytes::new());
                *response.status_mut() = StatusCode::NO_CONTENT;
                response
            } else {
                not_found()
            }
        }
        Some(_) => not_allowed("GET, HEAD, PUT, DELETE"),
    }
}

fn list(store: &Store, path: &CollectionPath, query: Option<&str>) -> Response<Bytes> {
    let mut page = 1;
    let mut limit = DEFAULT_LIMIT;
    for (key, value) in query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
    {
        let parsed = value.parse::<u64>().ok().filter(|n| *n >= 1);
        match (key, parsed) {
            ("page", Some(n)) => page = n,
            ("limit", Some(n)) if n <= MAX_LIMIT => limit = n,
            ("page" | "limit", _) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The query parameters are invalid.",
                    Some(json!({ key: format!("must be an integer from 1 to {MAX_LIMIT}") })),
                );
            }
            _ => {}
        }
    }
    let total = store.count(path) as u64;
    let records: Vec<Value> = store
        .list(path, page, limit)
        .into_iter()
        .map(|r| Value::Object(r.clone()))
        .collect();
    let meta = json!({ "pagination": {
        "total": total,
        "count": records.len(),
        "per_page": limit,
        "current_page": page,
        "total_pages": total.div_ceil(limit),
        "links": {},
    }});
    data(StatusCode::OK, json!({ "data": records, "meta": meta }))
}

fn body(call: &ApiCall<'_>) -> Result<super::store::Record, String> {
    match serde_json::from_slice::<Value>(call.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("the body is not valid JSON: {e}")),
    }
}

fn unparsable(why: String) -> Response<Bytes> {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "JSON data is missing or invalid",
        Some(json!({ "body": why })),
    )
}

fn refused(invalid: Invalid) -> Response<Bytes> {
    match invalid {
        Invalid::Missing(field) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "JSON data is missing or invalid",
            Some(json!({ field: format!("{field} is required") })),
        ),
        Invalid::Conflict(field, why) => error(
            StatusCode::CONFLICT,
            &format!("The {field} is already in use."),
            Some(json!({ field: why })),
        ),
    }
}

fn not_allowed(allow: &'static str) -> Response<Bytes> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "The requested method is not allowed on this resource.",
        None,
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}
