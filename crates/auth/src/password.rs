//! Password hashing (Argon2id, RFC 9106) and the password policy.
//!
//! Hashing is CPU- and memory-bound (19 MiB per hash at the OWASP parameters), so it never
//! runs on the async runtime: each hash runs on one of a fixed set of hashing threads (one
//! per permit) behind a fair semaphore with one permit per core, which bounds memory under
//! a login flood and keeps the runtime free for token checks. A bounded wait queue turns
//! overload into a fast 503 instead of unbounded latency.
//!
//! Why dedicated threads, each with its own working memory: Argon2 needs `m` KiB of scratch
//! memory per hash. Allocated per hash, it went through the allocator: glibc raises its mmap
//! threshold after the first free of a 19 MiB block, so later blocks come from per-thread
//! arenas and stay resident, and tokio's blocking pool spread hashes over ever new threads
//! (468 MiB under 64 concurrent logins). Now each of the `concurrency` long-lived hashing
//! threads allocates its buffer once, on its first hash, reuses it for every hash at the
//! configured cost, and wipes it when no other job reaches it within 2 ms (back-to-back
//! hashes overwrite it anyway, so a login flood does not pay 19 MiB of wiping per hash; see
//! `with_work_memory` for the jobs that wipe it at once).
//! Memory is bounded by `concurrency × m`
//! (38 MiB on 2 cores at the default cost), reached on the first logins and never exceeded.
//! Reusing the buffer also saves the page faults of fresh memory on every hash.
//!
//! Unknown users are checked against a dummy hash with the same parameters, so a login for
//! a user that does not exist costs the same time as a wrong password for one that does.
//! The dummy is a PHC string with a random salt and a random output: verifying against it
//! runs the full Argon2 computation, and nothing can match it (the result is discarded
//! anyway), so it costs nothing to make at startup.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use std::cell::{Cell, RefCell};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{AuthError, Result};

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl HashParams {
    /// The OWASP Password Storage Cheat Sheet minimum for Argon2id: m = 19 MiB, t = 2, p = 1.
    pub const OWASP: Self = Self {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    /// Cheap parameters for tests only (a hash in well under a millisecond).
    pub const INSECURE_FOR_TESTS: Self = Self {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn to_argon2(self) -> Result<Params> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| AuthError::Internal(format!("invalid Argon2 parameters: {e}")))
    }
}

/// The rules a new password must meet (OWASP ASVS V2.1): a length range, not the username,
/// not one of the 10,000 most common passwords, and a minimum zxcvbn strength.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Minimum length in characters.
    pub min_length: usize,
    /// Maximum length in characters (bounds hashing and strength-estimation cost).
    pub max_length: usize,
    /// Minimum zxcvbn score, 0 (anything) to 4 (very strong); 3 by default.
    pub min_strength: u8,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 12,
            max_length: 256,
            min_strength: 3,
        }
    }
}

/// The most common passwords, shipped in the binary (see `data/README.md`).
static COMMON_PASSWORDS: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
    std::sync::LazyLock::new(|| {
        include_str!("../data/common-passwords.txt")
            .lines()
            .collect()
    });

impl PasswordPolicy {
    /// Checks a new password; the error says what to change. Strength estimation costs up
    /// to a few milliseconds for long passwords: call it off the async runtime
    /// ([`PasswordPolicy::check_blocking`]).
    ///
    /// # Errors
    /// [`AuthError::WeakPassword`] with a message a user can act on.
    pub fn check(&self, password: &str, username: Option<&str>) -> Result<()> {
        // The policy judges what is stored: fullwidth "ｐａｓｓｗｏｒｄ…" is hashed as the
        // common password it normalizes to, so it is refused as that.
        // Refused before normalizing too, so a huge input is not expanded first.
        if password.chars().count() > self.max_length {
            return Err(AuthError::WeakPassword(format!(
                "password is too long: use at most {} characters",
                self.max_length
            )));
        }
        let normalized = normalize(password);
        let password = normalized.as_str();
        let len = password.chars().count();
        if len < self.min_length {
            return Err(AuthError::WeakPassword(format!(
                "password is too short: use at least {} characters (it has {len})",
                self.min_length
            )));
        }
        if len > self.max_length {
            return Err(AuthError::WeakPassword(format!(
                "password is too long: use at most {} characters",
                self.max_length
            )));
        }
        let lower = password.to_lowercase();
        if let Some(u) = username.filter(|u| u.len() >= 3)
            && lower.contains(&u.to_lowercase())
        {
            return Err(AuthError::WeakPassword(
                "password must not contain the username".into(),
            ));
        }
        if COMMON_PASSWORDS.contains(lower.as_str()) {
            return Err(AuthError::WeakPassword(
                "password is one of the 10,000 most common passwords; choose one nobody else uses"
                    .into(),
            ));
        }
        if self.min_strength > 0 {
            let inputs: Vec<&str> = username.into_iter().collect();
            let estimate = zxcvbn::zxcvbn(password, &inputs);
            let score = u8::from(estimate.score());
            if score < self.min_strength {
                let mut msg = format!(
                    "password is too easy to guess (strength {score} of 4, at least {} needed)",
                    self.min_strength
                );
                if let Some(f) = estimate.feedback() {
                    // zxcvbn's warnings and tips are sentences of their own, some ending
                    // in a full stop ("This is a very common password."): one stop each.
                    if let Some(w) = f.warning() {
                        msg.push_str(&format!(": {}", w.to_string().trim_end_matches('.')));
                    }
                    let tips: Vec<String> =
                        f.suggestions().iter().map(ToString::to_string).collect();
                    if !tips.is_empty() {
                        msg.push_str(&format!(". {}", tips.join(" ")));
                    }
                }
                if !msg.ends_with('.') {
                    msg.push('.');
                }
                msg.push_str(" Longer passphrases of unrelated words work well.");
                return Err(AuthError::WeakPassword(msg));
            }
        }
        Ok(())
    }

    /// [`PasswordPolicy::check`] on the blocking pool.
    ///
    /// # Errors
    /// As [`PasswordPolicy::check`].
    pub async fn check_blocking(
        &self,
        password: Zeroizing<String>,
        username: Option<String>,
    ) -> Result<()> {
        let policy = self.clone();
        tokio::task::spawn_blocking(move || policy.check(&password, username.as_deref()))
            .await
            .map_err(|e| AuthError::Internal(format!("password policy task failed: {e}")))?
    }
}

