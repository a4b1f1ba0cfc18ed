//! Argon2id password hashing, off the async threads and bounded in concurrency.
//!
//! One hash costs 19 MiB and two passes over it (the OWASP minimum for argon2id). Running it on
//! the blocking pool keeps the gRPC server responsive, and the semaphore keeps a login burst from
//! queueing hundreds of 19 MiB buffers at once: excess logins wait for a permit instead.

use std::{sync::Arc, time::Instant};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{SaltString, rand_core::OsRng},
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
    /// A real hash of a random password, verified against when the user does not exist, so an
    /// unknown username takes as long to refuse as a wrong password.
    decoy: Arc<String>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").finish_non_exhaustive()
    }
}

fn argon2() -> Argon2<'static> {
    // The parameters are constants known to be valid.
    #[allow(clippy::unwrap_used)]
    let params = Params::new(MEMORY_KIB, PASSES, 1, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

impl Hasher {
    /// A hasher running at most `concurrency` hashes at once.
    pub fn new(concurrency: usize) -> Result<Self, Error> {
        let decoy = hash_blocking(&uuid::Uuid::new_v4().to_string())?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
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
                Ok(argon2()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok())
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
        let result = tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::Internal(e.into()))?;
        ::metrics::histogram!(metrics::PASSWORD_HASH_SECONDS)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

fn hash_blocking(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(anyhow::anyhow!("hashing failed: {e}")))
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
}
