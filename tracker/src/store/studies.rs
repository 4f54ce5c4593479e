//! Studies, trials, their reports, and worker agents.
//!
//! Scheduling decisions are made in `crate::studies` from what these functions load; every
//! decision about one study runs inside one [`StudyTx`], which holds the study's slot in this
//! process, and on Postgres the study's row lock (taken by the `update` that bumps its version,
//! so tracker replicas serialize per study). On SQLite it holds the single write connection, and
//! its writes are queued and committed in one transaction only if the study's version is still
//! the one it read. Load, decide and write therefore see and leave a consistent history.

use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, Row, Transaction};

use tuner::{TrialState, TrialView};

use super::native::{self, NativeWriter};
use super::runs::{metric_statements, new_run_param_inserts, tag_upserts, LastBlocks, NewMetric};
use super::search_sql::{bind_all, Bind, SqlFragment};
use super::{now_ms, Dialect, Error, Result, Store};

/// A study row.
#[derive(Debug, Clone)]
pub struct StudyRow {
    /// Unique name.
    pub name: String,
    /// Experiment of its runs.
    pub experiment_id: i64,
    /// The spec as JSON text.
    pub spec: String,
    /// running, paused, stopped, finished.
    pub status: String,
    /// ms since the epoch.
    pub created_time: i64,
    /// ms since the epoch.
    pub finished_time: Option<i64>,
}

/// A trial row: every column of `trial`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRow {
    /// Study name.
    pub study: String,
    /// Trial number.
    pub number: i64,
    /// Its run.
    pub run_uuid: String,
    /// Params as JSON text.
    pub params: String,
    /// queued, running, paused, complete, pruned, failed, stopped.
    pub state: String,
    /// Final value.
    pub value: Option<f64>,
    /// Last reported step and value.
    pub last_step: Option<i64>,
    /// Last reported value.
    pub last_value: Option<f64>,
    /// Artifact path of the last checkpoint.
    pub checkpoint: Option<String>,
    /// Step of that checkpoint.
    pub checkpoint_step: Option<i64>,
    /// Step to train to in the current attempt (promotions).
    pub target_step: Option<i64>,
    /// Attempts started.
    pub attempt: i64,
    /// Fencing token of the current or last lease.
    pub lease_id: Option<String>,
    /// Holder of the current lease.
    pub worker_id: Option<String>,
    /// When the current lease expires (ms).
    pub lease_expires: Option<i64>,
    /// When the current lease started (ms).
    pub leased_time: Option<i64>,
    /// When the trial was (re)queued (ms); requeued trials go first.
    pub queued_time: Option<i64>,
    /// Failed attempts.
    pub failures: i64,
    /// Lost attempts.
    pub lost: i64,
    /// Last error.
    pub error: Option<String>,
}

const TRIAL_COLUMNS: &str = "study, number, run_uuid, params, state, value, last_step, last_value, checkpoint, checkpoint_step, target_step, \
     attempt, lease_id, worker_id, lease_expires, leased_time, queued_time, failures, lost, error";

fn trial_from_row(r: &AnyRow) -> Result<TrialRow> {
    Ok(TrialRow {
        study: r.try_get(0)?,
        number: r.try_get(1)?,
        run_uuid: r.try_get(2)?,
        params: r.try_get(3)?,
        state: r.try_get(4)?,
        value: r.try_get(5)?,
        last_step: r.try_get(6)?,
        last_value: r.try_get(7)?,
        checkpoint: r.try_get(8)?,
        checkpoint_step: r.try_get(9)?,
        target_step: r.try_get(10)?,
        attempt: r.try_get(11)?,
        lease_id: r.try_get(12)?,
        worker_id: r.try_get(13)?,
        lease_expires: r.try_get(14)?,
        leased_time: r.try_get(15)?,
        queued_time: r.try_get(16)?,
        failures: r.try_get(17)?,
        lost: r.try_get(18)?,
        error: r.try_get(19)?,
    })
}

const STUDY_COLUMNS: &str = "name, experiment_id, spec, status, created_time, finished_time";

fn study_from_row(r: &AnyRow) -> Result<StudyRow> {
    Ok(StudyRow {
        name: r.try_get(0)?,
        experiment_id: r.try_get(1)?,
        spec: r.try_get(2)?,
        status: r.try_get(3)?,
        created_time: r.try_get(4)?,
        finished_time: r.try_get(5)?,
    })
}

/// A stored report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    /// Trial number.
    pub number: i64,
    /// Step.
    pub step: i64,
    /// Value.
    pub value: f64,
    /// Attempt that sent it.
    pub attempt: i64,
    /// continue, stop or pause.
    pub decision: String,
    /// Next milestone answered.
    pub next_milestone: Option<i64>,
}

/// A worker row.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    /// Stable id.
    pub worker_id: String,
    /// active or paused.
    pub status: String,
    /// JSON text.
    pub resources: String,
    /// JSON text.
    pub labels: String,
    /// ms.
    pub registered_time: i64,
    /// ms.
    pub last_seen: i64,
    /// Quick failures in a row.
    pub quick_failures: i64,
}

