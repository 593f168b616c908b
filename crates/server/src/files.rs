//! Reading the small files the configuration names (the config file, `<secret>_file`s,
//! `tls.cert` and `tls.key`, `master.key`) without ever blocking on one that is not a
//! regular file.
//!
//! A FIFO given as such a path blocked the thread that opened it until some other process
//! opened the FIFO for writing (forever, usually): `serve` and `check-config` hung at start,
//! and a certificate reload hung its task. A device (`/dev/zero`) or a socket is no better.
//! The file is opened with `O_NONBLOCK` (an open that never waits; it changes nothing for
//! a regular file), its type checked on the open descriptor (no race with a rename), and
//! its size capped before and while it is read.

use std::io::Read as _;
use std::path::Path;

use zeroize::Zeroizing;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The path names a FIFO, a device, a socket or a directory.
    #[error("it is {0}, not a regular file; give the path of a regular file")]
    NotRegular(&'static str),
    /// The file holds more than the limit.
    #[error("larger than {0} bytes; is it the right file?")]
    TooLarge(u64),
}

/// Reads the regular file at `path`, at most `limit` bytes, without blocking on a file of
/// another kind.
///
/// # Errors
/// [`ReadError::NotRegular`] for anything but a regular file (a symbolic link is followed),
/// [`ReadError::TooLarge`] past `limit`, [`ReadError::Io`] when opening or reading fails.
pub fn read_regular(path: &Path, limit: u64) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // POSIX open(2): with O_NONBLOCK, opening a FIFO for reading returns at once
        // instead of waiting for a writer.
        let nonblock = i32::try_from(rustix::fs::OFlags::NONBLOCK.bits()).unwrap_or(0);
        options.custom_flags(nonblock);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind(&meta.file_type())));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge(limit));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    // A file that grows while it is read is still cut at the limit.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(bytes)
}

/// [`read_regular`] as UTF-8 text.
///
/// # Errors
/// Those of [`read_regular`]; [`ReadError::Io`] (`InvalidData`) when the bytes are not
/// UTF-8.
pub fn read_regular_text(path: &Path, limit: u64) -> Result<Zeroizing<String>, ReadError> {
    let bytes = read_regular(path, limit)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not valid UTF-8",
        ))
    })?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// What kind of file `t` is, for a message ("a FIFO").
fn kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Without O_NONBLOCK this open waits for a writer that never comes, and the test
        // hangs (the harness's timeout reports it).
        let e = read_regular(&fifo, 1024).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
    }

    #[test]
    fn devices_and_directories_are_refused_and_sizes_capped() {
        let e = read_regular(Path::new("/dev/zero"), 1024).unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = read_regular(dir.path(), 1024).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let file = dir.path().join("f");
        std::fs::write(&file, [b'x'; 10]).unwrap();
        assert_eq!(read_regular(&file, 10).unwrap().len(), 10);
        assert!(matches!(
            read_regular(&file, 9),
            Err(ReadError::TooLarge(9))
        ));
        std::fs::write(&file, [0xff]).unwrap();
        assert!(read_regular_text(&file, 10).is_err());
    }
}
