//! Group commit: sends that arrive together share one transaction.
//!
//! On PostgreSQL a send costs more in its commit (a WAL flush, and the `NOTIFY` queue, which is
//! serialised at commit) than in its statements, so one transaction per message caps the rate at
//! what the database commits per second. [`Sends`] hands each send to a few writer tasks; a writer
//! that is free takes everything queued (up to [`MAX_BATCH`]) and stores it with
//! [`store::send_all`]. Nobody waits for a batch to fill: under light load each send is a batch of
//! one, as before, and batches grow only when sends arrive faster than transactions commit.
//!
//! An answer still means durable: each send is answered after the commit of its batch. A batch that
//! fails as a whole (a deadlock with another transaction, a constraint one send broke) is retried
//! one send at a time, so one send's failure stays its own; if the database cannot be reached,
//! every send of the batch is answered `unavailable` at once.

use std::sync::Arc;

use realchat_runtime::telemetry::propagation;
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument as _;

use crate::{
    error::Error,
    metrics,
    store::{self, NewMessage, Sent},
};

/// Most sends in one transaction.
pub const MAX_BATCH: usize = 64;

/// Sends waiting for a writer, at most; past it a send waits to be queued.
const QUEUE: usize = 4 * MAX_BATCH;

struct Job {
    message: NewMessage,
    reply: oneshot::Sender<Sent>,
}

/// The queue in front of the send writers. Cloning it is cheap; the writers stop once every clone
/// is dropped and the queue is empty.
#[derive(Debug, Clone)]
pub struct Sends {
    queue: mpsc::Sender<Job>,
}

impl Sends {
    /// The queue, and the `writers` tasks (at least one) that drain it into `pool`. Run each
    /// writer to completion: it returns once the queue is closed and empty.
    pub fn new(
        pool: PgPool,
        writers: usize,
    ) -> (
        Self,
        Vec<impl Future<Output = anyhow::Result<()>> + Send + 'static>,
    ) {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        let writers = (0..writers.max(1))
            .map(|_| write(pool.clone(), Arc::clone(&jobs)))
            .collect();
        (Self { queue }, writers)
    }

    /// Stores `message`, answering once it is committed.
    pub async fn send(&self, message: NewMessage) -> Sent {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { message, reply })
            .await
            .map_err(|_| anyhow::anyhow!("the send writers have stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("a send writer stopped before answering"))?
    }
}

/// One writer: takes what is queued, commits it as one batch, answers, repeats.
async fn write(pool: PgPool, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Holding the lock while waiting is what lets the other writers keep working: only an idle
        // writer waits here, and it takes the whole queue when it wakes.
        if jobs.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return Ok(());
        }
        ::metrics::histogram!(metrics::SEND_BATCH).record(batch.len() as f64);
        let (messages, replies): (Vec<NewMessage>, Vec<oneshot::Sender<Sent>>) =
            batch.drain(..).map(|job| (job.message, job.reply)).unzip();
        // The transaction belongs to every send's trace: a child of the first's, linked to the
        // others' (a lone send, the usual case under light load, is simply its child).
        let span = tracing::info_span!(
            parent: None,
            "send_batch",
            messaging.batch.message_count = messages.len(),
        );
        propagation::adopt_batch(&span, messages.iter().map(|m| m.traceparent.as_str()));
        commit(&pool, messages, replies).instrument(span).await;
    }
}

/// Stores one batch and answers each of its sends.
async fn commit(pool: &PgPool, messages: Vec<NewMessage>, replies: Vec<oneshot::Sender<Sent>>) {
    match store::send_all(pool, &messages).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // The caller may have gone (a cancelled request); the message stays stored and
                // a retry of its client_msg_id finds it.
                let _ = reply.send(outcome);
            }
        }
        Err(Error::Unavailable(cause)) => {
            // The database cannot be reached: every send of the batch fails now, as one send
            // alone would, instead of each waiting its turn for a connection that will not
            // come. The clients retry with the same client_msg_id.
            tracing::debug!(error = %cause, sends = messages.len(), "a batch of sends could not reach the database");
            let cause = cause.to_string();
            for reply in replies {
                let _ = reply.send(Err(Error::Unavailable(sqlx::Error::Io(
                    std::io::Error::other(cause.clone()),
                ))));
            }
        }
        Err(error) if messages.len() == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(error));
            }
        }
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                sends = messages.len(),
                "a batch of sends failed; retrying them one at a time"
            );
            for (message, reply) in messages.into_iter().zip(replies) {
                let _ = reply.send(store::send(pool, message).await);
            }
        }
    }
}
