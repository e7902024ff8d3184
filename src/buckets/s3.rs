//! The bucket store on an S3-compatible object store, through the `object_store` crate, so
//! that several servers serve the same buckets.
//!
//! Layout inside the one S3 bucket, under the optional prefix `P`:
//! - a cartero bucket `B` is the key prefix `P/B/`, and exists while its empty marker object
//!   `P/B/.bucket` exists (names cannot start with a dot, so no file can collide with it);
//! - a file `F` of `B` is the object `P/B/F` (characters S3 paths cannot hold literally are
//!   percent-encoded in the key, and decoded when listed).
//!
//! An upload of at most [`PART`] bytes is one PUT; a larger one is a multipart upload whose
//! parts go out as they fill (at most two parts of memory per upload) and which is completed
//! only after the last byte, or aborted. EAFIT's create-new is a conditional PUT
//! (`If-None-Match: *`) when the store supports it (`conditional_put`), so of two racing
//! uploads exactly one wins; a larger create-new upload, and every create-new without
//! conditional puts, is checked first and written after, so two racing ones can both succeed
//! and the last to finish stays (see `docs/buckets.md`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, MultipartUpload, ObjectStore, ObjectStoreExt, PutMode as S3PutMode, PutOptions,
    PutPayload, RetryConfig,
};

use super::backend::{Backend, Body, Download, Put};
use super::store::{FileEntry, Name, PutMode, StoreError};

/// The size of an upload's parts, and the largest upload sent as one PUT.
pub(crate) const PART: usize = 8 << 20;
/// The marker object that makes a bucket exist.
const MARKER: &str = ".bucket";
/// How long one request to the store may take (downloads: each chunk, see the server).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How many requests a listing or a bucket delete has in flight at once.
const FAN_OUT: usize = 16;

/// Where an S3 backend keeps its buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// `s3://BUCKET[/PREFIX]` as given.
    pub url: String,
    pub bucket: String,
    /// The key prefix, without leading or trailing slashes (empty: the S3 bucket's top).
    pub prefix: String,
    /// The store's URL (`http://127.0.0.1:8333`); none: AWS_ENDPOINT or Amazon S3.
    pub endpoint: Option<String>,
    /// Whether the store honours `If-None-Match: *` on PUT (atomic create-new).
    pub conditional_put: bool,
    /// Retries of a failed or throttled request (with backoff from 100 ms).
    pub retries: usize,
}

/// Why an `s3://` URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3UrlError {
    #[error("{0:?} does not start with s3://")]
    Scheme(String),
    #[error("{0:?} names no S3 bucket (write s3://BUCKET or s3://BUCKET/PREFIX)")]
    NoBucket(String),
    #[error("{0:?} has an empty or dot segment in its prefix")]
    BadPrefix(String),
}

impl S3Config {
    /// Parses `s3://BUCKET[/PREFIX]`, with conditional puts on and 3 retries.
    pub fn parse(url: &str, endpoint: Option<String>) -> Result<S3Config, S3UrlError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| S3UrlError::Scheme(url.to_owned()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(S3UrlError::NoBucket(url.to_owned()));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() && prefix.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Err(S3UrlError::BadPrefix(url.to_owned()));
        }
        Ok(S3Config {
            url: url.to_owned(),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            endpoint,
            conditional_put: true,
            retries: 3,
        })
    }
}

/// The buckets on an object store.
pub struct S3Backend {
    inner: Arc<Inner>,
}

struct Inner {
    store: AmazonS3,
    prefix: Path,
    conditional_put: bool,
    describe: String,
}

/// Runs one request with the request timeout.
async fn timed<T>(work: impl std::future::Future<Output = object_store::Result<T>>) -> Result<T, StoreError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(result) => result.map_err(remote),
        Err(_) => Err(StoreError::Unreachable(format!("no answer in {}s", REQUEST_TIMEOUT.as_secs()))),
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// The text of an error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The S3 error code of an error body (`<Code>SlowDown</Code>`), if any.
fn s3_code(text: &str) -> Option<&str> {
    let start = text.find("<Code>")? + "<Code>".len();
    let end = start + text[start..].find("</Code>")?;
    Some(&text[start..end])
}

