//! Studies, trials, their reports, and worker agents.
//!
//! Scheduling decisions are made in `crate::studies` from what these functions load; every
//! decision about one study runs inside one [`StudyTx`], which holds the study's slot in this
//! process, the study's row lock on Postgres (taken by the `update` that bumps its version, so
//! tracker replicas serialize per study) and the single write connection on SQLite. Load, decide and write therefore see and leave a consistent history.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use tuner::{TrialState, TrialView};

use super::runs::{insert_metrics, insert_params, upsert_tags, LastBlocks, NewMetric};
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
    pub async fn touch_worker(&self, worker_id: &str) -> Result<()> {
        sqlx::query("update worker set last_seen = $1 where worker_id = $2").bind(now_ms()).bind(worker_id).execute(&self.write).await?;
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
    /// study's row lock, taken by the statement that bumps its version (Postgres; SQLite has one
    /// writer). Correctness rests on the row lock and the version alone.
    pub async fn begin_study(&self, name: &str) -> Result<StudyTx> {
        let slot = self.study_cache.lock().map_err(|_| poisoned())?.entry(name.to_owned()).or_default().clone();
        let copy = slot.clone().lock_owned().await;
        let tx = self.write.begin().await?;
        self.open_study(name, slot, copy, tx).await
    }

    /// Like [`Store::begin_study`], but `None` at once when another decision about the study
    /// holds it: in this process, or on Postgres in another replica (`FOR UPDATE SKIP LOCKED`).
    /// On SQLite the one write connection already serializes every decision.
    pub async fn begin_study_unless_busy(&self, name: &str) -> Result<Option<StudyTx>> {
        let slot = self.study_cache.lock().map_err(|_| poisoned())?.entry(name.to_owned()).or_default().clone();
        let Ok(copy) = slot.clone().try_lock_owned() else { return Ok(None) };
        let mut tx = self.write.begin().await?;
        if self.dialect == Dialect::Postgres {
            let free = sqlx::query("select name from study where name = $1 for update skip locked").bind(name).fetch_optional(&mut *tx).await?;
            if free.is_none() {
                return Ok(None);
            }
        }
        self.open_study(name, slot, copy, tx).await.map(Some)
    }

    /// The rest of [`Store::begin_study`] once the study's slot is held: locks the study's row
    /// (bumping its version) and reads its trials, from the slot's copy when still current.
    async fn open_study(&self, name: &str, slot: StudySlot, mut copy: tokio::sync::OwnedMutexGuard<Option<CachedStudy>>, mut tx: Transaction<'static, Any>) -> Result<StudyTx> {
        // Locking and bumping in one statement saves a round trip per decision; a rollback
        // undoes the bump.
        let row = sqlx::query(&format!("update study set version = version + 1 where name = $1 returning {STUDY_COLUMNS}, version"))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            drop(copy);
            let mut slots = self.study_cache.lock().map_err(|_| poisoned())?;
            if slots.get(name).is_some_and(|s| std::sync::Arc::ptr_eq(s, &slot)) {
                slots.remove(name);
            }
            return Err(Error::NotFound(format!("Study '{name}' does not exist.")));
        };
        let study = study_from_row(&row)?;
        let version: i64 = row.try_get(6)?;
        let cached = copy.take().filter(|c| c.version == version - 1);
        let (trials, views, reports, artifact_location) = match cached {
            Some(c) => (c.trials, c.views, c.reports, c.artifact_location),
            None => {
                let rows = sqlx::query(&format!("select {TRIAL_COLUMNS} from trial where study = $1 order by number")).bind(name).fetch_all(&mut *tx).await?;
                let trials = rows.iter().map(trial_from_row).collect::<Result<Vec<_>>>()?;
                let rows = sqlx::query("select number, step, value, attempt, decision, next_milestone from trial_report where study = $1 order by number, step")
                    .bind(name)
                    .fetch_all(&mut *tx)
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
        // Heartbeats renew leases without the study lock, so expiry is read from the database:
        // only the leases that have run out (an index range, usually empty).
        let expired: Vec<i64> = sqlx::query_scalar("select number from trial where study = $1 and state = 'running' and lease_expires < $2 order by number")
            .bind(name)
            .bind(now_ms())
            .fetch_all(&mut *tx)
            .await?;
        let stx = StudyTx { tx, dialect: self.dialect, last_blocks: self.last_blocks.clone(), study, version, trials, views, reports, expired, artifact_location, copy };
        Ok(stx)
    }
}

/// A nullable double bound so that Postgres sees a `float8` parameter even when it is NULL.
///
/// sqlx 0.8.6's `any` driver sends a NULL `f64` to Postgres as a `float4` parameter (its NULL
/// mapping swaps `Real` and `Double`). The statement is then cached with a `float4` parameter,
/// and the next non-NULL `f64` fails with "incorrect binary data format". A NULL `f32` is sent
/// as `float8`, so NULLs are bound as that; values stay `f64` and exact.
fn nullable_double(v: Option<f64>) -> NullableDouble {
    NullableDouble(v)
}

struct NullableDouble(Option<f64>);

impl sqlx::Type<Any> for NullableDouble {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <f64 as sqlx::Type<Any>>::type_info()
    }
}

