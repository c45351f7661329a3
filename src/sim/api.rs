//! The simulated store's REST resources: routing a path to a collection, a record, a count or
//! the time, and answering each method the way the store does (list pages of at most 250, an
//! empty page as `204`, `201` with `Location`, `200` on update, `204` on delete, `501` for
//! PATCH), in JSON or XML.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, LAST_MODIFIED, LOCATION};
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{Value, json};

use super::format::{self, Format, parse_xml, singular};
use super::store::{CollectionPath, Invalid, Record, Store};

/// Largest page a list call may ask for; more gives `413`.
pub const MAX_LIMIT: u64 = 250;
/// Page size when a list call names none.
pub const DEFAULT_LIMIT: u64 = 50;

/// What a resource call asks for, already split from the base path.
#[derive(Debug)]
pub struct ApiCall<'a> {
    /// Request method.
    pub method: &'a Method,
    /// The path below the API base (`products/5.json`).
    pub resource: &'a str,
    /// The query string.
    pub query: Option<&'a str>,
    /// The representation asked for by `Accept` (a suffix overrides it).
    pub accept_xml: bool,
    /// True when the body is XML (`Content-Type`).
    pub body_is_xml: bool,
    /// The request body.
    pub body: &'a [u8],
    /// `scheme://host` plus the API base path, for `Location`.
    pub base_url: &'a str,
}

/// The error shape of the API answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `[{"status":N,"message":"..."}]` (legacy API and OAuth `/v2/`).
    Legacy,
    /// `{"status":N,"title":"...","type":"...","errors":{}}` (OAuth `/v3/`).
    V3,
}

/// An error answer in the store's shape.
pub fn error(
    shape: Shape,
    format: Format,
    status: StatusCode,
    message: &str,
    details: Option<Value>,
) -> Response<Bytes> {
    let code = status.as_u16();
    let (format, body) = match shape {
        Shape::V3 => {
            let errors = details.unwrap_or_else(|| json!({}));
            let body = json!({
                "status": code,
                "title": message,
                "type": "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes",
                "errors": errors,
            });
            (Format::Json, format::render(Format::Json, "error", &body))
        }
        Shape::Legacy => {
            let mut error = json!({ "status": code, "message": message });
            if let Some(details) = details {
                error["details"] = details;
            }
            let body = match format {
                Format::Json => format::render(Format::Json, "errors", &json!([error])),
                Format::Xml => format::render(Format::Xml, "errors", &json!([error])),
            };
            (format, body)
        }
    };
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}

enum Resource {
    Time,
    Collection(CollectionPath),
    Count(CollectionPath),
    Item(CollectionPath, u64),
}

fn route(segments: &[&str]) -> Option<Resource> {
    let id = |s: &str| s.parse::<u64>().ok().filter(|n| *n > 0);
    Some(match segments {
        ["time"] => Resource::Time,
        [c] => Resource::Collection(CollectionPath::top(c)?),
        [c, "count"] => Resource::Count(CollectionPath::top(c)?),
        [c, n] => Resource::Item(CollectionPath::top(c)?, id(n)?),
        [c, n, s] => Resource::Collection(CollectionPath::sub(c, id(n)?, s)?),
        [c, n, s, "count"] => Resource::Count(CollectionPath::sub(c, id(n)?, s)?),
        [c, n, s, m] => Resource::Item(CollectionPath::sub(c, id(n)?, s)?, id(m)?),
        _ => return None,
    })
}