/// An object store error as a [`StoreError`] whose text fits a reply line.
fn remote(e: object_store::Error) -> StoreError {
    let text = chain(&e);
    let code = s3_code(&text).map(str::to_owned);
    // A request that got no answer (refused, reset, timed out), and its deepest cause.
    let (mut lost, mut cause) = (false, String::new());
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(http) = s.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind as Kind;
            lost |= matches!(http.kind(), Kind::Connect | Kind::Request | Kind::Timeout | Kind::Interrupted);
        }
        cause = s.to_string();
        source = s.source();
    }
    match (&e, code.as_deref()) {
        (_, Some("NoSuchBucket")) => StoreError::NoS3Bucket,
        (_, Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded" | "TooManyRequests")) => {
            StoreError::Throttled
        }
        (
            _,
            Some(
                code @ ("AccessDenied"
                | "SignatureDoesNotMatch"
                | "InvalidAccessKeyId"
                | "InvalidToken"
                | "ExpiredToken"
                | "InvalidSecurity"),
            ),
        ) => StoreError::Denied(code.to_owned()),
        (object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }, code) => {
            StoreError::Denied(code.unwrap_or("403").to_owned())
        }
        _ if text.contains("503 Service Unavailable") || text.contains("429 Too Many Requests") => {
            StoreError::Throttled
        }
        _ if lost => StoreError::Unreachable(short(&cause)),
        (_, Some(code)) => StoreError::Remote(code.to_owned()),
        _ => StoreError::Remote(short(&text)),
    }
}

/// At most 200 characters of `text`.
fn short(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// A name back from its (percent-encoded) path part; `None` for what is not a name.
fn decode(part: &str) -> Option<Name> {
    let text = percent_encoding::percent_decode_str(part).decode_utf8().ok()?;
    Name::parse(text.as_bytes()).ok()
}

impl Inner {
    fn bucket_path(&self, bucket: &Name) -> Path {
        self.prefix.clone().join(bucket.as_str())
    }

    fn file_path(&self, bucket: &Name, name: &Name) -> Path {
        self.bucket_path(bucket).join(name.as_str())
    }

    fn marker(&self, bucket: &Name) -> Path {
        self.bucket_path(bucket).join(MARKER)
    }

    async fn bucket_exists(&self, bucket: &Name) -> Result<bool, StoreError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.store.head(&self.marker(bucket))).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) if is_not_found(&e) => Ok(false),
            Ok(Err(e)) => Err(remote(e)),
            Err(_) => Err(StoreError::Unreachable("no answer".into())),
        }
    }

    /// `missing` when the bucket exists, else [`StoreError::NoSuchBucket`].
    async fn missing(&self, bucket: &Name, missing: StoreError) -> StoreError {
        match self.bucket_exists(bucket).await {
            Ok(true) => missing,
            Ok(false) => StoreError::NoSuchBucket,
            Err(e) => e,
        }
    }

    /// Every object under `path`, as (parts after the prefix, size), and their paths.
    async fn objects(&self, path: &Path) -> Result<(Vec<(Vec<String>, u64)>, Vec<Path>), StoreError> {
        let depth = self.prefix.parts_count();
        let listing = self.store.list(Some(path)).try_collect::<Vec<_>>();
        let metas = timed(listing).await?;
        let objects =
            metas.iter().map(|m| (m.location.parts().skip(depth).map(|p| p.as_ref().to_owned()).collect(), m.size));
        Ok((objects.collect(), metas.into_iter().map(|m| m.location).collect()))
    }

    /// The files of the objects listed: the entries `[bucket, file]` of the marked buckets.
    fn files(objects: Vec<(Vec<String>, u64)>) -> Vec<FileEntry> {
        let marked: std::collections::BTreeSet<&str> = objects
            .iter()
            .filter(|(parts, _)| parts.len() == 2 && parts[1] == MARKER)
            .map(|(parts, _)| parts[0].as_str())
            .collect();
        let mut files: Vec<FileEntry> = objects
            .iter()
            .filter(|(parts, _)| parts.len() == 2 && marked.contains(parts[0].as_str()))
            .filter_map(|(parts, size)| {
                Some(FileEntry { bucket: decode(&parts[0])?, name: decode(&parts[1])?, size: *size })
            })
            .collect();
        files.sort_by(|a, b| (&a.bucket, &a.name).cmp(&(&b.bucket, &b.name)));
        files
    }
}

