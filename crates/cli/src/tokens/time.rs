//! Times for the token tools: the clock, `--exp`-style specs, RFC 3339 display and
//! human-readable differences.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::exit::Failure;

/// The claims shown as dates, in display order: the RFC 7519 times and OIDC `auth_time`.
pub(super) const TIME_CLAIMS: [&str; 4] = ["exp", "nbf", "iat", "auth_time"];

/// The wall clock in Unix seconds (the binary is the one place allowed to read it).
pub(super) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Parses `--exp`/`--nbf`/`--iat`: a Unix time (digits only), or a duration from `now`
/// such as `+30m`, `30m`, `1h30m`, `2d` or `-5m` (units s, m, h, d, w; a signed bare
/// number is seconds).
pub(super) fn parse_spec(flag: &str, spec: &str, now: i64) -> Result<i64, Failure> {
    let invalid = || {
        Failure::usage(format!(
            "{flag} `{}` is not a time: use a duration from now such as +30m, 1h, 2d or -5m \
             (units s, m, h, d, w), or a Unix time such as 1700000000",
            spec.chars().take(40).collect::<String>()
        ))
    };
    if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        return spec.parse().map_err(|_| invalid());
    }
    let (sign, body) = match spec.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, spec.strip_prefix('+').unwrap_or(spec)),
    };
    let signed_bare = body.bytes().all(|b| b.is_ascii_digit()) && body.len() < spec.len();
    let seconds = if signed_bare {
        body.parse::<i64>().ok()
    } else {
        duration(body)
    }
    .ok_or_else(invalid)?;
    now.checked_add(sign * seconds).ok_or_else(invalid)
}

/// `1h30m`-style durations in seconds; `None` if malformed or overflowing.
fn duration(body: &str) -> Option<i64> {
    if body.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut number = String::new();
    for c in body.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: i64 = number.parse().ok()?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    // Digits after the last unit (`1h30`) are ambiguous: refuse them.
    number.is_empty().then_some(total)
}

pub(super) use tessera_server::timestamp::rfc3339;

/// The whole seconds of a JSON NumericDate, for display: fractions rounded down, as `jose`
/// reads `exp` and `iat` (it reads a fractional `nbf` rounded up, so it is never early).
pub(super) fn numeric_date(value: &Value) -> Option<i64> {
    if let Some(i) = value.as_i64() {
        return Some(i);
    }
    let f = value.as_f64()?.floor();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_precision_loss,
        reason = "range-checked just before the cast"
    )]
    let secs = (f.is_finite() && f.abs() < i64::MAX as f64).then_some(f as i64);
    secs
}

/// `{"exp": "2023-...Z", ...}` for the time claims of `claims` that are numbers.
pub(super) fn dates(claims: &Map<String, Value>) -> Map<String, Value> {
    TIME_CLAIMS
        .iter()
        .filter_map(|name| {
            let secs = numeric_date(claims.get(*name)?)?;
            Some(((*name).to_owned(), Value::String(rfc3339(secs)?)))
        })
        .collect()
}

/// `3600s from now (1h)`, `90s ago (1m 30s)` or `now`.
pub(super) fn relative(t: i64, now: i64) -> String {
    let diff = i128::from(t) - i128::from(now);
    let secs = diff.unsigned_abs();
    let human = if secs >= 60 {
        format!(" ({})", human(secs))
    } else {
        String::new()
    };
    match diff {
        0 => "now".to_owned(),
        d if d > 0 => format!("{secs}s from now{human}"),
        _ => format!("{secs}s ago{human}"),
    }
}

/// The two largest units of a number of seconds: `1d 2h`, `3m 20s`, `45s`.
pub(super) fn human(secs: u128) -> String {
    const UNITS: [(u128, &str); 4] = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let mut rest = secs;
    let mut parts = Vec::new();
    for (size, name) in UNITS {
        if rest >= size {
            parts.push(format!("{}{name}", rest / size));
            rest %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn specs_are_unix_times_or_durations_from_now() {
        let cases = [
            ("1700000123", 1_700_000_123),
            ("+30m", NOW + 1800),
            ("30m", NOW + 1800),
            ("1h", NOW + 3600),
            ("2d", NOW + 172_800),
            ("1h30m", NOW + 5400),
            ("1w", NOW + 604_800),
            ("-5m", NOW - 300),
            ("+90", NOW + 90),
            ("-90", NOW - 90),
            ("0", 0),
        ];
        for (spec, expected) in cases {
            assert_eq!(parse_spec("--exp", spec, NOW).unwrap(), expected, "{spec}");
        }
        for bad in [
            "",
            "+",
            "-",
            "1.5h",
            "1h30",
            "soon",
            "3x",
            "+-3m",
            "99999999999999999999d",
        ] {
            assert!(parse_spec("--exp", bad, NOW).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_are_rfc3339_and_fractions_round_down() {
        assert_eq!(rfc3339(NOW).unwrap(), "2023-11-14T22:13:20Z");
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"exp": 1700000000.9, "iat": 0, "nbf": "soon", "auth_time": 1e300, "sub": 5}"#,
        )
        .unwrap();
        let d = dates(&claims);
        assert_eq!(d["exp"], "2023-11-14T22:13:20Z");
        assert_eq!(d["iat"], "1970-01-01T00:00:00Z");
        assert!(!d.contains_key("nbf") && !d.contains_key("auth_time") && !d.contains_key("sub"));
    }

    #[test]
    fn differences_read_naturally() {
        assert_eq!(relative(NOW + 3600, NOW), "3600s from now (1h)");
        assert_eq!(relative(NOW - 90, NOW), "90s ago (1m 30s)");
        assert_eq!(relative(NOW - 5, NOW), "5s ago");
        assert_eq!(relative(NOW, NOW), "now");
        assert!(relative(i64::MIN, i64::MAX).starts_with("18446744073709551615s ago ("));
        assert_eq!(human(90_061), "1d 1h");
    }
}
