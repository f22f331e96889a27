//! Key rotation and the startup key check (issue 14 item 8, issue 15 item 1).
//!
//! `google_credentials.key_id` records which key sealed each refresh token
//! (NULL: sealed before key ids). [`Store::check_keys`] opens one row per key
//! id, so a process whose keys cannot read what is stored stops before
//! serving; [`Store::rotate_keys`] re-seals everything under `encryption_key`.

use crate::crypto::{CredentialCipher, EncryptionKey, Field};
use crate::pool::{query_error, with_conn};
use crate::schema::google_credentials as gc;
use crate::store::Store;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use sync_domain::ports::StoreError;

/// What [`Store::rotate_keys`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Credentials re-sealed under `encryption_key`.
    pub rotated: usize,
    /// Credentials already sealed under it.
    pub current: usize,
}

/// The stored credentials cannot be read with the configured keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyCheckError {
    #[error(
        "encryption_key cannot decrypt the credentials stored in this database (written under key id {0}); set encryption_key to that key, or list it in retired_encryption_keys"
    )]
    UnknownKey(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type SealedRow = (String, Vec<u8>, Option<Vec<u8>>);

impl Store {
    /// The same store also reading credentials sealed under `retired` keys.
    pub fn with_retired_keys(mut self, retired: &[EncryptionKey]) -> Self {
        self.cipher = self.cipher.reading_also(retired);
        self
    }

    /// Checks that one credential row per recorded key id (and one sealed
    /// before key ids, if any) opens with the configured keys.
    pub async fn check_keys(&self) -> Result<(), KeyCheckError> {
        let ids: Vec<Option<String>> = with_conn!(&self.pool, |conn| {
            gc::table
                .select(gc::key_id)
                .distinct()
                .load(conn)
                .await
                .map_err(query_error)?
        });
        for id in ids {
            let row: Option<(String, Vec<u8>)> = with_conn!(&self.pool, |conn| {
                let query = gc::table
                    .select((gc::user_id, gc::refresh_token_ciphertext))
                    .into_boxed();
                let query = match &id {
                    Some(id) => query.filter(gc::key_id.eq(id.clone())),
                    None => query.filter(gc::key_id.is_null()),
                };
                query.first(conn).await.optional().map_err(query_error)?
            });
            let Some((user, sealed)) = row else { continue };
            if self
                .cipher
                .open(&sealed, Field::RefreshToken, &user)
                .is_err()
            {
                let named = CredentialCipher::key_id_of(&sealed)
                    .map(|k| k.to_string())
                    .or(id)
                    .unwrap_or_else(|| "(none: written before key ids)".to_owned());
                return Err(KeyCheckError::UnknownKey(named));
            }
        }
        Ok(())
    }

    /// Re-seals every stored credential under `encryption_key`; a row whose
    /// refresh token changed meanwhile is left as its writer sealed it (under
    /// `encryption_key` too).
    pub async fn rotate_keys(&self) -> Result<RotationReport, KeyCheckError> {
        let rows: Vec<SealedRow> = with_conn!(&self.pool, |conn| {
            gc::table
                .select((
                    gc::user_id,
                    gc::refresh_token_ciphertext,
                    gc::access_token_ciphertext,
                ))
                .load(conn)
                .await
                .map_err(query_error)?
        });
        let current = self.cipher.current_key_id();
        let current_text = current.to_string();
        let mut report = RotationReport::default();
        for (user, refresh, access) in rows {
            let is_current = |sealed: &[u8]| CredentialCipher::key_id_of(sealed) == Some(current);
            if is_current(&refresh) && access.as_deref().is_none_or(is_current) {
                report.current += 1;
                continue;
            }
            let unknown = || {
                KeyCheckError::UnknownKey(CredentialCipher::key_id_of(&refresh).map_or_else(
                    || "(none: written before key ids)".to_owned(),
                    |k| k.to_string(),
                ))
            };
            let plain = self
                .cipher
                .decrypt(&refresh, Field::RefreshToken, &user)
                .map_err(|_| unknown())?;
            let resealed = self
                .cipher
                .seal(&plain, Field::RefreshToken, &user)
                .map_err(|e| StoreError::Query(e.into()))?;
            // A cached access token that cannot be read is dropped, as when reading.
            let access = match access {
                Some(sealed) => match self.cipher.decrypt(&sealed, Field::AccessToken, &user) {
                    Ok(token) => Some(
                        self.cipher
                            .seal(&token, Field::AccessToken, &user)
                            .map_err(|e| StoreError::Query(e.into()))?,
                    ),
                    Err(_) => None,
                },
                None => None,
            };
            let updated = with_conn!(&self.pool, |conn| {
                let target = gc::table
                    .find(&user)
                    .filter(gc::refresh_token_ciphertext.eq(&refresh));
                let updated = diesel::update(target)
                    .set((
                        gc::refresh_token_ciphertext.eq(&resealed),
                        gc::access_token_ciphertext.eq(&access),
                        gc::key_id.eq(Some(&current_text)),
                    ))
                    .execute(conn)
                    .await
                    .map_err(query_error)?;
                if access.is_none() {
                    diesel::update(
                        gc::table
                            .find(&user)
                            .filter(gc::access_token_ciphertext.is_null()),
                    )
                    .set(gc::access_token_expires_at.eq(None::<time::PrimitiveDateTime>))
                    .execute(conn)
                    .await
                    .map_err(query_error)?;
                }
                updated
            });
            if updated == 1 {
                report.rotated += 1;
            } else {
                report.current += 1;
            }
        }
        Ok(report)
    }
}
