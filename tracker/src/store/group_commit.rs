//! Group commit of metric points on SQLite.
//!
//! SQLite has one writer, so the store writes through one connection. With a transaction per
//! request, eight clients logging metrics queue for that connection and each request pays its
//! own run lookup, begin, three statements and commit: six trips to sqlx's SQLite thread, about
//! 70 us apiece on 2 cores, most of it waking threads. Here one task takes every request that is
//! waiting when it is free and, holding sqlx's write connection as the process's write lock,
//! hands the whole group to a blocking thread with its own rusqlite connection
//! (`native::NativeWriter`): one trip, in which the group's runs are checked and all its points
//! stored in one transaction. Then each request is answered. A lone client sees no delay: its
//! request is a group of one.
//!
//! When a group's transaction fails, each of its requests is stored again on its own, so a
//! request's error is its own and the other requests of the group are not lost.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::{Connection, TransactionBehavior};
use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::native::{self, NativeWriter};
use super::runs::{check_active_stage, run_not_found, LastBlocks, NewMetric, RunPoints};
use super::search_sql::Bind;
use super::{Error, Result};

/// Points one group stores at most; a request is never split, so a group of one may hold more.
const MAX_GROUP_POINTS: usize = 20_000;

/// Requests one group holds at most: their run ids are parameters of one statement.
const MAX_GROUP_REQUESTS: usize = 1_000;

/// Metric points of one request, and where its result goes.
struct Pending {
    run_id: String,
    metrics: Vec<NewMetric>,
    done: oneshot::Sender<Result<()>>,
}

/// The queue to the group-commit task. The task ends when the last clone of the store is dropped.
#[derive(Debug, Clone)]
pub(super) struct GroupCommit {
    queue: mpsc::UnboundedSender<Pending>,
    counts: Arc<GroupCommitCounts>,
}

/// What the group commit has done since the store opened, for `/metrics`: requests per
/// transaction is how much grouping saves.
#[derive(Debug, Default)]
pub struct GroupCommitCounts {
    /// Transactions run, a failed group's retries of its requests one by one included.
    pub transactions: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
}

impl GroupCommit {
    /// Starts the task that stores points through `writer` while it holds `write`, the store's
    /// one sqlx write connection.
    pub(super) fn start(write: AnyPool, writer: Arc<NativeWriter>, last_blocks: LastBlocks) -> Self {
        let (queue, requests) = mpsc::unbounded_channel();
        let counts = Arc::new(GroupCommitCounts::default());
        tokio::spawn(commit_groups(requests, write, writer, last_blocks, counts.clone()));
        GroupCommit { queue, counts }
    }

    pub(super) fn counts(&self) -> &Arc<GroupCommitCounts> {
        &self.counts
    }

    /// Stores the points of one request, in a group with whatever else is waiting, and returns
    /// once they are committed.
    pub(super) async fn log(&self, run_id: &str, metrics: Vec<NewMetric>) -> Result<()> {
        let (done, result) = oneshot::channel();
        self.queue.send(Pending { run_id: run_id.to_owned(), metrics, done }).map_err(|_| Error::Db(sqlx::Error::PoolClosed))?;
        result.await.map_err(|_| Error::Db(sqlx::Error::WorkerCrashed))?
    }
}

