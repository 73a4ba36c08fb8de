//! The token half of [`UserModule`]: sign-in, refresh-token rotation,
//! sign-out, and pruning of expired refresh tokens.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use diesel::result::Error as DieselError;
use diesel_async::AsyncConnection as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use user_api::UserError;
use uuid::Uuid;

use crate::UserModule;
use crate::domain::Email;
use crate::error::{AuthFlowError, database, hash_error};
use crate::repo::{self, UserRow};
use kernel::Failure;

/// Access and refresh token handed out at sign-in and refresh. No `Debug`:
/// both are bearer secrets.
pub struct TokenPair {
    /// The signed JWT access token, for `Authorization: Bearer`.
    pub access_token: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// The opaque refresh token (only its hash is stored).
    pub refresh_token: String,
}

/// A new opaque refresh token and the hash stored for it.
fn new_refresh_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = refresh_hash(&token);
    (token, hash)
}

/// When the session of `family` began: the time of its v7 id.
fn session_start(family: Uuid) -> Option<chrono::DateTime<chrono::Utc>> {
    let (secs, nanos) = family.get_timestamp()?.to_unix();
    chrono::DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
}

/// The SHA-256 of a refresh token: what is stored and looked up.
fn refresh_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// What happened to a presented refresh token, decided in one transaction.
enum Refresh {
    Rotated { user: UserRow, token: String },
    Reused,
    Invalid,
}

impl UserModule {
    /// Deletes the refresh tokens of sessions whose every token expired
    /// more than a day ago; how many. A live session keeps its spent
    /// tokens, so that a replay of any of them revokes it (a session ends
    /// `session_max` after its sign-in at the latest, which bounds them).
    ///
    /// # Errors
    /// Database unavailability.
    pub async fn prune_refresh_tokens(&self) -> Result<usize, UserError> {
        let mut conn = self.conn().await?;
        repo::delete_expired_refresh_tokens(
            &mut conn,
            chrono::Utc::now() - chrono::Duration::days(1),
        )
        .await
        .map_err(|e| {
            UserError::Common(Failure::Unavailable(format!("pruning refresh tokens: {e}")))
        })
    }

    /// Signs in with email and password.
    ///
    /// # Errors
    /// [`AuthFlowError::InvalidCredentials`] alike for an unknown email and a
    /// wrong password (same status, body and work), `AccountDisabled` only
    /// after a correct password.
    #[tracing::instrument(skip_all)]
    pub async fn login(&self, email: &str, password: String) -> Result<TokenPair, AuthFlowError> {
        let row = {
            let mut conn = self.conn().await?;
            repo::find_by_email(&mut conn, &Email::lookup_key(email))
                .await
                .map_err(database)?
        };
        let stored = row.as_ref().map(|r| r.password_hash.clone());
        // Kept for a rehash (a hash made with older parameters), only then.
        let again = row
            .as_ref()
            .filter(|r| !self.hasher.is_current(&r.password_hash))
            .map(|_| password.clone());
        let matches = self
            .hasher
            .verify(password, stored)
            .await
            .map_err(hash_error)?;
        let Some(row) = row.filter(|_| matches) else {
            tracing::info!("sign-in refused");
            return Err(AuthFlowError::InvalidCredentials);
        };
        if !row.is_active() {
            return Err(AuthFlowError::AccountDisabled);
        }
        // The token is stored under the account's lock, and only if the
        // password checked is still the account's and it is still active:
        // a password change or a disabling that committed while the hash
        // was checked revoked every token, and must not miss this one.
        let mut conn = self.conn().await?;
        let (refresh_token, hash) = new_refresh_token();
        let expires_at = self.refresh_expiry();
        let issued = conn
            .transaction::<_, DieselError, _>(async |conn| {
                let now = repo::find_for_share(conn, row.id).await?;
                let Some(now) = now.filter(|now| now.password_hash == row.password_hash) else {
                    return Ok(Err(AuthFlowError::InvalidCredentials));
                };
                if !now.is_active() {
                    return Ok(Err(AuthFlowError::AccountDisabled));
                }
                repo::insert_refresh(conn, Uuid::now_v7(), now.id, &hash, expires_at).await?;
                Ok(Ok(now))
            })
            .await
            .map_err(database)?;
        drop(conn);
        let row = issued?;
        tracing::info!(user.id = %row.id, "signed in");
        if let Some(password) = again {
            // Off the answer's path, and with no connection held while it
            // waits for a hashing slot and hashes.
            let (module, row) = (self.clone(), row.clone());
            tokio::spawn(async move { module.rehash(&row, password).await });
        }
        self.pair(&row, refresh_token)
    }

