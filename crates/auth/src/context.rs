//! [`AccessContext`]: who is behind a verified access token.
//!
//! A cached token's context is read on every request that presents the token, and with
//! many distinct tokens in use most of those reads miss the CPU caches. Its text therefore
//! lives in one allocation (and the list boundaries in a second, allocated right after),
//! not in ten separate strings: reading a context is a walk over two short blocks of
//! memory instead of a chase through ten pointers. The text is shared (an `Arc<str>`) so
//! that the cache can also keep it next to its own entry: a lookup then reaches the token it
//! compares without going through the context first (see [`SharedToken`]).

use std::fmt;
use std::sync::Arc;

/// A field's place in [`AccessContext::text`]: byte offsets (a context is built from a
/// token, whose size is capped far below 4 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

/// The caller behind a verified access token.
///
/// A context the verified-token cache holds also carries the token itself and the `kid` of
/// the key that verified it, in the same text (the cache compares the token and checks the
/// key on every hit); neither is shown by `Debug` or compared by `==`.
#[derive(Clone)]
pub struct AccessContext {
    /// The token (cached contexts only), the `kid`, then every text field, one after the
    /// other.
    text: Arc<str>,
    /// The token's length: it starts the text (empty for a context not from the cache).
    token_len: u32,
    kid: Option<Span>,
    user_id: Span,
    username: Span,
    scope: Span,
    client_id: Span,
    jti: Span,
    session_id: Option<Span>,
    /// The roles, then the authentication methods.
    items: Box<[Span]>,
    /// How many of `items` are roles.
    roles: usize,
    /// Issue time (`iat`; 0 when the token had none).
    pub issued_at: i64,
    /// Expiry (`exp`).
    pub expires_at: i64,
    /// True for a client's own token (`client_credentials`): no user behind it.
    pub is_client: bool,
}

/// What an [`AccessContext`] is built from.
#[derive(Debug, Clone, Copy)]
pub struct AccessContextParts<'a, R, A> {
    /// User id.
    pub user_id: &'a str,
    /// Username.
    pub username: &'a str,
    /// Roles, the primary one first.
    pub roles: R,
    /// Granted scope.
    pub scope: &'a str,
    /// Client the token was issued to.
    pub client_id: &'a str,
    /// Session id, for user tokens.
    pub session_id: Option<&'a str>,
    /// Token id.
    pub jti: &'a str,
    /// Issue time.
    pub issued_at: i64,
    /// Expiry.
    pub expires_at: i64,
    /// Authentication methods (RFC 8176).
    pub amr: A,
    /// True for a client's own token.
    pub is_client: bool,
}

