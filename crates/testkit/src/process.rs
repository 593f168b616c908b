//! A real `tessera serve` process: for tests that need the binary itself (several
//! instances on one database, the CLI and a server sharing a data directory, signals).

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running `tessera serve` child process, killed on drop.
pub struct ServeProcess {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl ServeProcess {
    /// Starts `bin serve --listen 127.0.0.1:0 --data-dir DIR` with `envs` added to a
    /// cleaned environment, and waits for the "Tessera listening on URL" line (or, with JSON
    /// logs, the `tessera is ready` event).
    /// Set `TEST_LOG=1` to see the server's log.
    ///
    /// # Panics
    /// If the server does not start within 60 s.
    #[must_use]
    pub fn start(bin: &Path, data_dir: &Path, envs: &[(&str, &str)]) -> Self {
        Self::start_with_args(bin, data_dir, &[], envs)
    }

    /// [`ServeProcess::start`] with extra `serve` arguments (e.g. `--log-format json`).
    ///
    /// # Panics
    /// If the server does not start within 60 s.
    #[must_use]
    pub fn start_with_args(
        bin: &Path,
        data_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
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
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut lines) = sink.lock() {
                    lines.push(line.clone());
                }
                if !sent && let Some(url) = ready_url(&line) {
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
        Self { child, base, log }
    }

    /// Every line the server wrote to stderr so far.
    #[must_use]
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits up to `limit` for a log line containing `needle`; whether one came.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if self.log().iter().any(|l| l.contains(needle)) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal by name (`TERM`, `HUP`, `INT`) with `kill(1)`.
    ///
    /// # Panics
    /// If `kill` cannot be run or fails.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
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

/// The base URL from the human banner (`Tessera listening on URL (...)`) or, with
/// `--log-format json` (which needs `RUST_LOG` at `info` or finer for `serve`), from the
/// `tessera is ready` event's `url` field.
fn ready_url(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix("Tessera listening on ") {
        return rest.split_whitespace().next().map(str::to_owned);
    }
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("message")?.as_str()? != "tessera is ready" {
        return None;
    }
    v.get("url")?.as_str().map(str::to_owned)
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
