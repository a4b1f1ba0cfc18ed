//! Signing keys sealed at rest, so that a copy of the database (a dump, a backup, a replica)
//! cannot mint tokens.
//!
//! Each private key is sealed with ChaCha20-Poly1305 under a key-encryption key (KEK) given in
//! the environment or a file, never stored in the database. The row keeps which KEK sealed it
//! (a short fingerprint) and the sealed bytes are bound to the key's `kid`, so a sealed key
//! copied onto another row does not open. To rotate the KEK: give the new one as
//! `REALCHAT_AUTH_KEY_ENCRYPTION_KEY` and the old one in `REALCHAT_AUTH_OLD_KEY_ENCRYPTION_KEYS`,
//! restart the replicas (each seals what it can open under the new KEK as it starts) or run
//! `auth seal-keys` once; when every replica has the new KEK, drop the old one.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use rand::RngCore;
use realchat_runtime::config::Secret;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// One key-encryption key and its fingerprint.
struct Kek {
    id: String,
    key: LessSafeKey,
}

impl Kek {
    /// A KEK from its text: 32 bytes in base64 (standard or URL-safe, padded or not).
    fn parse(variable: &str, text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|_| {
                anyhow::anyhow!("{variable}: not base64 (make one with `openssl rand -base64 32`)")
            })?;
        if bytes.len() != 32 {
            anyhow::bail!(
                "{variable}: a key-encryption key is 32 bytes, this one is {}",
                bytes.len()
            );
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| anyhow::anyhow!("{variable}: not a ChaCha20-Poly1305 key"))?;
        // A fingerprint names the KEK in the database; it says nothing about the key itself.
        let digest = Sha256::digest([b"realchat-kek:".as_slice(), &bytes].concat());
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            id,
            key: LessSafeKey::new(key),
        })
    }
}

/// The KEKs auth was given: the one that seals, and older ones that still open.
#[derive(Default)]
pub struct KeyEncryption {
    current: Option<Kek>,
    old: Vec<Kek>,
}

impl std::fmt::Debug for KeyEncryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEncryption")
            .field("current", &self.current.as_ref().map(|k| &k.id))
            .field("old", &self.old.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

/// A private key as the database keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Unsealed (no KEK was given when it was written).
    Clear(Vec<u8>),
    /// Nonce and ciphertext with its tag, and the fingerprint of the KEK that sealed it.
    Sealed { bytes: Vec<u8>, kek_id: String },
}

impl KeyEncryption {
    /// No KEK: keys are stored in clear.
    pub fn none() -> Self {
        Self::default()
    }

