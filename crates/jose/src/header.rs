//! The JOSE header of a JWS (RFC 7515 §4).

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::algorithm::Algorithm;
use crate::error::{Error, Part, Result, truncate};

/// The parsed protected header of a compact JWS.
///
/// Only the members this crate acts on are kept. Before verification the header is
/// attacker-controlled: use it to pick a key (`kid`), never to decide how to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
    // Media types: the registered values are held as `&'static str`, so the common header
    // (`typ: at+jwt` or `JWT`) costs no allocation.
    pub(crate) typ: Option<Cow<'static, str>>,
    pub(crate) cty: Option<Cow<'static, str>>,
    pub(crate) embedded_key: bool,
}

impl Header {
    /// The header's `alg`. Verification has checked it equals the key's algorithm.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key id (`kid`, RFC 7515 §4.1.4).
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The media type of the whole JWS (`typ`, RFC 7515 §4.1.9), e.g. `at+jwt`.
    #[must_use]
    pub fn typ(&self) -> Option<&str> {
        self.typ.as_deref()
    }

    /// The media type of the payload (`cty`, RFC 7515 §4.1.10).
    #[must_use]
    pub fn cty(&self) -> Option<&str> {
        self.cty.as_deref()
    }

    /// True if the header carried `jwk`, `jku`, `x5u`, `x5c`, `x5t` or `x5t#S256`.
    ///
    /// These are recorded for diagnostics only: this crate never uses a key (or a URL to
    /// one) supplied by the token it is verifying.
    #[must_use]
    pub fn has_embedded_key_reference(&self) -> bool {
        self.embedded_key
    }
}

/// Parses header JSON: an object, no duplicate members, `alg` a supported algorithm, the
/// members we read of the right type, and no `crit` (RFC 7515 §4.1.11: we implement no
/// extension, so any critical extension is unknown to us).
pub(crate) fn parse(json: &[u8]) -> Result<Header> {
    // JSON text is UTF-8 (RFC 8259 §8.1). Checking it once, up front, lets the parser take
    // each string as it is instead of validating them one by one.
    let json = std::str::from_utf8(json).map_err(|_| Error::MalformedHeader {
        reason: "the header is not UTF-8".into(),
    })?;
    let failure = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(json);
    let raw = de
        .deserialize_map(HeaderVisitor { failure: &failure })
        .and_then(|raw| de.end().map(|()| raw));
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            return Err(failure.take().unwrap_or_else(|| Error::MalformedHeader {
                reason: truncate(&e.to_string(), 160),
            }));
        }
    };
    // RFC 7515 §4.1.11, before the algorithm: an unknown critical extension invalidates the
    // whole JWS no matter what else the header says.
    if let Some(name) = raw.crit {
        return Err(Error::UnknownCritical { name });
    }
    let alg_name = raw.alg.ok_or_else(|| Error::MalformedHeader {
        reason: "missing `alg` (RFC 7515 §4.1.1)".into(),
    })?;
    let alg: Algorithm = alg_name.parse()?;
    Ok(Header {
        alg,
        kid: raw.kid.map(Cow::into_owned),
        typ: raw.typ.map(media_type),
        cty: raw.cty.map(media_type),
        embedded_key: raw.embedded_key,
    })
}

/// A `typ`/`cty` value: the well-known ones as static strings, anything else copied.
pub(crate) fn media_type(value: Cow<'_, str>) -> Cow<'static, str> {
    const KNOWN: [&str; 8] = [
        "JWT",
        "at+jwt",
        "jwt",
        "application/at+jwt",
        "application/jwt",
        "JOSE",
        "dpop+jwt",
        "secevent+jwt",
    ];
    match KNOWN.iter().find(|k| **k == value) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(value.into_owned()),
    }
}

#[derive(Default)]
struct RawHeader<'a> {
    alg: Option<Cow<'a, str>>,
    kid: Option<Cow<'a, str>>,
    typ: Option<Cow<'a, str>>,
    cty: Option<Cow<'a, str>>,
    crit: Option<String>,
    embedded_key: bool,
}

struct HeaderVisitor<'f> {
    failure: &'f Cell<Option<Error>>,
}

