//! Every command writes its output to stdout through here. `println!` panics when stdout
//! is closed (`tessera audit list | head -1`) or full (`> /dev/full`), exit 101 and a
//! backtrace; here that is "cannot write to stdout: ..." and exit 1, like any failed
//! operation.

use std::fmt::Display;
use std::io::Write as _;

use crate::exit::Failure;

/// `println!` that returns the failure instead of panicking: `outln!("x {y}")?`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// `eprintln!` that never panics: a message for stderr is lost, not fatal, when stderr is
/// closed (`tessera check-config 2>&1 | head -1`) or full. `eprintln!` panics there (exit
/// 101, whatever the command did); this keeps the command's own exit code.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::err_line(format_args!($($arg)*))
    };
}
pub(crate) use errln;

/// Writes `text` and a newline to stderr, ignoring a failure to write.
pub(crate) fn err_line(text: impl Display) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}").and_then(|()| err.flush());
}

/// Writes `text` and a newline, flushed.
pub(crate) fn line(text: impl Display) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| stdout_error(&e))
}

/// Writes `bytes` as they are, flushed.
pub(crate) fn write(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| stdout_error(&e))
}

/// The failure for an unwritable stdout (exit 1).
pub(crate) fn stdout_error(e: &std::io::Error) -> Failure {
    Failure::refused(format!("cannot write to stdout: {e}"))
}