impl<'q> sqlx::Encode<'q, Any> for NullableDouble {
    fn encode_by_ref(&self, buf: &mut <Any as sqlx::Database>::ArgumentBuffer<'q>) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        match self.0 {
            Some(v) => <f64 as sqlx::Encode<'q, Any>>::encode_by_ref(&v, buf),
            None => <Option<f32> as sqlx::Encode<'q, Any>>::encode_by_ref(&None, buf),
        }
    }
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

/// One study's decision transaction, with its trials (trial `n` at index `n`) and reports.
/// Change a trial in `trials`, then [`StudyTx::save_trial`] it. Dropping the transaction without
/// [`StudyTx::commit`] rolls back (and forgets the in-memory copy).
pub struct StudyTx {
    tx: Transaction<'static, Any>,
    dialect: Dialect,
    last_blocks: LastBlocks,
    /// The study as locked.
    pub study: StudyRow,
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
    /// Inserts a new trial (appended to `trials`) together with its run (RUNNING when the trial
    /// is inserted leased, else SCHEDULED), its params as run params and its study tags.
    pub async fn insert_trial(&mut self, trial: TrialRow, experiment_id: i64, artifact_root: &str, run_params: &[(String, String)], tags: &[(String, String)]) -> Result<()> {
        let run_name = format!("{}-trial-{}", self.study.name, trial.number);
        let artifact_uri = format!("{}/{}/artifacts", artifact_root.trim_end_matches('/'), trial.run_uuid);
        sqlx::query(
            "insert into run (run_uuid, experiment_id, run_name, user_id, status, start_time, artifact_uri, lifecycle_stage) values ($1, $2, $3, 'tracker', $4, $5, $6, 'active')",
        )
        .bind(&trial.run_uuid)
        .bind(experiment_id)
        .bind(&run_name)
        .bind(if trial.state == "running" { "RUNNING" } else { "SCHEDULED" })
        .bind(now_ms())
        .bind(&artifact_uri)
        .execute(&mut *self.tx)
        .await?;
        let mut all_tags = vec![("mlflow.runName".to_owned(), run_name.clone()), ("mlflow.user".to_owned(), "tracker".to_owned())];
        all_tags.extend_from_slice(tags);
        upsert_tags(&mut self.tx, self.dialect, &trial.run_uuid, all_tags.iter().map(|(k, v)| (k, v))).await?;
        insert_params(&mut self.tx, self.dialect, &trial.run_uuid, run_params).await?;
        sqlx::query(&format!(
            "insert into trial ({TRIAL_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
        ))
        .bind(&trial.study)
        .bind(trial.number)
        .bind(&trial.run_uuid)
        .bind(&trial.params)
        .bind(&trial.state)
        .bind(nullable_double(trial.value))
        .bind(trial.last_step)
        .bind(nullable_double(trial.last_value))
        .bind(&trial.checkpoint)
        .bind(trial.checkpoint_step)
        .bind(trial.target_step)
        .bind(trial.attempt)
        .bind(&trial.lease_id)
        .bind(&trial.worker_id)
        .bind(trial.lease_expires)
        .bind(trial.leased_time)
        .bind(trial.queued_time)
        .bind(trial.failures)
        .bind(trial.lost)
        .bind(&trial.error)
        .execute(&mut *self.tx)
        .await?;
        self.views.push(trial_view(&trial)?);
        self.trials.push(trial);
        Ok(())
    }