fn worker_from_row(r: &AnyRow) -> Result<WorkerRow> {
    Ok(WorkerRow {
        worker_id: r.try_get(0)?,
        status: r.try_get(1)?,
        resources: r.try_get(2)?,
        labels: r.try_get(3)?,
        registered_time: r.try_get(4)?,
        last_seen: r.try_get(5)?,
        quick_failures: r.try_get(6)?,
    })
}

const WORKER_COLUMNS: &str = "worker_id, status, resources, labels, registered_time, last_seen, quick_failures";

impl Store {
    /// Creates a study over an existing experiment. `AlreadyExists` when the name is taken.
    pub async fn insert_study(&self, name: &str, experiment_id: i64, spec_json: &str) -> Result<StudyRow> {
        let now = now_ms();
        let res = sqlx::query("insert into study (name, experiment_id, spec, status, created_time) values ($1, $2, $3, 'running', $4)")
            .bind(name)
            .bind(experiment_id)
            .bind(spec_json)
            .bind(now)
            .execute(&self.write)
            .await;
        match res {
            Err(e) if super::is_unique_violation(&e) => Err(Error::AlreadyExists(format!("Study '{name}' already exists."))),
            Err(e) => Err(e.into()),
            Ok(_) => self.get_study(name).await,
        }
    }

