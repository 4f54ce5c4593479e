//! Artifact bytes behind `object_store`: a local folder by default, S3 (or any S3-compatible
//! service) for scale, memory in tests.
//!
//! Keys follow MLflow's layout under the artifact root: `<exp>/<run>/artifacts/<path>` and
//! `<exp>/models/<model_id>/artifacts/<path>`, so a root written by `mlflow server` reads the same.
//! Uploads and downloads stream in chunks; no file is ever held whole in memory.
//! Every path from a client passes [`ArtifactPath::parse`], which refuses anything that could
//! leave the root.

use std::sync::Arc;

use api::mlflow::FileInfo;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, WriteMultipart};

/// An artifact error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path is not allowed (traversal, absolute, empty segment).
    #[error("{0}")]
    InvalidPath(String),
    /// No file at that path.
    #[error("{0}")]
    NotFound(String),
    /// Reading the request body failed.
    #[error("{0}")]
    Body(String),
    /// The object store failed.
    #[error(transparent)]
    Store(object_store::Error),
}

impl From<object_store::Error> for Error {
    /// A file where a folder is needed, or a folder where a file is (`a.txt/b` after `a.txt`), is
    /// the client's error; `LocalFileSystem` reports it only as a generic error with an I/O cause.
    fn from(e: object_store::Error) -> Self {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                if matches!(io.kind(), std::io::ErrorKind::NotADirectory | std::io::ErrorKind::IsADirectory) {
                    return Error::InvalidPath(format!("Invalid artifact path: a file and a folder clash ({io})"));
                }
            }
            cause = c.source();
        }
        Error::Store(e)
    }
}

/// Result with the artifact error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A checked, relative artifact path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactPath(Path);

impl ArtifactPath {
    /// Checks a client path (already percent-decoded once by the router). Refused: absolute
    /// paths, `..` and `.` segments, backslashes, NUL and control characters, empty segments, and
    /// segments that are still percent-encoded traversal (`%2e%2e`), which a second decoding
    /// somewhere downstream could turn into `..`.
    pub fn parse(raw: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidPath(format!("Invalid artifact path '{raw}': {why}"));
        // Checked before trimming: "/" alone trims to "" (the root) but is still an absolute path.
        if raw.starts_with('/') {
            return Err(bad("absolute paths are not allowed"));
        }
        let trimmed = raw.trim_end_matches('/');
        if trimmed.is_empty() {
            return Ok(ArtifactPath(Path::default()));
        }
        if trimmed.contains(":\\") || trimmed.starts_with('\\') {
            return Err(bad("absolute paths are not allowed"));
        }
        if trimmed.chars().any(|c| c == '\\' || c == '\0' || c.is_control()) {
            return Err(bad("backslashes and control characters are not allowed"));
        }
        for segment in trimmed.split('/') {
            let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
            if segment.is_empty() {
                return Err(bad("empty path segments are not allowed"));
            }
            if segment == "." || segment == ".." || decoded == "." || decoded == ".." || decoded.contains('/') || decoded.contains('\\') {
                return Err(bad("'.' and '..' segments are not allowed"));
            }
        }
        let path = Path::parse(trimmed).map_err(|e| bad(&e.to_string()))?;
        Ok(ArtifactPath(path))
    }

