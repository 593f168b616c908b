//! A real `tessera serve` process: for tests that need the binary itself (several
//! instances on one database, the CLI and a server sharing a data directory, signals).

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `tessera serve` child process, killed on drop.
pub struct ServeProcess {
    child: Child,
    base: String,
}

impl ServeProcess {
    /// Starts `bin serve --listen 127.0.0.1:0 --data-dir DIR` with `envs` added to a
    /// cleaned environment, and waits for the "Tessera listening on URL" line.
    /// Set `TEST_LOG=1` to see the server's log.
    ///
    /// # Panics
    /// If the server does not start within 60 s.
    #[must_use]
    pub fn start(bin: &Path, data_dir: &Path, envs: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env_remove("TESSERA_CONFIG")
            .env_remove("TESSERA_DATABASE_URL")
            // The test harness's own switch (CI sets it), not a server setting: the server
            // refuses unknown `TESSERA_*` variables.
            .env_remove("TESSERA_REQUIRE_POSTGRES")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start tessera serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(rest) = line.strip_prefix("Tessera listening on ") {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(Ok(url));
                    sent = true;
                } else if std::env::var("TEST_LOG").is_ok() || !sent {
                    eprintln!("[tessera] {line}");
                }
            }
            if !sent {
                let _ = tx.send(Err("the server exited before listening".to_owned()));
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server start timed out")
            .expect("server started");
        Self { child, base }
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `base` + `path`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The process id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `limit` for the process to exit on its own; its exit status, if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
