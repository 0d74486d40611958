//! The one JSON reader for what enters Lockstep (issue 14): the REST API's bodies
//! (`writes::parse_object`), the HTTP intake and the AMQP intake's envelopes
//! (`schema::EventSchemas::check_consumed`).
//!
//! `serde_json` keeps the last of two equal keys, so `{"roomIds": ["a"], "roomIds": ["b"]}`
//! means `["b"]` to Lockstep and may mean `["a"]` to a proxy, a logger or the publisher's
//! own checks in front of it. Such a body is ambiguous: it is refused, at any depth.
//! Also free text a user names things with ([`label`]).

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a body is not one unambiguous JSON value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all (a syntax error, trailing characters, nesting too deep).
    #[error("not JSON: {0}")]
    Syntax(String),
    /// An object names the same key twice.
    #[error("{0}")]
    DuplicateKey(String),
}

/// The intake's reasons: a dead letter's `malformed` or `duplicate_key`.
impl From<JsonError> for lockstep_actors::events_in::Rejection {
    fn from(e: JsonError) -> Self {
        match e {
            JsonError::Syntax(_) => Self::Malformed(e.to_string()),
            JsonError::DuplicateKey(d) => Self::DuplicateKey(d),
        }
    }
}

/// Parses `bytes` as one JSON value, refusing an object that repeats a key (after JSON
/// unescaping: `"a"` and `"\u0061"` are the same key) anywhere in it.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut de).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(value)
}

/// `Strict` only ever fails a well-formed document with its own custom error, which
/// `serde_json` reports as a data error; everything else is the syntax's.
fn classify(e: serde_json::Error) -> JsonError {
    match e.classify() {
        serde_json::error::Category::Data => JsonError::DuplicateKey(e.to_string()),
        _ => JsonError::Syntax(e.to_string()),
    }
}

/// Longest key quoted back in an error (the key is the sender's text).
const QUOTED_KEY_CHARS: usize = 64;

/// Builds a [`Value`] like `Value`'s own `Deserialize`, but fails on a repeated key.
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity: serde_json never hands one over
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element_seed(Strict)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let mut quoted: String = key.chars().take(QUOTED_KEY_CHARS).collect();
                if quoted.len() < key.len() {
                    quoted.push('…');
                }
                return Err(de::Error::custom(format_args!("duplicate key {quoted:?}")));
            }
            let value = map.next_value_seed(Strict)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Free text a user names a thing with (a device's label, a desktop's name): 1 to `max`
/// characters after trimming, without control characters (C0, DEL, C1) and without the
/// Unicode bidirectional controls that make text display in another order than it is
/// stored (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069: "Trojan Source").
/// Gives the trimmed text, or the reason to refuse it.
pub fn label(text: &str, max: usize) -> Result<&str, String> {
    let text = text.trim();
    let n = text.chars().count();
    if n == 0 || n > max {
        return Err(format!("1 to {max} characters"));
    }
    if let Some(c) = text.chars().find(|c| c.is_control() || is_bidi_control(*c)) {
        return Err(format!(
            "printable characters only: U+{:04X} is a control character",
            u32::from(c)
        ));
    }
    Ok(text)
}

/// The Unicode bidirectional formatting characters (UAX #9): marks, embeddings,
/// overrides and isolates.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_repeated_key_is_refused_at_any_depth() {
        for body in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"a": 1, "\u0061": 1}"#,
            r#"{"data": {"roomIds": ["x"], "roomIds": ["y"]}}"#,
            r#"[{"k": [{"z": null, "z": null}]}]"#,
        ] {
            match parse(body.as_bytes()) {
                Err(JsonError::DuplicateKey(m)) => assert!(m.contains("duplicate key"), "{m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_duplicate_names_its_key_briefly() {
        let long = "k".repeat(500);
        let body = format!(r#"{{"{long}": 1, "{long}": 2}}"#);
        let Err(JsonError::DuplicateKey(m)) = parse(body.as_bytes()) else {
            panic!("refused")
        };
        assert!(m.len() < 200, "{m}");
    }

    #[test]
    fn well_formed_json_reads_as_serde_json_reads_it() {
        for body in [
            r#"{"a": 1, "b": {"a": 1}, "c": [{"a": 1}, {"a": 2}]}"#,
            r#"[1, -2, 3.5, 1e300, 18446744073709551615, "x\u0000", true, null]"#,
            r#""text""#,
            "  {}  ",
        ] {
            let strict = parse(body.as_bytes()).expect(body);
            let loose: Value = serde_json::from_str(body).expect(body);
            assert_eq!(strict, loose, "{body}");
        }
        assert_eq!(parse(br#"{"x":{}}"#), Ok(json!({"x": {}})));
    }

    #[test]
    fn what_is_not_json_is_a_syntax_error() {
        for body in ["", "{", r#"{"a": 1} x"#, "nul", "{\"a\":1,}", "\u{feff}{}"] {
            assert!(
                matches!(parse(body.as_bytes()), Err(JsonError::Syntax(_))),
                "{body:?}"
            );
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(matches!(parse(deep.as_bytes()), Err(JsonError::Syntax(_))));
    }

    #[test]
    fn labels_refuse_control_and_bidi_characters() {
        assert_eq!(
            label("  Room 204 main door ", 128),
            Ok("Room 204 main door")
        );
        assert_eq!(label("Zimmer 3 · Tür", 128), Ok("Zimmer 3 · Tür"));
        assert_eq!(label("غرفة ٢٠٤", 128), Ok("غرفة ٢٠٤"));
        for bad in [
            "",
            "   ",
            "a\u{0}b",
            "a\nb",
            "a\u{7f}",
            "a\u{85}b",
            "a\u{202E}b",
            "\u{2066}x",
            "x\u{2069}",
            "a\u{200F}",
            "a\u{200E}",
            "a\u{061C}",
            "a\u{202A}",
            "a\u{202D}",
        ] {
            assert!(label(bad, 128).is_err(), "{bad:?}");
        }
        assert!(label(&"é".repeat(128), 128).is_ok());
        assert!(label(&"é".repeat(129), 128).is_err());
    }
}
