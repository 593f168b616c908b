//! Exit codes: 0 success, 1 operation refused or failed, 2 usage or configuration error.

use std::process::ExitCode;

/// A command failure with its exit code and a message that says what to do next.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// Exit 1: the operation was refused or failed.
    pub(crate) fn refused(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }

    /// Exit 2: bad usage or configuration.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }

    /// The message.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// Prints the message and returns the exit code.
    pub(crate) fn report(self) -> ExitCode {
        crate::output::errln!("error: {}", self.message);
        ExitCode::from(self.code)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::refused(format!("{e:#}"))
    }
}