/// Makes rustls use *ring* (the crate is built without aws-lc-rs); once per process.
fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client of the store of `config`, credentials and region from the `AWS_*` environment
/// variables (no request yet).
pub(crate) fn client(config: &S3Config) -> Result<AmazonS3, StoreError> {
    install_crypto();
    let options =
        ClientOptions::new().with_connect_timeout(Duration::from_secs(5)).with_timeout_disabled().with_allow_http(true);
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: config.retries,
        retry_timeout: Duration::from_secs(30),
    };
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&config.bucket)
        .with_client_options(options)
        .with_retry(retry)
        .with_conditional_put(if config.conditional_put {
            S3ConditionalPut::ETagMatch
        } else {
            S3ConditionalPut::Disabled
        });
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_endpoint(endpoint).with_allow_http(true);
    }
    builder.build().map_err(|e| StoreError::Config(short(&chain(&e))))
}

impl S3Backend {
    /// Connects to the store (credentials and region from the `AWS_*` environment variables)
    /// and lists the prefix once, so that an unreachable store, refused credentials or a
    /// missing S3 bucket are known at once.
    pub async fn open(config: &S3Config) -> Result<S3Backend, StoreError> {
        let store = client(config)?;
        let prefix = Path::from_iter(config.prefix.split('/').filter(|s| !s.is_empty()));
        let at = match &config.endpoint {
            Some(endpoint) => format!(" at {endpoint}"),
            None => String::new(),
        };
        let mode = if config.conditional_put { "conditional puts" } else { "no conditional puts" };
        let inner = Inner {
            store,
            prefix,
            conditional_put: config.conditional_put,
            describe: format!("store {}{at} ({mode})", config.url),
        };
        timed(inner.store.list_with_delimiter(Some(&inner.prefix))).await?;
        Ok(S3Backend { inner: Arc::new(inner) })
    }
}

