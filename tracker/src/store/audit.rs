//! The registry audit log: who changed which alias or stage, when, from which version to which,
//! and why. Entries are written by the registry's changes in their own transactions (see
//! [`record`]), so a change and its entry commit or fail together, and so do the webhook
//! deliveries the entry triggers.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{decode_offset_token, next_offset_token, now_ms, Result, Store};

/// Who makes a change and why, as the audit log records it.
#[derive(Debug, Clone)]
pub struct ChangeBy {
    /// The token name when authentication is on, `anonymous` otherwise, `cli:<user>` from the
    /// command line.
    pub actor: String,
    /// Why, as the caller said (may be empty).
    pub reason: String,
}

impl ChangeBy {
    /// A change by `actor` for `reason`.
    pub fn new(actor: impl Into<String>, reason: Option<&str>) -> Self {
        ChangeBy { actor: actor.into(), reason: reason.unwrap_or("").trim().to_owned() }
    }
}

/// What kind of change an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The MLflow alias endpoint set or moved an alias.
    SetAlias,
    /// The MLflow alias endpoint deleted an alias.
    DeleteAlias,
    /// A gated promotion moved an alias.
    Promote,
    /// transition-stage moved a version to a stage.
    TransitionStage,
    /// transition-stage with `archive_existing_versions` archived another version.
    ArchiveExisting,
}

impl Action {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::SetAlias => "set_alias",
            Action::DeleteAlias => "delete_alias",
            Action::Promote => "promote",
            Action::TransitionStage => "transition_stage",
            Action::ArchiveExisting => "archive_existing",
        }
    }
}

/// One audit entry, as the API shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub actor: String,
    /// The registered model.
    pub name: String,
    /// `set_alias`, `delete_alias`, `promote`, `transition_stage` or `archive_existing`.
    pub action: String,
    /// The alias changed (alias actions).
    pub alias: Option<String>,
    /// The version whose stage changed (stage actions).
    pub version: Option<String>,
    /// The version the alias pointed at before (none when it was new).
    pub from_version: Option<String>,
    /// The version the alias points at now (none when deleted).
    pub to_version: Option<String>,
    /// The version's stage before (stage actions).
    pub from_stage: Option<String>,
    /// The version's stage now (stage actions).
    pub to_stage: Option<String>,
    pub reason: String,
}

/// A change to record: alias changes fill `alias` and the versions, stage changes `version` and
/// the stages.
#[derive(Debug, Clone, Default)]
pub struct Change<'a> {
    pub alias: &'a str,
    pub version: i64,
    pub from_version: Option<i64>,
    pub to_version: Option<i64>,
    pub from_stage: &'a str,
    pub to_stage: &'a str,
}

/// Writes an audit entry inside the change's transaction and returns it.
pub(crate) async fn record(tx: &mut sqlx::Transaction<'_, sqlx::Any>, name: &str, action: Action, change: Change<'_>, by: &ChangeBy) -> Result<AuditEntry> {
    let now = now_ms();
    let row = sqlx::query(
        "insert into registry_audit (timestamp, actor, name, action, alias, version, from_version, to_version, from_stage, to_stage, reason) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) returning id",
    )
    .bind(now)
    .bind(&by.actor)
    .bind(name)
    .bind(action.as_str())
    .bind(change.alias)
    .bind(change.version)
    .bind(change.from_version.unwrap_or(0))
    .bind(change.to_version.unwrap_or(0))
    .bind(change.from_stage)
    .bind(change.to_stage)
    .bind(&by.reason)
    .fetch_one(&mut **tx)
    .await?;
    let id: i64 = row.try_get(0)?;
    let entry = AuditEntry {
        id,
        timestamp: now,
        actor: by.actor.clone(),
        name: name.to_owned(),
        action: action.as_str().to_owned(),
        alias: non_empty(change.alias),
        version: version(change.version),
        from_version: change.from_version.and_then(version),
        to_version: change.to_version.and_then(version),
        from_stage: non_empty(change.from_stage),
        to_stage: non_empty(change.to_stage),
        reason: by.reason.clone(),
    };
    super::webhooks::enqueue(tx, &entry).await?;
    Ok(entry)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn version(v: i64) -> Option<String> {
    (v > 0).then(|| v.to_string())
}

fn entry_from_row(row: &AnyRow) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.try_get(0)?,
        timestamp: row.try_get(1)?,
        actor: row.try_get(2)?,
        name: row.try_get(3)?,
        action: row.try_get(4)?,
        alias: non_empty(&row.try_get::<String, _>(5)?),
        version: version(row.try_get(6)?),
        from_version: version(row.try_get(7)?),
        to_version: version(row.try_get(8)?),
        from_stage: non_empty(&row.try_get::<String, _>(9)?),
        to_stage: non_empty(&row.try_get::<String, _>(10)?),
        reason: row.try_get(11)?,
    })
}

impl Store {
    /// Audit entries, newest first, of one model or of all; paged with an offset token.
    pub async fn list_audit(&self, name: Option<&str>, max_results: i64, page_token: Option<&str>) -> Result<super::registry::Page<AuditEntry>> {
        let offset = decode_offset_token(page_token)?;
        let columns = "id, timestamp, actor, name, action, alias, version, from_version, to_version, from_stage, to_stage, reason";
        let rows = match name {
            Some(name) => {
                sqlx::query(&format!("select {columns} from registry_audit where name = $1 order by id desc limit $2 offset $3"))
                    .bind(name)
                    .bind(max_results + 1)
                    .bind(offset)
                    .fetch_all(&self.read)
                    .await?
            }
            None => {
                sqlx::query(&format!("select {columns} from registry_audit order by id desc limit $1 offset $2"))
                    .bind(max_results + 1)
                    .bind(offset)
                    .fetch_all(&self.read)
                    .await?
            }
        };
        let mut items = rows.iter().map(entry_from_row).collect::<Result<Vec<_>>>()?;
        let next_page_token = next_offset_token(&mut items, max_results, offset);
        Ok(super::registry::Page { items, next_page_token })
    }
}
