//! Google credentials, encrypted at rest ([`crate::crypto`]).

use crate::calendars::sync_state::{GONE, NEEDS_REAUTH, PENDING};
use crate::crypto::Field;
use crate::pool::{query_error, with_conn};
use crate::schema::{calendar_sync_state as cs, google_credentials as gc};
use crate::store::Store;
use crate::timestamps::{from_db, to_db};
use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use sync_domain::ports::{
    CachedAccessToken, CredentialStore, CredentialsVersion, StoreError, StoredCredentials,
};
use sync_domain::{AccessToken, RefreshToken, UserId};
use time::PrimitiveDateTime;

type CredentialRow = (Vec<u8>, Option<Vec<u8>>, Option<PrimitiveDateTime>, bool);

fn seal_error(e: anyhow::Error) -> StoreError {
    StoreError::Query(e.into())
}

#[async_trait]
impl CredentialStore for Store {
    async fn credentials(&self, user_id: &UserId) -> Result<Option<StoredCredentials>, StoreError> {
        let row: Option<CredentialRow> = with_conn!(&self.pool, |conn| {
            gc::table
                .find(user_id.as_str())
                .select((
                    gc::refresh_token_ciphertext,
                    gc::access_token_ciphertext,
                    gc::access_token_expires_at,
                    gc::needs_reauth,
                ))
                .first::<CredentialRow>(conn)
                .await
                .optional()
                .map_err(query_error)?
        });
        let Some((refresh, access, expires, needs_reauth)) = row else {
            return Ok(None);
        };
        let context = user_id.as_str();
        let refresh_token = self
            .cipher
            .decrypt(&refresh, Field::RefreshToken, context)
            .map_err(|e| StoreError::Query(Box::new(e)))?;
        // A cached access token that cannot be read is simply not cached.
        let access_token = match (access, expires) {
            (Some(sealed), Some(expires_at)) => self
                .cipher
                .decrypt(&sealed, Field::AccessToken, context)
                .ok()
                .map(|token| CachedAccessToken {
                    token: AccessToken::new(token),
                    expires_at: from_db(expires_at),
                }),
            _ => None,
        };
        Ok(Some(StoredCredentials {
            refresh_token: RefreshToken::new(refresh_token),
            access_token,
            needs_reauth,
            // A fresh nonce per write: the sealed token changes with every replacement.
            version: CredentialsVersion::new(refresh),
        }))
    }

    async fn put_refresh_token(
        &self,
        user_id: &UserId,
        token: &RefreshToken,
    ) -> Result<(), StoreError> {
        let sealed = self
            .cipher
            .seal(token.expose(), Field::RefreshToken, user_id.as_str())
            .map_err(seal_error)?;
        let key_id = self.cipher.current_key_id().to_string();
        let now = to_db(self.clock.now());
        let user = user_id.as_str();
        let request = crate::sync_queue::request_sql(self.dialect(), "cs.id = $2");
        with_conn!(&self.pool, |conn| {
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                diesel::insert_into(gc::table)
                    .values((
                        gc::user_id.eq(user),
                        gc::refresh_token_ciphertext.eq(&sealed),
                        gc::needs_reauth.eq(false),
                        gc::created_at.eq(now),
                        gc::updated_at.eq(now),
                        gc::key_id.eq(Some(&key_id)),
                    ))
                    .on_conflict(gc::user_id)
                    .do_update()
                    .set((
                        gc::refresh_token_ciphertext.eq(&sealed),
                        gc::access_token_ciphertext.eq(None::<Vec<u8>>),
                        gc::access_token_expires_at.eq(None::<PrimitiveDateTime>),
                        gc::needs_reauth.eq(false),
                        gc::updated_at.eq(now),
                        gc::key_id.eq(Some(&key_id)),
                    ))
                    .execute(conn)
                    .await?;
                // New credentials resume the user's calendars that waited for them.
                let resumed: Vec<String> = diesel::update(
                    cs::table
                        .filter(cs::user_id.eq(user))
                        .filter(cs::sync_state.eq(NEEDS_REAUTH)),
                )
                .set((
                    cs::sync_state.eq(PENDING),
                    cs::next_attempt_at.eq(None::<PrimitiveDateTime>),
                    cs::updated_at.eq(now),
                ))
                .returning(cs::id)
                .get_results(conn)
                .await?;
                for calendar in &resumed {
                    diesel::sql_query(&request)
                        .bind::<diesel::sql_types::Timestamp, _>(now)
                        .bind::<diesel::sql_types::Text, _>(calendar)
                        .execute(conn)
                        .await?;
                }
                Ok(())
            })
            .await
            .map_err(query_error)?;
        });
        Ok(())
    }

    async fn cache_access_token(
        &self,
        user_id: &UserId,
        token: &CachedAccessToken,
    ) -> Result<(), StoreError> {
        let sealed = self
            .cipher
            .seal(token.token.expose(), Field::AccessToken, user_id.as_str())
            .map_err(seal_error)?;
        let expires = to_db(token.expires_at);
        with_conn!(&self.pool, |conn| {
            diesel::update(gc::table.find(user_id.as_str()))
                .set((
                    gc::access_token_ciphertext.eq(Some(&sealed)),
                    gc::access_token_expires_at.eq(Some(expires)),
                ))
                .execute(conn)
                .await
                .map_err(query_error)?;
        });
        Ok(())
    }

    async fn mark_needs_reauth(
        &self,
        user_id: &UserId,
        refused: &CredentialsVersion,
    ) -> Result<bool, StoreError> {
        let now = to_db(self.clock.now());
        let user = user_id.as_str();
        let refused = refused.as_bytes();
        let marked = with_conn!(&self.pool, |conn| {
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                let marked = diesel::update(
                    gc::table
                        .find(user)
                        .filter(gc::refresh_token_ciphertext.eq(refused)),
                )
                .set((
                    gc::needs_reauth.eq(true),
                    gc::access_token_ciphertext.eq(None::<Vec<u8>>),
                    gc::access_token_expires_at.eq(None::<PrimitiveDateTime>),
                    gc::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
                if marked == 0 {
                    // Replaced since the refused read: the new credentials are untried.
                    return Ok(false);
                }
                let parked: Vec<String> = diesel::update(
                    cs::table
                        .filter(cs::user_id.eq(user))
                        .filter(cs::sync_state.ne_all([GONE, NEEDS_REAUTH])),
                )
                .set((cs::sync_state.eq(NEEDS_REAUTH), cs::updated_at.eq(now)))
                .returning(cs::id)
                .get_results(conn)
                .await?;
                let parked: Vec<&str> = parked.iter().map(String::as_str).collect();
                crate::changes::ChangeLog::log_transition(
                    &mut *conn,
                    &parked,
                    sync_domain::changes::ChangeKind::CalendarNeedsReauth,
                    now,
                )
                .await?;
                Ok(true)
            })
            .await
            .map_err(query_error)?
        });
        self.changes_committed();
        Ok(marked)
    }
}