    /// Hashes the password of `row`, checked just now, again with the
    /// current parameters, and stores it while the hash it was checked
    /// against is still the account's: a check of this account then costs
    /// what the dummy hash of an unknown email costs. Best effort: a busy
    /// hasher or a failed write leaves it for the next sign-in.
    async fn rehash(&self, row: &repo::UserRow, password: String) {
        let hash = match self.hasher.hash(password).await {
            Ok(hash) => hash,
            Err(e) => {
                tracing::info!(user.id = %row.id, error = %e, "password not rehashed; next sign-in");
                return;
            }
        };
        let stored = async {
            let mut conn = self.conn().await.map_err(|e| e.to_string())?;
            repo::replace_password_hash(&mut conn, row.id, &row.password_hash, &hash)
                .await
                .map_err(|e| e.to_string())
        };
        match stored.await {
            Ok(true) => {
                tracing::info!(user.id = %row.id, "password rehashed with the current parameters")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(user.id = %row.id, error = %e, "password not rehashed; next sign-in")
            }
        }
    }

    /// Spends a refresh token for a new pair in the same family. A token
    /// presented twice revokes its whole family.
    ///
    /// # Errors
    /// [`AuthFlowError::InvalidRefreshToken`].
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, token: &str) -> Result<TokenPair, AuthFlowError> {
        let presented = refresh_hash(token);
        let expires_at = self.refresh_expiry();
        let mut conn = self.conn().await?;
        let outcome = conn
            .transaction::<_, DieselError, _>(async |conn| {
                // The account's row first, then the token's: the order of a
                // password change or a disabling (the row, then revoking
                // the tokens), so a rotation either ends before one starts
                // or sees the token revoked. Exclusively: one rotation or
                // revocation of the account's tokens at a time, so a spent
                // token presented while its successor is being rotated
                // waits for that rotation and revokes what it issued (under
                // a shared lock the revocation missed the token the other
                // rotation was inserting, and left it live).
                let Some(seen) = repo::find_refresh(conn, &presented).await? else {
                    return Ok(Refresh::Invalid);
                };
                let user = repo::find_for_update(conn, seen.user_id).await?;
                let Some(found) = repo::find_refresh_for_update(conn, &presented).await? else {
                    return Ok(Refresh::Invalid);
                };
                if found.spent_at.is_some() || found.revoked_at.is_some() {
                    repo::revoke_family(conn, found.family_id).await?;
                    return Ok(Refresh::Reused);
                }
                let user = match user {
                    Some(user) if user.is_active() && found.expires_at > chrono::Utc::now() => user,
                    _ => {
                        repo::revoke_family(conn, found.family_id).await?;
                        return Ok(Refresh::Invalid);
                    }
                };
                // The session's end, from its sign-in (the family's id is
                // a v7 UUID made then): past it, over; the next token
                // expires by it at the latest.
                let ends = session_start(found.family_id).and_then(|start| {
                    start.checked_add_signed(chrono::TimeDelta::from_std(self.session_max).ok()?)
                });
                if ends.is_some_and(|ends| ends <= chrono::Utc::now()) {
                    repo::revoke_family(conn, found.family_id).await?;
                    return Ok(Refresh::Invalid);
                }
                let expires_at = ends.map_or(expires_at, |ends| expires_at.min(ends));
                repo::spend_refresh(conn, found.id).await?;
                let (token, hash) = new_refresh_token();
                repo::insert_refresh(conn, found.family_id, user.id, &hash, expires_at).await?;
                Ok(Refresh::Rotated { user, token })
            })
            .await
            .map_err(database)?;
        match outcome {
            Refresh::Rotated { user, token } => self.pair(&user, token),
            Refresh::Reused => {
                tracing::warn!("a spent refresh token was presented again; its family is revoked");
                Err(AuthFlowError::InvalidRefreshToken)
            }
            Refresh::Invalid => Err(AuthFlowError::InvalidRefreshToken),
        }
    }

    /// Revokes the family of a refresh token. Unknown tokens are ignored, so
    /// logging out twice is harmless.
    ///
    /// # Errors
    /// Database failures only.
    pub async fn logout(&self, token: &str) -> Result<(), AuthFlowError> {
        let presented = refresh_hash(token);
        let mut conn = self.conn().await?;
        conn.transaction::<_, DieselError, _>(async |conn| {
            // The account's row first, as `refresh`: a rotation in flight
            // ends before the family is revoked, with what it issued.
            let Some(seen) = repo::find_refresh(conn, &presented).await? else {
                return Ok(());
            };
            repo::find_for_update(conn, seen.user_id).await?;
            if let Some(found) = repo::find_refresh_for_update(conn, &presented).await? {
                repo::revoke_family(conn, found.family_id).await?;
            }
            Ok(())
        })
        .await
        .map_err(database)?;
        Ok(())
    }

    /// When a refresh token issued now expires (`refresh_token_ttl_days`;
    /// 14 days if that does not fit a date).
    fn refresh_expiry(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
            + chrono::Duration::from_std(self.refresh_ttl).unwrap_or(chrono::Duration::days(14))
    }

    /// A signed access token for `user`, paired with `refresh_token`.
    fn pair(&self, user: &UserRow, refresh_token: String) -> Result<TokenPair, AuthFlowError> {
        let access = self.issuer.issue(user.id, &user.roles()).map_err(|e| {
            UserError::Common(Failure::Unexpected(format!("cannot sign a token: {e}")))
        })?;
        Ok(TokenPair {
            access_token: access.token,
            expires_in: access.expires_in,
            refresh_token,
        })
    }
}
