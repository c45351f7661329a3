//! Cache keys and resource families. Pure.
//!
//! A key is what makes two GETs the same answer: the path (suffix included) and query, the
//! representation (JSON or XML) and whether the app accepts gzip. A family is what a write
//! changes: everything under the collection written to, lists, counts and sub-resources
//! included (`/api/v2/products/5/skus/3` belongs to `/api/v2/products`).

use http::header::{ACCEPT, ACCEPT_ENCODING};
use http::{HeaderMap, Uri};

use crate::dialect::wants_xml;

/// What makes two GETs the same cached answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Path and query, as the app sent them.
    pub target: String,
    /// The app asked for XML (`Accept` or `.xml`).
    pub xml: bool,
    /// The app accepts a gzip body.
    pub gzip: bool,
}

impl Key {
    /// The key of a request.
    pub fn of(uri: &Uri, headers: &HeaderMap) -> Key {
        Key {
            target: uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_string(),
            xml: wants_xml(uri.path(), headers.get(ACCEPT)),
            gzip: accepts_gzip(headers),
        }
    }

    /// The key's path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// True when `Accept-Encoding` allows gzip (named, or `*`, with a non-zero q).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut star = false;
    for value in headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match coding.as_str() {
                "gzip" | "x-gzip" => return q > 0.0,
                "*" => star = q > 0.0,
                _ => {}
            }
        }
    }
    star
}

/// The resource family of a path: the path up to the collection after the API version
/// (`/api/v2/products`, `/stores/abc/v3/catalog/products`), suffix removed. Paths without a
/// version segment use their first segment.
pub fn family(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let keep = match segments.iter().position(|s| *s == "v2" || *s == "v3") {
        Some(v) => {
            // v3 groups its collections (`catalog/products`); take the group and the collection.
            let grouped = segments[v] == "v3" && segments.get(v + 1) == Some(&"catalog");
            (v + if grouped { 3 } else { 2 }).min(segments.len())
        }
        None => 1.min(segments.len()),
    };
    let mut family = String::with_capacity(path.len());
    for (i, segment) in segments[..keep].iter().enumerate() {
        family.push('/');
        let last = i + 1 == keep;
        let segment = if last {
            segment
                .strip_suffix(".json")
                .or_else(|| segment.strip_suffix(".xml"))
                .unwrap_or(segment)
        } else {
            segment
        };
        family.push_str(segment);
    }
    family
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::test_map as headers;

    #[test]
    fn families_cover_lists_counts_and_sub_resources() {
        for path in [
            "/api/v2/products",
            "/api/v2/products.json",
            "/api/v2/products/5",
            "/api/v2/products/5.xml",
            "/api/v2/products/count",
            "/api/v2/products/5/skus/3",
        ] {
            assert_eq!(family(path), "/api/v2/products", "{path}");
        }
        assert_eq!(
            family("/stores/abc/v3/catalog/products/5/variants"),
            "/stores/abc/v3/catalog/products"
        );
        assert_eq!(family("/v3/catalog/brands"), "/v3/catalog/brands");
        assert_eq!(
            family("/stores/abc/v3/customers/9"),
            "/stores/abc/v3/customers"
        );
        assert_eq!(
            family("/stores/abc/v2/orders/1/shipments"),
            "/stores/abc/v2/orders"
        );
        assert_eq!(family("/api/v2/orders"), "/api/v2/orders");
        assert_ne!(family("/api/v2/orders"), family("/api/v2/products"));
        assert_eq!(family("/other/thing"), "/other");
    }

    #[test]
    fn keys_keep_representations_and_codings_apart() {
        let uri: Uri = "/api/v2/products?page=2".parse().unwrap();
        let json = Key::of(&uri, &HeaderMap::new());
        let xml = Key::of(&uri, &headers(&[("accept", "application/xml")]));
        let gz = Key::of(&uri, &headers(&[("accept-encoding", "gzip, deflate")]));
        assert_ne!(json, xml);
        assert_ne!(json, gz);
        assert_eq!(json.path(), "/api/v2/products");
        let suffix = Key::of(&"/api/v2/products.xml".parse().unwrap(), &HeaderMap::new());
        assert!(suffix.xml);
    }

    #[test]
    fn gzip_acceptance_follows_q_values() {
        assert!(accepts_gzip(&headers(&[("accept-encoding", "gzip")])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "br;q=1, GZIP;q=0.5"
        )])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "identity")])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "*")])));
        assert!(!accepts_gzip(&headers(&[(
            "accept-encoding",
            "*, gzip;q=0"
        )])));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