    /// A study by name.
    pub async fn get_study(&self, name: &str) -> Result<StudyRow> {
        let row = sqlx::query(&format!("select {STUDY_COLUMNS} from study where name = $1"))
            .bind(name)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| Error::NotFound(format!("Study '{name}' does not exist.")))?;
        study_from_row(&row)
    }

    /// All studies, newest first.
    pub async fn list_studies(&self) -> Result<Vec<StudyRow>> {
        let rows = sqlx::query(&format!("select {STUDY_COLUMNS} from study order by created_time desc, name")).fetch_all(&self.read).await?;
        rows.iter().map(study_from_row).collect()
    }

    /// Names of the studies in these statuses, oldest first (the order leases serve them in).
    pub async fn study_names_with_status(&self, statuses: &[&str]) -> Result<Vec<String>> {
        let sql = format!("select name from study where status in ({}) order by created_time, name", self.in_list(statuses.len()));
        let mut q = sqlx::query_scalar::<_, String>(&sql);
        for s in statuses {
            q = q.bind(*s);
        }
        Ok(q.fetch_all(&self.read).await?)
    }

    /// The studies that have a running trial whose lease ran out before `now`.
    pub async fn studies_with_expired_leases(&self, now: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar::<_, String>("select distinct study from trial where state = 'running' and lease_expires < $1 order by study")
            .bind(now)
            .fetch_all(&self.read)
            .await?)
    }

    /// The trials of a study, by number (read-only snapshot).
    pub async fn list_trials(&self, study: &str) -> Result<Vec<TrialRow>> {
        let rows = sqlx::query(&format!("select {TRIAL_COLUMNS} from trial where study = $1 order by number"))
            .bind(study)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(trial_from_row).collect()
    }

    /// Trial counts by state for every study.
    pub async fn trial_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("select study, state, count(*) from trial group by study, state").fetch_all(&self.read).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    /// The trial holding this lease id (current or last lease of that trial).
    pub async fn trial_by_lease(&self, lease_id: &str) -> Result<Option<TrialRow>> {
        let row = sqlx::query(&format!("select {TRIAL_COLUMNS} from trial where lease_id = $1"))
            .bind(lease_id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(trial_from_row).transpose()
    }

    /// The running trial a worker holds an unexpired lease on, if any.
    pub async fn active_lease_of_worker(&self, worker_id: &str, now: i64) -> Result<Option<TrialRow>> {
        let row = sqlx::query(&format!(
            "select {TRIAL_COLUMNS} from trial where worker_id = $1 and state = 'running' and lease_expires >= $2 order by leased_time desc limit 1"
        ))
        .bind(worker_id)
        .bind(now)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(trial_from_row).transpose()
    }

    /// Extends an unexpired lease held by `worker_id`; false when the lease is not current.
    pub async fn renew_lease(&self, lease_id: &str, worker_id: &str, now: i64, expires: i64) -> Result<bool> {
        let n = sqlx::query("update trial set lease_expires = $1 where lease_id = $2 and worker_id = $3 and state = 'running' and lease_expires >= $4")
            .bind(expires)
            .bind(lease_id)
            .bind(worker_id)
            .bind(now)
            .execute(&self.write)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Registers a worker or updates its resources and labels (its status and failure count stay).
    pub async fn upsert_worker(&self, worker_id: &str, resources: &str, labels: &str) -> Result<WorkerRow> {
        let now = now_ms();
        sqlx::query(
            "insert into worker (worker_id, status, resources, labels, registered_time, last_seen, quick_failures) values ($1, 'active', $2, $3, $4, $4, 0) \
             on conflict (worker_id) do update set resources = excluded.resources, labels = excluded.labels, last_seen = excluded.last_seen",
        )
        .bind(worker_id)
        .bind(resources)
        .bind(labels)
        .bind(now)
        .execute(&self.write)
        .await?;
        self.get_worker(worker_id).await
    }

    /// A worker by id.
    pub async fn get_worker(&self, worker_id: &str) -> Result<WorkerRow> {
        let row = sqlx::query(&format!("select {WORKER_COLUMNS} from worker where worker_id = $1"))
            .bind(worker_id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| Error::NotFound(format!("Worker '{worker_id}' is not registered.")))?;
        worker_from_row(&row)
    }

    /// All workers, by id.
    pub async fn list_workers(&self) -> Result<Vec<WorkerRow>> {
        let rows = sqlx::query(&format!("select {WORKER_COLUMNS} from worker order by worker_id")).fetch_all(&self.read).await?;
        rows.iter().map(worker_from_row).collect()
    }

    /// Records contact with a worker.
    pub async fn touch_worker(&self, worker_id: &str, now: i64) -> Result<()> {
        sqlx::query(TOUCH_WORKER).bind(now).bind(worker_id).execute(&self.write).await?;
        Ok(())
    }

    /// Sets a worker's status and quick-failure count.
    pub async fn set_worker_health(&self, worker_id: &str, status: &str, quick_failures: i64) -> Result<()> {
        // Most calls (every completed trial) change nothing: skip the row write then.
        sqlx::query("update worker set status = $1, quick_failures = $2 where worker_id = $3 and (status <> $1 or quick_failures <> $2)")
            .bind(status)
            .bind(quick_failures)
            .bind(worker_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Opens the transaction in which all decisions about one study are made, with the study's
    /// trials and reports loaded: from memory when this process made the last decision (the
    /// study's `version` is still the one it wrote), from the database otherwise.
    ///
    /// Decisions about one study are serialized twice. In this process, by the study's slot (an
    /// async mutex holding its in-memory copy), taken before a pooled connection: requests for a
    /// busy study wait in memory instead of holding connections that every other query needs,
    /// and the next decision always finds the copy the last one left. Across processes, by the
    /// study's row lock on Postgres, taken by the statement that bumps its version; on SQLite by
    /// the version itself, which the commit bumps only if it is still the one read here.
    /// Correctness rests on the row lock or the version alone.
    pub async fn begin_study(&self, name: &str) -> Result<StudyTx> {
        let slot = self.study_cache.lock().map_err(|_| poisoned())?.entry(name.to_owned()).or_default().clone();
        let copy = slot.clone().lock_owned().await;
        let writes = self.study_writes().await?;
        self.open_study(name, slot, copy, writes).await
    }

    /// Like [`Store::begin_study`], but `None` at once when another decision about the study
    /// holds it: in this process, or on Postgres in another replica (`FOR UPDATE SKIP LOCKED`).
    /// On SQLite the one write connection already serializes every decision.
    pub async fn begin_study_unless_busy(&self, name: &str) -> Result<Option<StudyTx>> {
        let slot = self.study_cache.lock().map_err(|_| poisoned())?.entry(name.to_owned()).or_default().clone();
        let Ok(copy) = slot.clone().try_lock_owned() else { return Ok(None) };
        let mut writes = self.study_writes().await?;
        if let StudyWrites::Transaction { tx, .. } = &mut writes {
            let free = sqlx::query("select name from study where name = $1 for update skip locked").bind(name).fetch_optional(&mut **tx).await?;
            if free.is_none() {
                return Ok(None);
            }
        }
        self.open_study(name, slot, copy, writes).await.map(Some)
    }

    /// Where a decision's statements go: a transaction on Postgres; on SQLite a queue for the
    /// native writer, behind the store's one sqlx write connection held as the write lock.
    async fn study_writes(&self) -> Result<StudyWrites> {
        Ok(match &self.native_writer {
            Some(writer) => StudyWrites::Queued { lock: self.write.acquire().await?, writer: writer.clone(), queue: Vec::new() },
            None => StudyWrites::Transaction { tx: self.write.begin().await?, queue: Vec::new() },
        })
    }

    /// The rest of [`Store::begin_study`] once the study's slot is held: reads the study (on
    /// Postgres locking its row and bumping its version), its expired leases, and its trials and
    /// reports unless the slot's copy is current.
    async fn open_study(&self, name: &str, slot: StudySlot, mut copy: tokio::sync::OwnedMutexGuard<Option<CachedStudy>>, mut writes: StudyWrites) -> Result<StudyTx> {
        let now = now_ms();
        let opened = match &mut writes {
            // Locking and bumping, and reading the expired leases, in one statement: one round
            // trip per decision. A rollback undoes the bump. Heartbeats renew leases without the
            // study lock, so expiry is read from the database: only the leases that have run out
            // (an index range, usually empty).
            StudyWrites::Transaction { tx, .. } => {
                let row = sqlx::query(&LOCK_STUDY_WITH_EXPIRED)
                .bind(name)
                .bind(now)
                .fetch_optional(&mut **tx)
                .await?;
                match row {
                    None => None,
                    Some(row) => {
                        let (study, version) = (study_from_row(&row)?, row.try_get::<i64, _>(6)?);
                        let expired = parse_numbers(row.try_get::<Option<String>, _>(7)?.as_deref())?;
                        Some((study, version - 1, expired))
                    }
                }
            }
            // The study's row and its expired leases in one trip to a blocking thread. Nothing
            // else in this process writes while `lock` is held; another process's write shows
            // as a changed version at commit.
            StudyWrites::Queued { writer, .. } => {
                let (writer, name) = (writer.clone(), name.to_owned());
                tokio::task::spawn_blocking(move || writer.with(|conn| read_study_natively(conn, &name, now))).await.map_err(|_| sqlx::Error::WorkerCrashed)??
            }
        };
        let Some((study, read_version, mut expired)) = opened else {
            drop(copy);
            let mut slots = self.study_cache.lock().map_err(|_| poisoned())?;
            if slots.get(name).is_some_and(|s| std::sync::Arc::ptr_eq(s, &slot)) {
                slots.remove(name);
            }
            return Err(Error::NotFound(format!("Study '{name}' does not exist.")));
        };
        let cached = copy.take().filter(|c| c.version == read_version);
        let (trials, views, reports, artifact_location) = match cached {
            Some(c) => (c.trials, c.views, c.reports, c.artifact_location),
            None => {
                if let StudyWrites::Transaction { tx, .. } = &mut writes {
                    // The statement above read the trials as of its start: when it waited for
                    // another replica's decision to release the study, read them again now.
                    expired = sqlx::query_scalar(EXPIRED_TRIALS).bind(name).bind(now).fetch_all(&mut **tx).await?;
                }
                let conn = writes.connection();
                let rows = sqlx::query(&format!("select {TRIAL_COLUMNS} from trial where study = $1 order by number")).bind(name).fetch_all(&mut *conn).await?;
                let trials = rows.iter().map(trial_from_row).collect::<Result<Vec<_>>>()?;
                let rows = sqlx::query("select number, step, value, attempt, decision, next_milestone from trial_report where study = $1 order by number, step")
                    .bind(name)
                    .fetch_all(&mut *conn)
                    .await?;
                let reports = rows.iter().map(report_from_row).collect::<Result<Vec<_>>>()?;
                let mut views = trials.iter().map(trial_view).collect::<Result<Vec<_>>>()?;
                for r in &reports {
                    if let Some(v) = views.get_mut(r.number as usize) {
                        v.intermediate.insert(r.step as u64, r.value);
                    }
                }
                (trials, views, reports, None)
            }
        };
        let stx = StudyTx {
            writes,
            dialect: self.dialect,
            last_blocks: self.last_blocks.clone(),
            study,
            version: read_version + 1,
            trials,
            views,
            reports,
            expired,
            artifact_location,
            copy,
        };
        Ok(stx)
    }
}

/// Sets worker `$2`'s `last_seen` to `$1`: alone, or queued with a lease's decision.
const TOUCH_WORKER: &str = "update worker set last_seen = $1 where worker_id = $2";

/// The running trials of study `$1` whose lease ran out before `$2` (a macro, so that both
/// statements below are built from it at compile time).
macro_rules! expired_trials_of_study {
    () => {
        "from trial where study = $1 and state = 'running' and lease_expires < $2"
    };
}

/// The numbers of the expired trials, in order.
const EXPIRED_TRIALS: &str = concat!("select number ", expired_trials_of_study!(), " order by number");

/// Postgres: locks study `$1`, bumps its version and returns its row, its new version and the
/// numbers of its expired trials as one comma-separated text (null when none).
static LOCK_STUDY_WITH_EXPIRED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "with locked as (update study set version = version + 1 where name = $1 returning {STUDY_COLUMNS}, version) \
         select locked.*, (select string_agg(number::text, ',' order by number) {}) from locked",
        expired_trials_of_study!()
    )
});

