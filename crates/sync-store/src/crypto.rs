//! Encryption at rest for Google credentials: ChaCha20-Poly1305 (AEAD) keyed by
//! `encryption_key`, with the field and the user id as associated data so a
//! ciphertext cannot be moved to another user's row nor to the other field.
//!
//! A sealed value is `MAGIC || key id (8) || nonce (12) || ciphertext`: the key
//! id says which key wrote it, so keys can be rotated (`encryption_key` writes,
//! it and `retired_encryption_keys` read; `chronos-server keys rotate`
//! re-encrypts under `encryption_key`). Values written before key ids
//! (`nonce || ciphertext`, the user id alone as associated data) still decrypt
//! under any known key, and `keys rotate` rewrites them.

use crate::pool::DatabaseUrl;
use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::path::{Path, PathBuf};

const NONCE_LEN: usize = 12;
/// Marks a sealed value of the keyed format.
const MAGIC: &[u8; 4] = b"CK1\0";
const KEY_ID_LEN: usize = 8;

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
    #[error("retired_encryption_keys holds a key that is not valid base64")]
    RetiredNotBase64,
    #[error("retired_encryption_keys holds a key that does not decode to 32 bytes (got {0})")]
    RetiredWrongLength(usize),
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

    /// The key's id: the first 8 bytes of SHA-256 over a label and the key;
    /// names the key without revealing it.
    pub fn id(&self) -> KeyId {
        use sha2::Digest as _;
        let digest = sha2::Sha256::new()
            .chain_update(b"chronos credentials key id\0")
            .chain_update(self.0)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        KeyId(id)
    }
}

/// Which key sealed a value (hex in the database and in messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Which credential field a value is: bound into the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    RefreshToken,
    AccessToken,
}

impl Field {
    fn label(self) -> &'static [u8] {
        match self {
            Self::RefreshToken => b"refresh_token",
            Self::AccessToken => b"access_token",
        }
    }
}

/// Parses `retired_encryption_keys`: comma-separated base64 keys (blanks ignored).
pub fn parse_retired_keys(value: &str) -> Result<Vec<EncryptionKey>, KeyError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| {
            EncryptionKey::from_base64(k).map_err(|e| match e {
                KeyError::NotBase64 => KeyError::RetiredNotBase64,
                KeyError::WrongLength(n) | KeyError::RetiredWrongLength(n) => {
                    KeyError::RetiredWrongLength(n)
                }
                KeyError::RetiredNotBase64 => KeyError::RetiredNotBase64,
            })
        })
        .collect()
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
        Ok(text) => {
            refuse_shared_key_file(path)?;
            EncryptionKey::from_base64(&text)
                .with_context(|| format!("key file {} is malformed", path.display()))
        }
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

