//! The store's error bodies (legacy JSON array, legacy XML, v3 object) and the content
//! negotiation that picks one, so an app's existing error handling keeps working with the
//! errors the proxy makes itself.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

/// The error body shapes the store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `[{"status":N,"message":"..."}]`
    LegacyJson,
    /// `<errors><error><status>N</status><message>...</message></error></errors>`
    LegacyXml,
    /// `{"status":N,"title":"...","type":"...","errors":{}}` on `/v3/` paths.
    V3,
}

impl ErrorShape {
    /// The shape the store would use for this request: v3 on `/v3/` paths, XML when a
    /// legacy app asked for XML (`.xml` suffix or `Accept`), else legacy JSON.
    pub fn for_request(path: &str, accept: Option<&HeaderValue>) -> ErrorShape {
        let v3 = path
            .match_indices("/v3")
            .any(|(at, _)| matches!(path.as_bytes().get(at + 3), None | Some(b'/')));
        if v3 {
            return ErrorShape::V3;
        }
        if wants_xml(path, accept) {
            ErrorShape::LegacyXml
        } else {
            ErrorShape::LegacyJson
        }
    }

    /// Content type and body of an error in this shape.
    pub fn render(self, status: StatusCode, message: &str) -> (HeaderValue, Bytes) {
        let code = status.as_u16();
        match self {
            ErrorShape::LegacyJson => {
                let body = serde_json::json!([{ "status": code, "message": message }]);
                (
                    HeaderValue::from_static("application/json"),
                    Bytes::from(body.to_string()),
                )
            }
            ErrorShape::LegacyXml => {
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<errors><error><status>{code}</status><message>{}</message></error></errors>",
                    quick_xml::escape::escape(message)
                );
                (
                    HeaderValue::from_static("application/xml"),
                    Bytes::from(body),
                )
            }
            ErrorShape::V3 => {
                let body = serde_json::json!({
                    "status": code,
                    "title": message,
                    "type": "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes",
                    "errors": {},
                });
                (
                    HeaderValue::from_static("application/json"),
                    Bytes::from(body.to_string()),
                )
            }
        }
    }
}

/// True when the request asks for XML: a `.xml` suffix on the path, or an `Accept` that names
/// an XML type before (or without) JSON.
pub fn wants_xml(path: &str, accept: Option<&HeaderValue>) -> bool {
    if path.ends_with(".xml") {
        return true;
    }
    if path.ends_with(".json") {
        return false;
    }
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let accept = accept.to_ascii_lowercase();
    match (accept.find("xml"), accept.find("json")) {
        (Some(x), Some(j)) => x < j,
        (Some(_), None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_follows_path_and_accept() {
        let xml = HeaderValue::from_static("application/xml");
        let both = HeaderValue::from_static("application/json, application/xml;q=0.5");
        assert_eq!(
            ErrorShape::for_request("/api/v2/products", None),
            ErrorShape::LegacyJson
        );
        assert_eq!(
            ErrorShape::for_request("/api/v2/products.xml", None),
            ErrorShape::LegacyXml
        );
        assert_eq!(
            ErrorShape::for_request("/api/v2/products", Some(&xml)),
            ErrorShape::LegacyXml
        );
        assert_eq!(
            ErrorShape::for_request("/api/v2/products", Some(&both)),
            ErrorShape::LegacyJson
        );
        assert_eq!(
            ErrorShape::for_request("/api/v2/products.json", Some(&xml)),
            ErrorShape::LegacyJson
        );
        assert_eq!(
            ErrorShape::for_request("/stores/abc/v3/catalog/products", Some(&xml)),
            ErrorShape::V3
        );
    }

    #[test]
    fn bodies_have_the_store_shapes() {
        let (ct, body) = ErrorShape::LegacyJson.render(StatusCode::BAD_GATEWAY, "a \"b\"");
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"status": 502, "message": "a \"b\""}])
        );
        let (ct, body) = ErrorShape::LegacyXml.render(StatusCode::PAYLOAD_TOO_LARGE, "x < y");
        assert_eq!(ct, "application/xml");
        assert!(std::str::from_utf8(&body).unwrap().contains(
            "<errors><error><status>413</status><message>x &lt; y</message></error></errors>"
        ));
        let (_, body) = ErrorShape::V3.render(StatusCode::GATEWAY_TIMEOUT, "slow");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], 504);
        assert_eq!(v["title"], "slow");
    }
}
