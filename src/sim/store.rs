//! The simulated store's data: collections of records (products, categories, brands,
//! customers, orders and their sub-resources), seeded with deterministic, partly non-ASCII data.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// One record: its fields as the store writes them.
pub type Record = Map<String, Value>;

/// Top-level collections.
pub const COLLECTIONS: [&str; 5] = ["products", "categories", "brands", "customers", "orders"];
/// Sub-collections: (parent collection, child collection).
pub const SUB_COLLECTIONS: [(&str, &str); 5] = [
    ("products", "skus"),
    ("products", "images"),
    ("customers", "addresses"),
    ("orders", "products"),
    ("orders", "shipments"),
];

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// A required field is missing or empty (`400`).
    Missing(&'static str),
    /// The value conflicts with another record (`409`).
    Conflict(&'static str, String),
}

/// A collection's address: `products`, or `products/5/skus`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CollectionPath(String);

impl CollectionPath {
    /// A top-level collection, if known.
    pub fn top(name: &str) -> Option<CollectionPath> {
        COLLECTIONS
            .contains(&name)
            .then(|| CollectionPath(name.to_string()))
    }

    /// A sub-collection of a parent record, if known.
    pub fn sub(parent: &str, id: u64, name: &str) -> Option<CollectionPath> {
        SUB_COLLECTIONS
            .contains(&(parent, name))
            .then(|| CollectionPath(format!("{parent}/{id}/{name}")))
    }

    /// The collection's last name (`skus`).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The parent record (`products`, 5) of a sub-collection.
    pub fn parent(&self) -> Option<(CollectionPath, u64)> {
        let mut parts = self.0.split('/');
        let (top, id, _) = (parts.next()?, parts.next()?, parts.next()?);
        Some((CollectionPath(top.to_string()), id.parse().ok()?))
    }

    /// The path as written in URLs.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Default)]
struct Collection {
    next_id: u64,
    records: BTreeMap<u64, Record>,
}

/// All the store's data.
#[derive(Debug, Clone, Default)]
pub struct Store {
    collections: HashMap<CollectionPath, Collection>,
}

/// A store date (`Tue, 20 Nov 2012 00:00:00 +0000`), as the legacy API writes them.
pub fn store_date(at: SystemTime) -> String {
    httpdate::fmt_http_date(at).replace(" GMT", " +0000")
}

fn seed_date(day: u64) -> String {
    store_date(UNIX_EPOCH + Duration::from_secs(1_704_067_200 + day * 86_400))
}

impl Store {
    /// An empty store.
    pub fn empty() -> Store {
        Store::default()
    }

    /// The store with its seed data.
    pub fn seeded() -> Store {
        let mut store = Store::empty();
        let categories = [
            "Kitchen",
            "Café & Tea",
            "Garden",
            "Outdoor",
            "Bücher",
            "Électronique",
            "Toys",
            "Sale",
        ];
        for (i, name) in categories.iter().enumerate() {
            store.insert(
                "categories",
                json!({
                    "name": name, "parent_id": 0, "description": format!("All things {name}"),
                    "sort_order": i, "is_visible": true,
                }),
            );
        }
        let brands = [
            "Ørsted Home",
            "Müller",
            "Señor Café",
            "Žalgiris",
            "東京 Works",
            "Acme",
        ];
        for name in brands {
            store.insert("brands", json!({ "name": name, "page_title": name }));
        }
        let products = [
            "Crème brûlée torch",
            "Übergröße Jacke",
            "日本茶セット",
            "Smørrebrød board",
            "Ωmega wall clock",
            "☕ Enamel mug",
            "Piñata kit",
            "Façade paint",
            "Ærø wool blanket",
            "Größenverstellbarer Hut",
            "Café crème cups",
            "Пельмени mould",
            "Kaffeetasse",
            "Jalapeño sauce",
            "Crêpe pan",
            "Naïve art print",
        ];
        for i in 0..60u64 {
            let base = products[(i as usize) % products.len()];
            let name = if i < products.len() as u64 {
                base.to_string()
            } else {
                format!("{base} #{}", i + 1)
            };
            store.insert(
                "products",
                json!({
                    "name": name,
                    "type": "physical",
                    "sku": format!("SKU-{:04}", i + 1),
                    "description": format!("<p>{name}: handmade, ünïcode-safe.</p>"),
                    "price": format!("{}.{:02}00", 5 + (i * 7) % 95, (i * 13) % 100),
                    "weight": format!("{}.0000", 1 + i % 5),
                    "categories": [1 + i % 8],
                    "brand_id": 1 + i % 6,
                    "inventory_level": (i * 17) % 250,
                    "availability": "available",
                    "is_visible": i % 9 != 0,
                    "date_created": seed_date(i),
                    "date_modified": seed_date(i + 30),
                }),
            );
        }
        let people = [
            ("Zoë", "Ångström"),
            ("José", "Núñez"),
            ("Søren", "Kierkegaard"),
            ("Łukasz", "Żółw"),
            ("小龙", "李"),
            ("Ελένη", "Παπαδοπούλου"),
            ("Jürgen", "Groß"),
            ("Chloé", "Lefèvre"),
        ];
        for i in 0..25u64 {
            let (first, last) = people[(i as usize) % people.len()];
            store.insert(
                "customers",
                json!({
                    "first_name": first,
                    "last_name": last,
                    "email": format!("customer{}@example.com", i + 1),
                    "company": if i % 3 == 0 { "Ærø Trading ApS" } else { "" },
                    "phone": format!("+45 {:08}", 20_000_000 + i * 7919),
                    "date_created": seed_date(i),
                    "date_modified": seed_date(i + 10),
                }),
            );
        }
        let statuses = [
            "Pending",
            "Shipped",
            "Awaiting Fulfillment",
            "Completed",
            "Cancelled",
        ];
        for i in 0..30u64 {
            store.insert("orders", json!({
                "customer_id": 1 + i % 25,
                "status": statuses[(i as usize) % statuses.len()],
                "total_inc_tax": format!("{}.{:02}00", 10 + (i * 11) % 300, (i * 7) % 100),
                "currency_code": "EUR",
                "items_total": 1 + i % 4,
                "billing_address": { "first_name": people[(i as usize) % 8].0, "city": "Zürich", "country": "Switzerland" },
                "date_created": seed_date(i + 40),
                "date_modified": seed_date(i + 41),
            }));
        }
        store
    }

    fn insert(&mut self, top: &str, value: Value) {
        if let (Some(path), Value::Object(fields)) = (CollectionPath::top(top), value) {
            let coll = self.collections.entry(path).or_default();
            coll.next_id += 1;
            let mut record = Record::new();
            record.insert("id".into(), Value::from(coll.next_id));
            record.extend(fields);
            coll.records.insert(coll.next_id, record);
        }
    }

    /// True when the collection can hold records: top-level, or under an existing parent.
    pub fn exists(&self, path: &CollectionPath) -> bool {
        match path.parent() {
            None => true,
            Some((parent, id)) => self.get(&parent, id).is_some(),
        }
    }

    /// One page of a collection, in id order (`page` from 1).
    pub fn list(&self, path: &CollectionPath, page: u64, limit: u64) -> Vec<&Record> {
        let skip = page.saturating_sub(1).saturating_mul(limit) as usize;
        self.collections
            .get(path)
            .map(|c| c.records.values().skip(skip).take(limit as usize).collect())
            .unwrap_or_default()
    }

    /// Records in a collection.
    pub fn count(&self, path: &CollectionPath) -> usize {
        self.collections.get(path).map_or(0, |c| c.records.len())
    }

    /// One record.
    pub fn get(&self, path: &CollectionPath, id: u64) -> Option<&Record> {
        self.collections.get(path)?.records.get(&id)
    }

    /// Adds a record; the store assigns `id`, `date_created` and `date_modified`.
    pub fn create(
        &mut self,
        path: &CollectionPath,
        mut fields: Record,
        now: SystemTime,
    ) -> Result<Record, Invalid> {
        for field in required(path.name()) {
            let blank = match fields.get(*field) {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s.trim().is_empty(),
                _ => false,
            };
            if blank {
                return Err(Invalid::Missing(field));
            }
        }
        self.check_unique(path, &fields, None)?;
        for system in ["id", "date_created", "date_modified"] {
            fields.remove(system);
        }
        let coll = self.collections.entry(path.clone()).or_default();
        coll.next_id = coll
            .next_id
            .max(coll.records.keys().next_back().copied().unwrap_or(0))
            + 1;
        let id = coll.next_id;
        let mut record = Record::new();
        record.insert("id".into(), Value::from(id));
        record.extend(fields);
        record.insert("date_created".into(), Value::from(store_date(now)));
        record.insert("date_modified".into(), Value::from(store_date(now)));
        coll.records.insert(id, record.clone());
        Ok(record)
    }

    /// Changes a record's fields; `Ok(None)` when there is no such record.
    pub fn update(
        &mut self,
        path: &CollectionPath,
        id: u64,
        mut fields: Record,
        now: SystemTime,
    ) -> Result<Option<Record>, Invalid> {
        if self.get(path, id).is_none() {
            return Ok(None);
        }
        self.check_unique(path, &fields, Some(id))?;
        for system in ["id", "date_created", "date_modified"] {
            fields.remove(system);
        }
        let Some(record) = self
            .collections
            .get_mut(path)
            .and_then(|c| c.records.get_mut(&id))
        else {
            return Ok(None);
        };
        record.extend(fields);
        record.insert("date_modified".into(), Value::from(store_date(now)));
        Ok(Some(record.clone()))
    }

    /// Removes a record and its sub-resources; false when there was none.
    pub fn delete(&mut self, path: &CollectionPath, id: u64) -> bool {
        let removed = self
            .collections
            .get_mut(path)
            .is_some_and(|c| c.records.remove(&id).is_some());
        if removed {
            let prefix = format!("{}/{id}/", path.as_str());
            self.collections
                .retain(|p, _| !p.as_str().starts_with(&prefix));
        }
        removed
    }

    fn check_unique(
        &self,
        path: &CollectionPath,
        fields: &Record,
        except: Option<u64>,
    ) -> Result<(), Invalid> {
        let field = match path.as_str() {
            "products" | "categories" | "brands" => "name",
            "customers" => "email",
            _ => return Ok(()),
        };
        let Some(wanted) = fields.get(field) else {
            return Ok(());
        };
        let taken = self.collections.get(path).is_some_and(|c| {
            c.records
                .iter()
                .any(|(id, r)| Some(*id) != except && r.get(field) == Some(wanted))
        });
        if taken {
            return Err(Invalid::Conflict(
                field,
                format!("a record with this {field} already exists"),
            ));
        }
        Ok(())
    }
}

/// Fields a new record of a collection must have.
fn required(collection: &str) -> &'static [&'static str] {
    match collection {
        "products" => &["name", "price"],
        "categories" | "brands" => &["name"],
        "customers" => &["first_name", "last_name", "email"],
        "skus" => &["sku"],
        "images" => &["image_file"],
        "addresses" => &["street_1", "city"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn products() -> CollectionPath {
        CollectionPath::top("products").unwrap()
    }

    #[test]
    fn seed_is_deterministic_and_utf8() {
        let a = Store::seeded();
        let b = Store::seeded();
        assert_eq!(a.get(&products(), 3), b.get(&products(), 3));
        assert_eq!(a.count(&products()), 60);
        assert_eq!(a.get(&products(), 3).unwrap()["name"], "日本茶セット");
    }

    #[test]
    fn crud_and_paging() {
        let mut s = Store::seeded();
        let now = SystemTime::now();
        assert_eq!(s.list(&products(), 2, 50).len(), 10);
        assert!(s.list(&products(), 3, 50).is_empty());
        let mut fields = Record::new();
        fields.insert("name".into(), "New".into());
        assert_eq!(
            s.create(&products(), fields.clone(), now),
            Err(Invalid::Missing("price"))
        );
        fields.insert("price".into(), "1.00".into());
        let rec = s.create(&products(), fields.clone(), now).unwrap();
        assert_eq!(rec["id"], 61);
        assert!(matches!(
            s.create(&products(), fields, now),
            Err(Invalid::Conflict("name", _))
        ));
        let skus = CollectionPath::sub("products", 61, "skus").unwrap();
        assert!(s.exists(&skus));
        let mut sku = Record::new();
        sku.insert("sku".into(), "A-1".into());
        s.create(&skus, sku, now).unwrap();
        assert!(s.delete(&products(), 61));
        assert!(!s.exists(&skus));
        assert_eq!(s.count(&skus), 0);
        assert!(!s.delete(&products(), 61));
    }
}
