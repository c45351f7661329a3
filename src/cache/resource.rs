//! What a path names as the store sees it, and what a change to it drops from the cache. Pure.
//!
//! One resource has one name under every path form: `/api/v2/products/5`,
//! `/stores/{hash}/v2/products/5` and `/stores/{hash}/v3/catalog/products/5` (with or without
//! a `.json`/`.xml` suffix or a trailing slash) all name member `5` of collection `products`.
//! A cached answer depends on two [`Tag`]s: its whole collection, and either the collection's
//! listing (list pages and counts) or the member it is of (the member itself and everything
//! under it). A change drops tags ([`Drops`]), decided in one place ([`after_write`],
//! [`Drops::member`], [`Drops::named`]) so that webhooks, purges and other processes of a
//! cluster drop exactly what a write through this one would.

use std::sync::Arc;

use http::Method;

/// A collection's name, the same under every path form (`products`). Paths outside the
/// store's API (`/other/thing`) name the collection `/other`, which no API collection can be.
pub type Collection = Arc<str>;

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Named {
    /// The collection itself: its list pages, whatever the query.
    Collection(Collection),
    /// The collection's count (`/products/count`).
    Count(Collection),
    /// A member (`/products/5`), or something under it (`/products/5/skus/3`: `sub`).
    Member {
        /// Its collection.
        collection: Collection,
        /// Its id.
        id: Arc<str>,
        /// True for a sub-resource of the member.
        sub: bool,
    },
}

/// What a cached answer depends on; dropping a tag drops every answer that depends on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tag {
    /// Everything of a collection: members, sub-resources, lists and counts.
    All(Collection),
    /// A collection's list pages and counts.
    Listing(Collection),
    /// A member and everything under it.
    Member(Collection, Arc<str>),
}

/// What a path names; `None` for a path that names nothing (`/`).
pub fn named(path: &str) -> Option<Named> {
    let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(last) = segments.last_mut() {
        *last = last
            .strip_suffix(".json")
            .or_else(|| last.strip_suffix(".xml"))
            .unwrap_or(last);
        if last.is_empty() {
            segments.pop();
        }
    }
    let (collection, rest): (Collection, &[&str]) =
        match segments.iter().position(|s| *s == "v2" || *s == "v3") {
            Some(v) => {
                // v3 groups some collections (`catalog/products`): the collection is after it.
                let start = if segments[v] == "v3" && segments.get(v + 1) == Some(&"catalog") {
                    v + 2
                } else {
                    v + 1
                };
                let name = segments.get(start)?;
                ((*name).into(), &segments[start + 1..])
            }
            None => {
                let first = segments.first()?;
                (format!("/{first}").into(), &segments[1..])
            }
        };
    Some(match rest {
        [] => Named::Collection(collection),
        ["count"] => Named::Count(collection),
        [id, more @ ..] => Named::Member {
            collection,
            id: (*id).into(),
            sub: !more.is_empty(),
        },
    })
}

impl Named {
    /// The collection named, or the member's.
    pub fn collection(&self) -> &Collection {
        match self {
            Named::Collection(c) | Named::Count(c) | Named::Member { collection: c, .. } => c,
        }
    }

    /// The two tags an answer for this path depends on.
    pub fn tags(&self) -> [Tag; 2] {
        match self {
            Named::Collection(c) | Named::Count(c) => {
                [Tag::All(c.clone()), Tag::Listing(c.clone())]
            }
            Named::Member { collection, id, .. } => [
                Tag::All(collection.clone()),
                Tag::Member(collection.clone(), id.clone()),
            ],
        }
    }
}

/// Couplings between collections: a change in one drops the whole of others (an order changes
/// product inventory). Built-in ones first, then `[[cache.couplings]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Couplings(Vec<(Collection, Vec<Collection>)>);

/// The couplings BigCommerce is known to have: an order placed, edited, refunded or cancelled
/// moves product (and variant) inventory; inventory adjustments (v3 `/inventory`) and the
/// bulk variants endpoint (v3 `/catalog/variants`) change products' sub-resources.
pub const BUILT_IN: [(&str, &[&str]); 3] = [
    ("/api/v2/orders", &["/api/v2/products"]),
    ("/v3/inventory", &["/api/v2/products"]),
    ("/v3/catalog/variants", &["/api/v2/products"]),
];

