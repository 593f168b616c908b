//! JWT claims (RFC 7519 §4): typed registered claims plus the caller's own type.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{
    self, DeserializeSeed, IgnoredAny, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Part, Result, truncate};
use crate::header::{Key, KeyLog, StrOrOther};

/// Seconds since the Unix epoch, as JWT `exp`, `nbf` and `iat` carry them
/// (RFC 7519 §2 "NumericDate").
///
/// RFC 7519 §2 allows a non-integer NumericDate. When claims are parsed, a fractional `nbf`
/// is rounded up and a fractional `exp` or `iat` down, so rounding never widens what a token
/// is accepted for: against a whole-second `now`, `nbf` is compared exactly and `exp` at
/// worst a second early, and `iat` is the second the token was issued in, so a revocation
/// cut-off "issued at or before second T" covers a token issued at T.5. (A token issued less
/// than a second ahead of the clock thus passes the "issued in the future" check.) Values
/// beyond ±(2^53 − 1), where JSON numbers stop being exact, are refused. Tokens this crate
/// signs carry whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NumericDate(pub i64);

impl NumericDate {
    /// The number of seconds.
    #[must_use]
    pub const fn as_secs(self) -> i64 {
        self.0
    }
}

impl Serialize for NumericDate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

/// The `aud` claim: one string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience<'a> {
    /// A single audience, serialized as a string.
    One(Cow<'a, str>),
    /// Several audiences, serialized as an array.
    Many(Vec<Cow<'a, str>>),
}

impl<'a> Audience<'a> {
    /// Every audience value.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            Self::One(a) => (Some(a.as_ref()), &[][..]),
            Self::Many(v) => (None, v.as_slice()),
        };
        one.into_iter().chain(many.iter().map(AsRef::as_ref))
    }

    /// True if `aud` is one of the values.
    #[must_use]
    pub fn contains(&self, aud: &str) -> bool {
        self.iter().any(|a| a == aud)
    }

    /// An owned copy.
    #[must_use]
    pub fn into_owned(self) -> Audience<'static> {
        match self {
            Self::One(a) => Audience::One(Cow::Owned(a.into_owned())),
            Self::Many(v) => {
                Audience::Many(v.into_iter().map(|a| Cow::Owned(a.into_owned())).collect())
            }
        }
    }
}

impl Serialize for Audience<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::One(a) => s.serialize_str(a),
            Self::Many(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for a in v {
                    seq.serialize_element(a.as_ref())?;
                }
                seq.end()
            }
        }
    }
}

/// The registered claims of RFC 7519 §4.1, type-checked.
///
/// Strings borrow from the verified payload when they contain no escapes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisteredClaims<'a> {
    /// Issuer (§4.1.1).
    pub iss: Option<Cow<'a, str>>,
    /// Subject (§4.1.2).
    pub sub: Option<Cow<'a, str>>,
    /// Audience (§4.1.3).
    pub aud: Option<Audience<'a>>,
    /// Expiration time (§4.1.4).
    pub exp: Option<NumericDate>,
    /// Not before (§4.1.5).
    pub nbf: Option<NumericDate>,
    /// Issued at (§4.1.6).
    pub iat: Option<NumericDate>,
    /// JWT id (§4.1.7).
    pub jti: Option<Cow<'a, str>>,
}

impl RegisteredClaims<'_> {
    /// An owned copy.
    #[must_use]
    pub fn into_owned(self) -> RegisteredClaims<'static> {
        let own = |c: Option<Cow<'_, str>>| c.map(|c| Cow::Owned(c.into_owned()));
        RegisteredClaims {
            iss: own(self.iss),
            sub: own(self.sub),
            aud: self.aud.map(Audience::into_owned),
            exp: self.exp,
            nbf: self.nbf,
            iat: self.iat,
            jti: own(self.jti),
        }
    }
}

impl Serialize for RegisteredClaims<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        self.serialize_entries::<S>(&mut map)?;
        map.end()
    }
}

impl RegisteredClaims<'_> {
    fn serialize_entries<S: Serializer>(&self, map: &mut S::SerializeMap) -> Result<(), S::Error> {
        if let Some(v) = &self.iss {
            map.serialize_entry("iss", v)?;
        }
        if let Some(v) = &self.sub {
            map.serialize_entry("sub", v)?;
        }
        if let Some(v) = &self.aud {
            map.serialize_entry("aud", v)?;
        }
        if let Some(v) = &self.exp {
            map.serialize_entry("exp", v)?;
        }
        if let Some(v) = &self.nbf {
            map.serialize_entry("nbf", v)?;
        }
        if let Some(v) = &self.iat {
            map.serialize_entry("iat", v)?;
        }
        if let Some(v) = &self.jti {
            map.serialize_entry("jti", v)?;
        }
        Ok(())
    }
}

