//! Argon2id password hashing, off the async threads and bounded in concurrency.
//!
//! One hash costs 19 MiB and two passes over it (the OWASP minimum for argon2id). Hashes run on
//! a fixed set of threads of their own, one per permitted concurrent hash, which keeps the gRPC
//! server responsive and the memory bounded: a login burst waits for a permit instead of
//! queueing hundreds of 19 MiB buffers, and the allocator keeps at most one buffer's worth per
//! hashing thread. (On tokio's blocking pool the hashes ran on ever-changing threads, and the
//! allocator kept a buffer's worth in each of their arenas: 550 MiB after 1,000 registrations.)

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, mpsc},
    time::Instant,
};

use std::cell::RefCell;

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{self, Output, ParamsString, Salt, SaltString, rand_core::OsRng},
};
use tokio::sync::Semaphore;

use crate::{domain::Password, error::Error, metrics};

/// Memory cost in KiB (19 MiB).
const MEMORY_KIB: u32 = 19 * 1024;
/// Passes over the memory.
const PASSES: u32 = 2;

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// Work for the hashing threads; they end when the last clone of the hasher is dropped.
    jobs: mpsc::Sender<Job>,
    /// A real hash of a random password, verified against when the user does not exist, so an
    /// unknown username takes as long to refuse as a wrong password.
    decoy: Arc<String>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").finish_non_exhaustive()
    }
}

/// A hash or a verification, with where its answer goes.
type Job = Box<dyn FnOnce() + Send>;

fn argon2() -> Argon2<'static> {
    // The parameters are constants known to be valid.
    #[allow(clippy::unwrap_used)]
    let params = Params::new(MEMORY_KIB, PASSES, 1, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

impl Hasher {
    /// A hasher running at most `concurrency` hashes at once.
    pub fn new(concurrency: usize) -> Result<Self, Error> {
        let concurrency = concurrency.max(1);
        let decoy = hash_blocking(&uuid::Uuid::new_v4().to_string())?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..concurrency {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        let Ok(job) = job else { return };
                        job();
                    }
                })
                .map_err(|e| {
                    Error::Internal(anyhow::anyhow!("cannot start a hashing thread: {e}"))
                })?;
        }
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            jobs,
            decoy: Arc::new(decoy),
        })
    }

    /// The PHC string of a new salted hash of `password`.
    pub async fn hash(&self, password: &Password) -> Result<String, Error> {
        let password = String::from_utf8_lossy(password.as_bytes()).into_owned();
        self.run(move || hash_blocking(&password)).await
    }

    /// Whether `password` matches `stored`; with `None` (unknown user) checks against the decoy
    /// and answers `false`.
    pub async fn verify(&self, password: &str, stored: Option<String>) -> Result<bool, Error> {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.decoy.as_str().to_owned());
        let password = password.to_owned();
        let matches = self
            .run(move || {
                let parsed = PasswordHash::new(&stored)
                    .map_err(|e| Error::Internal(anyhow::anyhow!("stored hash unreadable: {e}")))?;
                verify_blocking(password.as_bytes(), &parsed)
                    .map_err(|e| Error::Internal(anyhow::anyhow!("stored hash unusable: {e}")))
            })
            .await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| Error::Internal(e.into()))?;
        let started = Instant::now();
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // A panic ends this job, not the thread.
            let result = std::panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
                Err(Error::Internal(anyhow::anyhow!(
                    "password hashing panicked"
                )))
            });
            let _ = answer.send(result);
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::Internal(anyhow::anyhow!("the hashing threads are gone")))?;
        let result = answered
            .await
            .map_err(|_| Error::Internal(anyhow::anyhow!("a hashing job was dropped")))?;
        ::metrics::histogram!(metrics::PASSWORD_HASH_SECONDS)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

thread_local! {
    /// The hashing thread's argon2 memory, allocated once and reused by every hash it computes.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// What `PasswordHasher::hash_password` computes, in this thread's reused memory.
fn hash_into<'a>(
    argon2: &Argon2<'_>,
    algorithm: Algorithm,
    version: Version,
    params: &Params,
    password: &[u8],
    salt: Salt<'a>,
) -> password_hash::Result<PasswordHash<'a>> {
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(output_len, |out| {
        MEMORY.with_borrow_mut(|memory| {
            memory.resize(params.block_count(), Block::default());
            argon2
                .hash_password_into_with_memory(password, salt_bytes, out, &mut memory[..])
                .map_err(Into::into)
        })
    })?;
    Ok(PasswordHash {
        algorithm: algorithm.ident(),
        version: Some(version.into()),
        params: ParamsString::try_from(params)?,
        salt: Some(salt),
        hash: Some(output),
    })
}

fn hash_blocking(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    let argon2 = argon2();
    hash_into(
        &argon2,
        Algorithm::Argon2id,
        Version::V0x13,
        argon2.params(),
        password.as_bytes(),
        salt.as_salt(),
    )
    .map(|h| h.to_string())
    .map_err(|e| Error::Internal(anyhow::anyhow!("hashing failed: {e}")))
}

/// Whether `password` matches `stored`, with the algorithm, version and parameters `stored`
/// names (so hashes made with older parameters still verify).
fn verify_blocking(password: &[u8], stored: &PasswordHash<'_>) -> password_hash::Result<bool> {
    let algorithm = Algorithm::try_from(stored.algorithm)?;
    let version = stored
        .version
        .map(Version::try_from)
        .transpose()?
        .unwrap_or_default();
    let params = Params::try_from(stored)?;
    let (Some(salt), Some(expected)) = (stored.salt, stored.hash) else {
        return Err(password_hash::Error::PhcStringField);
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let computed = hash_into(&argon2, algorithm, version, &params, password, salt)?;
    // `Output` compares in constant time.
    Ok(computed.hash == Some(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hasher = Hasher::new(2).expect("hasher");
        let password = Password::parse("correct horse").expect("valid");
        let stored = hasher.hash(&password).await.expect("hash");
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            hasher
                .verify("correct horse", Some(stored.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("wrong horse", Some(stored))
                .await
                .expect("verify")
        );
        assert!(!hasher.verify("correct horse", None).await.expect("verify"));
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_hasher_and_verifier() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        // Ours verifies by the crate, and the crate's verifies by ours (stored hashes of
        // earlier versions were made by the crate).
        let ours = hash_blocking("correct horse").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("PHC string");
        assert!(argon2().verify_password(b"correct horse", &parsed).is_ok());
        assert!(argon2().verify_password(b"wrong horse", &parsed).is_err());

        let salt = SaltString::generate(&mut OsRng);
        let theirs = argon2()
            .hash_password(b"correct horse", &salt)
            .expect("hash")
            .to_string();
        let parsed = PasswordHash::new(&theirs).expect("PHC string");
        assert!(verify_blocking(b"correct horse", &parsed).expect("verify"));
        assert!(!verify_blocking(b"wrong horse", &parsed).expect("verify"));

        // Other parameters verify with the parameters the hash names.
        let light = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).expect("params"),
        );
        let older = light
            .hash_password(b"correct horse", &salt)
            .expect("hash")
            .to_string();
        let parsed = PasswordHash::new(&older).expect("PHC string");
        assert!(verify_blocking(b"correct horse", &parsed).expect("verify"));
        assert!(!verify_blocking(b"wrong horse", &parsed).expect("verify"));
    }
}