/// The study's row, version and expired leases on the native writer's connection, in one read
/// transaction so that they agree. `None` when there is no such study. Blocking.
fn read_study_natively(conn: &mut rusqlite::Connection, name: &str, now: i64) -> Result<Option<(StudyRow, i64, Vec<i64>)>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
    let sql = format!("select {STUDY_COLUMNS}, version from study where name = $1");
    let rows = native::query::<(String, i64, String, String, i64, Option<i64>, i64)>(&tx, &sql, &[Bind::Text(name.to_owned())])?;
    let Some((name, experiment_id, spec, status, created_time, finished_time, version)) = rows.into_iter().next() else { return Ok(None) };
    let expired = native::query::<(i64,)>(&tx, EXPIRED_TRIALS, &[Bind::Text(name.clone()), Bind::Int(now)])?.into_iter().map(|(n,)| n).collect();
    tx.commit()?;
    Ok(Some((StudyRow { name, experiment_id, spec, status, created_time, finished_time }, version, expired)))
}

/// Trial numbers from a comma-separated list (`string_agg`), none for null.
fn parse_numbers(list: Option<&str>) -> Result<Vec<i64>> {
    let Some(list) = list.filter(|l| !l.is_empty()) else { return Ok(Vec::new()) };
    list.split(',').map(|n| n.parse::<i64>().map_err(|e| Error::Db(sqlx::Error::Decode(format!("trial number '{n}': {e}").into())))).collect()
}

fn poisoned() -> Error {
    Error::Db(sqlx::Error::Protocol("study cache lock poisoned".into()))
}

fn report_from_row(r: &AnyRow) -> Result<ReportRow> {
    Ok(ReportRow {
        number: r.try_get(0)?,
        step: r.try_get(1)?,
        value: r.try_get(2)?,
        attempt: r.try_get(3)?,
        decision: r.try_get(4)?,
        next_milestone: r.try_get(5)?,
    })
}

