//! Unix times as RFC 3339 text (`2023-11-14T22:13:20Z`), the one formatter the server (TLS
//! certificate dates) and the `tessera` command line (tables, `--json`, token dates) share.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `secs` (a Unix time) as an RFC 3339 date in UTC (RFC 3339 §5.6, `Z` offset), or `None`
/// when it is outside the years 0000-9999 that the format can write.
#[must_use]
pub fn rfc3339(secs: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

/// [`rfc3339`], or the number itself when the date cannot be written: for display, where a
/// stored value out of range must still show as something rather than fail.
#[must_use]
pub fn rfc3339_or_seconds(secs: i64) -> String {
    rfc3339(secs).unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_are_written_as_rfc3339_utc() {
        assert_eq!(
            rfc3339(1_700_000_000).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(rfc3339(-1).as_deref(), Some("1969-12-31T23:59:59Z"));
    }

    #[test]
    fn times_the_format_cannot_write_are_none_or_the_number() {
        assert_eq!(rfc3339(i64::MAX), None);
        // Year 10000: representable by a Unix time, not by RFC 3339's four-digit year.
        assert_eq!(rfc3339(253_402_300_800), None);
        assert_eq!(rfc3339_or_seconds(i64::MIN), i64::MIN.to_string());
        assert_eq!(rfc3339_or_seconds(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
