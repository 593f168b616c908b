//! `tessera keys generate`: a fresh private key as a JWK or PKCS#8 PEM. Printing the key is
//! the purpose of this command, so this is the one place the token tools output secrets.

use std::io::Write as _;
use std::path::Path;

use tessera_jose::SigningKey;
use zeroize::Zeroizing;

use super::{GenerateArgs, KeyFormat, input};
use crate::exit::Failure;
use crate::output;

pub(super) fn run(args: &GenerateArgs) -> Result<(), Failure> {
    let alg = input::algorithm(&args.alg)?;
    if args.format == KeyFormat::Pem && alg.is_symmetric() {
        return Err(Failure::usage(format!(
            "an {alg} key is a shared secret, which has no PEM form: use --format jwk"
        )));
    }
    // Refuse before generating: an RSA key takes a moment, and the file would be lost work.
    if let Some(path) = &args.out {
        if path.exists() {
            return Err(exists(path));
        }
        check_parent(path)?;
    }
    let key = SigningKey::generate(alg)
        .map_err(|e| Failure::refused(format!("cannot generate the key: {e}")))?;
    let text: Zeroizing<String> = match args.format {
        KeyFormat::Jwk => {
            let jwk = key
                .to_private_jwk()
                .map_err(|e| Failure::refused(format!("cannot export the key: {e}")))?;
            let mut text = Zeroizing::new(
                serde_json::to_string_pretty(&jwk)
                    .map_err(|e| Failure::refused(format!("cannot export the key: {e}")))?,
            );
            text.push('\n');
            text
        }
        KeyFormat::Pem => key
            .to_pkcs8_pem()
            .map_err(|e| Failure::refused(format!("cannot export the key: {e}")))?,
    };
    match &args.out {
        Some(path) => write_new_private(path, text.as_bytes())?,
        None => output::write(text.as_bytes())?,
    }
    let thumbprint = key
        .verifying_key()
        .thumbprint()
        .map_err(|e| Failure::refused(format!("cannot compute the thumbprint: {e}")))?;
    crate::output::errln!("kid: {thumbprint}");
    if let Some(path) = &args.out {
        crate::output::errln!(
            "wrote the {alg} private key to {} (mode 0600)",
            path.display()
        );
    }
    Ok(())
}

/// Creates `path` (never replacing a file) readable by its owner only, and writes `bytes`.
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => exists(path),
        _ => Failure::usage(format!(
            "cannot create --out {}: {e}; choose another --out path",
            path.display()
        )),
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::refused(format!("cannot write {}: {e}", path.display())))
}

/// The directory `path` would be created in must exist: `--out /nonexistent/x` generated
/// the key and then failed with a bare "No such file or directory".
fn check_parent(path: &Path) -> Result<(), Failure> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if parent.is_dir() {
        return Ok(());
    }
    let what = if parent.exists() {
        "is not a directory"
    } else {
        "does not exist"
    };
    Err(Failure::usage(format!(
        "cannot write --out {}: {} {what}; create the directory first (`mkdir -p {}`) or \
         choose another --out path",
        path.display(),
        parent.display(),
        parent.display()
    )))
}

fn exists(path: &Path) -> Failure {
    Failure::refused(format!(
        "{} already exists and is never overwritten; choose another --out path or remove it \
         first",
        path.display()
    ))
}