/// True if `hash` is a password hash Tessera can verify: Argon2 PHC strings within
/// [`MAX_ARGON2_MEMORY_KIB`] and [`MAX_ARGON2_WORK`], and bcrypt (`$2a$`, `$2b$`, `$2x$`,
/// `$2y$`, cost 4 to [`MAX_BCRYPT_COST`]) for users imported from other systems (verified
/// once, then rehashed with Argon2id).
#[must_use]
pub fn is_supported_hash(hash: &str) -> bool {
    if is_bcrypt(hash) {
        return bcrypt_shape(hash);
    }
    PasswordHash::new(hash).is_ok_and(|h| {
        h.algorithm.as_str().starts_with("argon2")
            && Params::try_from(&h).is_ok_and(|p| argon2_cost_allowed(&p))
    })
}

/// What [`is_supported_hash`] accepts, for error messages.
#[must_use]
pub fn supported_hashes() -> String {
    format!(
        "bcrypt ($2a$/$2b$/$2x$/$2y$, cost 04 to {MAX_BCRYPT_COST}) or an Argon2 PHC string with \
         m at most {MAX_ARGON2_MEMORY_KIB} (KiB) and m × t at most {MAX_ARGON2_WORK}"
    )
}

/// The most memory (KiB) a stored Argon2 hash may ask for. A costlier stored hash gets
/// memory of its own for each check, so without a ceiling one imported row could make every
/// login attempt on that name allocate gigabytes (an allocation failure aborts the process).
pub const MAX_ARGON2_MEMORY_KIB: u32 = 256 * 1024;

/// The most work a stored Argon2 hash may ask for: memory (KiB) × passes, about 27 times
/// the OWASP cost (19 MiB × 2), or some 0.4 s of a hashing thread per check; like
/// [`MAX_BCRYPT_COST`], it keeps one login attempt from holding a hashing slot for minutes.
pub const MAX_ARGON2_WORK: u64 = 1024 * 1024;

fn argon2_cost_allowed(params: &Params) -> bool {
    params.m_cost() <= MAX_ARGON2_MEMORY_KIB && argon2_work(params) <= MAX_ARGON2_WORK
}

fn is_bcrypt(hash: &str) -> bool {
    hash.starts_with("$2a$")
        || hash.starts_with("$2b$")
        || hash.starts_with("$2y$")
        || hash.starts_with("$2x$")
}

/// The highest bcrypt cost accepted on import: each step doubles the work, and cost 16
/// already holds a hashing slot for seconds per login attempt.
pub const MAX_BCRYPT_COST: u32 = 15;

fn bcrypt_shape(hash: &str) -> bool {
    // $2b$12$ + 22 salt chars + 31 hash chars
    let b = hash.as_bytes();
    b.len() == 60
        && hash
            .get(4..6)
            .and_then(|c| c.parse::<u32>().ok())
            .is_some_and(|cost| (4..=MAX_BCRYPT_COST).contains(&cost))
        && b.get(6) == Some(&b'$')
        && b.get(7..).is_some_and(|r| {
            r.iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/')
        })
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// The password matched.
    pub matches: bool,
    /// It matched, but the stored hash uses other parameters: store a fresh hash.
    pub needs_rehash: bool,
}

impl Verification {
    const NO_MATCH: Self = Self {
        matches: false,
        needs_rehash: false,
    };
}

/// Hashes and verifies passwords off the async runtime, with bounded concurrency.
#[derive(Debug)]
pub struct PasswordHasher {
    params: HashParams,
    threads: HashThreads,
    permits: Arc<Semaphore>,
    concurrency: usize,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    dummy_hash: String,
    verifications: AtomicU64,
}

impl PasswordHasher {
    /// A hasher running at most `concurrency` hashes at once, with at most `max_waiting`
    /// requests queued behind them.
    ///
    /// # Errors
    /// [`AuthError::Internal`] for invalid parameters.
    pub fn new(params: HashParams, concurrency: usize, max_waiting: usize) -> Result<Self> {
        Self::with_priority(params, concurrency, max_waiting, 0)
    }

    /// [`PasswordHasher::new`] with hashing threads `nice` steps (0 to 19) below the
    /// process's scheduling priority (Linux; ignored elsewhere). With CPU to spare the
    /// threads run as fast as ever; when requests and hashes compete for the cores, request
    /// handling goes first, so a burst of logins cannot stretch every other request's
    /// latency. Logins are the ones that wait, in their bounded queue.
    ///
    /// # Errors
    /// [`AuthError::Internal`] for invalid parameters.
    pub fn with_priority(
        params: HashParams,
        concurrency: usize,
        max_waiting: usize,
        nice: u8,
    ) -> Result<Self> {
        let dummy_hash = dummy_hash(params)?;
        Ok(Self {
            params,
            threads: HashThreads::new(concurrency.max(1), nice.min(19))?,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            concurrency: concurrency.max(1),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
            dummy_hash,
            verifications: AtomicU64::new(0),
        })
    }

    /// The parameters new hashes use.
    #[must_use]
    pub fn params(&self) -> HashParams {
        self.params
    }

    /// Hashes running now (slots taken), at most the configured concurrency.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.concurrency
            .saturating_sub(self.permits.available_permits())
    }

    /// Password checks ([`PasswordHasher::verify`]) asked of this hasher since it was built,
    /// against a user's hash or the dummy one.
    #[must_use]
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Requests currently waiting for a hashing slot.
    #[must_use]
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Hashes a new password (PHC string).
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] when the queue is full.
    pub async fn hash(&self, password: Zeroizing<String>) -> Result<String> {
        let params = self.params;
        self.run(move || hash_blocking(params, normalize(&password).as_bytes()))
            .await?
    }

    /// Verifies `password` against `hash`, or against the dummy hash when `hash` is `None`
    /// (unknown user), so both paths cost the same.
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] when the queue is full.
    pub async fn verify(
        &self,
        password: Zeroizing<String>,
        hash: Option<&str>,
    ) -> Result<Verification> {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let known = hash.is_some();
        let hash = hash.unwrap_or(&self.dummy_hash).to_owned();
        let params = self.params;
        let v = self
            .run(move || verify_normalized(params, &password, &hash).map(|(v, _)| v))
            .await??;
        Ok(Verification {
            matches: v.matches && known,
            needs_rehash: v.needs_rehash && known,
        })
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        // A free slot is taken at once (tokio's semaphore hands released permits to waiters
        // first, so this never jumps the queue). Otherwise wait, but only behind a bounded
        // number of others: refuse fast rather than queue without limit.
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let depth = self.waiting.fetch_add(1, Ordering::SeqCst);
                let _guard = WaitGuard(&self.waiting);
                if depth >= self.max_waiting {
                    return Err(AuthError::Unavailable(
                        "too many password checks in progress; retry shortly",
                    ));
                }
                Arc::clone(&self.permits)
                    .acquire_owned()
                    .await
                    .map_err(|_| AuthError::Unavailable("password hashing is shutting down"))?
            }
        };
        let span = tracing::Span::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.threads.submit(Box::new(move || {
            let result = span.in_scope(f);
            // Free the slot before answering, so the caller never sees it still taken.
            drop(permit);
            let _ = tx.send(result);
        }))?;
        rx.await
            .map_err(|_| AuthError::Internal("password hashing task failed".into()))
    }
}