impl Backend for S3Backend {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn create_bucket(&self, bucket: Name) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let s = &self.inner;
            let marker = s.marker(&bucket);
            let mode = if s.conditional_put {
                S3PutMode::Create
            } else {
                if s.bucket_exists(&bucket).await? {
                    return Err(StoreError::BucketExists);
                }
                S3PutMode::Overwrite
            };
            let options = PutOptions { mode, ..Default::default() };
            match tokio::time::timeout(REQUEST_TIMEOUT, s.store.put_opts(&marker, PutPayload::new(), options)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. })) => {
                    Err(StoreError::BucketExists)
                }
                Ok(Err(e)) => Err(remote(e)),
                Err(_) => Err(StoreError::Unreachable("no answer".into())),
            }
        })
    }

    /// Deletes the files, then the marker: a delete cut halfway leaves a bucket that still
    /// exists, with fewer files.
    fn delete_bucket(&self, bucket: Name) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let s = &self.inner;
            if !s.bucket_exists(&bucket).await? {
                return Err(StoreError::NoSuchBucket);
            }
            let base = s.bucket_path(&bucket);
            let (_, paths) = s.objects(&base).await?;
            let marker = s.marker(&bucket);
            futures_util::stream::iter(paths.into_iter().filter(|p| *p != marker))
                .map(|path| async move { timed(s.store.delete(&path)).await })
                .buffer_unordered(FAN_OUT)
                .try_collect::<Vec<()>>()
                .await?;
            timed(s.store.delete(&marker)).await
        })
    }

    /// The prefixes under the store's prefix that hold a marker.
    fn list_buckets(&self) -> BoxFuture<'_, Result<Vec<Name>, StoreError>> {
        Box::pin(async move {
            let s = &self.inner;
            let listing = timed(s.store.list_with_delimiter(Some(&s.prefix))).await?;
            let candidates: Vec<Name> =
                listing.common_prefixes.iter().filter_map(|p| p.filename().and_then(decode)).collect();
            let checked: Vec<Option<Name>> = futures_util::stream::iter(candidates)
                .map(|name| async move { Ok::<_, StoreError>(s.bucket_exists(&name).await?.then_some(name)) })
                .buffer_unordered(FAN_OUT)
                .try_collect()
                .await?;
            let mut names: Vec<Name> = checked.into_iter().flatten().collect();
            names.sort();
            Ok(names)
        })
    }

    fn list_files(&self, bucket: Option<Name>) -> BoxFuture<'_, Result<Vec<FileEntry>, StoreError>> {
        Box::pin(async move {
            let s = &self.inner;
            match bucket {
                Some(bucket) => {
                    let (objects, _) = s.objects(&s.bucket_path(&bucket)).await?;
                    let depth_ok =
                        |parts: &Vec<String>| parts.len() == 2 && decode(&parts[0]).as_ref() == Some(&bucket);
                    let objects: Vec<_> = objects.into_iter().filter(|(parts, _)| depth_ok(parts)).collect();
                    if !objects.iter().any(|(parts, _)| parts[1] == MARKER) {
                        return Err(StoreError::NoSuchBucket);
                    }
                    Ok(Inner::files(objects))
                }
                None => Ok(Inner::files(s.objects(&s.prefix).await?.0)),
            }
        })
    }

    fn file_exists(&self, bucket: Name, name: Name) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let s = &self.inner;
            match tokio::time::timeout(REQUEST_TIMEOUT, s.store.head(&s.file_path(&bucket, &name))).await {
                Ok(Ok(_)) => Ok(true),
                Ok(Err(e)) if is_not_found(&e) => match s.bucket_exists(&bucket).await? {
                    true => Ok(false),
                    false => Err(StoreError::NoSuchBucket),
                },
                Ok(Err(e)) => Err(remote(e)),
                Err(_) => Err(StoreError::Unreachable("no answer".into())),
            }
        })
    }

    fn get(&self, bucket: Name, name: Name) -> BoxFuture<'_, Result<Download, StoreError>> {
        Box::pin(async move {
            let s = &self.inner;
            match tokio::time::timeout(REQUEST_TIMEOUT, s.store.get(&s.file_path(&bucket, &name))).await {
                Ok(Ok(got)) => {
                    let size = got.meta.size;
                    let chunks = got.into_stream().map_err(remote).boxed();
                    Ok(Download { size, body: Body::Stream(chunks) })
                }
                Ok(Err(e)) if is_not_found(&e) => Err(s.missing(&bucket, StoreError::NoSuchFile).await),
                Ok(Err(e)) => Err(remote(e)),
                Err(_) => Err(StoreError::Unreachable("no answer".into())),
            }
        })
    }

    fn delete_file(&self, bucket: Name, name: Name) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let s = &self.inner;
            let path = s.file_path(&bucket, &name);
            match tokio::time::timeout(REQUEST_TIMEOUT, s.store.head(&path)).await {
                Ok(Ok(_)) => timed(s.store.delete(&path)).await,
                Ok(Err(e)) if is_not_found(&e) => Err(s.missing(&bucket, StoreError::NoSuchFile).await),
                Ok(Err(e)) => Err(remote(e)),
                Err(_) => Err(StoreError::Unreachable("no answer".into())),
            }
        })
    }

    fn begin_put(
        &self,
        bucket: Name,
        name: Name,
        mode: PutMode,
        size: u64,
    ) -> BoxFuture<'_, Result<Box<dyn Put>, StoreError>> {
        Box::pin(async move {
            let s = &self.inner;
            if !s.bucket_exists(&bucket).await? {
                return Err(StoreError::NoSuchBucket);
            }
            let target = s.file_path(&bucket, &name);
            let multipart = if size > PART as u64 {
                Some(Multipart { upload: timed(s.store.put_multipart(&target)).await?, in_flight: None })
            } else {
                None
            };
            let capacity = if multipart.is_some() { PART } else { size as usize };
            Ok(Box::new(S3Put {
                inner: self.inner.clone(),
                bucket,
                target,
                mode,
                buf: Vec::with_capacity(capacity),
                multipart,
            }) as Box<dyn Put>)
        })
    }
}

/// A multipart upload and its part on the way.
struct Multipart {
    upload: Box<dyn MultipartUpload>,
    in_flight: Option<tokio::task::JoinHandle<object_store::Result<()>>>,
}

impl Multipart {
    async fn wait(&mut self) -> Result<(), StoreError> {
        if let Some(part) = self.in_flight.take() {
            match tokio::time::timeout(REQUEST_TIMEOUT, part).await {
                Ok(Ok(result)) => result.map_err(remote)?,
                Ok(Err(e)) => return Err(StoreError::Io(std::io::Error::other(e))),
                Err(_) => return Err(StoreError::Unreachable("no answer".into())),
            }
        }
        Ok(())
    }

    /// Sends `bytes` as the next part, once the previous part is in.
    async fn send(&mut self, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.wait().await?;
        let part = self.upload.put_part(PutPayload::from(Bytes::from(bytes)));
        self.in_flight = Some(tokio::spawn(part));
        Ok(())
    }
}

