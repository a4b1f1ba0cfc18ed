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