/// Each study's slot, by name: held by the study's open [`StudyTx`] in this process, and holding
/// the study's state as of the last decision this process committed (empty when unknown).
pub(crate) type StudyCache = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, StudySlot>>>;

/// One study's slot in [`StudyCache`].
pub(crate) type StudySlot = std::sync::Arc<tokio::sync::Mutex<Option<CachedStudy>>>;

/// Trials and reports of a study at a version.
#[derive(Debug)]
pub(crate) struct CachedStudy {
    version: i64,
    trials: Vec<TrialRow>,
    views: Vec<TrialView>,
    reports: Vec<ReportRow>,
    artifact_location: Option<String>,
}

/// The tuner's state of a trial row, as samplers and schedulers read it: queued and running
/// trials are pending; stopped trials count as failed (excluded from models).
pub fn tuner_state(state: &str) -> TrialState {
    match state {
        "queued" | "running" => TrialState::Running,
        "paused" => TrialState::Paused,
        "complete" => TrialState::Complete,
        "pruned" => TrialState::Pruned,
        _ => TrialState::Failed,
    }
}

/// The tuner's view of a trial row, without its reports.
fn trial_view(t: &TrialRow) -> Result<TrialView> {
    let params = serde_json::from_str(&t.params).map_err(|e| Error::Db(sqlx::Error::Decode(format!("stored params of trial {}: {e}", t.number).into())))?;
    let mut v = TrialView::running(t.number as u64, params);
    v.state = tuner_state(&t.state);
    v.value = t.value;
    Ok(v)
}

/// Where the statements of one study's decision go.
enum StudyWrites {
    /// Postgres: the statements are queued and run at commit in this transaction, which holds
    /// the study's row lock, chained into as few statements as keep their meaning (see
    /// [`chained`]): each statement is a round trip to the database, made while every other
    /// decision about the study waits.
    Transaction { tx: Transaction<'static, Any>, queue: Vec<SqlFragment> },
    /// SQLite: the statements are queued and run at commit in one transaction on the native
    /// writer, in one trip to a blocking thread. sqlx's SQLite driver costs a trip to its worker
    /// thread per statement (about 100 us here, most of it waking threads), and a decision that
    /// starts a trial has a dozen, all while every other decision about the study waits. `lock`,
    /// the store's one sqlx write connection, keeps every other write of the process out
    /// meanwhile, as it does for the group commit.
    Queued { lock: PoolConnection<Any>, writer: Arc<NativeWriter>, queue: Vec<QueuedWrite> },
}

/// A write of a SQLite decision, run at commit.
enum QueuedWrite {
    Statement(SqlFragment),
    Metric { run_id: String, point: NewMetric },
}

impl StudyWrites {
    /// The connection for the decision's reads.
    fn connection(&mut self) -> &mut sqlx::AnyConnection {
        match self {
            StudyWrites::Transaction { tx, .. } => tx,
            StudyWrites::Queued { lock, .. } => lock,
        }
    }
}

/// One study's decision transaction, with its trials (trial `n` at index `n`) and reports.
/// Change a trial in `trials`, then [`StudyTx::save_trial`] it. Dropping the transaction without
/// [`StudyTx::commit`] rolls back (and forgets the in-memory copy).
pub struct StudyTx {
    writes: StudyWrites,
    dialect: Dialect,
    last_blocks: LastBlocks,
    /// The study as read when the transaction began.
    pub study: StudyRow,
    /// The study's version once this transaction commits (the version read, plus one).
    version: i64,
    /// All trials, by number.
    pub trials: Vec<TrialRow>,
    /// The tuner's view of each trial (params decoded, reports as intermediate values), kept
    /// in step with `trials` and `reports`: rebuilding thousands of them on every decision
    /// would dominate its cost.
    pub views: Vec<TrialView>,
    /// All reports, by trial and step.
    pub reports: Vec<ReportRow>,
    /// Numbers of the running trials whose lease had expired when the transaction began.
    pub expired: Vec<i64>,
    /// The study's experiment's artifact location, once read (it never changes after the
    /// experiment is created).
    artifact_location: Option<String>,
    /// The study's slot, held until the transaction ends; emptied while it is open, so that a
    /// rollback leaves nothing to trust.
    copy: tokio::sync::OwnedMutexGuard<Option<CachedStudy>>,
}

impl StudyTx {
    /// Queues `statement` for the commit.
    fn write(&mut self, statement: SqlFragment) {
        match &mut self.writes {
            StudyWrites::Transaction { queue, .. } => queue.push(statement),
            StudyWrites::Queued { queue, .. } => queue.push(QueuedWrite::Statement(statement)),
        }
    }

    fn write_all(&mut self, statements: Vec<SqlFragment>) {
        for statement in statements {
            self.write(statement);
        }
    }