async fn commit_groups(mut requests: mpsc::UnboundedReceiver<Pending>, write: AnyPool, writer: Arc<NativeWriter>, last_blocks: LastBlocks, counts: Arc<GroupCommitCounts>) {
    // A request that did not fit the last group opens the next one.
    let mut next: Option<Pending> = None;
    loop {
        let first = match next.take() {
            Some(pending) => pending,
            None => match requests.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        let mut points = first.metrics.len();
        let mut group = vec![first];
        while group.len() < MAX_GROUP_REQUESTS {
            let Ok(pending) = requests.try_recv() else { break };
            if points + pending.metrics.len() > MAX_GROUP_POINTS {
                next = Some(pending);
                break;
            }
            points += pending.metrics.len();
            group.push(pending);
        }
        counts.requests.fetch_add(group.len() as u64, Ordering::Relaxed);
        // Holding sqlx's one write connection keeps every other write of the store out.
        let lock = match write.acquire().await {
            Ok(lock) => lock,
            Err(e) => {
                // Every request gets the error; a pool that timed out stays retryable (503).
                let timed_out = matches!(e, sqlx::Error::PoolTimedOut);
                for pending in group {
                    let error = if timed_out { sqlx::Error::PoolTimedOut } else { sqlx::Error::Protocol(e.to_string()) };
                    let _ = pending.done.send(Err(Error::Db(error)));
                }
                continue;
            }
        };
        let (writer, last_blocks, counts) = (writer.clone(), last_blocks.clone(), counts.clone());
        // A panic drops the group's senders, and each request gets an error.
        let _ = tokio::task::spawn_blocking(move || writer.with(|conn| Ok(commit_group(conn, &last_blocks, &counts, group)))).await;
        drop(lock);
    }
}

/// Stores a group and answers its requests. Blocking.
fn commit_group(conn: &mut Connection, last_blocks: &LastBlocks, counts: &GroupCommitCounts, group: Vec<Pending>) {
    counts.transactions.fetch_add(1, Ordering::Relaxed);
    match store(conn, last_blocks, &group) {
        Ok(results) => {
            for (pending, result) in group.into_iter().zip(results) {
                let _ = pending.done.send(result);
            }
        }
        Err(e) if group.len() == 1 => {
            let _ = group.into_iter().next().map(|pending| pending.done.send(Err(e)));
        }
        Err(e) => {
            tracing::debug!(error = %e, requests = group.len(), "group commit failed; storing its requests one by one");
            for pending in group {
                counts.transactions.fetch_add(1, Ordering::Relaxed);
                let result = store(conn, last_blocks, std::slice::from_ref(&pending)).and_then(|mut results| results.remove(0));
                let _ = pending.done.send(result);
            }
        }
    }
}

/// Stores the points of `group` in one transaction, after checking in it that their runs exist
/// and are active. Returns each request's result (a refused run is that request's error alone),
/// or the error of the transaction, which then stored nothing.
fn store(conn: &mut Connection, last_blocks: &LastBlocks, group: &[Pending]) -> Result<Vec<Result<()>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let run_ids: BTreeSet<&str> = group.iter().map(|p| p.run_id.as_str()).collect();
    let sql = format!("select run_uuid, lifecycle_stage from run where run_uuid in ({})", vec!["?"; run_ids.len()].join(", "));
    let binds: Vec<Bind> = run_ids.iter().map(|id| Bind::Text((*id).to_owned())).collect();
    let stages: HashMap<String, String> = native::query::<(String, String)>(&tx, &sql, &binds)?.into_iter().collect();
    let results: Vec<Result<()>> = group
        .iter()
        .map(|p| match stages.get(&p.run_id) {
            None => Err(run_not_found(&p.run_id)),
            Some(stage) => check_active_stage(&p.run_id, stage),
        })
        .collect();
    let batches: Vec<RunPoints<'_>> =
        group.iter().zip(&results).filter(|(_, result)| result.is_ok()).map(|(p, _)| (p.run_id.as_str(), p.metrics.as_slice())).collect();
    if !batches.is_empty() {
        NativeWriter::insert_metrics(&tx, last_blocks, &batches)?;
    }
    tx.commit()?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::runs::NewRun;
    use crate::store::{BackendUri, Store};

    fn point(key: &str, step: i64) -> NewMetric {
        NewMetric { key: key.into(), value: step as f64 / 2.0, timestamp: 1_000 + step, step, dataset_name: None, dataset_digest: None, model_id: None }
    }

    async fn store_with_runs(dir: &tempfile::TempDir, count: usize) -> (Store, Vec<String>) {
        let store = Store::open(&BackendUri::Sqlite(dir.path().join("t.db"))).await.unwrap();
        let experiment_id = store.create_experiment("group", None, &[]).await.unwrap();
        let mut runs = Vec::new();
        for _ in 0..count {
            runs.push(store.create_run(NewRun { experiment_id: experiment_id.clone(), ..Default::default() }).await.unwrap().info.run_id);
        }
        (store, runs)
    }

    fn counts(group_commit: &GroupCommit) -> (u64, u64) {
        let counts = group_commit.counts();
        (counts.transactions.load(Ordering::Relaxed), counts.requests.load(Ordering::Relaxed))
    }

    async fn steps(store: &Store, run_id: &str, key: &str) -> Vec<i64> {
        store.metric_history(run_id, key, None, None).await.unwrap().metrics.iter().map(|m| m.step).collect()
    }

    /// Requests that arrive together are one group, and a request for an unknown or deleted run
    /// gets MLflow's error while the others of its group are stored.
    #[tokio::test]
    async fn a_group_answers_each_request_with_its_own_result() {
        let dir = tempfile::tempdir().unwrap();
        let (store, runs) = store_with_runs(&dir, 3).await;
        store.set_run_lifecycle(&runs[2], "deleted").await.unwrap();
        let group_commit = store.group_commit.clone().unwrap();
        // On this test's single-threaded runtime, all four are queued before the task runs.
        let (a, unknown, deleted, b) = tokio::join!(
            group_commit.log(&runs[0], vec![point("loss", 1), point("loss", 2)]),
            group_commit.log("no-such-run", vec![point("loss", 1)]),
            group_commit.log(&runs[2], vec![point("loss", 1)]),
            group_commit.log(&runs[1], vec![point("loss", 7), point("acc", 7)]),
        );
        a.unwrap();
        b.unwrap();
        assert_eq!(counts(&group_commit), (1, 4), "one transaction for the four requests");
        assert_eq!(unknown.unwrap_err().to_string(), "Run with id=no-such-run not found");
        let deleted = deleted.unwrap_err();
        assert!(matches!(deleted, Error::Invalid(_)), "{deleted:?}");
        assert!(deleted.to_string().contains("must be in the 'active' state. Current state is deleted."), "{deleted}");
        assert_eq!(steps(&store, &runs[0], "loss").await, [1, 2]);
        assert_eq!(steps(&store, &runs[1], "loss").await, [7]);
        assert_eq!(steps(&store, &runs[1], "acc").await, [7]);
        assert!(steps(&store, &runs[2], "loss").await.is_empty());
        let latest = store.get_run(&runs[0]).await.unwrap().data.metrics;
        assert_eq!((latest.len(), latest[0].step, latest[0].value), (1, 2, 1.0));
        let blocks = store.metric_blocks(&runs[1], "loss").await.unwrap();
        assert_eq!((blocks.len(), blocks[0].points, blocks[0].steps), (1, 1, (7, 7)));
    }

    /// When the group's transaction fails, its requests are stored one by one: only the request
    /// that fails alone is refused, and nothing of it is stored.
    #[tokio::test]
    async fn a_failed_group_is_stored_request_by_request() {
        let dir = tempfile::tempdir().unwrap();
        let (store, runs) = store_with_runs(&dir, 2).await;
        // A write the database refuses, as a full disk or a broken file would refuse one.
        sqlx::query("create trigger refuse_poison before insert on metric when new.key = 'poison' begin select raise(abort, 'refused'); end")
            .execute(&store.write)
            .await
            .unwrap();
        let group_commit = store.group_commit.clone().unwrap();
        let (a, poisoned, b) = tokio::join!(
            group_commit.log(&runs[0], vec![point("loss", 1)]),
            group_commit.log(&runs[0], vec![point("loss", 2), point("poison", 2)]),
            group_commit.log(&runs[1], vec![point("loss", 3)]),
        );
        a.unwrap();
        b.unwrap();
        assert_eq!(counts(&group_commit), (4, 3), "the group's transaction, then one for each request");
        assert!(poisoned.unwrap_err().to_string().contains("refused"));
        assert_eq!(steps(&store, &runs[0], "loss").await, [1], "the refused request's other point is not stored");
        assert_eq!(steps(&store, &runs[1], "loss").await, [3]);
        assert_eq!(store.get_run(&runs[0]).await.unwrap().data.metrics[0].step, 1);
    }
}
