//! The store as the server sees it: one [`Backend`] trait, two implementations.
//!
//! - [`DirBackend`]: the directory [`Store`] (the default), its calls on tokio's blocking pool;
//!   a download is the opened file itself, which the server sends with `sendfile`.
//! - [`S3Backend`](super::s3::S3Backend): any S3-compatible object store, so that several
//!   servers serve the same buckets; a download is a stream of byte chunks.
//!
//! Both keep the same promises: names are [`Name`]s, an upload is visible whole or not at
//! all ([`Put::commit`]; dropping a [`Put`] leaves nothing), listings are sorted by name.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use tokio::io::AsyncWriteExt;

use super::store::{FileEntry, Name, PutMode, Store, StoreError, Upload};

/// What a download reads from.
pub enum Body {
    /// A local file, opened before the reply; the server sends it with `sendfile`.
    File(std::fs::File),
    /// Chunks from elsewhere, in order, `size` bytes in all.
    Stream(BoxStream<'static, Result<Bytes, StoreError>>),
}

/// An opened download: its size (for the reply line) and its bytes.
pub struct Download {
    pub size: u64,
    pub body: Body,
}

/// An upload in progress. [`Put::commit`] makes it visible whole; dropping it instead leaves
/// nothing visible.
pub trait Put: Send {
    /// Takes the next bytes of the file.
    fn write<'a>(&'a mut self, bytes: &'a [u8]) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Makes the file visible, whole (after the last byte).
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>>;
}

/// The operations of SPEC-buckets 1 on some storage. The futures own what they need.
pub trait Backend: Send + Sync + 'static {
    /// Where the buckets are, for the start line (`root ./buckets`, `s3 s3://b/p at ...`).
    fn describe(&self) -> String;
    fn create_bucket(&self, bucket: Name) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Deletes a bucket and every file in it.
    fn delete_bucket(&self, bucket: Name) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The buckets, sorted by name.
    fn list_buckets(&self) -> BoxFuture<'_, Result<Vec<Name>, StoreError>>;
    /// The files of one bucket (`Some`), or of every bucket, sorted by bucket then name.
    fn list_files(&self, bucket: Option<Name>) -> BoxFuture<'_, Result<Vec<FileEntry>, StoreError>>;
    /// Whether the file is there now (a courtesy check; [`Put::commit`] decides).
    fn file_exists(&self, bucket: Name, name: Name) -> BoxFuture<'_, Result<bool, StoreError>>;
    fn get(&self, bucket: Name, name: Name) -> BoxFuture<'_, Result<Download, StoreError>>;
    fn delete_file(&self, bucket: Name, name: Name) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Starts an upload of `size` bytes.
    fn begin_put(
        &self,
        bucket: Name,
        name: Name,
        mode: PutMode,
        size: u64,
    ) -> BoxFuture<'_, Result<Box<dyn Put>, StoreError>>;
}

/// Where a server keeps its buckets.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// A directory (created when missing).
    Dir(PathBuf),
    /// An S3-compatible object store.
    S3(super::s3::S3Config),
}

impl StoreConfig {
    /// Opens the store: for S3, one listing proves the store reachable, the credentials good
    /// and the S3 bucket there.
    pub async fn open(&self) -> Result<Arc<dyn Backend>, StoreError> {
        match self {
            StoreConfig::Dir(root) => {
                let root = root.clone();
                let store = blocking(move || Store::open(&root)).await?;
                Ok(Arc::new(DirBackend { store: Arc::new(store) }))
            }
            StoreConfig::S3(config) => Ok(Arc::new(super::s3::S3Backend::open(config).await?)),
        }
    }
}

impl std::fmt::Display for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Dir(root) => write!(f, "{}", root.display()),
            StoreConfig::S3(config) => write!(f, "{}", config.url),
        }
    }
}

/// The directory store behind the [`Backend`] trait.
pub struct DirBackend {
    store: Arc<Store>,
}

impl DirBackend {
    pub fn new(store: Store) -> DirBackend {
        DirBackend { store: Arc::new(store) }
    }

    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let store = self.store.clone();
        Box::pin(blocking(move || work(&store)))
    }
}

/// Runs a store operation on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| Err(StoreError::Io(io::Error::other(e))))
}

impl Backend for DirBackend {
    fn describe(&self) -> String {
        format!("root {}", self.store.path().display())
    }

    fn create_bucket(&self, bucket: Name) -> BoxFuture<'_, Result<(), StoreError>> {
        self.run(move |s| s.create_bucket(&bucket))
    }

    fn delete_bucket(&self, bucket: Name) -> BoxFuture<'_, Result<(), StoreError>> {
        self.run(move |s| s.delete_bucket(&bucket))
    }

    fn list_buckets(&self) -> BoxFuture<'_, Result<Vec<Name>, StoreError>> {
        self.run(|s| s.list_buckets())
    }

    fn list_files(&self, bucket: Option<Name>) -> BoxFuture<'_, Result<Vec<FileEntry>, StoreError>> {
        self.run(move |s| match &bucket {
            Some(b) => s.list_files(b),
            None => s.list_all_files(),
        })
    }

    fn file_exists(&self, bucket: Name, name: Name) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.run(move |s| s.file_exists(&bucket, &name))
    }

    fn get(&self, bucket: Name, name: Name) -> BoxFuture<'_, Result<Download, StoreError>> {
        self.run(move |s| s.get(&bucket, &name).map(|(file, size)| Download { size, body: Body::File(file) }))
    }

    fn delete_file(&self, bucket: Name, name: Name) -> BoxFuture<'_, Result<(), StoreError>> {
        self.run(move |s| s.delete_file(&bucket, &name))
    }

    fn begin_put(
        &self,
        bucket: Name,
        name: Name,
        mode: PutMode,
        _size: u64,
    ) -> BoxFuture<'_, Result<Box<dyn Put>, StoreError>> {
        let begun = self.run(move |s| {
            let mut upload = s.begin_put(&bucket, &name, mode)?;
            let clone = upload.file().try_clone()?;
            Ok((upload, clone))
        });
        Box::pin(async move {
            let (upload, clone) = begun.await?;
            let mut file = tokio::fs::File::from_std(clone);
            file.set_max_buf_size(super::server::BUFFER);
            Ok(Box::new(DirPut { upload, file }) as Box<dyn Put>)
        })
    }
}

/// An upload into the directory store: its temporary file and an async view of it.
struct DirPut {
    upload: Upload,
    file: tokio::fs::File,
}

fn io_error(e: io::Error) -> StoreError {
    if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) {
        StoreError::NoSpace
    } else {
        StoreError::Io(e)
    }
}

impl Put for DirPut {
    fn write<'a>(&'a mut self, bytes: &'a [u8]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.file.write_all(bytes).await.map_err(io_error) })
    }

    /// Waits for the last writes, then fsyncs and renames into place.
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>> {
        let DirPut { upload, mut file } = *self;
        Box::pin(async move {
            file.flush().await.map_err(io_error)?;
            drop(file);
            blocking(move || upload.commit()).await
        })
    }
}
