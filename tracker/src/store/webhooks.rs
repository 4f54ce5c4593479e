//! Webhooks and their deliveries. Deliveries are an outbox: [`enqueue`] inserts one per matching
//! webhook inside the transaction of the change it reports, and the background task of
//! `crate::webhooks` claims due ones, POSTs them and records each attempt here.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::audit::AuditEntry;
use super::registry::ensure_model;
use super::{now_ms, Error, Result, Store};

/// A webhook as the API shows it (never its secret).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Webhook {
    pub id: String,
    /// The registered model it follows; absent for every model.
    pub name: Option<String>,
    pub url: String,
    pub created_at: i64,
    pub created_by: String,
}

/// One attempt at a delivery.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    pub attempt: i64,
    /// Milliseconds since the epoch.
    pub started_at: i64,
    pub duration_ms: i64,
    /// The receiver's status, absent when there was no response.
    pub status_code: Option<i64>,
    /// Why the attempt failed when there was no response (connection refused, timeout).
    pub error: Option<String>,
}

/// A delivery with its attempts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: String,
    pub audit_id: i64,
    pub event: String,
    /// `pending`, `delivered`, `failed` (attempts exhausted) or `cancelled` (webhook deleted).
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub created_at: i64,
    /// The JSON body sent.
    pub payload: serde_json::Value,
    pub attempt_log: Vec<Attempt>,
}

/// A delivery due now, with what is needed to send it.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: i64,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub event: String,
    pub payload: String,
    pub url: String,
    pub secret: String,
}

/// The body a webhook receives for an audit entry.
pub fn payload(entry: &AuditEntry) -> serde_json::Value {
    let model_uri = match (&entry.alias, &entry.to_version) {
        (Some(alias), Some(_)) => Some(format!("models:/{}@{alias}", entry.name)),
        (None, _) => entry.version.as_ref().map(|v| format!("models:/{}/{v}", entry.name)),
        _ => None,
    };
    serde_json::json!({ "event": entry.action, "model": entry.name, "model_uri": model_uri, "change": entry })
}

