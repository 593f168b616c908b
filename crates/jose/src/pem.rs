//! PEM framing (RFC 7468) for keys: a small strict reader and a writer.
//!
//! Hand-written because the common readers skip labels they do not know (such as
//! `RSA PUBLIC KEY`), and we want to tell the user exactly what was found instead.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// One decoded PEM block.
pub(crate) struct Block {
    pub(crate) label: String,
    pub(crate) der: Zeroizing<Vec<u8>>,
}

/// Reads the first key block of `text`, skipping `EC PARAMETERS` blocks that OpenSSL writes
/// before SEC1 keys.
pub(crate) fn parse_key_block(text: &str) -> Result<Block> {
    let mut lines = text.lines().map(str::trim);
    loop {
        let label = loop {
            match lines.next() {
                None => {
                    return Err(Error::invalid_key(
                        "no PEM block found (expected -----BEGIN ...-----)",
                    ));
                }
                Some(l) => {
                    if let Some(label) = l
                        .strip_prefix("-----BEGIN ")
                        .and_then(|r| r.strip_suffix("-----"))
                    {
                        break label.to_owned();
                    }
                }
            }
        };
        let end = format!("-----END {label}-----");
        let mut b64 = Zeroizing::new(String::new());
        let mut closed = false;
        for l in lines.by_ref() {
            if l == end {
                closed = true;
                break;
            }
            if l.contains(':') {
                return Err(Error::invalid_key(
                    "encrypted (Proc-Type) PEM keys are not supported; decrypt the key first",
                ));
            }
            b64.push_str(l);
        }
        if !closed {
            return Err(Error::invalid_key(format!(
                "PEM block `{label}` has no END line"
            )));
        }
        if label == "EC PARAMETERS" {
            continue;
        }
        let der = STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| Error::invalid_key(format!("PEM block `{label}` is not valid base64")))?;
        return Ok(Block {
            label,
            der: Zeroizing::new(der),
        });
    }
}

/// Encodes DER as a PEM block with 64-column lines.
#[must_use]
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = Zeroizing::new(STANDARD.encode(der));
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // Invariant: base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_skips_ec_parameters() {
        let der: Vec<u8> = (0..100u8).collect();
        let pem = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
            encode("EC PRIVATE KEY", &der)
        );
        let block = parse_key_block(&pem).unwrap();
        assert_eq!(block.label, "EC PRIVATE KEY");
        assert_eq!(&*block.der, &der);
    }

    #[test]
    fn reports_missing_and_unterminated_blocks() {
        assert!(parse_key_block("hello").is_err());
        assert!(parse_key_block("-----BEGIN PUBLIC KEY-----\nAAAA\n").is_err());
        assert!(parse_key_block("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n-----END RSA PRIVATE KEY-----").is_err());
    }
}