    /// Inserts a new trial (appended to `trials`) together with its run (RUNNING when the trial
    /// is inserted leased, else SCHEDULED), its params as run params and its study tags.
    pub async fn insert_trial(&mut self, trial: TrialRow, experiment_id: i64, artifact_root: &str, run_params: &[(String, String)], tags: &[(String, String)]) -> Result<()> {
        let run_name = format!("{}-trial-{}", self.study.name, trial.number);
        let artifact_uri = format!("{}/{}/artifacts", artifact_root.trim_end_matches('/'), trial.run_uuid);
        let status = if trial.state == "running" { "RUNNING" } else { "SCHEDULED" };
        self.write(SqlFragment {
            sql: "insert into run (run_uuid, experiment_id, run_name, user_id, status, start_time, artifact_uri, lifecycle_stage) values ($1, $2, $3, 'tracker', $4, $5, $6, 'active')".into(),
            binds: vec![Bind::Text(trial.run_uuid.clone()), Bind::Int(experiment_id), Bind::Text(run_name.clone()), Bind::Text(status.into()), Bind::Int(now_ms()), Bind::Text(artifact_uri)],
        });
        let mut all_tags = vec![("mlflow.runName".to_owned(), run_name), ("mlflow.user".to_owned(), "tracker".to_owned())];
        all_tags.extend_from_slice(tags);
        self.write_all(tag_upserts(self.dialect, &trial.run_uuid, all_tags.iter().map(|(k, v)| (k, v))));
        self.write_all(new_run_param_inserts(self.dialect, &trial.run_uuid, run_params));
        let mut binds = vec![Bind::Text(trial.study.clone()), Bind::Int(trial.number), Bind::Text(trial.run_uuid.clone()), Bind::Text(trial.params.clone())];
        binds.extend(trial_state_binds(&trial));
        self.write(SqlFragment {
            sql: format!(
                "insert into trial ({TRIAL_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
            ),
            binds,
        });
        // Its first report then logs its metric without reading for a last block first (if this
        // transaction rolls back, the run never exists and the note is never read).
        self.last_blocks.new_run(&trial.run_uuid);
        self.views.push(trial_view(&trial)?);
        self.trials.push(trial);
        Ok(())
    }

    /// The artifact location of the study's experiment, read through this transaction's
    /// connection (on Postgres a second pooled connection could deadlock against waiters on the
    /// study lock).
    pub async fn artifact_location(&mut self) -> Result<String> {
        if let Some(loc) = &self.artifact_location {
            return Ok(loc.clone());
        }
        let loc: String = sqlx::query_scalar("select artifact_location from experiment where experiment_id = $1")
            .bind(self.study.experiment_id)
            .fetch_one(self.writes.connection())
            .await?;
        self.artifact_location = Some(loc.clone());
        Ok(loc)
    }

    /// Writes back every mutable column of trial `index` (and updates its view).
    pub async fn save_trial(&mut self, index: usize) -> Result<()> {
        let t = &self.trials[index];
        self.views[index].state = tuner_state(&t.state);
        self.views[index].value = t.value;
        let mut binds = trial_state_binds(t);
        binds.extend([Bind::Text(t.study.clone()), Bind::Int(t.number)]);
        self.write(SqlFragment {
            sql: "update trial set state = $1, value = $2, last_step = $3, last_value = $4, checkpoint = $5, checkpoint_step = $6, target_step = $7, \
                  attempt = $8, lease_id = $9, worker_id = $10, lease_expires = $11, leased_time = $12, queued_time = $13, failures = $14, lost = $15, error = $16 \
                  where study = $17 and number = $18"
                .into(),
            binds,
        });
        Ok(())
    }

    /// Stores an accepted report with its decision (appended to `reports`).
    pub async fn insert_report(&mut self, r: ReportRow) -> Result<()> {
        self.write(SqlFragment {
            sql: "insert into trial_report (study, number, step, value, attempt, decision, next_milestone) values ($1, $2, $3, $4, $5, $6, $7)".into(),
            binds: vec![
                Bind::Text(self.study.name.clone()),
                Bind::Int(r.number),
                Bind::Int(r.step),
                Bind::Float(r.value),
                Bind::Int(r.attempt),
                Bind::Text(r.decision.clone()),
                Bind::int_or_null(r.next_milestone),
            ],
        });
        if let Some(v) = self.views.get_mut(r.number as usize) {
            v.intermediate.insert(r.step as u64, r.value);
        }
        self.reports.push(r);
        Ok(())
    }

    /// Logs a metric point to a trial's run, in this transaction.
    pub async fn log_metric(&mut self, run_id: &str, key: &str, value: f64, step: i64) -> Result<()> {
        let point = NewMetric { key: key.to_owned(), value, timestamp: now_ms(), step, dataset_name: None, dataset_digest: None, model_id: None };
        match &mut self.writes {
            StudyWrites::Transaction { tx, queue } => {
                queue.extend(metric_statements(tx, self.dialect, &self.last_blocks, &[(run_id, &[point])]).await?);
                Ok(())
            }
            StudyWrites::Queued { queue, .. } => {
                queue.push(QueuedWrite::Metric { run_id: run_id.to_owned(), point });
                Ok(())
            }
        }
    }

    /// Records contact with a worker (its `last_seen`) at this transaction's commit, so a lease
    /// that makes a decision pays no write of its own for it.
    pub fn touch_worker(&mut self, worker_id: &str, now: i64) {
        self.write(SqlFragment { sql: TOUCH_WORKER.into(), binds: vec![Bind::Int(now), Bind::Text(worker_id.to_owned())] });
    }