/// Answers one resource call.
pub fn answer(
    store: &mut Store,
    shape: Shape,
    call: &ApiCall<'_>,
    now: SystemTime,
) -> Response<Bytes> {
    let (resource, format) = if let Some(r) = call.resource.strip_suffix(".json") {
        (r, Format::Json)
    } else if let Some(r) = call.resource.strip_suffix(".xml") {
        (r, Format::Xml)
    } else {
        (
            call.resource,
            if call.accept_xml {
                Format::Xml
            } else {
                Format::Json
            },
        )
    };
    // v3 answers JSON only.
    let format = if shape == Shape::V3 {
        Format::Json
    } else {
        format
    };
    let segments: Vec<&str> = resource.trim_end_matches('/').split('/').collect();
    let not_found = || {
        error(
            shape,
            format,
            StatusCode::NOT_FOUND,
            "The requested resource was not found.",
            None,
        )
    };
    let Some(resource) = route(&segments) else {
        return not_found();
    };
    if call.method == Method::PATCH {
        return error(
            shape,
            format,
            StatusCode::NOT_IMPLEMENTED,
            "The requested method is not implemented.",
            None,
        );
    }
    let read = call.method == Method::GET || call.method == Method::HEAD;
    match resource {
        Resource::Time if read => {
            let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            ok(format, StatusCode::OK, "response", &json!({ "time": secs }))
        }
        Resource::Time => not_allowed(shape, format, "GET, HEAD"),
        Resource::Count(path) if read => {
            if !store.exists(&path) {
                return not_found();
            }
            ok(
                format,
                StatusCode::OK,
                "response",
                &json!({ "count": store.count(&path) }),
            )
        }
        Resource::Count(_) => not_allowed(shape, format, "GET, HEAD"),
        Resource::Collection(path) => {
            if !store.exists(&path) {
                return not_found();
            }
            if read {
                list(store, shape, format, &path, call.query)
            } else if call.method == Method::POST {
                let fields = match fields(call) {
                    Ok(f) => f,
                    Err(why) => return unparsable(shape, format, why),
                };
                match store.create(&path, fields, now) {
                    Ok(record) => {
                        let id = record.get("id").and_then(Value::as_u64).unwrap_or(0);
                        let mut response = ok(
                            format,
                            StatusCode::CREATED,
                            singular(path.name()),
                            &Value::Object(record),
                        );
                        let location = format!("{}/{}/{id}", call.base_url, path.as_str());
                        if let Ok(value) = HeaderValue::try_from(location) {
                            response.headers_mut().insert(LOCATION, value);
                        }
                        response
                    }
                    Err(invalid) => refused(shape, format, invalid),
                }
            } else {
                not_allowed(shape, format, "GET, HEAD, POST")
            }
        }
        Resource::Item(path, id) => {
            if read {
                let Some(record) = store.get(&path, id) else {
                    return not_found();
                };
                let mut response = ok(
                    format,
                    StatusCode::OK,
                    singular(path.name()),
                    &Value::Object(record.clone()),
                );
                let modified = record
                    .get("date_modified")
                    .and_then(Value::as_str)
                    .map(|d| d.replace(" +0000", " GMT"));
                if let Some(value) = modified.and_then(|d| HeaderValue::try_from(d).ok()) {
                    response.headers_mut().insert(LAST_MODIFIED, value);
                }
                response
            } else if call.method == Method::PUT {
                let fields = match fields(call) {
                    Ok(f) => f,
                    Err(why) => return unparsable(shape, format, why),
                };
                match store.update(&path, id, fields, now) {
                    Ok(Some(record)) => ok(
                        format,
                        StatusCode::OK,
                        singular(path.name()),
                        &Value::Object(record),
                    ),
                    Ok(None) => not_found(),
                    Err(invalid) => refused(shape, format, invalid),
                }
            } else if call.method == Method::DELETE {
                if store.delete(&path, id) {
                    empty(StatusCode::NO_CONTENT)
                } else {
                    not_found()
                }
            } else {
                not_allowed(shape, format, "GET, HEAD, PUT, DELETE")
            }
        }
    }
}

fn list(
    store: &Store,
    shape: Shape,
    format: Format,
    path: &CollectionPath,
    query: Option<&str>,
) -> Response<Bytes> {
    let mut page = 1;
    let mut limit = DEFAULT_LIMIT;
    for (key, value) in query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
    {
        let parsed = value.parse::<u64>().ok();
        match (key, parsed) {
            ("page", Some(n)) if n >= 1 => page = n,
            ("limit", Some(n)) if n > MAX_LIMIT => {
                return error(
                    shape,
                    format,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("The maximum limit is {MAX_LIMIT}."),
                    Some(json!({ "limit": n })),
                );
            }
            ("limit", Some(n)) if n >= 1 => limit = n,
            ("page" | "limit", _) => {
                return error(
                    shape,
                    format,
                    StatusCode::BAD_REQUEST,
                    &format!("The field '{key}' is invalid."),
                    Some(json!({ "invalid_reason": "must be a positive integer" })),
                );
            }
            _ => {}
        }
    }
    let records = store.list(path, page, limit);
    if records.is_empty() {
        return empty(StatusCode::NO_CONTENT);
    }
    let items = Value::Array(
        records
            .into_iter()
            .map(|r| Value::Object(r.clone()))
            .collect(),
    );
    ok(format, StatusCode::OK, path.name(), &items)
}

/// The fields of a write's body (JSON object or XML), or why it cannot be read.
fn fields(call: &ApiCall<'_>) -> Result<Record, String> {
    if call.body.is_empty() {
        return Err("the request body is empty".into());
    }
    if call.body_is_xml {
        return parse_xml(call.body);
    }
    match serde_json::from_slice::<Value>(call.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("the body is not valid JSON: {e}")),
    }
}

fn unparsable(shape: Shape, format: Format, why: String) -> Response<Bytes> {
    error(
        shape,
        format,
        StatusCode::BAD_REQUEST,
        "The request body could not be parsed.",
        Some(json!({ "invalid_reason": why })),
    )
}

fn refused(shape: Shape, format: Format, invalid: Invalid) -> Response<Bytes> {
    match invalid {
        Invalid::Missing(field) => error(
            shape,
            format,
            StatusCode::BAD_REQUEST,
            &format!("The field '{field}' cannot be blank."),
            Some(json!({ "missing_field": field })),
        ),
        Invalid::Conflict(field, why) => error(
            shape,
            format,
            StatusCode::CONFLICT,
            &format!("The field '{field}' is invalid."),
            Some(json!({ "conflict_reason": why })),
        ),
    }
}

fn not_allowed(shape: Shape, format: Format, allow: &'static str) -> Response<Bytes> {
    let mut response = error(
        shape,
        format,
        StatusCode::METHOD_NOT_ALLOWED,
        "The requested method is not allowed on this resource.",
        None,
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn ok(format: Format, status: StatusCode, root: &str, value: &Value) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(format::render(format, root, value)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}

fn empty(status: StatusCode) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = status;
    response
}