/// A key file others can read is a leaked key: refuse it, saying how to fix it.
#[cfg(unix)]
fn refuse_shared_key_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading the permissions of key file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "key file {} (the encryption_key) is readable by group or others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_shared_key_file(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// Creates an empty SQLite database file readable by its owner only (SQLite
/// gives its `-wal` and `-shm` files the same mode); an existing file is left alone.
#[cfg(unix)]
pub fn create_private_database_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
pub fn create_private_database_file(_path: &Path) -> std::io::Result<()> {
    Ok(())
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

/// Encrypts credential fields under `encryption_key` and decrypts them under
/// it or any retired key.
#[derive(Clone)]
pub struct CredentialCipher {
    /// `encryption_key` first, then the retired keys.
    keys: Vec<(KeyId, ChaCha20Poly1305)>,
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

fn aead(key: &EncryptionKey) -> (KeyId, ChaCha20Poly1305) {
    (key.id(), ChaCha20Poly1305::new(Key::from_slice(&key.0)))
}

fn associated_data(field: Field, user: &str) -> Vec<u8> {
    let mut aad = field.label().to_vec();
    aad.push(0);
    aad.extend_from_slice(user.as_bytes());
    aad
}

impl CredentialCipher {
    /// A cipher writing and reading under `key` only.
    pub fn new(key: &EncryptionKey) -> Self {
        Self::with_retired(key, &[])
    }

    /// A cipher writing under `key` and reading under it and `retired`.
    pub fn with_retired(key: &EncryptionKey, retired: &[EncryptionKey]) -> Self {
        Self {
            keys: vec![aead(key)],
        }
        .reading_also(retired)
    }

    /// The same cipher also reading values sealed under `retired`.
    pub fn reading_also(mut self, retired: &[EncryptionKey]) -> Self {
        for old in retired {
            if !self.knows(old.id()) {
                self.keys.push(aead(old));
            }
        }
        self
    }

    /// The id of the key new values are written under (`encryption_key`).
    pub fn current_key_id(&self) -> KeyId {
        self.keys[0].0
    }

    /// Whether `id` is one of the keys this cipher reads.
    pub fn knows(&self, id: KeyId) -> bool {
        self.keys.iter().any(|(known, _)| *known == id)
    }

    /// `MAGIC || key id || nonce || ciphertext` of `plaintext` under the
    /// current key, bound to the field and the user.
    pub fn seal(&self, plaintext: &str, field: Field, user: &str) -> anyhow::Result<Vec<u8>> {
        let (id, aead) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("OS random source failed: {e}"))?;
        let ciphertext = aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &associated_data(field, user),
                },
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        let mut out = Vec::with_capacity(MAGIC.len() + KEY_ID_LEN + NONCE_LEN + ciphertext.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// The key id a sealed value names (`None`: the format without key ids).
    pub fn key_id_of(sealed: &[u8]) -> Option<KeyId> {
        let rest = sealed.strip_prefix(MAGIC)?;
        let id: [u8; KEY_ID_LEN] = rest.get(..KEY_ID_LEN)?.try_into().ok()?;
        Some(KeyId(id))
    }

    /// The plaintext of a sealed value, under whichever known key wrote it;
    /// also the id of that key.
    pub fn open(
        &self,
        sealed: &[u8],
        field: Field,
        user: &str,
    ) -> Result<(String, KeyId), DecryptError> {
        if let Some(id) = Self::key_id_of(sealed) {
            let body = &sealed[MAGIC.len() + KEY_ID_LEN..];
            if let Some((_, aead)) = self.keys.iter().find(|(known, _)| *known == id)
                && let Ok(plain) = open_with(aead, body, &associated_data(field, user))
            {
                return Ok((plain, id));
            }
        }
        // The format without key ids (or a legacy nonce that happens to start
        // with the magic): any known key, the user id alone as associated data.
        self.keys
            .iter()
            .find_map(|(id, aead)| {
                open_with(aead, sealed, user.as_bytes())
                    .ok()
                    .map(|p| (p, *id))
            })
            .ok_or(DecryptError)
    }

    /// The plaintext of a sealed value ([`Self::open`] without the key id).
    pub fn decrypt(&self, sealed: &[u8], field: Field, user: &str) -> Result<String, DecryptError> {
        self.open(sealed, field, user).map(|(plain, _)| plain)
    }

    /// `nonce || ciphertext` bound to the user only: the format before key ids.
    #[cfg(test)]
    fn seal_legacy(&self, plaintext: &str, user: &str) -> Vec<u8> {
        let nonce = [7u8; NONCE_LEN];
        let mut out = nonce.to_vec();
        out.extend(
            self.keys[0]
                .1
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: plaintext.as_bytes(),
                        aad: user.as_bytes(),
                    },
                )
                .unwrap(),
        );
        out
    }
}

fn open_with(aead: &ChaCha20Poly1305, body: &[u8], aad: &[u8]) -> Result<String, DecryptError> {
    if body.len() < NONCE_LEN {
        return Err(DecryptError);
    }
    let (nonce, ciphertext) = body.split_at(NONCE_LEN);
    let plaintext = aead
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| DecryptError)?;
    String::from_utf8(plaintext).map_err(|_| DecryptError)
}

