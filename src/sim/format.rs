//! The simulated store's representations: JSON as the store writes it, and the legacy API's
//! XML, both ways.

use quick_xml::Reader;
use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::Event;
use serde_json::{Map, Value};

/// The representation a call asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json` (the default).
    Json,
    /// `application/xml`.
    Xml,
}

impl Format {
    /// What the store serves a call: the path's `.xml`/`.json` suffix decides, else the first
    /// of XML and JSON that `Accept` names (JSON when it names neither).
    pub fn negotiate(path: &str, accept: Option<&str>) -> Format {
        match path.rsplit_once('.').map(|(_, suffix)| suffix) {
            Some("xml") => return Format::Xml,
            Some("json") => return Format::Json,
            _ => {}
        }
        let accept = accept.unwrap_or("").to_ascii_lowercase();
        let first = |needle: &str| accept.find(needle).unwrap_or(usize::MAX);
        if first("xml") < first("json") {
            Format::Xml
        } else {
            Format::Json
        }
    }

    /// The `Content-Type` of this representation.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Xml => "application/xml",
        }
    }
}

/// The singular element name for items of a collection (`products` -> `product`).
pub fn singular(collection: &str) -> &str {
    match collection {
        "categories" => "category",
        "addresses" => "address",
        other => other.strip_suffix('s').unwrap_or(other),
    }
}

/// Renders a value: compact JSON, or XML under the element `root`.
pub fn render(format: Format, root: &str, value: &Value) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(value).unwrap_or_default(),
        Format::Xml => {
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
            write_xml(&mut out, root, value);
            out.into_bytes()
        }
    }
}

fn write_xml(out: &mut String, name: &str, value: &Value) {
    match value {
        Value::Null => {
            out.push('<');
            out.push_str(name);
            out.push_str("/>");
        }
        Value::Object(map) => {
            open(out, name);
            for (key, v) in map {
                write_xml(out, key, v);
            }
            close(out, name);
        }
        Value::Array(items) => {
            open(out, name);
            for item in items {
                let item_name = if item.is_object() {
                    singular(name)
                } else {
                    "value"
                };
                write_xml(out, item_name, item);
            }
            close(out, name);
        }
        Value::String(s) => {
            open(out, name);
            out.push_str(&escape(s.as_str()));
            close(out, name);
        }
        other => {
            open(out, name);
            out.push_str(&other.to_string());
            close(out, name);
        }
    }
}

fn open(out: &mut String, name: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
}

fn close(out: &mut String, name: &str) {
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// Parses an XML request body (`<product><name>..</name></product>`) into the fields of a
/// record. Elements holding only `<value>` children become arrays; other elements with
/// children become objects; text becomes strings.
pub fn parse_xml(body: &[u8]) -> Result<Map<String, Value>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the XML is not UTF-8".to_string())?;
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Value> = None;
    loop {
        match reader
            .read_event()
            .map_err(|e| format!("the XML is malformed: {e}"))?
        {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_string();
                stack.push(Open {
                    name,
                    children: Vec::new(),
                    text: String::new(),
                });
            }
            Event::Empty(e) => {
                let name = e.local_name().as_ref().to_string();
                match stack.last_mut() {
                    Some(open) => open.children.push((name, Value::Null)),
                    None => root = Some(Value::Object(Map::new())),
                }
            }
            Event::Text(t) => {
                if let Some(open) = stack.last_mut() {
                    open.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(c) => {
                if let Some(open) = stack.last_mut() {
                    open.text.push_str(&c.into_inner());
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => {
                        let name = r.xml10_content();
                        resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("the XML uses an unknown entity &{name};"))?
                            .to_string()
                    }
                };
                if let Some(open) = stack.last_mut() {
                    open.text.push_str(&resolved);
                }
            }
            Event::End(_) => {
                let Some(Open {
                    name,
                    children,
                    text,
                }) = stack.pop()
                else {
                    return Err("the XML is malformed".into());
                };
                let value = element_value(children, text);
                match stack.last_mut() {
                    Some(parent) => parent.children.push((name, value)),
                    None => root = Some(value),
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    match root {
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err("the XML root element must hold fields".into()),
        None => Err("the XML is empty".into()),
    }
}

/// An element being read: its name, the children read so far, its text.
struct Open {
    name: String,
    children: Vec<(String, Value)>,
    text: String,
}

fn element_value(children: Vec<(String, Value)>, text: String) -> Value {
    if children.is_empty() {
        return Value::String(text);
    }
    if children.iter().all(|(n, _)| n == "value") {
        return Value::Array(children.into_iter().map(|(_, v)| v).collect());
    }
    Value::Object(children.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xml_round_trips_the_fields() {
        let value = json!({"id": 1, "name": "Crème <brûlée> & co", "categories": [1, 2], "custom_url": null});
        let xml = String::from_utf8(render(Format::Xml, "product", &value)).unwrap();
        assert!(
            xml.contains("<name>Crème &lt;brûlée&gt; &amp; co</name>"),
            "{xml}"
        );
        assert!(
            xml.contains("<categories><value>1</value><value>2</value></categories>"),
            "{xml}"
        );
        let back = parse_xml(xml.as_bytes()).unwrap();
        assert_eq!(back["name"], "Crème <brûlée> & co");
        assert_eq!(back["categories"], json!(["1", "2"]));
        assert_eq!(back["id"], "1");
    }

    #[test]
    fn lists_use_singular_item_elements() {
        let xml =
            String::from_utf8(render(Format::Xml, "categories", &json!([{"id": 1}]))).unwrap();
        assert!(
            xml.ends_with("<categories><category><id>1</id></category></categories>"),
            "{xml}"
        );
    }

    #[test]
    fn bad_xml_is_an_error() {
        assert!(parse_xml(b"<product><name>x</product>").is_err());
        assert!(parse_xml(b"").is_err());
        assert!(parse_xml(b"<p>&bogus;</p>").is_err());
    }
}
