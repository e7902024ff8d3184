//! The bucket store on disk (SPEC-buckets 1), with no sockets.
//!
//! A bucket is a directory directly under the root; a file is a regular file directly in its
//! bucket. Every path operation goes through a directory handle (`openat`, `mkdirat`,
//! `renameat`... with `O_NOFOLLOW`): the root is opened once, a bucket is opened relative to
//! the root's handle, a file relative to its bucket's handle. No path is ever built by joining
//! strings, and a [`Name`] cannot hold a separator, so nothing outside the root can be reached;
//! a symbolic link planted inside the root is never followed (it is refused, or removed as a
//! link when its bucket is deleted).
//!
//! Uploads ([`Store::begin_put`]) stream into a temporary file `.tmp-…` inside the bucket,
//! which [`Upload::commit`] fsyncs, renames into place (replacing, or only when the name is
//! free) and makes durable with an fsync of the bucket directory. An [`Upload`] dropped before
//! its commit removes its temporary file, and [`Store::open`] sweeps the ones a crash left.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

/// The longest name, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 255;
/// How deep a planted directory tree inside a bucket may be for a bucket delete to remove it.
const MAX_DELETE_DEPTH: usize = 32;
/// The prefix of the store's temporary files (names starting with `.` are reserved).
const TMP_PREFIX: &str = ".tmp-";

/// A bucket or file name that satisfies SPEC-buckets 1: the only way a name reaches the disk.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

/// Why a name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("name longer than 255 bytes")]
    TooLong,
    #[error("name is not UTF-8")]
    NotUtf8,
    #[error("name is . or ..")]
    Dots,
    #[error("name starts with a dot")]
    LeadingDot,
    #[error("name holds a slash or backslash")]
    Separator,
    #[error("name holds a control character or NUL")]
    Control,
    #[error("name holds white space")]
    Space,
    #[error("name holds a comma")]
    Comma,
}

