//! API tokens: created and revoked by `tracker token`, verified on every request when
//! authentication is on. Only SHA-256 hashes of the secrets are stored.

use sqlx::Row;

use super::{now_ms, Error, Result, Store};

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    pub token_id: String,
    pub name: String,
    pub scope: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl Store {
    /// Stores a new token's hash.
    pub async fn insert_token(&self, token_id: &str, name: &str, scope: &str, secret_hash: &str) -> Result<()> {
        sqlx::query("insert into api_token (token_id, name, scope, secret_hash, created_at) values ($1, $2, $3, $4, $5)")
            .bind(token_id)
            .bind(name)
            .bind(scope)
            .bind(secret_hash)
            .bind(now_ms())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// The name, scope and secret hash of an active (not revoked) token.
    pub async fn active_token(&self, token_id: &str) -> Result<Option<(String, String, String)>> {
        let row = sqlx::query("select name, scope, secret_hash from api_token where token_id = $1 and revoked_at is null")
            .bind(token_id)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).transpose()
    }

    /// Revokes every active token whose id or name is `id_or_name`; returns how many.
    pub async fn revoke_tokens(&self, id_or_name: &str) -> Result<u64> {
        let done = sqlx::query("update api_token set revoked_at = $1 where (token_id = $2 or name = $2) and revoked_at is null")
            .bind(now_ms())
            .bind(id_or_name)
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("No active token with id or name '{id_or_name}'")));
        }
        Ok(done.rows_affected())
    }

    /// Every token, newest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let rows = sqlx::query("select token_id, name, scope, created_at, revoked_at from api_token order by created_at desc, token_id")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenInfo {
                    token_id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    scope: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                    revoked_at: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// How many tokens can still authenticate.
    pub async fn count_active_tokens(&self) -> Result<i64> {
        let row = sqlx::query("select count(*) from api_token where revoked_at is null").fetch_one(&self.read).await?;
        Ok(row.try_get(0)?)
    }
}