    /// The artifact location of the study's experiment, read through this transaction (on
    /// Postgres a second pooled connection could deadlock against waiters on the study lock).
    pub async fn artifact_location(&mut self) -> Result<String> {
        if let Some(loc) = &self.artifact_location {
            return Ok(loc.clone());
        }
        let loc: String = sqlx::query_scalar("select artifact_location from experiment where experiment_id = $1")
            .bind(self.study.experiment_id)
            .fetch_one(&mut *self.tx)
            .await?;
        self.artifact_location = Some(loc.clone());
        Ok(loc)
    }

    /// Writes back every mutable column of trial `index` (and updates its view).
    pub async fn save_trial(&mut self, index: usize) -> Result<()> {
        let t = &self.trials[index];
        self.views[index].state = tuner_state(&t.state);
        self.views[index].value = t.value;
        sqlx::query(
            "update trial set state = $1, value = $2, last_step = $3, last_value = $4, checkpoint = $5, checkpoint_step = $6, target_step = $7, \
             attempt = $8, lease_id = $9, worker_id = $10, lease_expires = $11, leased_time = $12, queued_time = $13, failures = $14, lost = $15, error = $16 \
             where study = $17 and number = $18",
        )
        .bind(&t.state)
        .bind(nullable_double(t.value))
        .bind(t.last_step)
        .bind(nullable_double(t.last_value))
        .bind(&t.checkpoint)
        .bind(t.checkpoint_step)
        .bind(t.target_step)
        .bind(t.attempt)
        .bind(&t.lease_id)
        .bind(&t.worker_id)
        .bind(t.lease_expires)
        .bind(t.leased_time)
        .bind(t.queued_time)
        .bind(t.failures)
        .bind(t.lost)
        .bind(&t.error)
        .bind(&t.study)
        .bind(t.number)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Stores an accepted report with its decision (appended to `reports`).
    pub async fn insert_report(&mut self, r: ReportRow) -> Result<()> {
        sqlx::query("insert into trial_report (study, number, step, value, attempt, decision, next_milestone) values ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&self.study.name)
            .bind(r.number)
            .bind(r.step)
            .bind(r.value)
            .bind(r.attempt)
            .bind(&r.decision)
            .bind(r.next_milestone)
            .execute(&mut *self.tx)
            .await?;
        if let Some(v) = self.views.get_mut(r.number as usize) {
            v.intermediate.insert(r.step as u64, r.value);
        }
        self.reports.push(r);
        Ok(())
    }

    /// Logs a metric point to a trial's run, in this transaction.
    pub async fn log_metric(&mut self, run_id: &str, key: &str, value: f64, step: i64) -> Result<()> {
        let m = NewMetric { key: key.to_owned(), value, timestamp: now_ms(), step, dataset_name: None, dataset_digest: None, model_id: None };
        insert_metrics(&mut self.tx, self.dialect, &self.last_blocks, &[(run_id, &[m])]).await
    }

    /// Sets a trial run's status (and end time when terminal) and tags.
    pub async fn set_run_state(&mut self, run_id: &str, status: &str, tags: &[(String, String)]) -> Result<()> {
        let end_time = matches!(status, "FINISHED" | "FAILED" | "KILLED").then(now_ms);
        sqlx::query("update run set status = $1, end_time = $2 where run_uuid = $3").bind(status).bind(end_time).bind(run_id).execute(&mut *self.tx).await?;
        upsert_tags(&mut self.tx, self.dialect, run_id, tags.iter().map(|(k, v)| (k, v))).await
    }

    /// Sets the study's status (and its finished time for `finished` and `stopped`).
    pub async fn set_status(&mut self, status: &str) -> Result<()> {
        let finished = matches!(status, "finished" | "stopped").then(now_ms);
        sqlx::query("update study set status = $1, finished_time = $2 where name = $3")
            .bind(status)
            .bind(finished)
            .bind(&self.study.name)
            .execute(&mut *self.tx)
            .await?;
        self.study.status = status.to_owned();
        self.study.finished_time = finished;
        Ok(())
    }

    /// Commits every change (with the study's version, bumped when the transaction began) and
    /// keeps the state in memory for the next decision.
    pub async fn commit(mut self) -> Result<()> {
        self.tx.commit().await?;
        *self.copy = Some(CachedStudy { version: self.version, trials: self.trials, views: self.views, reports: self.reports, artifact_location: self.artifact_location });
        Ok(())
    }
}
