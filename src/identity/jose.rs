//! Compact JWS parsing before any key is involved: three base64url parts, header and payload as
//! JSON objects with no duplicate member names (at any depth), and the header parameters airgate
//! refuses outright (`crit`, and the embedded key sources `jwk`, `jku`, `x5u`, `x5c`).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// A compact JWS split and decoded, not verified.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    /// The base64url signature.
    pub signature: &'a str,
    /// The protected header.
    pub header: Map<String, Value>,
    /// The claims.
    pub claims: Map<String, Value>,
}

/// Why a token could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Not three base64url parts, not JSON objects, or duplicate member names.
    Malformed,
}

/// Splits and decodes a compact JWS.
pub(crate) fn parse(token: &str) -> Result<Parsed<'_>, ParseError> {
    let mut parts = token.splitn(3, '.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ParseError::Malformed);
    };
    if h.is_empty() || p.is_empty() || s.is_empty() || s.contains('.') {
        return Err(ParseError::Malformed);
    }
    let header = object(h)?;
    let claims = object(p)?;
    Ok(Parsed { signing_input: &token[..h.len() + 1 + p.len()], signature: s, header, claims })
}

fn object(part: &str) -> Result<Map<String, Value>, ParseError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| ParseError::Malformed)?;
    strict_object(&bytes).ok_or(ParseError::Malformed)
}

/// Parses a JSON object, refusing duplicate member names anywhere inside it.
pub(crate) fn strict_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Strict>(bytes) {
        Ok(Strict(Value::Object(map))) => Some(map),
        _ => None,
    }
}

/// A JSON value deserialized with duplicate-key detection (serde_json keeps the last silently).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
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
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("not a finite number"))
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
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if out.insert(key, value).is_some() {
                return Err(de::Error::custom("duplicate member name"));
            }
        }
        Ok(Value::Object(out))
    }
}

/// Header parameters naming a key inside or beside the token; never used, and refused.
pub(crate) const EMBEDDED_KEY_PARAMS: [&str; 4] = ["jwk", "jku", "x5u", "x5c"];

/// True when `claims.aud` is or contains `audience`.
pub(crate) fn audience_contains(claims: &Map<String, Value>, audience: &str) -> bool {
    match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn splits_and_decodes() {
        let t = format!("{}.{}.c2ln", b64(r#"{"alg":"EdDSA"}"#), b64(r#"{"iss":"x","n":{"a":[1,2.5,null]}}"#));
        let p = parse(&t).unwrap();
        assert_eq!(p.header["alg"], "EdDSA");
        assert_eq!(p.claims["iss"], "x");
        assert_eq!(p.signature, "c2ln");
        assert_eq!(p.signing_input, &t[..t.rfind('.').unwrap()]);
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(strict_object(br#"{"a":1,"a":2}"#).is_none());
        assert!(strict_object(br#"{"a":{"b":1,"b":1}}"#).is_none());
        assert!(strict_object(br#"{"a":[{"b":1,"b":1}]}"#).is_none());
        assert!(strict_object(br#"{"a":1,"b":2}"#).is_some());
    }

    #[test]
    fn malformed_inputs() {
        for t in ["a.b", "a.b.c.d", "..", "!!!.e30.c2ln", "e30.e30.", "W10.e30.c2ln", "e30=.e30.c2ln"] {
            assert_eq!(parse(t).err(), Some(ParseError::Malformed), "{t}");
        }
        // Non-JSON payload.
        assert!(parse(&format!("e30.{}.c2ln", b64("not json"))).is_err());
    }

    #[test]
    fn audiences() {
        let one = strict_object(br#"{"aud":"x"}"#).unwrap();
        let many = strict_object(br#"{"aud":["y","x"]}"#).unwrap();
        assert!(audience_contains(&one, "x") && audience_contains(&many, "x"));
        assert!(!audience_contains(&many, "z"));
    }
}