/// A claims set: the registered claims plus the caller's custom claims `T`.
///
/// On decode, `T` receives every member *except* the seven registered names, so a custom
/// struct cannot be tricked into reading an unvalidated copy of, say, `exp`. On encode, `T`
/// must serialize as a map (a struct) whose keys do not repeat registered names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims<'a, T> {
    /// The registered claims.
    pub registered: RegisteredClaims<'a>,
    /// The custom claims.
    pub custom: T,
}

impl<'a, T> Claims<'a, T> {
    /// Claims with the given custom part and no registered claims.
    pub fn new(custom: T) -> Self {
        Self {
            registered: RegisteredClaims::default(),
            custom,
        }
    }

    /// Copies borrowed registered claims so the value no longer borrows the payload.
    pub fn into_owned(self) -> Claims<'static, T> {
        Claims {
            registered: self.registered.into_owned(),
            custom: self.custom,
        }
    }
}

impl<T: Serialize> Serialize for Claims<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Registered first, then the custom members flattened in. `sign_jwt` re-parses the
        // output with the strict parser, so a custom member shadowing a registered one is
        // caught there.
        #[derive(Serialize)]
        struct Flat<'x, 'a, T> {
            #[serde(flatten)]
            registered: &'x RegisteredClaims<'a>,
            #[serde(flatten)]
            custom: &'x T,
        }
        Flat {
            registered: &self.registered,
            custom: &self.custom,
        }
        .serialize(s)
    }
}

/// Custom claims for callers that need only the registered ones: accepts and ignores
/// everything else, and serializes to nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoCustomClaims;

impl<'de> Deserialize<'de> for NoCustomClaims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_ignored_any(IgnoredAny)?;
        Ok(Self)
    }
}

impl Serialize for NoCustomClaims {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_map(Some(0))?.end()
    }
}

/// Parses a claims set strictly: a JSON object, no duplicate member names (escaped or
/// not), registered claims of the right JSON type (NumericDate a number, `aud` a string or
/// array of strings, the others strings), then the remaining members into `T`.
///
/// One pass over the payload: the registered members are taken out as they stream by and
/// every other member goes straight to `T`'s visitor, so nothing is buffered or re-parsed.
pub(crate) fn parse<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Result<Claims<'a, T>> {
    // JSON text is UTF-8 (RFC 8259 §8.1). Checking it once, up front, lets the parser take
    // each string as it is instead of validating them one by one.
    let json = std::str::from_utf8(json).map_err(|_| Error::MalformedClaims {
        reason: "the claims are not UTF-8".into(),
    })?;
    let failure = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(json);
    let res = de
        .deserialize_map(ClaimsVisitor::<T> {
            failure: &failure,
            _t: PhantomData,
        })
        .and_then(|c| de.end().map(|()| c));
    res.map_err(|e| {
        failure.take().unwrap_or_else(|| Error::MalformedClaims {
            reason: truncate(&e.to_string(), 160),
        })
    })
}

struct ClaimsVisitor<'f, T> {
    failure: &'f Cell<Option<Error>>,
    _t: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ClaimsVisitor<'_, T> {
    type Value = Claims<'de, T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut members = Members {
            map,
            registered: RegisteredClaims::default(),
            custom_names: KeyLog::new(),
            failure: self.failure,
            refused: false,
        };
        let custom = T::deserialize(CustomClaimsDeserializer {
            members: &mut members,
        });
        // Any error while reading the object refuses the claims, even one `T`'s visitor
        // swallowed; then whatever `T` left unread is still checked (and its registered
        // claims parsed) before the claims count as valid.
        if members.refused {
            return Err(de::Error::custom("claims refused"));
        }
        let custom = custom?;
        while members.next_key::<IgnoredAny>()?.is_some() {
            members.next_value::<IgnoredAny>()?;
        }
        if members.refused {
            return Err(de::Error::custom("claims refused"));
        }
        Ok(Claims {
            registered: members.registered,
            custom,
        })
    }
}