/// An upload to the object store: one buffer, and the multipart upload of a large file.
struct S3Put {
    inner: Arc<Inner>,
    bucket: Name,
    target: Path,
    mode: PutMode,
    buf: Vec<u8>,
    multipart: Option<Multipart>,
}

impl Put for S3Put {
    fn write<'a>(&'a mut self, mut bytes: &'a [u8]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            while !bytes.is_empty() {
                let room = match self.multipart {
                    Some(_) => PART - self.buf.len(),
                    None => bytes.len(),
                };
                let (now, rest) = bytes.split_at(room.min(bytes.len()));
                self.buf.extend_from_slice(now);
                bytes = rest;
                if let Some(multipart) = &mut self.multipart {
                    if self.buf.len() == PART {
                        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(PART));
                        multipart.send(full).await?;
                    }
                }
            }
            Ok(())
        })
    }

    fn commit(mut self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async move {
            let s = self.inner.clone();
            let buf = std::mem::take(&mut self.buf);
            match self.multipart.as_mut() {
                None => {
                    let mode = match (self.mode, s.conditional_put) {
                        (PutMode::CreateNew, true) => S3PutMode::Create,
                        _ => S3PutMode::Overwrite,
                    };
                    let options = PutOptions { mode, ..Default::default() };
                    let payload = PutPayload::from(Bytes::from(buf));
                    match tokio::time::timeout(REQUEST_TIMEOUT, s.store.put_opts(&self.target, payload, options)).await
                    {
                        Ok(Ok(_)) => {}
                        Ok(Err(
                            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
                        )) => return Err(StoreError::FileExists),
                        Ok(Err(e)) => return Err(remote(e)),
                        Err(_) => return Err(StoreError::Unreachable("no answer".into())),
                    }
                }
                Some(multipart) => {
                    if !buf.is_empty() {
                        multipart.send(buf).await?;
                    }
                    multipart.wait().await?;
                    timed(multipart.upload.complete()).await?;
                    // Completed: nothing for Drop to abort.
                    self.multipart = None;
                }
            }
            // A bucket deleted during the upload must not come back holding the file.
            if !s.bucket_exists(&self.bucket).await? {
                let _ = timed(s.store.delete(&self.target)).await;
                return Err(StoreError::NoSuchBucket);
            }
            Ok(())
        })
    }
}

impl Drop for S3Put {
    /// An upload dropped before its completion is aborted in the background (best effort: a
    /// process killed meanwhile leaves invisible parts, which the store's lifecycle rules for
    /// incomplete multipart uploads remove).
    fn drop(&mut self) {
        if let Some(mut multipart) = self.multipart.take() {
            if let Some(part) = multipart.in_flight.take() {
                part.abort();
            }
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, multipart.upload.abort()).await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = S3Config::parse("s3://data/a/b/", None).unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("data", "a/b"));
        let c = S3Config::parse("s3://data", Some("http://127.0.0.1:1".into())).unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("data", ""));
        assert!(matches!(S3Config::parse("http://data", None), Err(S3UrlError::Scheme(_))));
        assert!(matches!(S3Config::parse("s3:///x", None), Err(S3UrlError::NoBucket(_))));
        assert!(matches!(S3Config::parse("s3://b/a//c", None), Err(S3UrlError::BadPrefix(_))));
        assert!(matches!(S3Config::parse("s3://b/../c", None), Err(S3UrlError::BadPrefix(_))));
    }

    #[test]
    fn error_codes() {
        assert_eq!(s3_code("x <Error><Code>SlowDown</Code></Error>"), Some("SlowDown"));
        assert_eq!(s3_code("nothing"), None);
        assert_eq!(decode("a%25b").unwrap().as_str(), "a%b");
        assert!(decode(".bucket").is_none());
    }

    #[test]
    fn files_only_of_marked_buckets_sorted() {
        let o = |b: &str, f: &str, n: u64| (vec![b.to_owned(), f.to_owned()], n);
        let objects = vec![
            o("b", "z", 1),
            o("b", MARKER, 0),
            o("a", "y", 2),
            o("a", MARKER, 0),
            o("orphan", "x", 3),
            (vec!["a".into(), "deep".into(), "x".into()], 4),
            o("a", ".tmp-1", 5),
        ];
        let files: Vec<String> =
            Inner::files(objects).iter().map(|f| format!("{} {} {}", f.bucket, f.name, f.size)).collect();
        assert_eq!(files, ["a y 2", "b z 1"]);
    }
}
