//! Strict unpadded base64url (RFC 7515 §2, RFC 4648 §5).
//!
//! Decoding refuses padding, whitespace, characters outside the URL-safe alphabet and
//! non-canonical trailing bits, so each byte string has exactly one accepted encoding: a
//! token cannot be altered without changing the bytes it decodes to.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Encodes `bytes` as unpadded base64url.
#[must_use]
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Appends the unpadded base64url encoding of `bytes` to `out`.
pub fn encode_into(bytes: impl AsRef<[u8]>, out: &mut String) {
    URL_SAFE_NO_PAD.encode_string(bytes, out);
}

/// Decodes strict unpadded base64url; `None` for anything that is not its canonical form.
#[must_use]
pub fn decode(s: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// Decodes strict unpadded base64url into `out` (cleared first); false on invalid input.
pub fn decode_into(s: impl AsRef<[u8]>, out: &mut Vec<u8>) -> bool {
    out.clear();
    URL_SAFE_NO_PAD.decode_vec(s, out).is_ok()
}

/// Decodes strict unpadded base64url into a fixed buffer; the decoded length, or `None` on
/// invalid input or when the buffer is too small.
pub fn decode_slice(s: impl AsRef<[u8]>, out: &mut [u8]) -> Option<usize> {
    URL_SAFE_NO_PAD.decode_slice(s, out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode(encode(&bytes)).unwrap(), bytes);
        }
    }

    #[test]
    fn refuses_padding_whitespace_and_foreign_alphabets() {
        assert_eq!(decode("Zm9v").unwrap(), b"foo");
        assert!(decode("Zm8=").is_none());
        assert!(decode("Zm 9v").is_none());
        assert!(decode("Zm9v\n").is_none());
        assert!(decode("a+b/").is_none());
        assert!(decode("Z").is_none());
    }

    #[test]
    fn refuses_non_canonical_trailing_bits() {
        // "Zg" is the canonical encoding of "f"; "Zh" decodes to the same byte with a stray bit.
        assert_eq!(decode("Zg").unwrap(), b"f");
        assert!(decode("Zh").is_none());
    }
}