/// The claims object as `T` sees it: every member except the registered ones, which are
/// parsed into typed fields as they pass, and with duplicate names refused.
struct Members<'f, 'de, A> {
    map: A,
    registered: RegisteredClaims<'de>,
    custom_names: KeyLog<'de>,
    failure: &'f Cell<Option<Error>>,
    refused: bool,
}

impl<'de, A: MapAccess<'de>> Members<'_, 'de, A> {
    /// Passes `result` on, remembering an error so that it sticks. The first error is also
    /// kept as the reason, unless a precise one was recorded already: the claims are then
    /// refused with what was wrong (a trailing comma, a lone surrogate...), not with the
    /// generic "claims refused" that stands in for it once `T` has returned.
    fn watch<R>(&mut self, result: Result<R, A::Error>) -> Result<R, A::Error> {
        if let Err(e) = &result {
            if !self.refused {
                let recorded = self.failure.take();
                self.failure.set(recorded.or_else(|| {
                    Some(Error::MalformedClaims {
                        reason: truncate(&e.to_string(), 160),
                    })
                }));
            }
            self.refused = true;
        }
        result
    }

    fn refuse(&mut self, error: Error) -> A::Error {
        self.failure.set(Some(error));
        self.refused = true;
        de::Error::custom("claims refused")
    }

    fn duplicate(&mut self, name: &str) -> A::Error {
        self.refuse(Error::DuplicateMember {
            part: Part::Claims,
            name: truncate(name, 64),
        })
    }

    /// Parses the value of registered claim `name` into its slot, or returns false if
    /// `name` is not a registered claim.
    fn take_registered(&mut self, name: &str) -> Result<bool, A::Error> {
        macro_rules! once {
            ($slot:ident, $seed:expr) => {{
                if self.registered.$slot.is_some() {
                    return Err(self.duplicate(stringify!($slot)));
                }
                let value = self.map.next_value_seed($seed);
                let value = self.watch(value)?;
                self.registered.$slot = Some(value);
            }};
        }
        let failure = self.failure;
        let string = |claim| StrSeed { claim, failure };
        let date = |claim| DateSeed { claim, failure };
        // Byte patterns: every registered name is three ASCII letters, and matching them
        // this way costs a length check and a few byte compares per member.
        match name.as_bytes() {
            b"iss" => once!(iss, string("iss")),
            b"sub" => once!(sub, string("sub")),
            b"jti" => once!(jti, string("jti")),
            b"aud" => once!(aud, AudSeed { failure }),
            b"exp" => once!(exp, date("exp")),
            b"nbf" => once!(nbf, date("nbf")),
            b"iat" => once!(iat, date("iat")),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Members<'_, 'de, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let key = self.map.next_key();
            let Some(Key(key)) = self.watch(key)? else {
                return Ok(None);
            };
            if self.take_registered(&key)? {
                continue;
            }
            if !self.custom_names.insert(key.clone()) {
                return Err(self.duplicate(&key));
            }
            let key = match key {
                Cow::Borrowed(k) => seed.deserialize(BorrowedStrDeserializer::new(k)),
                Cow::Owned(k) => seed.deserialize(k.into_deserializer()),
            };
            return self.watch(key).map(Some);
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        let value = self.map.next_value_seed(seed);
        self.watch(value)
    }
}

/// Hands [`Members`] to `T` as a map, whatever `T` asks for (like serde's own
/// `MapDeserializer`): a `T` that is not a map fails with serde's usual type error.
struct CustomClaimsDeserializer<'m, M> {
    members: &'m mut M,
}

impl<'de, M: MapAccess<'de>> Deserializer<'de> for CustomClaimsDeserializer<'_, M> {
    type Error = M::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, M::Error> {
        visitor.visit_map(self.members)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

fn type_error<E: de::Error>(
    failure: &Cell<Option<Error>>,
    claim: &'static str,
    expected: &'static str,
) -> E {
    failure.set(Some(Error::InvalidClaimType { claim, expected }));
    E::custom("wrong claim type")
}

struct StrSeed<'f> {
    claim: &'static str,
    failure: &'f Cell<Option<Error>>,
}

impl<'de> DeserializeSeed<'de> for StrSeed<'_> {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(StrOrOther)?
            .ok_or_else(|| type_error(self.failure, self.claim, "a string"))
    }
}

struct DateSeed<'f> {
    claim: &'static str,
    failure: &'f Cell<Option<Error>>,
}