impl<'de> Visitor<'de> for HeaderVisitor<'_> {
    type Value = RawHeader<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = RawHeader::default();
        // Member names we act on are tracked as bits: no allocation for the usual header.
        let mut named_seen = 0u16;
        let mut others = KeyLog::new();
        while let Some(Key(key)) = map.next_key()? {
            let named = match key.as_bytes() {
                b"alg" => Some(0),
                b"kid" => Some(1),
                b"typ" => Some(2),
                b"cty" => Some(3),
                b"crit" => Some(4),
                b"jwk" => Some(5),
                b"jku" => Some(6),
                b"x5u" => Some(7),
                b"x5c" => Some(8),
                b"x5t" => Some(9),
                b"x5t#S256" => Some(10),
                _ => None,
            };
            let duplicate = match named {
                Some(i) => {
                    let bit = 1u16 << i;
                    let dup = named_seen & bit != 0;
                    named_seen |= bit;
                    dup
                }
                None => !others.insert(key.clone()),
            };
            if duplicate {
                self.failure.set(Some(Error::DuplicateMember {
                    part: Part::Header,
                    name: truncate(&key, 64),
                }));
                return Err(de::Error::custom("duplicate member"));
            }
            let string = |name: &'static str| StrSeed {
                name,
                failure: self.failure,
            };
            match &*key {
                "alg" => out.alg = Some(map.next_value_seed(string("alg"))?),
                "kid" => out.kid = Some(map.next_value_seed(string("kid"))?),
                "typ" => out.typ = Some(map.next_value_seed(string("typ"))?),
                "cty" => out.cty = Some(map.next_value_seed(string("cty"))?),
                "crit" => {
                    let v: serde_json::Value = map.next_value()?;
                    let first = v
                        .as_array()
                        .and_then(|a| a.first())
                        .and_then(|f| f.as_str())
                        .map_or_else(|| "crit".to_owned(), |s| truncate(s, 64));
                    out.crit = Some(first);
                }
                "jwk" | "jku" | "x5u" | "x5c" | "x5t" | "x5t#S256" => {
                    map.next_value::<IgnoredAny>()?;
                    out.embedded_key = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// The member names seen so far in one JSON object, for duplicate detection (compared
/// after unescaping). The first few borrowed names live on the stack; escaped names, and
/// any beyond those, go to a vector, so a small object costs no allocation.
pub(crate) struct KeyLog<'de> {
    inline: [&'de str; 8],
    len: usize,
    spill: Vec<Cow<'de, str>>,
}

impl<'de> KeyLog<'de> {
    pub(crate) fn new() -> Self {
        Self {
            inline: [""; 8],
            len: 0,
            spill: Vec::new(),
        }
    }

    /// Records `key`; false if it was already there.
    pub(crate) fn insert(&mut self, key: Cow<'de, str>) -> bool {
        let name: &str = &key;
        let inline = self.inline.get(..self.len).unwrap_or_default();
        if inline.contains(&name) || self.spill.iter().any(|k| *k == name) {
            return false;
        }
        match (key, self.inline.get_mut(self.len)) {
            (Cow::Borrowed(k), Some(slot)) => {
                *slot = k;
                self.len += 1;
            }
            (key, _) => self.spill.push(key),
        }
        true
    }
}

/// A JSON object key, borrowed from the input when it has no escapes.
pub(crate) struct Key<'a>(pub(crate) Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(CowStrVisitor).map(Key)
    }
}

struct CowStrVisitor;

impl<'de> Visitor<'de> for CowStrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Reads a header member that must be a string, recording a precise error otherwise.
struct StrSeed<'f> {
    name: &'static str,
    failure: &'f Cell<Option<Error>>,
}

impl<'de> DeserializeSeed<'de> for StrSeed<'_> {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        // Strings borrow; any other value is skipped and reported precisely.
        match d.deserialize_any(StrOrOther)? {
            Some(s) => Ok(s),
            None => {
                self.failure.set(Some(Error::MalformedHeader {
                    reason: format!("`{}` must be a string", self.name),
                }));
                Err(de::Error::custom("wrong type"))
            }
        }
    }
}

/// Visits any JSON value, keeping it only if it is a string.
pub(crate) struct StrOrOther;

impl<'de> Visitor<'de> for StrOrOther {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_members_we_use() {
        let h =
            parse(br#"{"alg":"ES256","kid":"k1","typ":"at+jwt","cty":"x","extra":[1,{"a":2}]}"#)
                .unwrap();
        assert_eq!(h.algorithm(), Algorithm::Es256);
        assert_eq!(h.kid(), Some("k1"));
        assert_eq!(h.typ(), Some("at+jwt"));
        assert!(!h.has_embedded_key_reference());
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let h = parse(br#"{"alg":"HS256","kid":"a\u0062c"}"#).unwrap();
        assert_eq!(h.kid(), Some("abc"));
    }

    #[test]
    fn duplicates_are_refused_even_when_escaped() {
        let err = parse(br#"{"alg":"HS256","al\u0067":"none"}"#).unwrap_err();
        assert!(
            matches!(err, Error::DuplicateMember { part: Part::Header, ref name } if name == "alg")
        );
    }

    #[test]
    fn crit_is_refused_before_the_algorithm_is_looked_at() {
        let err = parse(br#"{"alg":"none","crit":["b64"],"b64":false}"#).unwrap_err();
        assert_eq!(err, Error::UnknownCritical { name: "b64".into() });
        let err = parse(br#"{"alg":"HS256","crit":[]}"#).unwrap_err();
        assert_eq!(
            err,
            Error::UnknownCritical {
                name: "crit".into()
            }
        );
    }

    #[test]
    fn wrong_types_and_shapes_are_refused() {
        assert!(matches!(
            parse(br#"{"alg":256}"#),
            Err(Error::MalformedHeader { .. })
        ));
        assert!(matches!(
            parse(br#"{"alg":"HS256","kid":["a"]}"#),
            Err(Error::MalformedHeader { .. })
        ));
        assert!(matches!(
            parse(br#"["alg"]"#),
            Err(Error::MalformedHeader { .. })
        ));
        assert!(matches!(
            parse(br#"{"alg":"HS256"} x"#),
            Err(Error::MalformedHeader { .. })
        ));
        assert!(matches!(
            parse(br#"{"kid":"x"}"#),
            Err(Error::MalformedHeader { .. })
        ));
        assert!(matches!(
            parse(br#"{"alg":"none"}"#),
            Err(Error::UnsupportedAlgorithm { .. })
        ));
    }

    #[test]
    fn embedded_keys_are_noted_but_never_used() {
        let h = parse(br#"{"alg":"RS256","jku":"https://evil.example/jwks"}"#).unwrap();
        assert!(h.has_embedded_key_reference());
    }
}
