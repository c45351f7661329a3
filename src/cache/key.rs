//! Cache keys. Pure.
//!
//! A key is what makes two GETs the same answer: the path (suffix included) and query, the
//! representation (JSON or XML) and whether the app accepts gzip.

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
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                return q > 0.0;
            }
            if coding == "*" {
                star = q > 0.0;
            }
        }
    }
    star
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::test_map as headers;

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
