//! Training data, free of burn: the shipped Korean data, the synthetic Korean tasks and users' JSONL.
//!
//! * [`korean_tasks`]: the exactly gradable synthetic tasks (a port of the reference
//!   `ko_synth.py`, cross-checked against its output), their held-out splits, grading and
//!   trivial baselines.
//! * [`jsonl`]: users' own data (`text`, `instruction`/`output` or chat `messages` records),
//!   validated line by line; malformed lines fail the file, never vanish.
//! * [`shipped`]: the Korean corpus, tax-ruling QA pairs and hanja pairs embedded in the binary.
//!
//! Nothing here tokenizes or touches a model; that is [`crate::lm`]'s job.

pub mod jsonl;
pub mod korean_tasks;
pub mod shipped;

pub use jsonl::{parse_jsonl, read_jsonl, BadLine, DataError, Message, Record, Role};
pub use korean_tasks::{generate, grade, grade_lenient, trivial_baseline, Example, TaskKind, TaskSplit};
