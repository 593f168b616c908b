//! Bounded HTTP fetches from the issuer: URL policy, redirect policy, size and time limits.

use std::net::IpAddr;
use std::time::Duration;

use http::HeaderMap;
use reqwest::Url;

use crate::error::Error;

/// How many same-origin redirects a fetch may follow.
const MAX_REDIRECTS: usize = 3;

/// Builds the HTTP client used for every fetch: connect and total timeouts, and redirects
/// followed only within the origin of the first URL.
pub(crate) fn client(
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<reqwest::Client, Error> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if !same_origin {
            attempt.error("redirect to another origin refused")
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .redirect(policy)
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .user_agent(concat!("tessera-axum/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))
}

/// Parses a URL we are configured to fetch and applies the scheme policy: `https`, or plain
/// `http` to a loopback host only (a local issuer in development and tests).
pub(crate) fn parse_url(text: &str, setting: &str) -> Result<Url, Error> {
    let url = Url::parse(text).map_err(|e| Error::config(format!("`{setting}`: {e}")))?;
    check_scheme(&url)?;
    Ok(url)
}

/// The scheme policy of [`parse_url`] for URLs found in documents.
pub(crate) fn check_scheme(url: &Url) -> Result<(), Error> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(Error::UrlRefused {
            url: url.to_string(),
            reason: "plain http is allowed only to loopback hosts",
        }),
        _ => Err(Error::UrlRefused {
            url: url.to_string(),
            reason: "only https URLs are fetched",
        }),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Credentials for a fetch: HTTP Basic as RFC 6749 §2.3.1 spells it (each part
/// form-urlencoded before base64).
pub(crate) struct Basic<'a> {
    pub(crate) id: &'a str,
    pub(crate) secret: &'a str,
}

/// GETs `url` and returns the headers and body of a 200 answer, reading at most `limit`
/// bytes.
pub(crate) async fn get(
    http: &reqwest::Client,
    url: &Url,
    limit: usize,
    accept: &str,
    basic: Option<Basic<'_>>,
) -> Result<(HeaderMap, Vec<u8>), Error> {
    let mut req = http.get(url.clone()).header(http::header::ACCEPT, accept);
    if let Some(b) = basic {
        req = req.header(http::header::AUTHORIZATION, basic_header(&b));
    }
    let fetch_error = |e: reqwest::Error| Error::Fetch {
        url: url.to_string(),
        reason: error_chain(&e),
    };
    let mut res = req.send().await.map_err(fetch_error)?;
    if res.status() != reqwest::StatusCode::OK {
        return Err(Error::Status {
            url: url.to_string(),
            status: res.status().as_u16(),
        });
    }
    let too_large = || Error::TooLarge {
        url: url.to_string(),
        limit,
    };
    if res
        .content_length()
        .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > limit))
    {
        return Err(too_large());
    }
    let headers = res.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(fetch_error)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((headers, body))
}

fn basic_header(b: &Basic<'_>) -> String {
    use base64::Engine as _;
    let pair = format!("{}:{}", form_encode(b.id), form_encode(b.secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// `application/x-www-form-urlencoded` encoding of one value (RFC 6749 Appendix B).
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*') {
            out.push(char::from(b));
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The error and its sources on one line (reqwest's top-level text alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The freshness lifetime a response allows (RFC 9111 §5.2.2.1 `max-age`), in seconds;
/// `None` when the header has no `max-age`.
///
/// Read as RFC 9111 asks: `Some(0)` (stale) for `no-store`/`no-cache` (the most restrictive
/// directive wins, §4.2.1) and for an invalid `max-age` ("caches are encouraged to consider
/// responses that have invalid freshness information ... to be stale", §4.2.1); the first
/// `max-age` counts when there are several (§4.2.1); the value is delta-seconds, digits only
/// (§1.2.2, so not `+5` or `-1`), in the token or the quoted-string form (§5.2), and a value
/// too large to represent saturates (§1.2.2).
pub(crate) fn max_age(headers: &HeaderMap) -> Option<u64> {
    let mut found = None;
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        for directive in text.split(',') {
            let directive = directive.trim();
            let (name, arg) = directive
                .split_once('=')
                .map_or((directive, None), |(name, arg)| (name, Some(arg.trim())));
            let name = name.trim();
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return Some(0);
            }
            if name.eq_ignore_ascii_case("max-age") && found.is_none() {
                let arg = arg.map(|a| {
                    a.strip_prefix('"')
                        .and_then(|a| a.strip_suffix('"'))
                        .unwrap_or(a)
                });
                found = Some(arg.and_then(delta_seconds).unwrap_or(0));
            }
        }
    }
    found
}

/// The response's `Age` (RFC 9111 §5.1), in seconds: how long a cache in between has held
/// it. Only the first member of the first field counts ("a cache encountering a message
/// with a list-based Age field value SHOULD use the first member"); anything but
/// delta-seconds there is ignored ("SHOULD ignore the field").
pub(crate) fn age(headers: &HeaderMap) -> Option<u64> {
    let text = headers.get(http::header::AGE)?.to_str().ok()?;
    delta_seconds(text.split(',').next()?.trim())
}

/// RFC 9111 §1.2.2 delta-seconds: one or more digits, nothing else; a value too large to
/// represent saturates ("a recipient ... MUST use the greatest integer it can represent").
fn delta_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Only digits are left, so the one possible parse failure is overflow.
    Some(text.parse::<u64>().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::CACHE_CONTROL, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn cache_control_max_age_is_read_leniently() {
        assert_eq!(max_age(&headers(&["public, max-age=300"])), Some(300));
        assert_eq!(max_age(&headers(&["MAX-AGE = \"60\""])), Some(60));
        assert_eq!(max_age(&headers(&["public", "max-age=5"])), Some(5));
        assert_eq!(max_age(&headers(&["max-age=5, no-cache"])), Some(0));
        assert_eq!(max_age(&headers(&["no-store"])), Some(0));
        assert_eq!(max_age(&headers(&["public"])), None);
        assert_eq!(max_age(&HeaderMap::new()), None);
    }

    /// RFC 9111 §1.2.2: delta-seconds are digits only, and a value too large to represent
    /// saturates rather than being dropped. §4.2.1: the first `max-age` counts, and an
    /// invalid one makes the answer stale (the lower bound then applies), not unlimited.
    #[test]
    fn max_age_is_delta_seconds_saturating_first_wins_and_invalid_is_stale() {
        assert_eq!(
            max_age(&headers(&["max-age=99999999999999999999999"])),
            Some(u64::MAX)
        );
        assert_eq!(max_age(&headers(&["max-age=600, max-age=5"])), Some(600));
        assert_eq!(max_age(&headers(&["max-age=600", "max-age=5"])), Some(600));
        for bad in [
            "max-age=+5",
            "max-age=-1",
            "max-age=1.5",
            "max-age=5s",
            "max-age=",
            "max-age",
            "max-age=\"5",
            "max-age=\"\"5\"\"",
        ] {
            assert_eq!(max_age(&headers(&[bad])), Some(0), "{bad:?}");
        }
    }

    #[test]
    fn age_is_delta_seconds_first_member_only_and_saturates() {
        let parsed = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(http::header::AGE, v.parse().unwrap());
            }
            age(&h)
        };
        assert_eq!(parsed(&["120"]), Some(120));
        assert_eq!(parsed(&[" 7 "]), Some(7));
        assert_eq!(parsed(&["30, 90"]), Some(30));
        assert_eq!(parsed(&["30", "90"]), Some(30));
        assert_eq!(parsed(&["99999999999999999999999"]), Some(u64::MAX));
        for bad in ["-5", "+5", "1.5", "abc", "", "5s", "\"5\""] {
            assert_eq!(parsed(&[bad]), None, "{bad:?}");
        }
        assert_eq!(parsed(&[]), None);
    }

    #[test]
    fn only_https_or_loopback_http_is_fetched() {
        assert!(parse_url("https://auth.example", "x").is_ok());
        assert!(parse_url("http://127.0.0.1:8080", "x").is_ok());
        assert!(parse_url("http://localhost:8080", "x").is_ok());
        assert!(parse_url("http://[::1]:8080", "x").is_ok());
        assert!(matches!(
            parse_url("http://auth.example", "x"),
            Err(Error::UrlRefused { .. })
        ));
        assert!(matches!(
            parse_url("file:///etc/passwd", "x"),
            Err(Error::UrlRefused { .. })
        ));
        assert!(matches!(
            parse_url("not a url", "x"),
            Err(Error::Config { .. })
        ));
    }

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        assert_eq!(form_encode("a b:c%"), "a+b%3Ac%25");
        let h = basic_header(&Basic {
            id: "svc",
            secret: "s:1",
        });
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(h.trim_start_matches("Basic "))
            .unwrap();
        assert_eq!(raw, b"svc:s%3A1");
    }
}