impl<'de> DeserializeSeed<'de> for DateSeed<'_> {
    type Value = NumericDate;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        // Rounding must never widen what a token is accepted for. An `exp` rounded down only
        // shortens its life (RFC 7519 §4.1.4), and a `nbf` is rounded up so the token is never
        // accepted before it (§4.1.5). An `iat` is rounded down, to the second the token was
        // issued in: user-wide revocation cut-offs (tessera-auth, tessera-axum) revoke tokens
        // issued at or before a whole second, so a token issued during that second must not
        // read as issued in the next one. At worst a token issued less than a second ahead of
        // the verifier's clock passes the "issued in the future" check (§4.1.6 sets no rule
        // for that; the check is a sanity check with leeway anyway).
        let visitor = DateVisitor {
            round_up: self.claim == "nbf",
        };
        d.deserialize_any(visitor)?.ok_or_else(|| {
            type_error(
                self.failure,
                self.claim,
                "a number of seconds (NumericDate)",
            )
        })
    }
}

/// Accepts JSON numbers only; fractional seconds are allowed by RFC 7519 §2 and are rounded
/// down, or up when `round_up`. Values outside ±2^53 (where JSON numbers stop being exact)
/// are refused.
struct DateVisitor {
    round_up: bool,
}

const MAX_SAFE: i64 = (1 << 53) - 1;

impl<'de> Visitor<'de> for DateVisitor {
    type Value = Option<NumericDate>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok((-MAX_SAFE..=MAX_SAFE)
            .contains(&v)
            .then_some(NumericDate(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v)
            .ok()
            .and_then(|v| (v <= MAX_SAFE).then_some(NumericDate(v))))
    }

    #[allow(
        clippy::cast_possible_truncation,
        reason = "range-checked just before the cast"
    )]
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        let whole = if self.round_up { v.ceil() } else { v.floor() };
        let limit = MAX_SAFE as f64;
        Ok((whole.is_finite() && (-limit..=limit).contains(&whole))
            .then_some(NumericDate(whole as i64)))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

struct AudSeed<'f> {
    failure: &'f Cell<Option<Error>>,
}

const AUD_EXPECTED: &str = "a string or an array of strings";

impl<'de> DeserializeSeed<'de> for AudSeed<'_> {
    type Value = Audience<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(AudVisitor {
            failure: self.failure,
        })
    }
}

struct AudVisitor<'f> {
    failure: &'f Cell<Option<Error>>,
}

impl<'de> Visitor<'de> for AudVisitor<'_> {
    type Value = Audience<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(AUD_EXPECTED)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Audience::One(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Audience::One(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Audience::One(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element_seed(AudItem)? {
            match item {
                Some(s) => out.push(s),
                None => return Err(type_error(self.failure, "aud", AUD_EXPECTED)),
            }
        }
        Ok(Audience::Many(out))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(type_error(self.failure, "aud", AUD_EXPECTED))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(type_error(self.failure, "aud", AUD_EXPECTED))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(type_error(self.failure, "aud", AUD_EXPECTED))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(type_error(self.failure, "aud", AUD_EXPECTED))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(type_error(self.failure, "aud", AUD_EXPECTED))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(type_error(self.failure, "aud", AUD_EXPECTED))
    }
}

struct AudItem;

impl<'de> DeserializeSeed<'de> for AudItem {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(StrOrOther)
    }
}

/// Checks that `json` is one object whose member names are unique and whose registered
/// claims are well typed: what we encode must be what we would accept.
///
/// `json` is serde_json's output, so it is well-formed JSON and, unless a raw value was
/// embedded, compact. [`plainly_encodable`] confirms the common case in one cheap scan;
/// anything it cannot confirm goes through the same strict parser verifiers use, which
/// decides (and words the error).
pub(crate) fn check_encodable(json: &[u8]) -> Result<()> {
    if plainly_encodable(json) {
        return Ok(());
    }
    parse::<NoCustomClaims>(json)
        .map(|_| ())
        .map_err(|e| Error::Encode {
            reason: e.to_string(),
        })
}