impl Name {
    /// Checks `bytes` against every rule of SPEC-buckets 1.
    pub fn parse(bytes: &[u8]) -> Result<Name, NameError> {
        if bytes.is_empty() {
            return Err(NameError::Empty);
        }
        if bytes.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| NameError::NotUtf8)?;
        if text == "." || text == ".." {
            return Err(NameError::Dots);
        }
        for c in text.chars() {
            match c {
                '/' | '\\' => return Err(NameError::Separator),
                ',' => return Err(NameError::Comma),
                c if c.is_control() => return Err(NameError::Control),
                c if c.is_whitespace() => return Err(NameError::Space),
                _ => {}
            }
        }
        if text.starts_with('.') {
            return Err(NameError::LeadingDot);
        }
        Ok(Name(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Name, NameError> {
        Name::parse(s.as_bytes())
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What a store operation can fail with. The `Display` text is the short English reason the
/// server puts in its failure replies.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bad name: {0}")]
    BadName(#[from] NameError),
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("bucket exists")]
    BucketExists,
    #[error("no such file")]
    NoSuchFile,
    #[error("file exists")]
    FileExists,
    #[error("no space left on the server")]
    NoSpace,
    #[error("bucket holds a tree deeper than the store removes")]
    TooDeep,
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the object store's S3 bucket does not exist")]
    NoS3Bucket,
    #[error("the object store refused the credentials ({0}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")]
    Denied(String),
    #[error("the object store is throttling requests: try again later")]
    Throttled,
    #[error("the object store is unreachable: {0}")]
    Unreachable(String),
    #[error("object store error: {0}")]
    Remote(String),
    #[error("bad object store settings: {0}")]
    Config(String),
}

impl StoreError {
    fn io(errno: Errno) -> StoreError {
        if errno == Errno::NOSPC || errno == Errno::DQUOT {
            StoreError::NoSpace
        } else {
            StoreError::Io(errno.into())
        }
    }
}

impl From<Errno> for StoreError {
    fn from(errno: Errno) -> StoreError {
        StoreError::io(errno)
    }
}

/// Whether an upload may replace an existing file (codes `UPLOAD`) or must create a new one
/// (EAFIT `UPLOAD_FILE`, atomic: of two racing uploads of one name exactly one succeeds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    Replace,
    CreateNew,
}

/// One file of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub bucket: Name,
    pub name: Name,
    pub size: u64,
}

/// The store: a root directory held open by its handle.
#[derive(Debug)]
pub struct Store {
    root: OwnedFd,
    path: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl Store {
    /// Opens the store at `path`, creating the directory when missing, and removes the
    /// temporary files an interrupted process left in its buckets. `path` itself may be a
    /// symbolic link (the user named it); nothing inside it is followed.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path)?;
        let root = rustix::fs::open(&path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        let store = Store { root, path };
        for bucket in store.list_buckets()? {
            if let Ok(dir) = store.open_bucket(&bucket) {
                sweep_temporaries(dir.as_fd());
            }
        }
        Ok(store)
    }

    /// The root's path as given to [`Store::open`] (for messages only).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_bucket(&self, bucket: &Name) -> Result<OwnedFd, StoreError> {
        match rustix::fs::openat(&self.root, bucket.as_str(), dir_flags(), Mode::empty()) {
            Ok(fd) => Ok(fd),
            // A missing entry, a symbolic link (ELOOP with O_NOFOLLOW) or a non-directory.
            Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => Err(StoreError::NoSuchBucket),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates an empty bucket.
    pub fn create_bucket(&self, bucket: &Name) -> Result<(), StoreError> {
        match rustix::fs::mkdirat(&self.root, bucket.as_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) => {}
            Err(Errno::EXIST) => return Err(StoreError::BucketExists),
            Err(e) => return Err(e.into()),
        }
        rustix::fs::fsync(&self.root)?;
        Ok(())
    }

    /// Deletes a bucket and every file in it. Entries are removed through their directory's
    /// handle; a symbolic link is removed as a link, never followed.
    pub fn delete_bucket(&self, bucket: &Name) -> Result<(), StoreError> {
        let dir = self.open_bucket(bucket)?;
        empty_directory(dir.as_fd(), 0)?;
        drop(dir);
        match rustix::fs::unlinkat(&self.root, bucket.as_str(), AtFlags::REMOVEDIR) {
            Ok(()) => {}
            Err(Errno::NOENT) => return Err(StoreError::NoSuchBucket),
            Err(e) => return Err(e.into()),
        }
        rustix::fs::fsync(&self.root)?;
        Ok(())
    }

    /// The buckets, sorted by name (byte order). Entries that are not directories or whose
    /// names are not valid names (a planted symbolic link, a stray file) are not buckets.
    pub fn list_buckets(&self) -> Result<Vec<Name>, StoreError> {
        let mut names: Vec<Name> = entries(self.root.as_fd())?
            .into_iter()
            .filter(|(_, kind)| *kind == FileType::Directory)
            .map(|(name, _)| name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The files of one bucket with their sizes, sorted by name.
    pub fn list_files(&self, bucket: &Name) -> Result<Vec<FileEntry>, StoreError> {
        let dir = self.open_bucket(bucket)?;
        let mut files = Vec::new();
        for (name, kind) in entries(dir.as_fd())? {
            if kind != FileType::RegularFile {
                continue;
            }
            // Gone between the listing and the stat: not listed.
            if let Ok(stat) = rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile {
                    files.push(FileEntry { bucket: bucket.clone(), name, size: stat.st_size as u64 });
                }
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// The files of every bucket, sorted by bucket then name. A bucket deleted meanwhile is
    /// skipped.
    pub fn list_all_files(&self) -> Result<Vec<FileEntry>, StoreError> {
        let mut files = Vec::new();
        for bucket in self.list_buckets()? {
            match self.list_files(&bucket) {
                Ok(mut some) => files.append(&mut some),
                Err(StoreError::NoSuchBucket) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(files)
    }

    /// Whether a file of that name is in the bucket now (a courtesy check before an upload
    /// that must create; [`Upload::commit`] decides atomically).
    pub fn file_exists(&self, bucket: &Name, name: &Name) -> Result<bool, StoreError> {
        let dir = self.open_bucket(bucket)?;
        match rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens a file for reading and gives its size. The bytes read from the returned file are
    /// the ones of the moment it was opened, whatever replaces or deletes it afterwards.
    pub fn get(&self, bucket: &Name, name: &Name) -> Result<(File, u64), StoreError> {
        let dir = self.open_bucket(bucket)?;
        // NONBLOCK so that a planted FIFO cannot block the open; it is refused just below.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = match rustix::fs::openat(&dir, name.as_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::LOOP | Errno::NXIO) => return Err(StoreError::NoSuchFile),
            Err(e) => return Err(e.into()),
        };
        let stat = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(StoreError::NoSuchFile);
        }
        rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
        Ok((File::from(fd), stat.st_size as u64))
    }

    /// Deletes one file. Only a regular file is deleted.
    pub fn delete_file(&self, bucket: &Name, name: &Name) -> Result<(), StoreError> {
        let dir = self.open_bucket(bucket)?;
        match rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile => {}
            Ok(_) | Err(Errno::NOENT) => return Err(StoreError::NoSuchFile),
            Err(e) => return Err(e.into()),
        }
        match rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty()) {
            Ok(()) => {}
            Err(Errno::NOENT) => return Err(StoreError::NoSuchFile),
            Err(e) => return Err(e.into()),
        }
        rustix::fs::fsync(&dir)?;
        Ok(())
    }

    /// Starts an upload of `name` into `bucket`: a new temporary file in the bucket. Write the
    /// bytes to [`Upload::file`], then [`Upload::commit`]; dropping the upload instead leaves
    /// nothing behind.
    pub fn begin_put(&self, bucket: &Name, name: &Name, mode: PutMode) -> Result<Upload, StoreError> {
        let dir = self.open_bucket(bucket)?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        loop {
            let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let tmp = format!("{TMP_PREFIX}{}-{n}-{nanos}", std::process::id());
            match rustix::fs::openat(&dir, tmp.as_str(), flags, Mode::from_raw_mode(0o644)) {
                Ok(fd) => {
                    return Ok(Upload { dir, tmp, file: Some(File::from(fd)), target: name.clone(), mode });
                }
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// An upload in progress: a temporary file in its bucket.
#[derive(Debug)]
pub struct Upload {
    dir: OwnedFd,
    tmp: String,
    file: Option<File>,
    target: Name,
    mode: PutMode,
}

impl Upload {
    /// The temporary file to write the bytes to.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("the file is only taken by commit")
    }

    /// The name of the temporary file inside its bucket (for tests and diagnostics).
    pub fn temporary_name(&self) -> &str {
        &self.tmp
    }

    /// Makes the upload durable and visible: fsync of the file, rename into place (replacing,
    /// or only if the name is free), fsync of the bucket. On any error the temporary file is
    /// removed and the old file, if any, is untouched.
    pub fn commit(mut self) -> Result<(), StoreError> {
        let file = self.file.take().expect("commit runs once");
        file.sync_all().map_err(|e| match e.raw_os_error() {
            Some(code) if code == Errno::NOSPC.raw_os_error() => StoreError::NoSpace,
            _ => StoreError::Io(e),
        })?;
        drop(file);
        let dir = self.dir.as_fd();
        match self.mode {
            PutMode::Replace => rustix::fs::renameat(dir, self.tmp.as_str(), dir, self.target.as_str())?,
            PutMode::CreateNew => create_new(dir, &self.tmp, &self.target)?,
        }
        // The temporary name is gone: nothing for Drop to remove.
        self.tmp.clear();
        rustix::fs::fsync(dir)?;
        Ok(())
    }
}

fn create_new(dir: BorrowedFd<'_>, tmp: &str, target: &Name) -> Result<(), StoreError> {
    match rustix::fs::renameat_with(dir, tmp, dir, target.as_str(), RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => Err(StoreError::FileExists),
        // A file system without RENAME_NOREPLACE: a hard link is just as atomic.
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
            match rustix::fs::linkat(dir, tmp, dir, target.as_str(), AtFlags::empty()) {
                Ok(()) => {
                    let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
                    Ok(())
                }
                Err(Errno::EXIST) => Err(StoreError::FileExists),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.tmp.is_empty() {
            drop(self.file.take());
            let _ = rustix::fs::unlinkat(&self.dir, self.tmp.as_str(), AtFlags::empty());
        }
    }
}

/// The entries of a directory with valid names and their types (a type the directory does
/// not report is asked for with a no-follow stat).
fn entries(dir: BorrowedFd<'_>) -> Result<Vec<(Name, FileType)>, StoreError> {
    let mut reader = rustix::fs::Dir::read_from(dir)?;
    let mut out = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let Ok(name) = Name::parse(entry.file_name().to_bytes()) else { continue };
        let kind = match entry.file_type() {
            FileType::Unknown => match rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => FileType::from_raw_mode(stat.st_mode),
                Err(_) => continue,
            },
            kind => kind,
        };
        out.push((name, kind));
    }
    Ok(out)
}

/// Removes everything inside `dir`, whatever its names, without following a link.
fn empty_directory(dir: BorrowedFd<'_>, depth: usize) -> Result<(), StoreError> {
    if depth > MAX_DELETE_DEPTH {
        return Err(StoreError::TooDeep);
    }
    let mut reader = rustix::fs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_owned();
        if name.as_bytes() == b"." || name.as_bytes() == b".." {
            continue;
        }
        names.push((name, entry.file_type()));
    }
    for (name, kind) in names {
        let kind = match kind {
            FileType::Unknown => match rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => FileType::from_raw_mode(stat.st_mode),
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            },
            kind => kind,
        };
        if kind == FileType::Directory {
            match rustix::fs::openat(dir, name.as_c_str(), dir_flags(), Mode::empty()) {
                Ok(sub) => empty_directory(sub.as_fd(), depth + 1)?,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            }
            match rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            match rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Removes the temporary files a crashed upload left in a bucket.
fn sweep_temporaries(dir: BorrowedFd<'_>) {
    let Ok(mut reader) = rustix::fs::Dir::read_from(dir) else { return };
    let mut stale = Vec::new();
    while let Some(Ok(entry)) = reader.read() {
        if entry.file_name().to_bytes().starts_with(TMP_PREFIX.as_bytes()) {
            stale.push(entry.file_name().to_owned());
        }
    }
    for name in stale {
        let _ = rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::empty());
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;

    use proptest::prelude::*;

    use super::*;

    fn name(s: &str) -> Name {
        s.parse().unwrap()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("root")).unwrap();
        (dir, store)
    }

    fn put(store: &Store, bucket: &str, file: &str, bytes: &[u8], mode: PutMode) -> Result<(), StoreError> {
        let mut up = store.begin_put(&name(bucket), &name(file), mode)?;
        up.file().write_all(bytes).unwrap();
        up.commit()
    }

    fn read(store: &Store, bucket: &str, file: &str) -> Vec<u8> {
        let (mut f, size) = store.get(&name(bucket), &name(file)).unwrap();
        let mut out = Vec::new();
        f.read_to_end(&mut out).unwrap();
        assert_eq!(out.len() as u64, size);
        out
    }

    /// Every path under `dir`, relative, sorted.
    fn tree(dir: &Path) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                out.push(e.path().strip_prefix(base).unwrap().display().to_string());
                if e.file_type().unwrap().is_dir() {
                    walk(base, &e.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    #[test]
    fn names_follow_spec_section_1() {
        for good in ["a", "bucket-1", "Año_2020", "x.txt", "a..b", &"n".repeat(255)] {
            assert!(Name::parse(good.as_bytes()).is_ok(), "{good:?}");
        }
        let cases: &[(&[u8], NameError)] = &[
            (b"", NameError::Empty),
            (&[b'n'; 256], NameError::TooLong),
            (b".", NameError::Dots),
            (b"..", NameError::Dots),
            (b"../x", NameError::Separator),
            (b"/etc", NameError::Separator),
            (b"a\\b", NameError::Separator),
            (b"a\0b", NameError::Control),
            (b"a\x1bb", NameError::Control),
            (b"a\x7f", NameError::Control),
            (b"a b", NameError::Space),
            (b"a\tb", NameError::Control),
            ("a\u{a0}b".as_bytes(), NameError::Space),
            (b".hidden", NameError::LeadingDot),
            (b".tmp-1", NameError::LeadingDot),
            (b"a,b", NameError::Comma),
            (b"\xff\xfe", NameError::NotUtf8),
        ];
        for (bytes, why) in cases {
            assert_eq!(Name::parse(bytes), Err(*why), "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn buckets_and_files_round_trip_sorted() {
        let (_d, store) = store();
        for b in ["zeta", "alpha", "Beta"] {
            store.create_bucket(&name(b)).unwrap();
        }
        assert!(matches!(store.create_bucket(&name("alpha")), Err(StoreError::BucketExists)));
        let names: Vec<String> = store.list_buckets().unwrap().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["Beta", "alpha", "zeta"]);
        put(&store, "alpha", "b.txt", b"hello", PutMode::Replace).unwrap();
        put(&store, "alpha", "a.bin", &[0, 1, 2, 255], PutMode::Replace).unwrap();
        put(&store, "zeta", "z", b"", PutMode::Replace).unwrap();
        assert_eq!(read(&store, "alpha", "b.txt"), b"hello");
        let files = store.list_files(&name("alpha")).unwrap();
        assert_eq!(files.iter().map(|f| (f.name.as_str(), f.size)).collect::<Vec<_>>(), [("a.bin", 4), ("b.txt", 5)]);
        let all = store.list_all_files().unwrap();
        assert_eq!(
            all.iter().map(|f| format!("{} {} {}", f.bucket, f.name, f.size)).collect::<Vec<_>>(),
            ["alpha a.bin 4", "alpha b.txt 5", "zeta z 0"]
        );
        put(&store, "alpha", "b.txt", b"replaced", PutMode::Replace).unwrap();
        assert_eq!(read(&store, "alpha", "b.txt"), b"replaced");
        assert!(matches!(put(&store, "alpha", "b.txt", b"new", PutMode::CreateNew), Err(StoreError::FileExists)));
        assert_eq!(read(&store, "alpha", "b.txt"), b"replaced");
        put(&store, "alpha", "c", b"created", PutMode::CreateNew).unwrap();
        store.delete_file(&name("alpha"), &name("c")).unwrap();
        assert!(matches!(store.delete_file(&name("alpha"), &name("c")), Err(StoreError::NoSuchFile)));
        assert!(matches!(store.get(&name("alpha"), &name("c")), Err(StoreError::NoSuchFile)));
        assert!(matches!(store.list_files(&name("nope")), Err(StoreError::NoSuchBucket)));
        store.delete_bucket(&name("alpha")).unwrap();
        assert!(matches!(store.delete_bucket(&name("alpha")), Err(StoreError::NoSuchBucket)));
        assert_eq!(tree(store.path()), ["Beta", "zeta", "zeta/z"]);
    }

    #[test]
    fn a_download_keeps_the_bytes_it_opened() {
        let (_d, store) = store();
        store.create_bucket(&name("b")).unwrap();
        put(&store, "b", "f", b"old bytes", PutMode::Replace).unwrap();
        let (mut opened, size) = store.get(&name("b"), &name("f")).unwrap();
        put(&store, "b", "f", b"new", PutMode::Replace).unwrap();
        store.delete_file(&name("b"), &name("f")).unwrap();
        let mut out = Vec::new();
        opened.read_to_end(&mut out).unwrap();
        assert_eq!((out.as_slice(), size), (&b"old bytes"[..], 9));
    }

    #[test]
    fn an_interrupted_put_leaves_nothing() {
        let (_d, store) = store();
        store.create_bucket(&name("b")).unwrap();
        put(&store, "b", "keep", b"v1", PutMode::Replace).unwrap();
        let mut up = store.begin_put(&name("b"), &name("keep"), PutMode::Replace).unwrap();
        up.file().write_all(b"half of v2").unwrap();
        assert!(tree(store.path()).iter().any(|p| p.starts_with("b/.tmp-")));
        drop(up);
        assert_eq!(tree(store.path()), ["b", "b/keep"]);
        assert_eq!(read(&store, "b", "keep"), b"v1");
        // A crash leaves a temporary file: the next open sweeps it.
        std::fs::write(store.path().join("b/.tmp-999-1-2"), b"crashed").unwrap();
        let reopened = Store::open(store.path()).unwrap();
        assert_eq!(tree(reopened.path()), ["b", "b/keep"]);
        // A temporary file is never listed.
        let mut up = store.begin_put(&name("b"), &name("x"), PutMode::Replace).unwrap();
        up.file().write_all(b"x").unwrap();
        assert_eq!(store.list_files(&name("b")).unwrap().len(), 1);
        up.commit().unwrap();
        assert_eq!(store.list_files(&name("b")).unwrap().len(), 2);
    }

    #[test]
    fn an_upload_into_a_bucket_deleted_meanwhile_fails_cleanly() {
        let (_d, store) = store();
        store.create_bucket(&name("b")).unwrap();
        let mut up = store.begin_put(&name("b"), &name("f"), PutMode::Replace).unwrap();
        up.file().write_all(b"bytes").unwrap();
        store.delete_bucket(&name("b")).unwrap();
        assert!(up.commit().is_err());
        assert!(tree(store.path()).is_empty());
    }

    #[test]
    fn planted_symlinks_are_never_followed() {
        let (dir, store) = store();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        let root = store.path().to_path_buf();
        // A bucket that is a link out of the root, a loop, a file link out, a dangling link.
        symlink(&outside, root.join("out")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        store.create_bucket(&name("b")).unwrap();
        symlink(outside.join("secret"), root.join("b/secret")).unwrap();
        symlink("self", root.join("b/self")).unwrap();
        symlink(&outside, root.join("b/dir")).unwrap();

        assert_eq!(store.list_buckets().unwrap(), [name("b")]);
        assert!(matches!(store.list_files(&name("out")), Err(StoreError::NoSuchBucket)));
        assert!(matches!(store.list_files(&name("loop")), Err(StoreError::NoSuchBucket)));
        assert!(matches!(store.get(&name("out"), &name("secret")), Err(StoreError::NoSuchBucket)));
        assert!(matches!(store.begin_put(&name("out"), &name("x"), PutMode::Replace), Err(StoreError::NoSuchBucket)));
        assert!(matches!(store.delete_bucket(&name("out")), Err(StoreError::NoSuchBucket)));
        assert!(matches!(store.delete_file(&name("out"), &name("secret")), Err(StoreError::NoSuchBucket)));
        assert!(store.list_files(&name("b")).unwrap().is_empty());
        for f in ["secret", "self", "dir"] {
            assert!(matches!(store.get(&name("b"), &name(f)), Err(StoreError::NoSuchFile)), "{f}");
            assert!(matches!(store.delete_file(&name("b"), &name(f)), Err(StoreError::NoSuchFile)), "{f}");
        }
        // An upload over a link replaces the link itself, never its target.
        put(&store, "b", "secret", b"mine", PutMode::Replace).unwrap();
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
        assert!(matches!(put(&store, "b", "self", b"x", PutMode::CreateNew), Err(StoreError::FileExists)));
        // Deleting the bucket removes the links, not what they point to.
        store.delete_bucket(&name("b")).unwrap();
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
        assert_eq!(tree(&outside), ["secret"]);
        assert_eq!(tree(&root), ["loop", "out"]);
    }

    #[test]
    fn a_planted_fifo_is_refused_without_blocking() {
        let (_d, store) = store();
        store.create_bucket(&name("b")).unwrap();
        rustix::fs::mkfifoat(rustix::fs::CWD, store.path().join("b/pipe"), Mode::from_raw_mode(0o644)).unwrap();
        assert!(matches!(store.get(&name("b"), &name("pipe")), Err(StoreError::NoSuchFile)));
        store.delete_bucket(&name("b")).unwrap();
    }

    #[test]
    fn racing_create_new_uploads_give_one_winner() {
        let (_d, store) = store();
        store.create_bucket(&name("b")).unwrap();
        let store = std::sync::Arc::new(store);
        let results: Vec<bool> = (0..8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    put(&store, "b", "same", format!("writer {i}").as_bytes(), PutMode::CreateNew).is_ok()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(results.iter().filter(|ok| **ok).count(), 1);
        assert_eq!(tree(store.path()), ["b", "b/same"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

        /// Any sequence of uploads, each committed or dropped after any number of bytes, in
        /// either mode: the bucket holds exactly the committed versions, never a part, never a
        /// temporary file.
        #[test]
        fn interrupted_puts_leave_nothing(
            steps in proptest::collection::vec((0usize..3, 0usize..2000, any::<bool>(), any::<bool>()), 1..12)
        ) {
            let (_d, store) = store();
            store.create_bucket(&name("b")).unwrap();
            let mut want: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
            for (i, (file, len, commit, replace)) in steps.into_iter().enumerate() {
                let fname = format!("f{file}");
                let mode = if replace { PutMode::Replace } else { PutMode::CreateNew };
                let bytes = vec![i as u8; len];
                let mut up = store.begin_put(&name("b"), &name(&fname), mode).unwrap();
                up.file().write_all(&bytes).unwrap();
                if !commit {
                    drop(up);
                    continue;
                }
                match (up.commit(), mode, want.contains_key(&fname)) {
                    (Ok(()), _, _) => { want.insert(fname, bytes); }
                    (Err(StoreError::FileExists), PutMode::CreateNew, true) => {}
                    (other, _, _) => prop_assert!(false, "{other:?}"),
                }
            }
            let mut expected = vec!["b".to_owned()];
            expected.extend(want.keys().map(|f| format!("b/{f}")));
            prop_assert_eq!(tree(store.path()), expected);
            for (f, bytes) in &want {
                prop_assert_eq!(&read(&store, "b", f), bytes);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        /// Whatever bytes are offered as names, every accepted one stays a single entry
        /// directly in the root or its bucket, and nothing appears outside the root.
        #[test]
        fn no_name_escapes_the_root(
            raw in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..12),
                    proptest::collection::vec(prop_oneof![Just(b'.'), Just(b'/'), Just(b'\\'), Just(b'a'), Just(0u8)], 0..8),
                    Just(b"..".to_vec()), Just(b"/tmp".to_vec()), Just(b"../../etc".to_vec()),
                ],
                1..6,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path().join("root")).unwrap();
            let mut made = Vec::new();
            for pair in raw.chunks(2) {
                let (Ok(bucket), Some(Ok(file))) = (Name::parse(&pair[0]), pair.get(1).map(|f| Name::parse(f))) else {
                    if let Ok(bucket) = Name::parse(&pair[0]) {
                        let _ = store.create_bucket(&bucket);
                        made.push(bucket.to_string());
                    }
                    continue;
                };
                let bs = bucket.as_str();
                prop_assert!(!bs.contains('/') && bs != ".." && !bs.starts_with('.'));
                let _ = store.create_bucket(&bucket);
                made.push(bucket.to_string());
                let mut up = store.begin_put(&bucket, &file, PutMode::Replace).unwrap();
                up.file().write_all(b"x").unwrap();
                up.commit().unwrap();
                made.push(format!("{bucket}/{file}"));
            }
            made.sort();
            made.dedup();
            prop_assert_eq!(tree(&dir.path().join("root")), made);
            prop_assert_eq!(tree(dir.path()).iter().filter(|p| !p.starts_with("root")).count(), 0);
        }
    }
}