/// Checks `password` against `stored` in NFKC, and for input that normalization changes,
/// also as typed; returns the outcome and how many checks ran.
///
/// The raw check covers a hash made from the text as typed: stored before passwords were
/// normalized, or imported (passlib's bcrypt hashes the raw text). It runs for every input
/// that normalization changes, whether the first check matched or not and whether the user
/// exists or not: the work depends on the input alone, so its time says nothing about the
/// password (during a lock, when every answer is the same, it would otherwise tell a right
/// password from a wrong one). A raw match asks for a rehash, which stores the normalized
/// form.
fn verify_normalized(
    params: HashParams,
    password: &str,
    stored: &str,
) -> Result<(Verification, usize)> {
    let normalized = normalize(password);
    let v = verify_blocking(params, normalized.as_bytes(), stored)?;
    if *normalized == *password {
        return Ok((v, 1));
    }
    let raw = verify_blocking(params, password.as_bytes(), stored)?;
    let v = if v.matches {
        v
    } else {
        Verification {
            matches: raw.matches,
            needs_rehash: raw.matches || v.needs_rehash,
        }
    };
    Ok((v, 2))
}

/// A password as it is hashed and judged: Unicode NFKC (NIST SP 800-63B §5.1.1.2, "the
/// verifier SHOULD apply the Normalization Process for Stabilized Strings using either the
/// NFKC or NFKD normalization"), so "é" typed as one code point or as "e" + a combining
/// accent, or a fullwidth "Ａ" from an East Asian input method, is the same password. ASCII
/// passwords are unchanged.
///
/// Input longer than [`MAX_NORMALIZED_INPUT`] bytes is left as it is: no password the
/// policy accepts is that long, and NFKC can expand text 18-fold (U+FDFA), which would
/// otherwise let a request near the body limit allocate megabytes. The copy is zeroized;
/// it is sized for the common case up front, so it rarely grows (a growth leaves the old
/// buffer behind unwiped).
fn normalize(password: &str) -> Zeroizing<String> {
    use unicode_normalization::UnicodeNormalization as _;
    if password.is_ascii() || password.len() > MAX_NORMALIZED_INPUT {
        return Zeroizing::new(password.to_owned());
    }
    let mut out = Zeroizing::new(String::with_capacity(password.len().saturating_mul(3)));
    out.extend(password.nfkc());
    out
}

/// The longest input normalized: 4 KiB, four times what the policy's 256 characters can
/// take in any script.
const MAX_NORMALIZED_INPUT: usize = 4096;

type HashJob = Box<dyn FnOnce() + Send>;

