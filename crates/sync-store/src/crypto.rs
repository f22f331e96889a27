//! Encryption at rest for Google credentials: ChaCha20-Poly1305 (AEAD) keyed by
//! `encryption_key`, with the user id as associated data so a ciphertext cannot
//! be moved to another user's row.

use crate::pool::DatabaseUrl;
use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::path::{Path, PathBuf};

const NONCE_LEN: usize = 12;

/// A 32-byte key; `Debug` prints `***`.
#[derive(Clone)]
pub struct EncryptionKey([u8; 32]);

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(***)")
    }
}

/// Why an `encryption_key` setting was refused (never echoes the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("encryption_key is not valid base64")]
    NotBase64,
    #[error("encryption_key must decode to exactly 32 bytes (got {0})")]
    WrongLength(usize),
}

impl EncryptionKey {
    /// Parses base64 of 32 bytes.
    pub fn from_base64(value: &str) -> Result<Self, KeyError> {
        let bytes = STANDARD
            .decode(value.trim())
            .map_err(|_| KeyError::NotBase64)?;
        let len = bytes.len();
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::WrongLength(len))?;
        Ok(Self(bytes))
    }

    /// A fresh key from the OS random source.
    pub fn generate() -> anyhow::Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("OS random source failed: {e}"))?;
        Ok(Self(bytes))
    }

    fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

/// The key file used on SQLite when no key is configured: `<database>.key`.
pub fn sqlite_key_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

/// The key to use: the configured one; on SQLite without one, the key file beside
/// the database (created on first start); on PostgreSQL without one, an error.
pub fn resolve_key(configured: Option<&str>, url: &DatabaseUrl) -> anyhow::Result<EncryptionKey> {
    if let Some(value) = configured {
        return Ok(EncryptionKey::from_base64(value)?);
    }
    match url {
        DatabaseUrl::Postgres(_) => bail!(
            "encryption_key is required with PostgreSQL (base64 of 32 bytes, e.g. `openssl rand -base64 32`)"
        ),
        DatabaseUrl::Sqlite(path) => load_or_create_key_file(&sqlite_key_path(path)),
    }
}

fn load_or_create_key_file(path: &Path) -> anyhow::Result<EncryptionKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => EncryptionKey::from_base64(&text)
            .with_context(|| format!("key file {} is malformed", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let key = EncryptionKey::generate()?;
            write_private(path, &key.to_base64())
                .with_context(|| format!("creating key file {}", path.display()))?;
            tracing::info!(path = %path.display(), "created a new credentials key file");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading key file {}", path.display())),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// Encrypts and decrypts credential fields.
#[derive(Clone)]
pub struct CredentialCipher {
    aead: ChaCha20Poly1305,
}

impl std::fmt::Debug for CredentialCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialCipher(***)")
    }
}

/// Decryption failed: wrong key, or a tampered or moved ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stored credentials cannot be decrypted with the configured encryption_key")]
pub struct DecryptError;

impl CredentialCipher {
    /// A cipher for a key.
    pub fn new(key: &EncryptionKey) -> Self {
        Self {
            aead: ChaCha20Poly1305::new(Key::from_slice(&key.0)),
        }
    }

    /// `nonce || ciphertext`, bound to `context` (the user id).
    pub fn encrypt(&self, plaintext: &str, context: &str) -> anyhow::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("OS random source failed: {e}"))?;
        let ciphertext = self
            .aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// The plaintext of [`Self::encrypt`]'s output.
    pub fn decrypt(&self, sealed: &[u8], context: &str) -> Result<String, DecryptError> {
        if sealed.len() < NONCE_LEN {
            return Err(DecryptError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let plaintext = self
            .aead
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| DecryptError)?;
        String::from_utf8(plaintext).map_err(|_| DecryptError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding_to_the_user() {
        let cipher = CredentialCipher::new(&EncryptionKey::generate().unwrap());
        let sealed = cipher.encrypt("1//refresh", "alice").unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"1//refres"));
        assert_eq!(cipher.decrypt(&sealed, "alice").unwrap(), "1//refresh");
        assert_eq!(cipher.decrypt(&sealed, "bob"), Err(DecryptError));
        let other = CredentialCipher::new(&EncryptionKey::generate().unwrap());
        assert_eq!(other.decrypt(&sealed, "alice"), Err(DecryptError));
        assert_eq!(cipher.decrypt(&[1, 2], "alice"), Err(DecryptError));
    }

    #[test]
    fn key_parsing_names_the_problem_without_the_value() {
        assert_eq!(
            EncryptionKey::from_base64("%%%").unwrap_err(),
            KeyError::NotBase64
        );
        assert_eq!(
            EncryptionKey::from_base64(&STANDARD.encode([0u8; 16])).unwrap_err(),
            KeyError::WrongLength(16)
        );
        assert!(EncryptionKey::from_base64(&STANDARD.encode([0u8; 32])).is_ok());
        assert_eq!(
            format!("{:?}", EncryptionKey([1; 32])),
            "EncryptionKey(***)"
        );
    }

    #[test]
    fn sqlite_key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("chronos.db"));
        let first = resolve_key(None, &url).unwrap();
        let second = resolve_key(None, &url).unwrap();
        assert_eq!(first.0, second.0);
        assert!(dir.path().join("chronos.db.key").exists());
    }

    #[test]
    fn postgres_without_a_key_is_refused() {
        let url = DatabaseUrl::Postgres("postgres://localhost/x".into());
        let err = resolve_key(None, &url).unwrap_err().to_string();
        assert!(err.contains("encryption_key"), "{err}");
    }
}
