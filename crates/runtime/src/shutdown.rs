//! Named tasks, signals and a bounded drain.
//!
//! A service owns exactly one [`Shutdown`]. Every long-running task is started through
//! [`Shutdown::spawn`] with a name, and is expected to watch [`Shutdown::token`] and return once it
//! is cancelled. The lifecycle is:
//!
//! 1. The first SIGTERM or SIGINT (or [`Shutdown::trigger`], or any task failing) cancels the
//!    token. Servers stop accepting and finish in-flight requests; consumers finish their batch and
//!    commit; relays flush.
//! 2. [`Shutdown::wait`] then gives the tasks the grace period to return. Tasks that are still
//!    running after it are abandoned and `wait` reports an error, so the process exits non-zero.
//! 3. A second signal during the drain exits the process at once: the operator has decided.
//!
//! A task that returns an error brings the whole process down (after the same drain), because a
//! service that silently lost its Kafka consumer or its server is worse than one that restarts.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

/// Owner of a service's tasks and of its shutdown signal.
#[derive(Clone, Debug)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
    failure: Arc<Mutex<Option<String>>>,
}

/// Why [`Shutdown::wait`] did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A named task returned an error, which started the shutdown.
    #[error("task failed: {0}")]
    TaskFailed(String),
    /// Tasks were still running when the grace period ended.
    #[error("{0} task(s) still running after the {1:?} grace period")]
    DrainTimedOut(usize, Duration),
}

impl Shutdown {
    /// A new owner whose drain may take at most `grace`.
    pub fn new(grace: Duration) -> Self {
        Self {
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
            grace,
            failure: Arc::new(Mutex::new(None)),
        }
    }

    /// The token every task watches; cancelled when shutdown starts.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Whether shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Starts shutdown, as a signal would.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// The grace period of the drain.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Spawns a named long-running task. If it returns an error, the error is logged once here
    /// and the whole service shuts down.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let token = self.token.clone();
        let failure = Arc::clone(&self.failure);
        let span = tracing::info_span!("task", task.name = name);
        self.tracker.spawn(
            async move {
                match task.await {
                    Ok(()) => tracing::debug!("task finished"),
                    Err(error) => {
                        tracing::error!(error = format!("{error:#}"), "task failed, shutting down");
                        let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert_with(|| format!("{name}: {error:#}"));
                        token.cancel();
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Listens for SIGTERM and SIGINT: the first starts shutdown, the second exits at once.
    pub fn listen_for_signals(&self) {
        let token = self.token.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received, draining (send it again to exit now)");
            token.cancel();
            wait_for_signal().await;
            tracing::warn!("second shutdown signal, exiting now");
            std::process::exit(130);
        });
    }

    /// Waits until shutdown starts, then for every task to return within the grace period.
    pub async fn wait(self) -> Result<(), Error> {
        self.token.cancelled().await;
        self.tracker.close();
        let drained = tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_ok();
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(failure) = failure {
            return Err(Error::TaskFailed(failure));
        }
        if !drained {
            return Err(Error::DrainTimedOut(self.tracker.len(), self.grace));
        }
        tracing::info!("drained, bye");
        Ok(())
    }
}

/// Short best-effort tasks a service may start by the thousand (a presence announcement, a typing
/// notice): at most `limit` run at once, past which new ones are refused, counted in
/// [`BACKGROUND_REFUSED`] and logged, rather than piling up without bound; the drain waits for
/// the running ones (run [`Background::drained`] in a [`Shutdown::spawn`] task).
#[derive(Clone, Debug)]
pub struct Background {
    kind: &'static str,
    tracker: TaskTracker,
    permits: Arc<tokio::sync::Semaphore>,
}

/// Counter of background tasks refused because `limit` were running, by `kind`.
pub const BACKGROUND_REFUSED: &str = "background_tasks_refused_total";

impl Background {
    /// Room for `limit` tasks of `kind` (the metric's label) at once.
    pub fn new(kind: &'static str, limit: usize) -> Self {
        metrics::describe_counter!(
            BACKGROUND_REFUSED,
            "Best-effort background tasks not started because the most allowed were running"
        );
        Self {
            kind,
            tracker: TaskTracker::new(),
            permits: Arc::new(tokio::sync::Semaphore::new(limit)),
        }
    }

    /// Starts `task` unless the limit is reached; says whether it started.
    pub fn spawn<F>(&self, task: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => {
                self.tracker.spawn(async move {
                    task.await;
                    drop(permit);
                });
                true
            }
            Err(_) => {
                metrics::counter!(BACKGROUND_REFUSED, "kind" => self.kind).increment(1);
                tracing::debug!(kind = self.kind, "too many background tasks; one refused");
                false
            }
        }
    }

    /// How many are running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Waits until every task started (before or while this waits) has finished.
    pub async fn drained(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can still be stopped by SIGKILL; never wake.
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn background_tasks_are_bounded_and_drained() {
        let background = Background::new("test", 2);
        let release = Arc::new(tokio::sync::Notify::new());
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started: Vec<bool> = (0..3)
            .map(|_| {
                let (release, done) = (Arc::clone(&release), Arc::clone(&done));
                background.spawn(async move {
                    release.notified().await;
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                })
            })
            .collect();
        assert_eq!(started, [true, true, false], "the third is over the limit");
        assert_eq!(background.running(), 2);

        let drained = tokio::spawn({
            let background = background.clone();
            async move { background.drained().await }
        });
        tokio::task::yield_now().await;
        assert!(!drained.is_finished(), "the drain waits for running tasks");
        release.notify_waiters();
        tokio::time::timeout(Duration::from_secs(5), drained)
            .await
            .expect("drained once the tasks finished")
            .expect("the drain does not panic");
        assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Room again once they finished.
        assert!(background.spawn(async {}));
    }

    #[tokio::test]
    async fn a_failing_task_starts_shutdown_and_is_reported() {
        let shutdown = Shutdown::new(Duration::from_secs(1));
        let token = shutdown.token();
        shutdown.spawn("waits", async move {
            token.cancelled().await;
            Ok(())
        });
        shutdown.spawn("fails", async { Err(anyhow::anyhow!("broken")) });
        let result = shutdown.wait().await;
        assert!(matches!(result, Err(Error::TaskFailed(ref m)) if m.contains("fails: broken")));
    }

    #[tokio::test]
    async fn a_task_that_ignores_shutdown_times_out_the_drain() {
        let shutdown = Shutdown::new(Duration::from_millis(50));
        shutdown.spawn("stubborn", async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        });
        shutdown.trigger();
        let result = shutdown.wait().await;
        assert!(matches!(result, Err(Error::DrainTimedOut(1, _))));
    }

    #[tokio::test]
    async fn tasks_that_finish_give_a_clean_drain() {
        let shutdown = Shutdown::new(Duration::from_secs(1));
        let token = shutdown.token();
        shutdown.spawn("polite", async move {
            token.cancelled().await;
            Ok(())
        });
        shutdown.trigger();
        assert!(shutdown.wait().await.is_ok());
    }
}
