//! Writing JSON values straight into a line: strings escaped as JSON requires, numbers as
//! Rust prints them (shortest round-trip form), `Debug` and `Display` output escaped as it is
//! produced. No intermediate values, no allocation.

use std::fmt::{self, Write};

/// Appends `s` as a JSON string.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    escape_into(out, s);
    out.push('"');
}

/// True for the bytes JSON must escape in a string.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

/// Appends the JSON escape of `s` (no quotes).
fn escape_into(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    // Without short-circuit, so the check is vectorised: most strings need no escape at all.
    if !bytes.iter().fold(false, |any, &b| any | needs_escape(b)) {
        out.push_str(s);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f | 0x7f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escaped.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

/// Appends a float (shortest form that reads back the same); not finite is `null`.
pub fn push_f64(out: &mut String, value: f64) {
    if value.is_finite() {
        out.push_str(ryu::Buffer::new().format_finite(value));
    } else {
        out.push_str("null");
    }
}

/// Escapes what a formatter writes, as it writes it.
struct Escaping<'a>(&'a mut String);

impl Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

/// Appends a value's `Debug` output as a JSON string.
pub fn push_debug(out: &mut String, value: &dyn fmt::Debug) {
    out.push('"');
    let _ = write!(Escaping(out), "{value:?}");
    out.push('"');
}

/// Appends a value's `Display` output as a JSON string.
pub fn push_display(out: &mut String, value: &dyn fmt::Display) {
    out.push('"');
    let _ = write!(Escaping(out), "{value}");
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_as_serde_json_does() {
        for s in [
            "plain",
            "quote \" and \\ backslash",
            "line\nbreak\r\ttab",
            "control \u{1} \u{1f} del \u{7f}",
            "unicode ✓ ü 🚀",
            "",
        ] {
            let mut out = String::new();
            push_str(&mut out, s);
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s, "{out}");
        }
        let mut out = String::new();
        push_debug(&mut out, &format_args!("a \"b\"\n"));
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), "a \"b\"\n");
    }

    #[test]
    fn numbers_are_json() {
        for v in [0.0, 1.5, 0.001, 123456.789, 1e-7, 2.5e20] {
            let mut out = String::new();
            push_f64(&mut out, v);
            assert_eq!(serde_json::from_str::<f64>(&out).unwrap(), v, "{out}");
        }
        let mut out = String::new();
        push_f64(&mut out, f64::NAN);
        assert_eq!(out, "null");
    }
}