impl Couplings {
    /// The built-in couplings and `configured` ones (`when` prefix, `drop` prefixes): each
    /// prefix must name a collection; the error names which one does not.
    pub fn new<'a>(
        configured: impl IntoIterator<Item = (&'a str, &'a [String])>,
    ) -> Result<Couplings, String> {
        let collection = |prefix: &str| match named(prefix) {
            Some(Named::Collection(c)) if prefix.starts_with('/') => Ok(c),
            _ => Err(format!(
                "{prefix:?} is not a collection path like \"/api/v2/orders\""
            )),
        };
        let built_in = BUILT_IN.iter().map(|(when, drops)| (*when, drops.to_vec()));
        let configured = configured
            .into_iter()
            .map(|(when, drops)| (when, drops.iter().map(String::as_str).collect()));
        let mut rules = Vec::new();
        for (when, drops) in built_in.chain(configured) {
            let drops = drops
                .into_iter()
                .map(collection)
                .collect::<Result<_, _>>()?;
            rules.push((collection(when)?, drops));
        }
        Ok(Couplings(rules))
    }

    /// The collections a change in `collection` drops besides itself.
    pub fn of<'a>(&'a self, collection: &'a Collection) -> impl Iterator<Item = &'a Collection> {
        self.0
            .iter()
            .filter(move |(when, _)| when == collection)
            .flat_map(|(_, drops)| drops)
    }

    /// Every rule, `when -> drop, …`, for `bcproxy check`.
    pub fn describe(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(when, drops)| format!("{when} -> {}", drops.join(", ")))
            .collect()
    }
}

/// What a change drops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drops {
    /// Every cached answer, whatever it depends on.
    pub everything: bool,
    /// The tags dropped.
    pub tags: Vec<Tag>,
}

impl Drops {
    /// A change to member `id` of `collection` (a write to it or under it, or a webhook about
    /// it): the member with everything under it, the collection's lists and counts, and the
    /// collections coupled to it.
    pub fn member(collection: &Collection, id: &str, couplings: &Couplings) -> Drops {
        let mut drops = Drops::default();
        drops.add(Tag::Member(collection.clone(), id.into()));
        drops.add(Tag::Listing(collection.clone()));
        drops.couple(collection, couplings);
        drops
    }

    /// A change to a whole collection (a bulk write, a purge of it), and its couplings.
    pub fn collection(collection: &Collection, couplings: &Couplings) -> Drops {
        let mut drops = Drops::default();
        drops.add(Tag::All(collection.clone()));
        drops.couple(collection, couplings);
        drops
    }

    /// Everything cached (a purge of `/`, or a cache that may have missed changes).
    pub fn everything() -> Drops {
        Drops {
            everything: true,
            tags: Vec::new(),
        }
    }

    /// What a purge of `path` drops: a collection whole, a member as a write to it would,
    /// a count the collection's listing; `/` everything.
    pub fn named(path: &str, couplings: &Couplings) -> Drops {
        match named(path) {
            None => Drops::everything(),
            Some(Named::Collection(c)) => Drops::collection(&c, couplings),
            Some(Named::Count(c)) => {
                let mut drops = Drops::default();
                drops.add(Tag::Listing(c));
                drops
            }
            Some(Named::Member { collection, id, .. }) => {
                Drops::member(&collection, &id, couplings)
            }
        }
    }

    /// True when nothing is dropped.
    pub fn is_empty(&self) -> bool {
        !self.everything && self.tags.is_empty()
    }

    fn add(&mut self, tag: Tag) {
        if !self.tags.contains(&tag) {
            self.tags.push(tag);
        }
    }

    fn couple(&mut self, collection: &Collection, couplings: &Couplings) {
        for coupled in couplings.of(collection) {
            self.add(Tag::All(coupled.clone()));
        }
    }
}