/// Moves the calling thread `nice` steps down (a higher nice value), from wherever the
/// process runs; 19 is the floor. Failure only costs latency elsewhere, so it is logged.
#[cfg(target_os = "linux")]
fn lower_priority(nice: u8) {
    use rustix::process::{getpriority_process, setpriority_process};
    if nice == 0 {
        return;
    }
    // On Linux the nice value belongs to the thread: PRIO_PROCESS with a thread id.
    let tid = rustix::thread::gettid();
    let result = getpriority_process(Some(tid)).and_then(|current| {
        setpriority_process(Some(tid), current.saturating_add(i32::from(nice)).min(19))
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, nice, "cannot lower the priority of a password-hashing thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_nice: u8) {}

/// The hashing threads: as many as there are permits, so every hash finds one idle.
#[derive(Debug)]
struct HashThreads {
    jobs: std::sync::mpsc::Sender<HashJob>,
}

impl HashThreads {
    fn new(count: usize, nice: u8) -> Result<Self> {
        let (jobs, rx) = std::sync::mpsc::channel::<HashJob>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for _ in 0..count {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name("tessera-hash".into())
                .spawn(move || {
                    lower_priority(nice);
                    DEFER_WIPE.set(true);
                    while let Some(job) = next_job(&rx) {
                        JOB_HASHED.set(false);
                        // A panicking job drops its answer channel (the caller gets an
                        // error); the thread stays for the next one.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        // Only a job that hashed into the buffer leaves it holding that hash
                        // alone; after any other (an unparseable stored hash, a panic) the
                        // earlier contents go now, not when the thread goes idle.
                        if !JOB_HASHED.get() {
                            wipe_work_memory();
                        }
                    }
                    // The hasher was dropped: nothing more will come.
                    wipe_work_memory();
                })
                .map_err(|e| AuthError::Internal(format!("cannot start a hashing thread: {e}")))?;
        }
        Ok(Self { jobs })
    }

    fn submit(&self, job: HashJob) -> Result<()> {
        self.jobs
            .send(job)
            .map_err(|_| AuthError::Internal("the hashing threads have stopped".into()))
    }
}

/// How long a hashing thread holding password-derived memory waits for another job before it
/// wipes that memory. Under a login flood the next job comes within this (the freed slot's
/// waiter submits it as soon as the runtime polls it), and that hash overwrites every block
/// it uses in its first pass, so the wipe, 19 MiB of writes (6.5 % of a login's CPU, by
/// `perf record` of the login benchmark), is only paid when the flood ends. It is a
/// minimum: the hashing threads run below the process's priority, so on a saturated CPU
/// the wipe waits to be scheduled like any other work of theirs.
const WIPE_AFTER_IDLE: Duration = Duration::from_millis(2);

/// The next job for a hashing thread, or `None` once the hasher is gone. A thread whose
/// memory is dirty waits only [`WIPE_AFTER_IDLE`] for it and then wipes before it waits
/// longer, so password-derived memory outlives the last hash by that, plus whatever wait
/// for the CPU a busy machine adds. It
/// waits on the queue only when it gets the lock at once: another thread holding it may
/// wait there indefinitely, so a dirty thread that cannot have it wipes first.
fn next_job(rx: &std::sync::Mutex<std::sync::mpsc::Receiver<HashJob>>) -> Option<HashJob> {
    use std::sync::TryLockError;
    use std::sync::mpsc::RecvTimeoutError;
    if work_memory_dirty() {
        let received = match rx.try_lock() {
            Ok(rx) => rx.recv_timeout(WIPE_AFTER_IDLE),
            Err(TryLockError::WouldBlock) => Err(RecvTimeoutError::Timeout),
            Err(TryLockError::Poisoned(_)) => Err(RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(job) => return Some(job),
            // The lock is released here: the wipe never holds up another thread.
            Err(RecvTimeoutError::Timeout) => wipe_work_memory(),
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
    // Clean memory: wait as long as it takes. The lock is held only while taking a job,
    // never while running it.
    rx.lock().ok()?.recv().ok()
}

struct WaitGuard<'a>(&'a AtomicUsize);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bytes of Argon2 output in new hashes (the PHC default, 256 bits).
const OUTPUT_LEN: usize = Params::DEFAULT_OUTPUT_LEN;

thread_local! {
    /// This thread's Argon2 working memory, kept between hashes (see the module docs).
    static WORK_MEMORY: RefCell<WorkMemory> = const {
        RefCell::new(WorkMemory { blocks: Vec::new(), dirty: 0 })
    };
    /// Set on the hashing threads, which wipe their memory when they go idle
    /// ([`next_job`]); any other thread wipes it after every hash.
    static DEFER_WIPE: Cell<bool> = const { Cell::new(false) };
    /// Set by a hashing thread's job that hashed into the buffer and left it holding that
    /// hash's blocks alone (see [`with_work_memory`]).
    static JOB_HASHED: Cell<bool> = const { Cell::new(false) };
}

/// Reusable Argon2 memory and how much of it holds password-derived data.
struct WorkMemory {
    blocks: Vec<Block>,
    /// The leading blocks not wiped since a hash used them.
    dirty: usize,
}

impl WorkMemory {
    fn wipe(&mut self) {
        self.wipe_from(0);
    }

    /// Wipes the dirty blocks from `start` on; the first `start` stay as they are.
    fn wipe_from(&mut self, start: usize) {
        if let Some(dirty) = self.blocks.get_mut(start..self.dirty) {
            wipe(dirty);
        }
        self.dirty = self.dirty.min(start);
    }
}

impl Drop for WorkMemory {
    /// A thread that ends with dirty memory (its last job panicked, or it ended without
    /// going through [`next_job`]'s wipe) still leaves nothing behind.
    fn drop(&mut self) {
        self.wipe();
    }
}

fn wipe(memory: &mut [Block]) {
    // Argon2 memory is derived from the password: left behind, its first blocks would let
    // whoever reads them test guesses for the cost of one BLAKE2b each (the
    // "garbage-collector" attacks on memory-hard functions). `zeroize` writes through
    // volatile stores, which the compiler may not drop even right before the memory is
    // freed (a plain fill carries no such promise). Word-at-a-time stores are slower than a
    // memset, but the wipe is off the login path: the hashing threads wipe when idle.
    for block in memory {
        block.zeroize();
    }
}

/// Whether this thread's reusable memory holds blocks a hash left unwiped.
fn work_memory_dirty() -> bool {
    WORK_MEMORY.with(|cell| cell.try_borrow().is_ok_and(|memory| memory.dirty > 0))
}

/// Wipes whatever this thread's reusable memory holds from earlier hashes.
fn wipe_work_memory() {
    WORK_MEMORY.with(|cell| {
        if let Ok(mut memory) = cell.try_borrow_mut() {
            memory.wipe();
        }
    });
}

/// Runs the hash `f` with `blocks` blocks of Argon2 memory. A request up to `keep` blocks
/// (the configured cost) uses this thread's reusable buffer; a larger one (a stored hash
/// with a higher cost than the current one) gets memory of its own for that call only, wiped
/// afterwards, so the retained memory stays bounded by the configuration.
///
/// The reusable buffer is wiped afterwards too, except on a hashing thread after a hash that
/// succeeded: a hash computes every block it uses in its first pass (RFC 9106 §3.2: the
/// first pass assigns each block, later passes XOR into it), so those blocks now hold this
/// hash alone and the next hash would overwrite them anyway. What an earlier, costlier hash
/// left beyond them is wiped at once, and the rest when the thread goes idle
/// ([`next_job`]). The blocks are marked dirty before `f` runs, so a panicking hash is wiped
/// too.
fn with_work_memory(
    blocks: usize,
    keep: usize,
    f: impl FnOnce(&mut [Block]) -> argon2::Result<()>,
) -> argon2::Result<()> {
    fn own_memory(
        blocks: usize,
        f: impl FnOnce(&mut [Block]) -> argon2::Result<()>,
    ) -> argon2::Result<()> {
        let mut memory = WorkMemory {
            blocks: vec![Block::new(); blocks],
            dirty: blocks,
        };
        f(&mut memory.blocks)
        // Dropping it wipes it.
    }
    if blocks > keep {
        // This hash leaves the reusable buffer alone, so nothing will overwrite what an
        // earlier one left there: wipe it before a hash that takes longer than usual.
        wipe_work_memory();
        return own_memory(blocks, f);
    }
    WORK_MEMORY.with(|cell| {
        // Not borrowed already (`f` never hashes): the buffer, grown once to `keep` blocks.
        let Ok(mut memory) = cell.try_borrow_mut() else {
            return own_memory(blocks, f);
        };
        if memory.blocks.len() < keep {
            // Growing may move the buffer and free the old one: nothing dirty goes with it.
            memory.wipe();
            memory.blocks.resize(keep, Block::new());
        }
        let memory = &mut *memory;
        let Some(work) = memory.blocks.get_mut(..blocks) else {
            return own_memory(blocks, f);
        };
        memory.dirty = memory.dirty.max(blocks);
        let result = f(work);
        if result.is_ok() && DEFER_WIPE.get() {
            memory.wipe_from(blocks);
            JOB_HASHED.set(true);
        } else {
            memory.wipe();
        }
        result
    })
}

/// A new Argon2id PHC string for `password` at `params`, with a random 128-bit salt.
fn hash_blocking(params: HashParams, password: &[u8]) -> Result<String> {
    let salt = tessera_jose::crypto::random_array::<16>().map_err(AuthError::internal)?;
    let argon2_params = params.to_argon2()?;
    let keep = argon2_params.block_count();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon2_params.clone());
    let mut out = Zeroizing::new([0u8; OUTPUT_LEN]);
    with_work_memory(keep, keep, |memory| {
        argon2.hash_password_into_with_memory(password, &salt, out.as_mut_slice(), memory)
    })
    .map_err(|e| AuthError::Internal(format!("password hashing failed: {e}")))?;
    phc_string(&argon2_params, &salt, out.as_slice())
}

fn phc_string(params: &Params, salt: &[u8], output: &[u8]) -> Result<String> {
    let internal = |e: argon2::password_hash::phc::Error| {
        AuthError::Internal(format!("cannot encode the password hash: {e}"))
    };
    Ok(PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params)
            .map_err(|e| AuthError::Internal(format!("cannot encode Argon2 parameters: {e}")))?,
        salt: Some(Salt::new(salt).map_err(internal)?),
        hash: Some(Output::new(output).map_err(internal)?),
    }
    .to_string())
}

/// The stand-in for an unknown user's hash: the current parameters, a random salt and a
/// random output. Verifying against it costs a full hash; no password produces it (and
/// [`PasswordHasher::verify`] reports no match for it whatever the result).
fn dummy_hash(params: HashParams) -> Result<String> {
    let salt = tessera_jose::crypto::random_array::<16>().map_err(AuthError::internal)?;
    let output = tessera_jose::crypto::random_array::<OUTPUT_LEN>().map_err(AuthError::internal)?;
    phc_string(&params.to_argon2()?, &salt, &output)
}

/// Checks `password` against `stored`. Every check costs at least one hash at the current
/// parameters, whatever is stored, so a name whose hash is cheaper (an imported bcrypt hash,
/// Argon2 from before a cost increase, a malformed row) answers no faster than a name that
/// does not exist (the dummy hash): OWASP Authentication Cheat Sheet, "Authentication
/// Responses". A costlier stored hash still takes longer, until its next login rehashes it.
fn verify_blocking(params: HashParams, password: &[u8], stored: &str) -> Result<Verification> {
    let (verification, full_cost) = verify_stored(params, password, stored)?;
    if !full_cost {
        // The hash is not used: this is the work a full-cost check does.
        hash_blocking(params, password)?;
    }
    Ok(verification)
}

/// The check itself, and whether it cost at least a hash at the current parameters.
fn verify_stored(
    params: HashParams,
    password: &[u8],
    stored: &str,
) -> Result<(Verification, bool)> {
    if is_bcrypt(stored) {
        // Past the import ceiling (a row written some other way), it is not even tried.
        if !bcrypt_shape(stored) {
            tracing::error!(target: "tessera::auth", "stored bcrypt hash is malformed or costlier than cost {MAX_BCRYPT_COST}");
            return Ok((Verification::NO_MATCH, false));
        }
        // A bcrypt check (up to seconds at cost 15) leaves the Argon2 buffer alone: what an
        // earlier hash left there goes first.
        wipe_work_memory();
        // Legacy import: bcrypt truncates at 72 bytes, exactly as the systems that made these
        // hashes did. A match is always rehashed to Argon2id.
        let matches = bcrypt::verify(password, stored).unwrap_or(false);
        let verification = Verification {
            matches,
            needs_rehash: matches,
        };
        return Ok((verification, false));
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        // An unparseable stored hash never matches; it is logged, not surfaced.
        tracing::error!(target: "tessera::auth", "stored password hash is not a valid PHC string");
        return Ok((Verification::NO_MATCH, false));
    };
    let current = params.to_argon2()?;
    let Some(check) = argon2_matches(password, &parsed, current.block_count()) else {
        return Ok((Verification::NO_MATCH, false));
    };
    let verification = Verification {
        matches: check.matches,
        needs_rehash: check.matches && !uses_params(&parsed, params),
    };
    Ok((verification, check.work >= argon2_work(&current)))
}

/// Recomputes an Argon2 PHC hash (any variant and version the string names, with its own
/// parameters) and compares the outputs in constant time. `None` when nothing was computed:
/// the string is malformed, or its cost is past the ceiling; either way, no match.
fn argon2_matches(password: &[u8], parsed: &PasswordHash, keep: usize) -> Option<Argon2Check> {
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return None;
    };
    let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).ok()?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).ok()?,
        None => Version::default(),
    };
    // Sets the output length to the stored one.
    let argon2_params = Params::try_from(parsed).ok()?;
    // Past the import ceiling (a row written some other way), it is not even tried: its
    // memory and time would be the attacker's to choose.
    if !argon2_cost_allowed(&argon2_params) {
        tracing::error!(target: "tessera::auth", "stored Argon2 hash exceeds the cost ceiling; it never matches");
        return None;
    }
    let work = argon2_work(&argon2_params);
    let blocks = argon2_params.block_count();
    let argon2 = Argon2::new(algorithm, version, argon2_params);
    let mut out = Zeroizing::new([0u8; Output::MAX_LENGTH]);
    let out = out.get_mut(..expected.len())?;
    let computed = with_work_memory(blocks, keep, |memory| {
        argon2.hash_password_into_with_memory(password, salt.as_ref(), out, memory)
    });
    // Defensive: the parser already refuses the inputs the crate would (a short salt), but
    // a hash refused before any work must not count as a full-cost check.
    let work = if computed.is_ok() { work } else { 0 };
    Some(Argon2Check {
        matches: computed.is_ok()
            && tessera_jose::crypto::constant_time_eq(out, expected.as_bytes()),
        work,
    })
}