    /// From the settings: the current KEK, and older ones separated by commas.
    pub fn from_settings(
        current: Option<&Secret<String>>,
        old: Option<&Secret<String>>,
    ) -> anyhow::Result<Self> {
        let current = current
            .map(|text| Kek::parse("REALCHAT_AUTH_KEY_ENCRYPTION_KEY", text.expose()))
            .transpose()?;
        let old = old
            .map(|text| {
                text.expose()
                    .split(',')
                    .filter(|part| !part.trim().is_empty())
                    .map(|part| Kek::parse("REALCHAT_AUTH_OLD_KEY_ENCRYPTION_KEYS", part))
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(Self { current, old })
    }

    /// The fingerprints of every KEK given, the current one first.
    pub fn known_ids(&self) -> Vec<String> {
        self.current
            .iter()
            .chain(&self.old)
            .map(|k| k.id.clone())
            .collect()
    }

    /// The fingerprint of the KEK that seals, if there is one.
    pub fn current_id(&self) -> Option<&str> {
        self.current.as_ref().map(|k| k.id.as_str())
    }

    /// Seals `private_der` of key `kid` under the current KEK (in clear without one).
    pub fn seal(&self, kid: &str, private_der: &[u8]) -> Result<Stored, Error> {
        let Some(kek) = &self.current else {
            return Ok(Stored::Clear(private_der.to_vec()));
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut sealed = private_der.to_vec();
        kek.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| Error::Internal(anyhow::anyhow!("sealing signing key {kid}")))?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(Stored::Sealed {
            bytes,
            kek_id: kek.id.clone(),
        })
    }

    /// The private key of `kid` as stored; an error names the KEK it needs when that one was not
    /// given, or says the sealed bytes do not open (altered, or moved from another key).
    pub fn open(&self, kid: &str, stored: &Stored) -> Result<Vec<u8>, Error> {
        let (bytes, kek_id) = match stored {
            Stored::Clear(der) => return Ok(der.clone()),
            Stored::Sealed { bytes, kek_id } => (bytes, kek_id),
        };
        let kek = self
            .current
            .iter()
            .chain(&self.old)
            .find(|k| &k.id == kek_id)
            .ok_or_else(|| {
                Error::Internal(anyhow::anyhow!(
                    "signing key {kid} is sealed with key-encryption key {kek_id}, which was not \
                     given (REALCHAT_AUTH_KEY_ENCRYPTION_KEY or REALCHAT_AUTH_OLD_KEY_ENCRYPTION_KEYS)"
                ))
            })?;
        if bytes.len() < NONCE_LEN {
            return Err(Error::Internal(anyhow::anyhow!(
                "signing key {kid}: the sealed bytes are cut short"
            )));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| Error::Internal(anyhow::anyhow!("signing key {kid}: bad nonce")))?;
        let mut in_out = sealed.to_vec();
        let opened = kek
            .key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut in_out)
            .map_err(|_| {
                Error::Internal(anyhow::anyhow!(
                    "signing key {kid} does not open under key-encryption key {kek_id}: altered, \
                     or copied from another key"
                ))
            })?;
        Ok(opened.to_vec())
    }

    /// Whether `stored` should be sealed again: a KEK is given and it is not the one that
    /// sealed it.
    pub fn needs_sealing(&self, stored: &Stored) -> bool {
        match (self.current_id(), stored) {
            (None, _) => false,
            (Some(_), Stored::Clear(_)) => true,
            (Some(current), Stored::Sealed { kek_id, .. }) => kek_id != current,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> Secret<String> {
        Secret::new(STANDARD.encode([byte; 32]))
    }

    #[test]
    fn a_sealed_key_opens_only_under_its_kek_and_for_its_kid() {
        let sealing = KeyEncryption::from_settings(Some(&kek(1)), None).unwrap();
        let stored = sealing.seal("kid-a", b"private key bytes").unwrap();
        let Stored::Sealed { bytes, .. } = &stored else {
            panic!("a KEK was given: {stored:?}");
        };
        assert!(
            !bytes.windows(7).any(|w| w == b"private"),
            "sealed in clear"
        );
        assert_eq!(
            sealing.open("kid-a", &stored).unwrap(),
            b"private key bytes"
        );
        // Moved onto another key's row, it does not open.
        assert!(sealing.open("kid-b", &stored).is_err());
        // Another KEK cannot open it, and says which one it needs.
        let other = KeyEncryption::from_settings(Some(&kek(2)), None).unwrap();
        let error = other.open("kid-a", &stored).unwrap_err().to_string();
        assert!(error.contains(sealing.current_id().unwrap()), "{error}");
        // One altered byte and it does not open.
        let Stored::Sealed { mut bytes, kek_id } = stored else {
            unreachable!()
        };
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(
            sealing
                .open("kid-a", &Stored::Sealed { bytes, kek_id })
                .is_err()
        );
    }

    #[test]
    fn after_a_rotation_old_keys_open_and_are_due_for_sealing_again() {
        let before = KeyEncryption::from_settings(Some(&kek(1)), None).unwrap();
        let stored = before.seal("kid-a", b"der").unwrap();
        let after = KeyEncryption::from_settings(Some(&kek(2)), Some(&kek(1))).unwrap();
        assert_eq!(after.open("kid-a", &stored).unwrap(), b"der");
        assert!(after.needs_sealing(&stored));
        assert!(!before.needs_sealing(&stored));
        let resealed = after.seal("kid-a", b"der").unwrap();
        assert!(!after.needs_sealing(&resealed));
        // Keys stored in clear are sealed once a KEK is given; without one nothing changes.
        assert!(after.needs_sealing(&Stored::Clear(b"der".to_vec())));
        assert!(!KeyEncryption::none().needs_sealing(&Stored::Clear(b"der".to_vec())));
    }

    #[test]
    fn a_kek_that_is_not_32_bytes_of_base64_is_refused_with_its_variable() {
        for bad in ["not base64!", "c2hvcnQ="] {
            let error = KeyEncryption::from_settings(Some(&Secret::new(bad.to_owned())), None)
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with("REALCHAT_AUTH_KEY_ENCRYPTION_KEY:"),
                "{error}"
            );
        }
    }
}
