//! `tracker backup` and `tracker restore`: the metadata (every table, from one snapshot; see
//! [`crate::store::backup`]) and the artifact files, into a folder and back, while the server runs.
//!
//! ```text
//! <backup>/db.jsonl          the tables, as JSON lines
//! <backup>/artifacts/...     every artifact file, at its path
//! <backup>/manifest.json     written last: row counts, file count; its presence marks a complete backup
//! ```
//!
//! The tables are read first and the files copied after, so every artifact that the backed-up
//! runs refer to is in the backup (unless deleted meanwhile); files uploaded during the copy may
//! be included too, without their runs' later metadata.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::artifacts::Artifacts;
use crate::store::Store;

const MANIFEST: &str = "manifest.json";
const TABLES_FILE: &str = "db.jsonl";
const ARTIFACTS_DIR: &str = "artifacts";

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of the folder.
    pub format: u32,
    /// Rows per table.
    pub tables: BTreeMap<String, u64>,
    /// Artifact files and their bytes.
    pub artifact_files: u64,
    pub artifact_bytes: u64,
}

/// Writes a backup of `store` and `artifacts` into `out`, which must not exist or be empty.
pub async fn backup(store: &Store, artifacts: &Artifacts, out: &Path) -> anyhow::Result<Manifest> {
    if out.exists() && std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?.next().is_some() {
        anyhow::bail!("{} is not empty: back up into a new folder", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let tables_path = out.join(TABLES_FILE);
    let file = std::fs::File::create(&tables_path).with_context(|| format!("creating {}", tables_path.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let counts = store.export(&mut writer).await.context("reading the tables")?;
    std::io::Write::flush(&mut writer).with_context(|| format!("writing {}", tables_path.display()))?;
    writer.get_ref().sync_all().with_context(|| format!("syncing {}", tables_path.display()))?;
    let copy = Artifacts::open(out.join(ARTIFACTS_DIR).to_str().context("a UTF-8 backup path")?)?;
    let (artifact_files, artifact_bytes) = artifacts.copy_all_to(&copy).await.context("copying the artifacts")?;
    let manifest = Manifest { format: 1, tables: counts.into_iter().collect(), artifact_files, artifact_bytes };
    std::fs::write(out.join(MANIFEST), serde_json::to_string_pretty(&manifest)?).context("writing the manifest")?;
    Ok(manifest)
}

/// Restores the backup in `from` into an empty `store` and `artifacts`.
pub async fn restore(from: &Path, store: &Store, artifacts: &Artifacts) -> anyhow::Result<Manifest> {
    let manifest_path = from.join(MANIFEST);
    let text = std::fs::read_to_string(&manifest_path).with_context(|| format!("{} is not a complete backup (no {MANIFEST})", from.display()))?;
    let manifest: Manifest = serde_json::from_str(&text).with_context(|| format!("reading {}", manifest_path.display()))?;
    anyhow::ensure!(manifest.format == 1, "backup format {} is newer than this tracker reads (1)", manifest.format);
    let tables_path = from.join(TABLES_FILE);
    let file = std::fs::File::open(&tables_path).with_context(|| format!("opening {}", tables_path.display()))?;
    let counts: BTreeMap<String, u64> = store.import(std::io::BufReader::new(file)).await.context("restoring the tables")?.into_iter().collect();
    anyhow::ensure!(counts == manifest.tables, "the restored row counts {counts:?} differ from the manifest's {:?}", manifest.tables);
    let copy = Artifacts::open(from.join(ARTIFACTS_DIR).to_str().context("a UTF-8 backup path")?)?;
    let (files, bytes) = copy.copy_all_to(artifacts).await.context("restoring the artifacts")?;
    anyhow::ensure!(
        (files, bytes) == (manifest.artifact_files, manifest.artifact_bytes),
        "restored {files} artifact files ({bytes} bytes) but the manifest lists {} ({} bytes)",
        manifest.artifact_files,
        manifest.artifact_bytes
    );
    Ok(manifest)
}