/// For well-formed JSON (which serde_json always writes, raw values included: they are
/// validated when made), true only if `json` is certainly accepted by [`parse`]: a compact
/// object (no whitespace between its own members) of at most 24 members, with unique names
/// written without escapes, whose registered claims have plainly the types `parse`
/// requires: a string for `iss`/`sub`/`jti`, a string or an array of strings for `aud`, and
/// for `exp`/`nbf`/`iat` a plain integer within ±(2^53 − 1). False means "not confirmed",
/// never "invalid".
///
/// Names without escapes are equal exactly when their bytes are, so comparing bytes finds
/// every duplicate `parse` would. Values are delimited by their JSON structure (strings
/// with their escapes, nested objects and arrays by depth), which is exact on well-formed
/// input; on anything else the scan gives up.
fn plainly_encodable(json: &[u8]) -> bool {
    let Some(mut rest) = json.strip_prefix(b"{").and_then(|b| b.strip_suffix(b"}")) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let mut names: [&[u8]; 24] = [&[]; 24];
    let mut count = 0;
    loop {
        let Some(after_quote) = rest.strip_prefix(b"\"") else {
            return false;
        };
        let Some(end) = after_quote.iter().position(|&b| b == b'"' || b == b'\\') else {
            return false;
        };
        let (name, after_name) = after_quote.split_at(end);
        let Some(value_and_rest) = after_name.strip_prefix(b"\":") else {
            // An escape in the name (or malformed input): let the parser decide.
            return false;
        };
        if names.get(..count).unwrap_or_default().contains(&name) {
            return false;
        }
        let Some(slot) = names.get_mut(count) else {
            return false;
        };
        *slot = name;
        count += 1;
        let Some(len) = json_value_len(value_and_rest) else {
            return false;
        };
        let (value, after_value) = value_and_rest.split_at(len);
        if !registered_claim_plainly_typed(name, value) {
            return false;
        }
        match after_value.split_first() {
            None => return true,
            Some((b',', next)) => rest = next,
            Some(_) => return false,
        }
    }
}

