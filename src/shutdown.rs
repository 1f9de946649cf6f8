//! The one "the bridge is stopping" flag, shared by every component that must change what
//! it does at shutdown: readiness turns 503 (`health`), new webhooks get 503
//! `shutting_down` (`ingress`), the broker probe ends after the probe in progress
//! (`delivery/kafka/probe.rs`). `startup` sets it, once, and then stops the components in
//! order (see `Application::run_until`).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Set once when shutdown begins; never cleared.
#[derive(Debug, Default)]
pub struct Stopping {
    flag: AtomicBool,
    notify: Notify,
}

impl Stopping {
    /// Shutdown has begun: from now on [`is_set`](Self::is_set) is true, and every
    /// [`wait`](Self::wait) completes.
    pub fn begin(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether shutdown has begun.
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Completes once shutdown has begun (at once if it already has).
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the flag is read, so a `begin` in between is not missed.
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_a_waiter_that_was_waiting_and_one_that_comes_late() {
        let stopping = Arc::new(Stopping::default());
        let early = tokio::spawn({
            let stopping = Arc::clone(&stopping);
            async move { stopping.wait().await }
        });
        assert!(!stopping.is_set());
        stopping.begin();
        tokio::time::timeout(Duration::from_secs(5), early)
            .await
            .expect("the early waiter wakes")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), stopping.wait())
            .await
            .expect("a late waiter returns at once");
        assert!(stopping.is_set());
    }
}