#[cfg(test)]
mod tests {
    use super::*;

    use Field::{AccessToken, RefreshToken};

    #[test]
    fn round_trip_and_binding_to_the_user() {
        let cipher = CredentialCipher::new(&EncryptionKey::generate().unwrap());
        let sealed = cipher.seal("1//refresh", RefreshToken, "alice").unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"1//refres"));
        assert_eq!(
            cipher.decrypt(&sealed, RefreshToken, "alice").unwrap(),
            "1//refresh"
        );
        assert_eq!(
            cipher.decrypt(&sealed, RefreshToken, "bob"),
            Err(DecryptError)
        );
        let other = CredentialCipher::new(&EncryptionKey::generate().unwrap());
        assert_eq!(
            other.decrypt(&sealed, RefreshToken, "alice"),
            Err(DecryptError)
        );
        assert_eq!(
            cipher.decrypt(&[1, 2], RefreshToken, "alice"),
            Err(DecryptError)
        );
    }

    #[test]
    fn a_refresh_token_ciphertext_does_not_decrypt_as_an_access_token() {
        let cipher = CredentialCipher::new(&EncryptionKey::generate().unwrap());
        let sealed = cipher.seal("1//refresh", RefreshToken, "alice").unwrap();
        assert_eq!(
            cipher.decrypt(&sealed, AccessToken, "alice"),
            Err(DecryptError)
        );
    }

    #[test]
    fn every_ciphertext_names_its_key_and_retired_keys_still_decrypt() {
        let old = EncryptionKey::generate().unwrap();
        let new = EncryptionKey::generate().unwrap();
        let sealed = CredentialCipher::new(&old)
            .seal("1//r", RefreshToken, "u")
            .unwrap();
        assert_eq!(CredentialCipher::key_id_of(&sealed), Some(old.id()));
        assert_eq!(
            CredentialCipher::new(&new).decrypt(&sealed, RefreshToken, "u"),
            Err(DecryptError)
        );
        let rotated = CredentialCipher::with_retired(&new, std::slice::from_ref(&old));
        assert_eq!(
            rotated.open(&sealed, RefreshToken, "u").unwrap(),
            ("1//r".to_owned(), old.id())
        );
        assert_eq!(rotated.current_key_id(), new.id());
        assert_ne!(old.id(), new.id());
    }

    #[test]
    fn ciphertexts_of_the_format_without_key_ids_still_decrypt() {
        let key = EncryptionKey::generate().unwrap();
        let cipher = CredentialCipher::new(&key);
        let legacy = cipher.seal_legacy("1//legacy", "alice");
        assert_eq!(CredentialCipher::key_id_of(&legacy), None);
        assert_eq!(
            cipher.open(&legacy, RefreshToken, "alice").unwrap(),
            ("1//legacy".to_owned(), key.id())
        );
        assert_eq!(
            cipher.decrypt(&legacy, RefreshToken, "bob"),
            Err(DecryptError)
        );
    }

    #[test]
    fn retired_keys_parse_as_comma_separated_base64() {
        let a = STANDARD.encode([1u8; 32]);
        let b = STANDARD.encode([2u8; 32]);
        assert_eq!(
            parse_retired_keys(&format!(" {a}, {b} ,")).unwrap().len(),
            2
        );
        assert_eq!(parse_retired_keys("").unwrap().len(), 0);
        assert_eq!(
            parse_retired_keys(&format!("{a},%%")).unwrap_err(),
            KeyError::RetiredNotBase64
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("chronos.db"));
        resolve_key(None, &url).unwrap();
        let key_file = dir.path().join("chronos.db.key");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = resolve_key(None, &url).unwrap_err().to_string();
        assert!(err.contains("readable by group or others"), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn migrating_a_new_sqlite_database_creates_it_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chronos.db");
        crate::migrations::run_pending(&DatabaseUrl::Sqlite(path.clone()))
            .await
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
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