    /// Sets a trial run's status (and end time when terminal) and tags.
    pub async fn set_run_state(&mut self, run_id: &str, status: &str, tags: &[(String, String)]) -> Result<()> {
        let end_time = matches!(status, "FINISHED" | "FAILED" | "KILLED").then(now_ms);
        self.write(SqlFragment {
            sql: "update run set status = $1, end_time = $2 where run_uuid = $3".into(),
            binds: vec![Bind::Text(status.into()), Bind::int_or_null(end_time), Bind::Text(run_id.into())],
        });
        self.write_all(tag_upserts(self.dialect, run_id, tags.iter().map(|(k, v)| (k, v))));
        Ok(())
    }

    /// Sets the study's status (and its finished time for `finished` and `stopped`).
    pub async fn set_status(&mut self, status: &str) -> Result<()> {
        let finished = matches!(status, "finished" | "stopped").then(now_ms);
        self.write(SqlFragment {
            sql: "update study set status = $1, finished_time = $2 where name = $3".into(),
            binds: vec![Bind::Text(status.into()), Bind::int_or_null(finished), Bind::Text(self.study.name.clone())],
        });
        self.study.status = status.to_owned();
        self.study.finished_time = finished;
        Ok(())
    }

    /// Commits every change with the study's new version and keeps the state in memory for the
    /// next decision. On SQLite, a study whose version another process changed since the
    /// transaction began is busy: nothing is written and the request can be retried.
    pub async fn commit(mut self) -> Result<()> {
        match self.writes {
            StudyWrites::Transaction { mut tx, queue } => {
                for statement in chained(queue) {
                    bind_all(sqlx::query(&statement.sql), &statement.binds).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            StudyWrites::Queued { lock, writer, queue } => {
                let (name, version, last_blocks) = (self.study.name.clone(), self.version, self.last_blocks.clone());
                tokio::task::spawn_blocking(move || writer.with(|conn| commit_natively(conn, &last_blocks, &name, version, queue)))
                    .await
                    .map_err(|_| sqlx::Error::WorkerCrashed)??;
                drop(lock);
            }
        }
        *self.copy = Some(CachedStudy { version: self.version, trials: self.trials, views: self.views, reports: self.reports, artifact_location: self.artifact_location });
        Ok(())
    }
}

/// Parameters one chained statement takes at most (Postgres accepts 65,535).
const MAX_CHAINED_BINDS: usize = 30_000;

/// Postgres: `statements` joined, in order, into as few statements as keep their meaning, each a
/// chain of data-modifying `with` clauses (`with w0 as (insert ...), w1 as (update ...) insert
/// ...`), so a decision's writes cost one or two round trips instead of a dozen.
///
/// Every part of one statement sees the database as it was before the statement, and Postgres
/// applies only one of two changes to the same row. So a chain never holds two statements on the
/// same table: the second starts the next chain and sees the first one's rows. A statement that
/// is not an insert, update or delete runs alone.
fn chained(statements: Vec<SqlFragment>) -> Vec<SqlFragment> {
    let mut out = Vec::new();
    let mut chain: Vec<SqlFragment> = Vec::new();
    let mut tables: Vec<&'static str> = Vec::new();
    let mut binds = 0;
    let finish = |chain: &mut Vec<SqlFragment>, out: &mut Vec<SqlFragment>| {
        if chain.len() <= 1 {
            out.append(chain);
            return;
        }
        let (mut sql, mut all_binds) = (String::from("with "), Vec::new());
        let last = chain.len() - 1;
        for (i, statement) in chain.drain(..).enumerate() {
            let shifted = shift_placeholders(&statement.sql, all_binds.len());
            if i < last {
                sql.push_str(&format!("w{i} as ({shifted}), "));
            } else {
                sql.truncate(sql.len() - 2);
                sql.push(' ');
                sql.push_str(&shifted);
            }
            all_binds.extend(statement.binds);
        }
        out.push(SqlFragment { sql, binds: all_binds });
    };
    for statement in statements {
        let table = written_table(&statement.sql);
        let fits = table.is_some_and(|t| !tables.contains(&t)) && binds + statement.binds.len() <= MAX_CHAINED_BINDS;
        if !fits {
            finish(&mut chain, &mut out);
            tables.clear();
            binds = 0;
        }
        match table {
            Some(t) => {
                tables.push(t);
                binds += statement.binds.len();
                chain.push(statement);
            }
            None => out.push(statement),
        }
    }
    finish(&mut chain, &mut out);
    out
}

/// The table an `insert into`, `update` or `delete from` statement writes, if it is one of the
/// tables a decision writes.
fn written_table(sql: &str) -> Option<&'static str> {
    const TABLES: [&str; 10] = ["run", "tag", "param", "trial", "trial_report", "metric", "latest_metric", "metric_block", "study", "worker"];
    let rest = sql.strip_prefix("insert into ").or_else(|| sql.strip_prefix("update ")).or_else(|| sql.strip_prefix("delete from "))?;
    let name = rest.split(|c: char| c.is_whitespace() || c == '(').next()?;
    TABLES.into_iter().find(|t| *t == name)
}

/// `sql` with every placeholder `$n` renumbered `$(n + offset)`.
fn shift_placeholders(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut number = String::new();
        while let Some(&(_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
            number.push(d);
            chars.next();
        }
        if let Ok(n) = number.parse::<usize>() {
            out.push_str(&(n + offset).to_string());
        } else {
            out.push_str(&number);
        }
    }
    out
}

/// The columns of a trial from `state` on, in [`TRIAL_COLUMNS`] order: what a decision changes.
fn trial_state_binds(t: &TrialRow) -> Vec<Bind> {
    vec![
        Bind::Text(t.state.clone()),
        Bind::float_or_null(t.value),
        Bind::int_or_null(t.last_step),
        Bind::float_or_null(t.last_value),
        Bind::text_or_null(t.checkpoint.as_deref()),
        Bind::int_or_null(t.checkpoint_step),
        Bind::int_or_null(t.target_step),
        Bind::Int(t.attempt),
        Bind::text_or_null(t.lease_id.as_deref()),
        Bind::text_or_null(t.worker_id.as_deref()),
        Bind::int_or_null(t.lease_expires),
        Bind::int_or_null(t.leased_time),
        Bind::int_or_null(t.queued_time),
        Bind::Int(t.failures),
        Bind::Int(t.lost),
        Bind::text_or_null(t.error.as_deref()),
    ]
}

/// A SQLite decision's queued writes in one transaction, after moving the study to `version`
/// from the version before it. Blocking.
fn commit_natively(conn: &mut rusqlite::Connection, last_blocks: &LastBlocks, study: &str, version: i64, queue: Vec<QueuedWrite>) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let bumped = native::execute(&tx, "update study set version = $1 where name = $2 and version = $3", &[Bind::Int(version), Bind::Text(study.to_owned()), Bind::Int(version - 1)])?;
    if bumped != 1 {
        // Another process wrote to this study since the decision read it: the decision may rest
        // on a stale history, so it is dropped; the caller's retry reads the new one.
        return Err(Error::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some(format!("study '{study}' was changed by another process during this decision; retry")),
        )));
    }
    for write in &queue {
        match write {
            QueuedWrite::Statement(statement) => {
                native::execute(&tx, &statement.sql, &statement.binds)?;
            }
            QueuedWrite::Metric { run_id, point } => NativeWriter::insert_metrics(&tx, last_blocks, &[(run_id.as_str(), std::slice::from_ref(point))])?,
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(sql: &str, binds: usize) -> SqlFragment {
        SqlFragment { sql: sql.into(), binds: (0..binds as i64).map(Bind::Int).collect() }
    }

    /// The expired leases come back from Postgres as one `string_agg` text, null when none.
    #[test]
    fn trial_numbers_are_read_from_a_list() {
        assert_eq!(parse_numbers(None).unwrap(), Vec::<i64>::new());
        assert_eq!(parse_numbers(Some("")).unwrap(), Vec::<i64>::new());
        assert_eq!(parse_numbers(Some("3")).unwrap(), [3]);
        assert_eq!(parse_numbers(Some("0,17,4501")).unwrap(), [0, 17, 4501]);
        assert!(parse_numbers(Some("1,x")).is_err());
    }

    #[test]
    fn placeholders_are_renumbered_and_nothing_else_changes() {
        assert_eq!(shift_placeholders("update t set a = $1, b = '$x' where c = $10 and d = $", 4), "update t set a = $5, b = '$x' where c = $14 and d = $");
        assert_eq!(shift_placeholders("select 1", 3), "select 1");
    }

    #[test]
    fn a_chain_never_writes_one_table_twice() {
        let chained = chained(vec![
            statement("insert into run (a) values ($1)", 1),
            statement("insert into tag (a, b) values ($1, $2)", 2),
            statement("update trial set a = $1 where b = $2", 2),
            statement("update run set a = $1 where b = $2", 2),
            statement("insert into tag (a) values ($1)", 1),
        ]);
        let sql: Vec<&str> = chained.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            sql,
            [
                "with w0 as (insert into run (a) values ($1)), w1 as (insert into tag (a, b) values ($2, $3)) update trial set a = $4 where b = $5",
                "with w0 as (update run set a = $1 where b = $2) insert into tag (a) values ($3)",
            ]
        );
        let binds: Vec<Vec<Bind>> = chained.into_iter().map(|s| s.binds).collect();
        assert_eq!(binds.iter().map(Vec::len).collect::<Vec<_>>(), [5, 3]);
        assert!(matches!(binds[0][..], [Bind::Int(0), Bind::Int(0), Bind::Int(1), Bind::Int(0), Bind::Int(1)]));
    }

    #[test]
    fn statements_that_cannot_chain_run_alone_in_order() {
        let chained = chained(vec![
            statement("update study set a = $1", 1),
            statement("select 1", 0),
            statement("insert into experiment (a) values ($1)", 1),
            statement("insert into trial (a) values ($1)", MAX_CHAINED_BINDS),
            statement("insert into run (a) values ($1)", 1),
        ]);
        let sql: Vec<&str> = chained.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            sql,
            ["update study set a = $1", "select 1", "insert into experiment (a) values ($1)", "insert into trial (a) values ($1)", "insert into run (a) values ($1)"]
        );
    }
}