    /// The object-store path.
    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

/// The artifact store.
#[derive(Clone, Debug)]
pub struct Artifacts {
    store: Arc<dyn ObjectStore>,
    /// The folder of a local store: `LocalFileSystem` keeps emptied directories, so deleting a
    /// folder also removes them here (otherwise listings would still show the folder).
    local_root: Option<std::path::PathBuf>,
    /// Where the bytes go, for logs and `/api/3.0/mlflow/server-info`.
    pub description: String,
}

impl Artifacts {
    /// Opens `--artifacts-destination`: a path, `file:///abs/path`, or `s3://bucket/prefix` (with
    /// the usual AWS environment variables; `MLFLOW_S3_ENDPOINT_URL` or `AWS_ENDPOINT_URL` select
    /// an S3-compatible endpoint).
    pub fn open(destination: &str) -> anyhow::Result<Self> {
        if let Some(rest) = destination.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                anyhow::bail!("`--artifacts-destination`: '{destination}' names no bucket");
            }
            let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Ok(endpoint) = std::env::var("MLFLOW_S3_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT_URL")) {
                builder = builder.with_allow_http(endpoint.starts_with("http://")).with_endpoint(endpoint);
            }
            let s3: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
            let store: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
                s3
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix.trim_matches('/')))
            };
            return Ok(Artifacts { store, local_root: None, description: destination.to_owned() });
        }
        if destination.contains("://") && !destination.starts_with("file://") {
            anyhow::bail!("`--artifacts-destination`: unsupported scheme in '{destination}'; use a path, file:// or s3://");
        }
        let path = destination.strip_prefix("file://").unwrap_or(destination);
        std::fs::create_dir_all(path)?;
        let root = std::fs::canonicalize(path)?;
        let store = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&root)?);
        Ok(Artifacts { store, description: root.display().to_string(), local_root: Some(root) })
    }

    /// Artifacts kept in memory, for tests.
    pub fn in_memory() -> Self {
        Artifacts { store: Arc::new(object_store::memory::InMemory::new()), local_root: None, description: "memory".into() }
    }

    /// Streams a request body into a file, replacing any file at that path. Returns the size.
    pub async fn put_stream<S, E>(&self, path: &ArtifactPath, mut body: S) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if path.0.as_ref().is_empty() {
            return Err(Error::InvalidPath("an artifact upload needs a file path".into()));
        }
        if let Some(root) = &self.local_root {
            // `LocalFileSystem` fails such uploads only with "Upload aborted": check first that
            // no folder sits at the path and no file at one of its parents.
            let target = root.join(path.0.as_ref());
            if tokio::fs::symlink_metadata(&target).await.is_ok_and(|m| m.is_dir()) {
                return Err(Error::InvalidPath(format!("Invalid artifact path '{}': a folder exists there", path.0)));
            }
            for parent in target.ancestors().skip(1).take_while(|p| p.starts_with(root) && *p != root.as_path()) {
                if tokio::fs::symlink_metadata(parent).await.is_ok_and(|m| !m.is_dir()) {
                    return Err(Error::InvalidPath(format!("Invalid artifact path '{}': a parent is a file", path.0)));
                }
            }
        }
        let upload = self.store.put_multipart(&path.0).await?;
        // 5 MiB parts: S3's minimum part size, and a bounded buffer for local files.
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(Error::Body(format!("reading the upload failed: {e}")));
                }
            };
            size += chunk.len() as u64;
            writer.wait_for_capacity(4).await?;
            writer.write(&chunk);
        }
        writer.finish().await?;
        Ok(size)
    }

    /// Opens a file for streaming: its size and its bytes.
    pub async fn get(&self, path: &ArtifactPath) -> Result<(u64, BoxStream<'static, Result<Bytes>>)> {
        match self.store.get(&path.0).await {
            Ok(res) => {
                let size = res.meta.size;
                Ok((size, res.into_stream().map_err(Error::from).boxed()))
            }
            Err(object_store::Error::NotFound { .. }) => Err(Error::NotFound(path.0.to_string())),
            // Below a file (`a.txt/b`) nothing can exist.
            Err(e) => match Error::from(e) {
                Error::InvalidPath(_) => Err(Error::NotFound(path.0.to_string())),
                other => Err(other),
            },
        }
    }

    /// Lists a folder: files with sizes and subfolders, names relative to the folder. A path that
    /// names a file, or nothing, lists as empty (MLflow answers `{}` for both).
    pub async fn list(&self, path: &ArtifactPath) -> Result<Vec<FileInfo>> {
        let prefix = if path.0.as_ref().is_empty() { None } else { Some(&path.0) };
        let listing = match self.store.list_with_delimiter(prefix).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            // Below a file (`a.txt/b`): nothing, as MLflow lists it.
            Err(e) => match Error::from(e) {
                Error::InvalidPath(_) => return Ok(Vec::new()),
                other => return Err(other),
            },
        };
        let mut files: Vec<FileInfo> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(|n| FileInfo { path: n.to_owned(), is_dir: true, file_size: None }))
            .chain(listing.objects.iter().filter_map(|o| {
                o.location.filename().map(|n| FileInfo { path: n.to_owned(), is_dir: false, file_size: Some(o.size as i64) })
            }))
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Copies every file of this store into `dest` (same paths), streaming each one; returns the
    /// number of files and bytes. Files written meanwhile may or may not be included.
    pub async fn copy_all_to(&self, dest: &Artifacts) -> Result<(u64, u64)> {
        let files: Vec<Path> = self.store.list(None).map_ok(|m| m.location).try_collect().await?;
        let (mut count, mut bytes) = (0, 0);
        for location in files {
            let path = ArtifactPath(location);
            let (_, stream) = match self.get(&path).await {
                Ok(found) => found,
                // Deleted since the listing.
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            bytes += dest.put_stream(&path, stream).await?;
            count += 1;
        }
        Ok((count, bytes))
    }

    /// Deletes a file, or a folder with everything below it. Deleting nothing is not an error;
    /// deleting the whole root is refused.
    pub async fn delete(&self, path: &ArtifactPath) -> Result<()> {
        if path.0.as_ref().is_empty() {
            return Err(Error::InvalidPath("refusing to delete the whole artifact root".into()));
        }
        // The files below first: `LocalFileSystem` answers a delete of a directory with a
        // generic "Is a directory" error, not with NotFound.
        let below: Vec<Path> = self.store.list(Some(&path.0)).map_ok(|m| m.location).try_collect().await?;
        for p in &below {
            match self.store.delete(p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(root) = &self.local_root {
            // `path` is checked (relative, no `.`/`..` segments), so this stays under the root.
            let dir = root.join(path.0.as_ref());
            if tokio::fs::symlink_metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
                match tokio::fs::remove_dir_all(&dir).await {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(Error::Store(object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) })),
                }
            }
        }
        if below.is_empty() {
            match self.store.delete(&path.0).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_absolute_paths_are_refused() {
        for bad in ["../x", "a/../../x", "/etc/passwd", "/", "//", "a//b", "a/./b", "%2e%2e/x", "a/%2E%2e", "a\\..\\b", "C:\\x", "a/%2f/b", "x\0y"] {
            assert!(ArtifactPath::parse(bad).is_err(), "{bad} should be refused");
        }
        for good in ["1/abc/artifacts/model.bin", "1/abc/artifacts/d/sub/", "", "a/b.c/d..e"] {
            assert!(ArtifactPath::parse(good).is_ok(), "{good} should be accepted");
        }
    }

    #[tokio::test]
    async fn put_list_get_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let a = Artifacts::open(dir.path().to_str().unwrap()).unwrap();
        let p = ArtifactPath::parse("0/r/artifacts/d/a.txt").unwrap();
        let chunks = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"hel")), Ok(Bytes::from_static(b"lo"))]);
        assert_eq!(a.put_stream(&p, chunks).await.unwrap(), 5);
        assert_eq!(std::fs::read(dir.path().join("0/r/artifacts/d/a.txt")).unwrap(), b"hello");
        let root = a.list(&ArtifactPath::parse("0/r/artifacts").unwrap()).await.unwrap();
        assert_eq!(root, vec![FileInfo { path: "d".into(), is_dir: true, file_size: None }]);
        let (size, stream) = a.get(&p).await.unwrap();
        let bytes: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert_eq!((size, bytes.concat()), (5, b"hello".to_vec()));
        assert!(a.list(&p).await.unwrap().is_empty(), "a file lists as empty");
        a.delete(&ArtifactPath::parse("0/r/artifacts/d").unwrap()).await.unwrap();
        assert!(matches!(a.get(&p).await, Err(Error::NotFound(_))));
        assert!(a.list(&ArtifactPath::parse("0/r/artifacts").unwrap()).await.unwrap().is_empty(), "the folder is gone too");
        assert!(a.delete(&ArtifactPath::parse("").unwrap()).await.is_err(), "the root is never deleted");
        a.delete(&ArtifactPath::parse("0/r/artifacts/missing").unwrap()).await.unwrap();
    }
}