/// Inserts a pending delivery of `entry` for every webhook of its model and every global one.
pub(crate) async fn enqueue(tx: &mut sqlx::Transaction<'_, sqlx::Any>, entry: &AuditEntry) -> Result<()> {
    let hooks = sqlx::query("select id from webhook where name = $1 or name = '' order by id").bind(&entry.name).fetch_all(&mut **tx).await?;
    if hooks.is_empty() {
        return Ok(());
    }
    let body = payload(entry).to_string();
    for hook in hooks {
        let id: String = hook.try_get(0)?;
        sqlx::query(
            "insert into webhook_delivery (webhook_id, audit_id, event, payload, state, attempts, next_attempt_at, created_at, updated_at) \
             values ($1, $2, $3, $4, 'pending', 0, $5, $5, $5)",
        )
        .bind(&id)
        .bind(entry.id)
        .bind(&entry.action)
        .bind(&body)
        .bind(entry.timestamp)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn webhook_from_row(row: &AnyRow) -> Result<Webhook> {
    let name: String = row.try_get(1)?;
    Ok(Webhook { id: row.try_get(0)?, name: (!name.is_empty()).then_some(name), url: row.try_get(2)?, created_at: row.try_get(3)?, created_by: row.try_get(4)? })
}

const WEBHOOK_COLUMNS: &str = "id, name, url, created_at, created_by";

impl Store {
    /// Creates a webhook for one registered model (which must exist) or, with `None`, for all.
    pub async fn create_webhook(&self, name: Option<&str>, url: &str, secret: &str, created_by: &str) -> Result<Webhook> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut tx = self.write.begin().await?;
        if let Some(name) = name {
            ensure_model(&mut tx, name).await?;
        }
        sqlx::query("insert into webhook (id, name, url, secret, created_at, created_by) values ($1, $2, $3, $4, $5, $6)")
            .bind(&id)
            .bind(name.unwrap_or(""))
            .bind(url)
            .bind(secret)
            .bind(now_ms())
            .bind(created_by)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&format!("select {WEBHOOK_COLUMNS} from webhook where id = $1")).bind(&id).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        webhook_from_row(&row)
    }

    /// Webhooks, oldest first: those of one model (not the global ones) or, with `None`, all.
    pub async fn list_webhooks(&self, name: Option<&str>) -> Result<Vec<Webhook>> {
        let rows = match name {
            Some(name) => sqlx::query(&format!("select {WEBHOOK_COLUMNS} from webhook where name = $1 order by created_at, id")).bind(name).fetch_all(&self.read).await?,
            None => sqlx::query(&format!("select {WEBHOOK_COLUMNS} from webhook order by created_at, id")).fetch_all(&self.read).await?,
        };
        rows.iter().map(webhook_from_row).collect()
    }

    /// Deletes a webhook; its pending deliveries are cancelled.
    pub async fn delete_webhook(&self, id: &str) -> Result<()> {
        let mut tx = self.write.begin().await?;
        let done = sqlx::query("delete from webhook where id = $1").bind(id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("Webhook with id={id} not found")));
        }
        sqlx::query("update webhook_delivery set state = 'cancelled', updated_at = $1 where webhook_id = $2 and state = 'pending'")
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest deliveries of a webhook with their attempts.
    pub async fn list_deliveries(&self, webhook_id: &str, max_results: i64) -> Result<Vec<Delivery>> {
        let exists = sqlx::query("select 1 from webhook where id = $1").bind(webhook_id).fetch_optional(&self.read).await?;
        let any = sqlx::query("select 1 from webhook_delivery where webhook_id = $1 limit 1").bind(webhook_id).fetch_optional(&self.read).await?;
        if exists.is_none() && any.is_none() {
            return Err(Error::NotFound(format!("Webhook with id={webhook_id} not found")));
        }
        let rows = sqlx::query(
            "select id, webhook_id, audit_id, event, state, attempts, next_attempt_at, created_at, payload from webhook_delivery \
             where webhook_id = $1 order by id desc limit $2",
        )
        .bind(webhook_id)
        .bind(max_results)
        .fetch_all(&self.read)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get(0)?;
            let payload: String = row.try_get(8)?;
            let attempts = sqlx::query("select attempt, started_at, duration_ms, status_code, error from webhook_attempt where delivery_id = $1 order by attempt")
                .bind(id)
                .fetch_all(&self.read)
                .await?;
            let attempt_log = attempts
                .iter()
                .map(|a| {
                    let status: i64 = a.try_get(3)?;
                    let error: String = a.try_get(4)?;
                    Ok(Attempt {
                        attempt: a.try_get(0)?,
                        started_at: a.try_get(1)?,
                        duration_ms: a.try_get(2)?,
                        status_code: (status > 0).then_some(status),
                        error: (!error.is_empty()).then_some(error),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            out.push(Delivery {
                id,
                webhook_id: row.try_get(1)?,
                audit_id: row.try_get(2)?,
                event: row.try_get(3)?,
                state: row.try_get(4)?,
                attempts: row.try_get(5)?,
                next_attempt_at: row.try_get(6)?,
                created_at: row.try_get(7)?,
                payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
                attempt_log,
            });
        }
        Ok(out)
    }

    /// Pending deliveries due at `now`, oldest due first.
    pub async fn due_deliveries(&self, now: i64, limit: i64) -> Result<Vec<DueDelivery>> {
        let rows = sqlx::query(
            "select d.id, d.attempts, d.next_attempt_at, d.event, d.payload, w.url, w.secret from webhook_delivery d join webhook w on w.id = d.webhook_id \
             where d.state = 'pending' and d.next_attempt_at <= $1 order by d.next_attempt_at, d.id limit $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueDelivery {
                    id: r.try_get(0)?,
                    attempts: r.try_get(1)?,
                    next_attempt_at: r.try_get(2)?,
                    event: r.try_get(3)?,
                    payload: r.try_get(4)?,
                    url: r.try_get(5)?,
                    secret: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// The earliest time a pending delivery is due, if any.
    pub async fn next_delivery_due(&self) -> Result<Option<i64>> {
        let row = sqlx::query("select min(next_attempt_at) from webhook_delivery where state = 'pending'").fetch_one(&self.read).await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }

    /// Claims a due delivery until `lease_until`, so that no other replica sends it meanwhile (and
    /// a crashed sender's claim runs out). False when another claimed it first.
    pub async fn claim_delivery(&self, delivery: &DueDelivery, lease_until: i64) -> Result<bool> {
        let done = sqlx::query("update webhook_delivery set next_attempt_at = $1, updated_at = $2 where id = $3 and state = 'pending' and next_attempt_at = $4")
            .bind(lease_until)
            .bind(now_ms())
            .bind(delivery.id)
            .bind(delivery.next_attempt_at)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records an attempt and the delivery's next state: delivered, failed, or pending again at
    /// `retry_at`.
    pub async fn record_attempt(&self, delivery_id: i64, attempt: &Attempt, delivered: bool, retry_at: Option<i64>) -> Result<()> {
        let state = if delivered {
            "delivered"
        } else if retry_at.is_some() {
            "pending"
        } else {
            "failed"
        };
        let mut tx = self.write.begin().await?;
        sqlx::query("insert into webhook_attempt (delivery_id, attempt, started_at, duration_ms, status_code, error) values ($1, $2, $3, $4, $5, $6)")
            .bind(delivery_id)
            .bind(attempt.attempt)
            .bind(attempt.started_at)
            .bind(attempt.duration_ms)
            .bind(attempt.status_code.unwrap_or(0))
            .bind(attempt.error.as_deref().unwrap_or(""))
            .execute(&mut *tx)
            .await?;
        sqlx::query("update webhook_delivery set state = $1, attempts = $2, next_attempt_at = $3, updated_at = $4 where id = $5 and state = 'pending'")
            .bind(state)
            .bind(attempt.attempt)
            .bind(retry_at.unwrap_or(0))
            .bind(now_ms())
            .bind(delivery_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