/// A computed Argon2 check: whether it matched, and its [`argon2_work`].
struct Argon2Check {
    matches: bool,
    work: u64,
}

/// Memory (KiB) × passes: what an Argon2 hash costs, up to a constant.
fn argon2_work(params: &Params) -> u64 {
    u64::from(params.m_cost()) * u64::from(params.t_cost())
}

fn uses_params(hash: &PasswordHash, params: HashParams) -> bool {
    if hash.algorithm.as_str() != "argon2id" || hash.version != Some(0x13) {
        return false;
    }
    match Params::try_from(hash) {
        Ok(p) => {
            p.m_cost() == params.memory_kib
                && p.t_cost() == params.iterations
                && p.p_cost() == params.parallelism
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Zeroizing<String> {
        Zeroizing::new(s.to_owned())
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_below_the_process_priority() {
        let own = || rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let base = own();
        let h = PasswordHasher::with_priority(HashParams::INSECURE_FOR_TESTS, 2, 16, 7).unwrap();
        for _ in 0..4 {
            let nice = h.run(own).await.unwrap();
            assert_eq!(nice, (base + 7).min(19), "process at {base}");
        }
        let plain = PasswordHasher::new(HashParams::INSECURE_FOR_TESTS, 1, 16).unwrap();
        assert_eq!(plain.run(own).await.unwrap(), base);
        assert_eq!(own(), base, "the caller's own priority is untouched");
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let h = PasswordHasher::new(HashParams::INSECURE_FOR_TESTS, 2, 16).unwrap();
        let hash = h.hash(pw("correct horse battery")).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        let ok = h
            .verify(pw("correct horse battery"), Some(&hash))
            .await
            .unwrap();
        assert!(ok.matches && !ok.needs_rehash);
        assert!(!h.verify(pw("wrong"), Some(&hash)).await.unwrap().matches);
    }

    #[tokio::test]
    async fn passwords_are_compared_in_nfkc() {
        let h = PasswordHasher::new(HashParams::INSECURE_FOR_TESTS, 1, 16).unwrap();
        // "Café zébu quokka" with precomposed é, and with e + U+0301 (what some input
        // methods and macOS text fields produce); and fullwidth letters.
        let nfc = "Caf\u{e9} z\u{e9}bu quokka";
        let nfd = "Cafe\u{301} ze\u{301}bu quokka";
        let hash = h.hash(pw(nfc)).await.unwrap();
        let v = h.verify(pw(nfd), Some(&hash)).await.unwrap();
        assert!(v.matches && !v.needs_rehash, "NFD verifies against NFC");
        let hash = h.hash(pw(nfd)).await.unwrap();
        assert!(h.verify(pw(nfc), Some(&hash)).await.unwrap().matches);
        let hash = h.hash(pw("\u{ff21}\u{ff22}c horse battery")).await.unwrap();
        assert!(
            h.verify(pw("ABc horse battery"), Some(&hash))
                .await
                .unwrap()
                .matches
        );
        assert!(
            !h.verify(pw("abc horse battery"), Some(&hash))
                .await
                .unwrap()
                .matches
        );
    }

    #[test]
    fn input_that_normalization_changes_costs_two_checks_right_or_wrong() {
        // During a lock every answer is the same: the work must not tell a right password
        // from a wrong one.
        let params = HashParams::INSECURE_FOR_TESTS;
        let stored = hash_blocking(params, b"ABc horse battery").unwrap();
        let check = |pw: &str| {
            let (v, checks) = verify_normalized(params, pw, &stored).unwrap();
            (v.matches, checks)
        };
        assert_eq!(
            check("\u{ff21}Bc horse battery"),
            (true, 2),
            "right, changed by NFKC"
        );
        assert_eq!(
            check("\u{ff21}Bc horse batterx"),
            (false, 2),
            "wrong, changed by NFKC"
        );
        assert_eq!(check("ABc horse battery"), (true, 1));
        assert_eq!(check("ABc horse batterx"), (false, 1));
        // Too long to be a password the policy takes: left as it is, one check.
        assert!(MAX_NORMALIZED_INPUT >= 4 * PasswordPolicy::default().max_length);
        let long = "\u{fdfa}".repeat(2000);
        assert_eq!(*normalize(&long), long);
        assert_eq!(check(&long), (false, 1));
        assert_ne!(*normalize("\u{fdfa}"), "\u{fdfa}");
    }

    #[tokio::test]
    async fn a_hash_of_the_text_as_typed_still_verifies_and_asks_for_a_rehash() {
        // Stored before normalization (or imported): the hash of the NFD bytes themselves.
        let h = PasswordHasher::new(HashParams::INSECURE_FOR_TESTS, 1, 16).unwrap();
        let nfd = "Cafe\u{301} ze\u{301}bu quokka";
        let legacy = hash_blocking(HashParams::INSECURE_FOR_TESTS, nfd.as_bytes()).unwrap();
        let v = h.verify(pw(nfd), Some(&legacy)).await.unwrap();
        assert!(v.matches && v.needs_rehash, "{v:?}");
        assert!(!h.verify(pw("wrong"), Some(&legacy)).await.unwrap().matches);
        // bcrypt from passlib hashed the raw text too.
        let bcrypt = bcrypt::hash_with_salt(nfd, 4, [7u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoB);
        let v = h.verify(pw(nfd), Some(&bcrypt)).await.unwrap();
        assert!(v.matches && v.needs_rehash, "{v:?}");
    }

    #[test]
    fn the_policy_judges_the_normalized_password() {
        // Fullwidth "password123456" is hashed as the common password it normalizes to.
        let fullwidth: String = "password123456"
            .chars()
            .map(|c| char::from_u32(u32::from(c) - 0x21 + 0xff01).unwrap())
            .collect();
        let e = PasswordPolicy::default()
            .check(&fullwidth, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("common") || e.contains("too easy"), "{e}");
    }

    #[tokio::test]
    async fn unknown_users_never_match_even_with_the_dummy_password() {
        let h = PasswordHasher::new(HashParams::INSECURE_FOR_TESTS, 1, 16).unwrap();
        assert!(!h.verify(pw(""), None).await.unwrap().matches);
    }

    #[tokio::test]
    async fn changed_parameters_ask_for_a_rehash() {
        let old = PasswordHasher::new(HashParams::INSECURE_FOR_TESTS, 1, 16).unwrap();
        let hash = old.hash(pw("a long enough password")).await.unwrap();
        let newer = PasswordHasher::new(
            HashParams {
                memory_kib: 128,
                iterations: 1,
                parallelism: 1,
            },
            1,
            16,
        )
        .unwrap();
        let v = newer
            .verify(pw("a long enough password"), Some(&hash))
            .await
            .unwrap();
        assert!(v.matches && v.needs_rehash);
    }

    #[tokio::test]
    async fn stored_hashes_costlier_than_the_buffer_still_verify() {
        // A hash made at a higher cost than the hasher's own (an import, or a lowered
        // setting) needs more memory than the reusable buffer: it gets its own.
        let costly = HashParams {
            memory_kib: 256,
            iterations: 1,
            parallelism: 1,
        };
        let old = PasswordHasher::new(costly, 1, 16).unwrap();
        let hash = old.hash(pw("a long enough password")).await.unwrap();
        let h = PasswordHasher::new(HashParams::INSECURE_FOR_TESTS, 1, 16).unwrap();
        for _ in 0..2 {
            let v = h
                .verify(pw("a long enough password"), Some(&hash))
                .await
                .unwrap();
            assert!(v.matches && v.needs_rehash);
            assert!(!h.verify(pw("wrong"), Some(&hash)).await.unwrap().matches);
        }
        // Whatever the reusable buffer held before, the same inputs give the same hash.
        let fresh = h.hash(pw("another password here")).await.unwrap();
        assert!(
            h.verify(pw("another password here"), Some(&fresh))
                .await
                .unwrap()
                .matches
        );
    }

    /// This thread's reusable memory: (blocks held, blocks marked dirty, all of it zero).
    /// On a hashing thread the check leaves the memory as it found it: it counts as a job
    /// that hashed, so the thread does not wipe after it (which would hide a missing wipe
    /// from the next check).
    fn work_memory_state() -> (usize, usize, bool) {
        JOB_HASHED.set(true);
        WORK_MEMORY.with(|cell| {
            let memory = cell.borrow();
            let zero = memory
                .blocks
                .iter()
                .all(|b| b.as_ref().iter().all(|w| *w == 0));
            (memory.blocks.len(), memory.dirty, zero)
        })
    }

    /// Waits (up to 5 s) until the hashing thread that runs the check reports clean memory,
    /// and returns what it saw last: the idle wipe comes after [`WIPE_AFTER_IDLE`], or later
    /// when the machine is busy, and a check that arrives first finds the memory in use.
    async fn state_once_idle(h: &PasswordHasher) -> (usize, usize, bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            tokio::time::sleep(WIPE_AFTER_IDLE * 5).await;
            let state = h.run(work_memory_state).await.unwrap();
            if state.1 == 0 || std::time::Instant::now() > deadline {
                return state;
            }
        }
    }

    #[tokio::test]
    async fn hashing_threads_wipe_their_memory_when_no_hash_follows() {
        let h = PasswordHasher::new(HashParams::INSECURE_FOR_TESTS, 1, 16).unwrap();
        for _ in 0..3 {
            let hash = h.hash(pw("correct horse battery")).await.unwrap();
            // Back to back, on memory the last hash may have left unwiped.
            assert!(
                h.verify(pw("correct horse battery"), Some(&hash))
                    .await
                    .unwrap()
                    .matches
            );
            let (blocks, dirty, zero) = state_once_idle(&h).await;
            assert_eq!((blocks, dirty), (64, 0), "the buffer is kept, marked clean");
            assert!(
                zero,
                "an idle hashing thread left password-derived memory behind"
            );
        }
    }

    #[tokio::test]
    async fn every_hashing_thread_wipes_even_while_another_waits_for_work() {
        // Two threads: one of them waits on the job queue (holding its lock) while the other
        // goes idle with dirty memory, which must not wait behind it to wipe.
        let h = PasswordHasher::new(HashParams::INSECURE_FOR_TESTS, 2, 16).unwrap();
        // Jobs that cannot finish until both are running: one on each thread.
        let on_both = |job: fn() -> (usize, usize, bool)| {
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let one = move |barrier: Arc<std::sync::Barrier>| {
                move || {
                    barrier.wait();
                    (std::thread::current().id(), job())
                }
            };
            let (x, y) = (one(Arc::clone(&barrier)), one(barrier));
            async { tokio::join!(h.run(x), h.run(y)) }
        };
        let hash = || {
            hash_blocking(HashParams::INSECURE_FOR_TESTS, b"correct horse").unwrap();
            work_memory_state()
        };
        let (x, y) = on_both(hash).await;
        let ((tx, x), (ty, y)) = (x.unwrap(), y.unwrap());
        assert_ne!(tx, ty, "one hash per thread");
        assert_eq!((x.1, y.1), (64, 64), "both left dirty memory behind");
        // One check, after 250 times the idle delay: unlike `state_once_idle`, no retry, as
        // the checks themselves are jobs, and a job reaching a thread stuck behind the
        // queue's lock would let it go on and wipe, hiding that it was stuck.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (x, y) = on_both(work_memory_state).await;
        let ((tx, x), (ty, y)) = (x.unwrap(), y.unwrap());
        assert_ne!(tx, ty, "one check per thread");
        assert_eq!((x.1, y.1), (0, 0), "both wiped while idle");
        assert!(x.2 && y.2);
    }

    #[tokio::test]
    async fn a_cheaper_hash_wipes_what_a_costlier_one_left_beyond_it() {
        // Hashes at another cost than the hasher's own (an older setting) reuse the front of
        // its buffer: the result matches the one made on fresh memory, and the blocks past
        // it, last written by a costlier hash, are wiped at once.
        let cheap = PasswordHasher::new(HashParams::INSECURE_FOR_TESTS, 1, 16).unwrap();
        let stored = cheap.hash(pw("a long enough password")).await.unwrap();
        let costly = HashParams {
            memory_kib: 128,
            iterations: 1,
            parallelism: 1,
        };
        let h = PasswordHasher::new(costly, 1, 16).unwrap();
        for _ in 0..2 {
            h.hash(pw("fills all 128 blocks")).await.unwrap();
            // The check alone: `verify` then tops it up with a hash at the current cost,
            // which overwrites all 128 blocks again.
            let stored = stored.clone();
            let (v, full_cost) = h
                .run(move || verify_stored(costly, b"a long enough password", &stored))
                .await
                .unwrap()
                .unwrap();
            assert!(v.matches && v.needs_rehash && !full_cost);
            // Read on the hashing thread, asserted here (a failed assertion there would only
            // surface as a lost answer).
            let (blocks, dirty, tail_zero) = h
                .run(|| {
                    JOB_HASHED.set(true);
                    WORK_MEMORY.with(|cell| {
                        let memory = cell.borrow();
                        let tail = memory.blocks.get(64..).unwrap_or_default();
                        let zero = tail.iter().all(|b| b.as_ref().iter().all(|w| *w == 0));
                        (memory.blocks.len(), memory.dirty, zero)
                    })
                })
                .await
                .unwrap();
            assert_eq!(blocks, 128);
            assert!(dirty <= 64, "{dirty} blocks dirty after a 64-block hash");
            assert!(
                tail_zero,
                "blocks 64..128, last written by the costlier hash"
            );
        }
    }

    #[test]
    fn other_threads_wipe_after_every_hash() {
        let hash = hash_blocking(HashParams::INSECURE_FOR_TESTS, b"password").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let (blocks, dirty, zero) = work_memory_state();
        assert_eq!((blocks, dirty), (64, 0));
        assert!(zero);
    }

    #[test]
    fn wiping_clears_the_dirty_blocks_only() {
        let mut memory = WorkMemory {
            blocks: vec![Block::new(); 6],
            dirty: 4,
        };
        let mark = |memory: &mut WorkMemory| {
            for block in &mut memory.blocks {
                block.as_mut()[0] = 7;
            }
        };
        let first_words = |memory: &WorkMemory| -> Vec<u64> {
            memory.blocks.iter().map(|b| b.as_ref()[0]).collect()
        };
        mark(&mut memory);
        memory.wipe_from(2);
        assert_eq!(first_words(&memory), [7, 7, 0, 0, 7, 7]);
        assert_eq!(memory.dirty, 2);
        memory.wipe();
        assert_eq!(first_words(&memory), [0, 0, 0, 0, 7, 7]);
        assert_eq!(memory.dirty, 0);
    }

    #[test]
    fn the_dummy_hash_has_the_current_parameters() {
        let d = dummy_hash(HashParams::OWASP).unwrap();
        let parsed = PasswordHash::new(&d).unwrap();
        assert!(uses_params(&parsed, HashParams::OWASP));
        assert!(d.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{d}");
    }

    #[test]
    fn hashes_match_the_reference_encoding() {
        // Argon2id through the reusable buffer agrees with the crate's own PHC hashing.
        use argon2::PasswordHasher as _;
        let params = HashParams::INSECURE_FOR_TESTS;
        let ours = hash_blocking(params, b"password").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        let salt = parsed.salt.unwrap();
        let reference = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            params.to_argon2().unwrap(),
        )
        .hash_password_with_salt(b"password", salt.as_ref())
        .unwrap()
        .to_string();
        assert_eq!(ours, reference);
    }

    #[tokio::test]
    async fn garbage_hashes_never_match() {
        let h = PasswordHasher::new(HashParams::INSECURE_FOR_TESTS, 1, 16).unwrap();
        assert!(!h.verify(pw("x"), Some("not a hash")).await.unwrap().matches);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_not_waited_on() {
        let h = PasswordHasher::new(HashParams::INSECURE_FOR_TESTS, 1, 0).unwrap();
        assert!(h.hash(pw("a free slot is used at once")).await.is_ok());
        let _busy = Arc::clone(&h.permits).try_acquire_owned().unwrap();
        assert!(matches!(
            h.hash(pw("x")).await,
            Err(AuthError::Unavailable(_))
        ));
    }

    #[test]
    fn policy_messages_say_what_to_change() {
        let p = PasswordPolicy::default();
        let e = p.check("short", None).unwrap_err().to_string();
        assert!(e.contains("at least 12"), "{e}");
        let e = p
            .check("alice-in-wonderland-99", Some("alice"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("username"), "{e}");
        assert!(
            p.check("correct horse battery staple", Some("alice"))
                .is_ok()
        );
        assert!(p.check(&"x".repeat(257), None).is_err());
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_length() {
        let p = PasswordPolicy {
            min_length: 6,
            ..PasswordPolicy::default()
        };
        let e = p.check("qwertyuiop", None).unwrap_err().to_string();
        assert!(e.contains("most common"), "{e}");
        let e = PasswordPolicy::default()
            .check("1qaz2wsx3edc", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("most common"), "{e}");
    }

    #[test]
    fn weak_but_long_passwords_get_strength_feedback() {
        let e = PasswordPolicy::default()
            .check("aaaaaaaaaaaaaaaa", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("too easy to guess") && e.contains("strength"),
            "{e}"
        );
        let e = PasswordPolicy::default()
            .check("Password123456", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("too easy to guess") || e.contains("common"),
            "{e}"
        );
        // zxcvbn's warning ends in its own full stop: one stop, not two.
        let mut warned = 0;
        for pw in [
            "Password123456",
            "qwertyuiopasdfgh",
            "aaaaaaaaaaaaaaaa",
            "abcdabcdabcdabcd",
        ] {
            let e = PasswordPolicy::default()
                .check(pw, None)
                .unwrap_err()
                .to_string();
            assert!(!e.contains(".."), "{pw}: {e}");
            warned += usize::from(e.contains("needed): "));
        }
        assert!(warned > 0, "some password got a zxcvbn warning");
    }

    #[tokio::test]
    async fn imported_bcrypt_hashes_verify_and_ask_for_a_rehash() {
        let h = PasswordHasher::new(HashParams::INSECURE_FOR_TESTS, 1, 16).unwrap();
        // passlib's default for the tutorial's CryptContext(schemes=["bcrypt"]).
        let hash = bcrypt::hash_with_salt("secret-from-passlib", 4, [7u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoB);
        assert!(is_supported_hash(&hash));
        let v = h
            .verify(pw("secret-from-passlib"), Some(&hash))
            .await
            .unwrap();
        assert!(v.matches && v.needs_rehash);
        assert!(!h.verify(pw("wrong"), Some(&hash)).await.unwrap().matches);
        assert!(!is_supported_hash("$2b$12$short"));
        assert!(!is_supported_hash("plaintext"));
        // A cost beyond the bound would let one imported row hold a hashing slot for minutes.
        let costly = format!("$2b$31${}", hash.get(7..).unwrap());
        assert!(!is_supported_hash(&costly));
        let cheap = format!("$2b$03${}", hash.get(7..).unwrap());
        assert!(!is_supported_hash(&cheap));
    }

    /// An Argon2 PHC string at `m` KiB and `t` passes (its output is not a real hash).
    fn argon2_at(m: u32, t: u32) -> String {
        phc_string(&Params::new(m, t, 1, None).unwrap(), &[1; 16], &[0; 32]).unwrap()
    }

    /// A stored Argon2 hash whose cost is the attacker's choice (a hostile or mistaken
    /// import): past the ceiling it is refused on import and, if stored some other way,
    /// never computed: no gigabytes allocated, no hashing thread held for hours.
    #[tokio::test]
    async fn stored_argon2_hashes_past_the_cost_ceiling_are_refused_and_never_run() {
        let huge_memory = argon2_at(4 * 1024 * 1024, 1);
        let huge_time = argon2_at(8, u32::MAX);
        assert!(!is_supported_hash(&huge_memory));
        assert!(!is_supported_hash(&huge_time));
        assert!(is_supported_hash(&argon2_at(MAX_ARGON2_MEMORY_KIB, 4)));
        assert!(!is_supported_hash(&argon2_at(MAX_ARGON2_MEMORY_KIB, 5)));
        let h = PasswordHasher::new(HashParams::INSECURE_FOR_TESTS, 1, 16).unwrap();
        for stored in [&huge_memory, &huge_time] {
            // A bound on a hang, not a timing assertion: computed, either takes hours.
            let v = tokio::time::timeout(
                Duration::from_secs(30),
                h.verify(pw("anyone's guess"), Some(stored)),
            )
            .await
            .expect("a hash past the ceiling is not computed")
            .unwrap();
            assert!(!v.matches);
        }
        let after = h.hash(pw("the pool still serves")).await.unwrap();
        assert!(
            h.verify(pw("the pool still serves"), Some(&after))
                .await
                .unwrap()
                .matches
        );
        assert!(supported_hashes().contains(&MAX_ARGON2_WORK.to_string()));
    }

    /// Whether each kind of stored hash already costs a current-cost hash; the others are
    /// topped up with one, so no stored hash answers faster than an unknown name.
    #[test]
    fn checks_cheaper_than_the_current_cost_are_topped_up() {
        let params = HashParams::INSECURE_FOR_TESTS; // m = 64, t = 1
        let current = hash_blocking(params, b"password").unwrap();
        let bcrypt = bcrypt::hash_with_salt("password", 4, [7u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoB);
        let cases = [
            (current.as_str(), true),
            (&argon2_at(128, 1), true),
            (&argon2_at(32, 2), true),
            (&argon2_at(32, 1), false),
            (&bcrypt, false),
            ("not a hash", false),
            ("$argon2id$v=19$m=64,t=1,p=1$bm9oYXNo", false),
            (&argon2_at(8, u32::MAX), false),
        ];
        for (stored, full_cost) in cases {
            let (_, reported) = verify_stored(params, b"password", stored).unwrap();
            assert_eq!(reported, full_cost, "{stored}");
        }
        // On a fresh thread, a check that does not use the reusable buffer at the current
        // size (bcrypt, a malformed or refused string) leaves it empty unless the top-up ran.
        for stored in [bcrypt.as_str(), "not a hash", &argon2_at(8, u32::MAX)] {
            let owned = stored.to_owned();
            let (blocks, dirty, zero) = std::thread::spawn(move || {
                verify_blocking(params, b"password", &owned).unwrap();
                work_memory_state()
            })
            .join()
            .unwrap();
            assert_eq!(
                blocks, 64,
                "a current-cost hash ran after checking {stored}"
            );
            assert!(dirty == 0 && zero, "and was wiped");
        }
    }
}