/// The length of the JSON value at the start of `s`, or `None` if it is not one this scan
/// can delimit (a scalar containing whitespace, an unterminated string or structure).
fn json_value_len(s: &[u8]) -> Option<usize> {
    match s.first()? {
        b'"' => json_string_len(s),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = 0;
            while let Some(&b) = s.get(i) {
                match b {
                    b'"' => {
                        i += json_string_len(s.get(i..)?)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let len = s
                .iter()
                .position(|&b| b == b',' || b == b'}' || b == b']')
                .unwrap_or(s.len());
            let scalar = s.get(..len)?;
            (!scalar.is_empty() && !scalar.iter().any(u8::is_ascii_whitespace)).then_some(len)
        }
    }
}

/// The length of the JSON string at the start of `s` (which starts with its quote).
fn json_string_len(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    loop {
        i += quote_or_backslash(s.get(i..)?)?;
        match s.get(i)? {
            b'"' => return Some(i + 1),
            // A backslash and the character it escapes (`\uXXXX` continues as plain text).
            _ => i += 2,
        }
    }
}

/// The index of the first `"` or `\\` in `s`, eight bytes at a time.
fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // The high bit of each byte of `w` that equals `b`. A byte above a true match may be
    // flagged too, but the lowest flag is always exact, and only the lowest is used.
    let matches = |w: u64, b: u8| {
        let x = w ^ (ONES * u64::from(b));
        x.wrapping_sub(ONES) & !x & HIGHS
    };
    let mut chunks = s.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let m = matches(w, b'"') | matches(w, b'\\');
        if m != 0 {
            return Some(offset + m.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map(|i| offset + i)
}

/// Whether a registered claim's value plainly has the type [`parse`] requires (see
/// [`plainly_encodable`]); any other name is unconstrained.
fn registered_claim_plainly_typed(name: &[u8], value: &[u8]) -> bool {
    match name {
        b"iss" | b"sub" | b"jti" => value.first() == Some(&b'"'),
        b"aud" => match value {
            [b'"', ..] => true,
            [b'[', inner @ .., b']'] => {
                let mut rest = inner;
                while !rest.is_empty() {
                    let len = match rest.first() {
                        Some(b'"') => json_string_len(rest),
                        _ => None,
                    };
                    let Some(after) = len.and_then(|len| rest.get(len..)) else {
                        return false;
                    };
                    rest = match after.split_first() {
                        None => after,
                        Some((b',', next)) if !next.is_empty() => next,
                        Some(_) => return false,
                    };
                }
                true
            }
            _ => false,
        },
        b"exp" | b"nbf" | b"iat" => {
            let digits = value.strip_prefix(b"-").unwrap_or(value);
            let canonical = match digits {
                [b'0'] => true,
                [b'1'..=b'9', ..] => digits.len() <= 16 && digits.iter().all(u8::is_ascii_digit),
                _ => false,
            };
            canonical
                && digits
                    .iter()
                    .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'))
                    <= MAX_SAFE
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Custom<'a> {
        #[serde(borrow)]
        role: Cow<'a, str>,
        #[serde(default)]
        n: u32,
    }

    #[test]
    fn registered_and_custom_claims_are_split() {
        let json = br#"{"sub":"alice","exp":1700000000,"aud":["a","b"],"role":"admin","n":3}"#;
        let c: Claims<'_, Custom<'_>> = parse(json).unwrap();
        assert_eq!(c.registered.sub.as_deref(), Some("alice"));
        assert_eq!(c.registered.exp, Some(NumericDate(1_700_000_000)));
        assert!(c.registered.aud.as_ref().unwrap().contains("b"));
        assert_eq!(
            c.custom,
            Custom {
                role: Cow::Borrowed("admin"),
                n: 3
            }
        );
        assert!(
            matches!(c.custom.role, Cow::Borrowed(_)),
            "unescaped strings borrow"
        );
    }

    #[test]
    fn custom_claims_never_see_registered_names() {
        let c: Claims<'_, BTreeMap<String, serde_json::Value>> =
            parse(br#"{"exp":1,"x":true}"#).unwrap();
        assert_eq!(c.custom.keys().collect::<Vec<_>>(), ["x"]);
    }

    #[test]
    fn claim_types_are_strict() {
        let cases: [(&[u8], &str); 8] = [
            (br#"{"exp":"1700000000"}"#, "exp"),
            (br#"{"exp":true}"#, "exp"),
            (br#"{"nbf":null}"#, "nbf"),
            (br#"{"iat":[1]}"#, "iat"),
            (br#"{"sub":42}"#, "sub"),
            (br#"{"iss":{"a":1}}"#, "iss"),
            (br#"{"aud":[1]}"#, "aud"),
            (br#"{"jti":false}"#, "jti"),
        ];
        for (json, claim) in cases {
            match parse::<NoCustomClaims>(json) {
                Err(Error::InvalidClaimType { claim: c, .. }) => assert_eq!(c, claim),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(json)),
            }
        }
    }

    #[test]
    fn numeric_dates_accept_fractions_and_refuse_huge_values() {
        let c: Claims<'_, NoCustomClaims> =
            parse(br#"{"exp":1700000000.9,"nbf":1699999999.1,"iat":-0.5}"#).unwrap();
        assert_eq!(c.registered.exp, Some(NumericDate(1_700_000_000)));
        assert_eq!(c.registered.nbf, Some(NumericDate(1_700_000_000)));
        assert_eq!(c.registered.iat, Some(NumericDate(-1)));
        assert!(parse::<NoCustomClaims>(br#"{"exp":1e300}"#).is_err());
        assert!(parse::<NoCustomClaims>(br#"{"exp":18446744073709551615}"#).is_err());
    }

    #[test]
    fn duplicate_names_are_refused_registered_or_custom_escaped_or_not() {
        for json in [
            &br#"{"exp":1,"exp":2}"#[..],
            br#"{"exp":1,"\u0065xp":2}"#,
            br#"{"role":"a","role":"admin"}"#,
            br#"{"role":"a","r\u006fle":"admin"}"#,
        ] {
            assert!(
                matches!(
                    parse::<NoCustomClaims>(json),
                    Err(Error::DuplicateMember {
                        part: Part::Claims,
                        ..
                    })
                ),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    #[test]
    fn malformed_claims_say_what_is_wrong() {
        for (json, reason) in [
            (&br#"{"exp":1,"x":1,}"#[..], "trailing comma"),
            (br#"{"exp":1,"sub":"\ud800"}"#, "hex escape"),
            (br#"{"exp":1,"x":tru}"#, "expected ident"),
            (br#"{"exp":1,"x":01}"#, "invalid number"),
        ] {
            match parse::<NoCustomClaims>(json) {
                Err(Error::MalformedClaims { reason: r }) => {
                    assert!(r.contains(reason), "{}: {r}", String::from_utf8_lossy(json));
                }
                other => panic!("{}: {other:?}", String::from_utf8_lossy(json)),
            }
        }
        // A precise reason recorded first still wins.
        assert!(matches!(
            parse::<NoCustomClaims>(br#"{"exp":"1","x":1,}"#),
            Err(Error::InvalidClaimType { claim: "exp", .. })
        ));
    }

    #[test]
    fn non_objects_are_malformed() {
        for json in [&b"[]"[..], b"\"x\"", b"", b"{", b"{} {}", b"foo"] {
            assert!(matches!(
                parse::<NoCustomClaims>(json),
                Err(Error::MalformedClaims { .. })
            ));
        }
    }

    #[test]
    fn serialization_flattens_custom_claims() {
        let mut c = Claims::new(BTreeMap::from([("role", "admin")]));
        c.registered.sub = Some("alice".into());
        c.registered.exp = Some(NumericDate(5));
        c.registered.aud = Some(Audience::One("api".into()));
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"sub":"alice","aud":"api","exp":5,"role":"admin"}"#
        );
        let shadow = Claims {
            registered: c.registered.clone(),
            custom: BTreeMap::from([("exp", 9)]),
        };
        assert!(check_encodable(&serde_json::to_vec(&shadow).unwrap()).is_err());
    }

    #[test]
    fn custom_claims_see_every_other_member_and_keep_borrowing() {
        use serde_json::value::RawValue;
        let json = br#"{"iss":"i","a":1,"exp":5,"b":"two","aud":["x"],"c":[1,{"exp":"x"}]}"#;
        let c: Claims<'_, BTreeMap<&str, &RawValue>> = parse(json).unwrap();
        assert_eq!(
            c.custom.keys().copied().collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(c.custom["c"].get(), r#"[1,{"exp":"x"}]"#);
        assert_eq!(c.registered.exp, Some(NumericDate(5)));
        assert_eq!(c.registered.iss.as_deref(), Some("i"));
    }

    #[test]
    fn a_custom_type_that_stops_early_still_gets_everything_checked() {
        /// Reads the first member only, then returns.
        #[derive(Debug)]
        struct FirstOnly;
        impl<'de> Deserialize<'de> for FirstOnly {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = FirstOnly;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a map")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<FirstOnly, A::Error> {
                        let _ = m.next_entry::<IgnoredAny, IgnoredAny>()?;
                        Ok(FirstOnly)
                    }
                }
                d.deserialize_map(V)
            }
        }
        let c: Claims<'_, FirstOnly> = parse(br#"{"a":1,"exp":7,"sub":"s"}"#).unwrap();
        assert_eq!(c.registered.exp, Some(NumericDate(7)));
        assert_eq!(c.registered.sub.as_deref(), Some("s"));
        assert!(matches!(
            parse::<FirstOnly>(br#"{"a":1,"exp":"7"}"#),
            Err(Error::InvalidClaimType { claim: "exp", .. })
        ));
        assert!(matches!(
            parse::<FirstOnly>(br#"{"a":1,"b":2,"b":3}"#),
            Err(Error::DuplicateMember { .. })
        ));
    }

    #[test]
    fn a_custom_type_cannot_swallow_a_refusal() {
        /// Ignores every error the map reports and returns what it has.
        #[derive(Debug)]
        struct Forgiving;
        impl<'de> Deserialize<'de> for Forgiving {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Forgiving;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a map")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Forgiving, A::Error> {
                        while let Ok(Some(_)) = m.next_key::<IgnoredAny>() {
                            let _ = m.next_value::<IgnoredAny>();
                        }
                        Ok(Forgiving)
                    }
                }
                d.deserialize_map(V)
            }
        }
        for json in [
            &br#"{"a":1,"exp":"soon"}"#[..],
            br#"{"a":1,"exp":1,"\u0065xp":2}"#,
            br#"{"a":1,"a":2}"#,
        ] {
            assert!(
                parse::<Forgiving>(json).is_err(),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    #[test]
    fn many_custom_names_are_still_checked_for_duplicates() {
        let names: Vec<String> = (0..20).map(|i| format!("\"k{i}\":{i}")).collect();
        let ok = format!("{{{}}}", names.join(","));
        assert!(parse::<NoCustomClaims>(ok.as_bytes()).is_ok());
        let dup = format!("{{{},\"k3\":0}}", names.join(","));
        assert!(matches!(
            parse::<NoCustomClaims>(dup.as_bytes()),
            Err(Error::DuplicateMember { .. })
        ));
        let escaped_dup = format!("{{{},\"k\\u00319\":0}}", names.join(","));
        assert!(matches!(
            parse::<NoCustomClaims>(escaped_dup.as_bytes()),
            Err(Error::DuplicateMember { .. })
        ));
    }

    #[test]
    fn the_word_at_a_time_search_finds_the_first_quote_or_backslash() {
        let naive = |s: &[u8]| s.iter().position(|&b| b == b'"' || b == b'\\');
        let mut cases: Vec<Vec<u8>> = vec![Vec::new(), b"abc".to_vec()];
        for len in 0..20 {
            for at in 0..len {
                for (special, other) in [(b'"', b'a'), (b'\\', 0x22 ^ 0x80), (b'"', b'\\')] {
                    let mut v = vec![0x21u8; len];
                    v[at] = special;
                    if at + 1 < len {
                        v[at + 1] = other;
                    }
                    cases.push(v);
                }
            }
        }
        cases.push("ümlaut \"".as_bytes().to_vec());
        for case in cases {
            assert_eq!(quote_or_backslash(&case), naive(&case), "{case:?}");
        }
    }

    #[test]
    fn the_quick_encodability_scan_confirms_only_what_the_parser_accepts() {
        // Confirmed by the scan.
        for json in [
            &b"{}"[..],
            br#"{"sub":"alice","aud":"api","exp":5,"role":"admin"}"#,
            br#"{"aud":["a","b"],"exp":15,"x":{"exp":"nested is fine","a":[1,"]"]}}"#,
            br#"{"aud":[],"exp":9007199254740991,"nbf":-9007199254740991,"iat":0}"#,
            br#"{"jti":"a\\\"b","x":"\\"}"#,
            br#"{"s":"quote \" comma , brace } bracket ]","exp":-3}"#,
        ] {
            assert!(plainly_encodable(json), "{}", String::from_utf8_lossy(json));
            assert!(check_encodable(json).is_ok());
        }
        // Not confirmed by the scan; the parser decides.
        for (json, valid) in [
            (&br#"{"exp":1,"exp":2}"#[..], false),
            (br#"{"exp":"1"}"#, false),
            (br#"{"aud":[1]}"#, false),
            (br#"{"sub":null}"#, false),
            (br#"{"exp":1e300}"#, false),
            (br#"{"exp":9007199254740992}"#, false),
            (br#"{"aud":["a",1]}"#, false),
            (br#"{"aud":["a",]}"#, false),
            (br#"{"exp":01}"#, false),
            (br#"{"exp":1.5}"#, true),
            (br#"{"exp":1,"\u0065xp":2}"#, false),
            (br#"{"exp": 1}"#, true),
            (br#"{"a\u0062":1}"#, true),
            (br#" {"exp":1}"#, true),
            (br#"[]"#, false),
            (br#""x""#, false),
            (br#"{"a":1"#, false),
        ] {
            assert!(
                !plainly_encodable(json),
                "{}",
                String::from_utf8_lossy(json)
            );
            assert_eq!(
                check_encodable(json).is_ok(),
                valid,
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    proptest::proptest! {
        /// Whatever the scan confirms, the strict parser accepts. The inputs are well-formed
        /// JSON, as serde_json's output always is (the scan's precondition).
        #[test]
        fn the_quick_scan_never_confirms_what_the_parser_refuses(
            members in proptest::collection::vec((0usize..12, 0usize..22, proptest::bool::ANY), 0..8),
        ) {
            const NAMES: [&str; 12] = [
                "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "role", "a", r"e\u0078p",
                r"r\u006fle", "ünï",
            ];
            const VALUES: [&str; 22] = [
                "1", "-2.5", "1e300", "18446744073709551615", "\"s\"", r#""a\"b,\"exp\":1""#,
                "null", "true", "[]", r#"["a"]"#, r#"["a",1]"#, r#"{"exp":"x"}"#,
                r#"[{"a":[]},"]"]"#, " 1", "{}", r#""\u0041""#, "9007199254740992",
                "-9007199254740991", "0", "-0", "-1.0e2", r#"["a","b"]"#,
            ];
            let body: Vec<String> = members
                .iter()
                .map(|&(n, v, space)| {
                    let sep = if space { ": " } else { ":" };
                    format!("\"{}\"{sep}{}", NAMES[n], VALUES[v])
                })
                .collect();
            let json = format!("{{{}}}", body.join(","));
            if plainly_encodable(json.as_bytes()) {
                proptest::prop_assert!(
                    parse::<NoCustomClaims>(json.as_bytes()).is_ok(),
                    "confirmed but refused: {json}"
                );
            }
        }
    }
}