impl AccessContext {
    /// A context holding `parts`.
    #[must_use]
    pub fn new<'a, R, A>(parts: AccessContextParts<'a, R, A>) -> Self
    where
        R: IntoIterator<Item = &'a str>,
        A: IntoIterator<Item = &'a str>,
        R::IntoIter: Clone,
        A::IntoIter: Clone,
    {
        Self::verified(parts, "", None)
    }

    /// The context of `token`, verified by the key `kid`, for the verified-token cache.
    pub(crate) fn verified<'a, R, A>(
        parts: AccessContextParts<'a, R, A>,
        token: &str,
        kid: Option<&str>,
    ) -> Self
    where
        R: IntoIterator<Item = &'a str>,
        A: IntoIterator<Item = &'a str>,
        R::IntoIter: Clone,
        A::IntoIter: Clone,
    {
        let roles = parts.roles.into_iter();
        let amr = parts.amr.into_iter();
        let len = [
            token,
            kid.unwrap_or_default(),
            parts.user_id,
            parts.username,
            parts.scope,
            parts.client_id,
            parts.jti,
            parts.session_id.unwrap_or_default(),
        ]
        .iter()
        .map(|s| s.len())
        .chain(roles.clone().map(str::len))
        .chain(amr.clone().map(str::len))
        .sum();
        let mut text = String::with_capacity(len);
        let mut push = |s: &str| {
            let start = offset(text.len());
            text.push_str(s);
            Span {
                start,
                end: offset(text.len()),
            }
        };
        let token_len = push(token).end;
        let kid = kid.map(&mut push);
        let user_id = push(parts.user_id);
        let username = push(parts.username);
        let scope = push(parts.scope);
        let client_id = push(parts.client_id);
        let jti = push(parts.jti);
        let session_id = parts.session_id.map(&mut push);
        let mut items: Vec<Span> = roles.map(&mut push).collect();
        let role_count = items.len();
        items.extend(amr.map(&mut push));
        Self {
            text: Arc::from(text),
            token_len,
            kid,
            user_id,
            username,
            scope,
            client_id,
            jti,
            session_id,
            items: items.into_boxed_slice(),
            roles: role_count,
            issued_at: parts.issued_at,
            expires_at: parts.expires_at,
            is_client: parts.is_client,
        }
    }

    fn get(&self, span: Span) -> &str {
        span.of(&self.text)
    }

    /// The token (empty unless this is a context of the verified-token cache), for the cache
    /// to keep in its entry: it shares this context's text (no copy), which starts with it.
    pub(crate) fn shared_token(&self) -> SharedToken {
        SharedToken {
            text: Arc::clone(&self.text),
            len: self.token_len as usize,
        }
    }

    /// The `kid` of the key that verified the token, for a context of the cache.
    pub(crate) fn kid(&self) -> Option<&str> {
        self.kid.map(|span| self.get(span))
    }

    /// User id.
    #[must_use]
    pub fn user_id(&self) -> &str {
        self.get(self.user_id)
    }

    /// Username.
    #[must_use]
    pub fn username(&self) -> &str {
        self.get(self.username)
    }

    /// Granted scope.
    #[must_use]
    pub fn scope(&self) -> &str {
        self.get(self.scope)
    }

    /// Client the token was issued to.
    #[must_use]
    pub fn client_id(&self) -> &str {
        self.get(self.client_id)
    }

    /// Token id (empty when the token had none).
    #[must_use]
    pub fn jti(&self) -> &str {
        self.get(self.jti)
    }

    /// Session id, for user tokens.
    #[must_use]
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.map(|span| self.get(span))
    }

    /// Roles, the primary one first.
    #[must_use]
    pub fn roles(&self) -> Items<'_> {
        self.items(..self.roles)
    }

    /// The primary role.
    #[must_use]
    pub fn role(&self) -> Option<&str> {
        self.roles().next()
    }

    /// True if the caller has `role`.
    #[must_use]
    pub fn has_role(&self, role: &str) -> bool {
        self.roles().any(|r| r == role)
    }

    /// Authentication methods (RFC 8176).
    #[must_use]
    pub fn amr(&self) -> Items<'_> {
        self.items(self.roles..)
    }

    /// The items in `range` (within `items`, by construction).
    fn items(&self, range: impl std::slice::SliceIndex<[Span], Output = [Span]>) -> Items<'_> {
        Items {
            text: &self.text,
            spans: self.items.get(range).unwrap_or_default().iter(),
        }
    }
}

/// A cached token, as [`AccessContext::shared_token`] gives it: the context's text and the
/// length of the token at its start. Never printed.
#[derive(Clone)]
pub(crate) struct SharedToken {
    text: Arc<str>,
    len: usize,
}

impl SharedToken {
    /// The token's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.text.as_bytes().get(..self.len).unwrap_or_default()
    }
}

impl fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedToken(..)")
    }
}

