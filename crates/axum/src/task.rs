//! Background tasks that outlive the runtime they were started on.
//!
//! A verifier may outlive the Tokio runtime it was built on: kept in a `static` or a
//! `OnceLock`, shared by the runtimes of several `#[tokio::test]`s, or built in a
//! short-lived `block_on`. A task spawned there ends when that runtime shuts down, and
//! nothing else would start it again: the key set would no longer be refreshed and the
//! revocation feed no longer read. So each background task lives in a [`Background`] slot
//! that the verifier's callers check on their way through ([`Background::ensure`], one
//! atomic load when the task is alive); when the task is gone, it is spawned again on the
//! caller's runtime.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::task::AbortHandle;

/// One background task, started again on the caller's runtime when it has ended.
#[derive(Debug, Default)]
pub(crate) struct Background {
    /// True from just before the task is spawned until its future is dropped, which is how
    /// such a task ends: it never returns, so it is dropped when aborted, when its runtime
    /// shuts down, or, never run, when it is refused by a runtime shutting down.
    alive: Arc<AtomicBool>,
    /// The task, to abort it when the verifier is dropped. Also the lock under which a
    /// caller decides to spawn, so two callers never both do.
    task: Mutex<Option<AbortHandle>>,
}

impl Background {
    /// Spawns `start()` on the current runtime unless the task is alive. Outside a Tokio
    /// runtime it does nothing: the next caller on one starts the task.
    pub(crate) fn ensure<F>(&self, start: impl FnOnce() -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.alive.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        // Another caller may have started it while this one waited for the lock.
        if self.alive.load(Ordering::Acquire) {
            return;
        }
        // Set before the spawn: a task dropped at once (its runtime is shutting down)
        // clears it again, and must not find it still to be set.
        self.alive.store(true, Ordering::Release);
        let guard = Alive(Arc::clone(&self.alive));
        let future = start();
        let handle = runtime.spawn(async move {
            // Dropped with the future, however the task ends (the future holds it from the
            // start, so a task dropped before it ever ran drops it too).
            let _guard = guard;
            future.await;
        });
        *task = Some(handle.abort_handle());
    }

    /// Aborts the task (the verifier is being dropped).
    pub(crate) fn stop(&self) {
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = task.as_ref() {
            t.abort();
        }
    }
}

/// Clears [`Background::alive`] when the task's future is dropped.
struct Alive(Arc<AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