/// What a write (any method but GET and HEAD) to `path` drops, when it succeeded or its
/// outcome is unknown: a POST to a collection its lists and counts; another write to a
/// collection (a bulk `PUT`, a `DELETE` of many) all of it; a write to a member, or under it,
/// the member with everything under it and the collection's lists and counts; and, for each,
/// the collections coupled to it.
pub fn after_write(method: &Method, path: &str, couplings: &Couplings) -> Drops {
    match named(path) {
        None => Drops::default(),
        Some(Named::Collection(c)) if method == Method::POST => {
            let mut drops = Drops::default();
            drops.add(Tag::Listing(c.clone()));
            drops.couple(&c, couplings);
            drops
        }
        Some(Named::Collection(c)) => Drops::collection(&c, couplings),
        Some(Named::Count(c)) => {
            let mut drops = Drops::default();
            drops.add(Tag::Listing(c.clone()));
            drops.couple(&c, couplings);
            drops
        }
        Some(Named::Member { collection, id, .. }) => Drops::member(&collection, &id, couplings),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(c: &str, id: &str, sub: bool) -> Option<Named> {
        Some(Named::Member {
            collection: c.into(),
            id: id.into(),
            sub,
        })
    }

    #[test]
    fn one_resource_under_every_path_form() {
        for path in [
            "/api/v2/products/5",
            "/api/v2/products/5.json",
            "/api/v2/products/5.xml",
            "/api/v2/products/5/",
            "/stores/abc/v2/products/5",
            "/stores/abc/v3/catalog/products/5",
            "/v3/catalog/products/5",
        ] {
            assert_eq!(named(path), member("products", "5", false), "{path}");
        }
        assert_eq!(
            named("/api/v2/products/5/skus/3"),
            member("products", "5", true)
        );
        assert_eq!(
            named("/stores/abc/v3/catalog/products/5/variants"),
            member("products", "5", true)
        );
        for path in [
            "/api/v2/products",
            "/api/v2/products.json",
            "/stores/x/v3/catalog/products/",
        ] {
            assert_eq!(
                named(path),
                Some(Named::Collection("products".into())),
                "{path}"
            );
        }
        assert_eq!(
            named("/api/v2/products/count.json"),
            Some(Named::Count("products".into()))
        );
        assert_eq!(
            named("/stores/abc/v3/customers"),
            Some(Named::Collection("customers".into()))
        );
        assert_eq!(named("/other/thing"), member("/other", "thing", false));
        assert_eq!(named("/"), None);
        assert_eq!(named("/api/v2"), None);
    }

    #[test]
    fn writes_drop_what_they_change() {
        let c = Couplings::new([]).unwrap();
        let put = after_write(&Method::PUT, "/api/v2/products/5", &c);
        assert_eq!(
            put.tags,
            vec![
                Tag::Member("products".into(), "5".into()),
                Tag::Listing("products".into())
            ]
        );
        let sub = after_write(&Method::POST, "/stores/h/v3/catalog/products/5/images", &c);
        assert_eq!(sub, put, "a write under a member drops the member");
        let post = after_write(&Method::POST, "/api/v2/products.json", &c);
        assert_eq!(post.tags, vec![Tag::Listing("products".into())]);
        for bulk in ["/api/v2/products", "/v3/catalog/products?id:in=1,2"] {
            for method in [Method::PUT, Method::DELETE] {
                let path = bulk.split('?').next().unwrap();
                assert_eq!(
                    after_write(&method, path, &c).tags,
                    vec![Tag::All("products".into())],
                    "{method} {bulk}"
                );
            }
        }
        let order = after_write(&Method::PUT, "/api/v2/orders/9", &c);
        assert!(
            order.tags.contains(&Tag::All("products".into())),
            "{order:?}"
        );
        assert!(
            order
                .tags
                .contains(&Tag::Member("orders".into(), "9".into()))
        );
    }

    #[test]
    fn couplings_are_named_collections() {
        let drops = vec!["/stores/h/v3/customers".to_string()];
        let c = Couplings::new([("/api/v2/orders", drops.as_slice())]).unwrap();
        let order = after_write(&Method::POST, "/api/v2/orders", &c);
        assert!(order.tags.contains(&Tag::All("customers".into())));
        assert!(order.tags.contains(&Tag::All("products".into())));
        let bad = vec!["/api/v2/products/5".to_string()];
        assert!(Couplings::new([("/api/v2/orders", bad.as_slice())]).is_err());
        assert!(Couplings::new([("orders", drops.as_slice())]).is_err());
        assert!(c.describe().iter().any(|r| r == "orders -> products"));
    }

    #[test]
    fn tags_of_answers() {
        assert_eq!(
            named("/api/v2/products").unwrap().tags(),
            [Tag::All("products".into()), Tag::Listing("products".into())]
        );
        assert_eq!(
            named("/api/v2/products/5/skus").unwrap().tags(),
            [
                Tag::All("products".into()),
                Tag::Member("products".into(), "5".into())
            ]
        );
    }
}