impl Span {
    fn of(self, text: &str) -> &str {
        // Spans are made by `AccessContext::verified` from this very text, at character
        // boundaries, so the fallback is never taken.
        text.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

/// The roles or authentication methods of an [`AccessContext`].
#[derive(Clone)]
pub struct Items<'a> {
    text: &'a str,
    spans: std::slice::Iter<'a, Span>,
}

impl<'a> Iterator for Items<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.spans.next().map(|span| span.of(self.text))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl ExactSizeIterator for Items<'_> {}

/// The items only: `text` holds the cached token too, which must never be printed.
impl fmt::Debug for Items<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

/// A byte offset as stored in a [`Span`]. Contexts come from size-capped tokens, so the
/// fallback (which would make the field read as empty) is never taken.
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The same caller and token facts (the cached token and `kid` are not compared).
impl PartialEq for AccessContext {
    fn eq(&self, other: &Self) -> bool {
        self.user_id() == other.user_id()
            && self.username() == other.username()
            && self.roles().eq(other.roles())
            && self.scope() == other.scope()
            && self.client_id() == other.client_id()
            && self.session_id() == other.session_id()
            && self.jti() == other.jti()
            && self.issued_at == other.issued_at
            && self.expires_at == other.expires_at
            && self.amr().eq(other.amr())
            && self.is_client == other.is_client
    }
}

impl Eq for AccessContext {}

impl fmt::Debug for AccessContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessContext")
            .field("user_id", &self.user_id())
            .field("username", &self.username())
            .field("roles", &self.roles().collect::<Vec<_>>())
            .field("scope", &self.scope())
            .field("client_id", &self.client_id())
            .field("session_id", &self.session_id())
            .field("jti", &self.jti())
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("amr", &self.amr().collect::<Vec<_>>())
            .field("is_client", &self.is_client)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_reads_back_as_given() {
        let ctx = AccessContext::new(AccessContextParts {
            user_id: "u-1",
            username: "zoë",
            roles: ["admin", "user with space", ""],
            scope: "profile email",
            client_id: "tessera",
            session_id: Some("s-1"),
            jti: "j-1",
            issued_at: 10,
            expires_at: 20,
            amr: ["pwd", "otp"],
            is_client: false,
        });
        assert_eq!(ctx.user_id(), "u-1");
        assert_eq!(ctx.username(), "zoë");
        assert_eq!(
            ctx.roles().collect::<Vec<_>>(),
            ["admin", "user with space", ""]
        );
        assert_eq!(ctx.role(), Some("admin"));
        assert!(ctx.has_role("user with space"));
        assert!(!ctx.has_role("user"));
        assert_eq!(ctx.scope(), "profile email");
        assert_eq!(ctx.client_id(), "tessera");
        assert_eq!(ctx.session_id(), Some("s-1"));
        assert_eq!(ctx.jti(), "j-1");
        assert_eq!(ctx.amr().collect::<Vec<_>>(), ["pwd", "otp"]);
        assert_eq!(
            (ctx.issued_at, ctx.expires_at, ctx.is_client),
            (10, 20, false)
        );

        let parts = AccessContextParts {
            user_id: "u-1",
            username: "zoë",
            roles: ["admin"],
            scope: "",
            client_id: "tessera",
            session_id: None,
            jti: "",
            issued_at: 0,
            expires_at: 1,
            amr: ["pwd"],
            is_client: false,
        };
        let cached = AccessContext::verified(parts, "eyJ.secret-token.sig", Some("k-1"));
        assert_eq!(cached.shared_token().as_bytes(), b"eyJ.secret-token.sig");
        assert!(!format!("{:?}", cached.shared_token()).contains("secret-token"));
        assert_eq!(cached.kid(), Some("k-1"));
        assert_eq!(cached.user_id(), "u-1");
        assert_eq!(cached.amr().collect::<Vec<_>>(), ["pwd"]);
        // Never shown, never part of equality.
        assert!(!format!("{cached:?}").contains("secret-token"));
        assert!(!format!("{:?} {:?}", cached.roles(), cached.amr()).contains("secret-token"));
        assert_eq!(format!("{:?}", cached.roles()), r#"["admin"]"#);
        assert_eq!(cached, AccessContext::new(parts));

        let client = AccessContext::new(AccessContextParts {
            user_id: "c",
            username: "c",
            roles: [],
            scope: "",
            client_id: "c",
            session_id: None,
            jti: "",
            issued_at: 0,
            expires_at: 1,
            amr: [],
            is_client: true,
        });
        assert_eq!(client.session_id(), None);
        assert_eq!(client.shared_token().as_bytes(), b"");
        assert_eq!(client.kid(), None);
        assert_eq!(client.role(), None);
        assert_eq!(client.amr().len(), 0);
    }
}
