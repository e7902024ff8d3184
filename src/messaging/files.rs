//! GETFILE (SPEC 8): files passed from client to client, through the owner's listener.
//!
//! The owner's side is [`Offers`], the table of the files its user attached in a SENDATTACH
//! of this session, and [`serve_get_file`], which a listener runs on a `GET FILE` (or
//! `GET_FILE`) connection: it answers `OK\0<size>\0<bytes>` for a file of the table and
//! `ERROR\0` for anything else, reading the file in constant memory. No other path of the
//! machine is ever served.
//!
//! The requester's side is [`get_file`]: it reads the three answer forms that public clients
//! use ([`AnswerForm`]) and writes through a temporary file beside the destination, renamed
//! into place once the whole file is in and removed otherwise.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::messaging::codec::{put_field, Codec, MAX_FIELD_LEN};
use crate::messaging::wire::{Escaped, UnknownSetting};

/// The operation a requester sends to a listener, in the two spellings in use.
pub(crate) const GET_FILE_NAMES: [&[u8]; 2] = [b"GET FILE\0", b"GET_FILE\0"];
/// Files one session may offer at most (a client offers one per SENDATTACH).
const MAX_OFFERS: usize = 10_000;
/// Transfers one listener serves at once; more get `ERROR`.
const MAX_TRANSFERS: usize = 16;
/// How long a transfer may wait for the peer to take (or send) more bytes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The chunk a transfer reads and writes at a time: its memory, whatever the file's size.
const CHUNK: usize = 64 * 1024;

/// What a listener's first bytes say about its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionKind {
    /// Not known yet: the bytes so far are a prefix of `GET FILE\0` or `GET_FILE\0`.
    Undecided,
    /// A requester of a file.
    GetFile,
    /// Anything else: pushes from the server.
    Pushes,
}

pub(crate) fn classify(buf: &[u8]) -> ConnectionKind {
    let mut undecided = false;
    for name in GET_FILE_NAMES {
        if buf.starts_with(name) {
            return ConnectionKind::GetFile;
        }
        if name.starts_with(buf) {
            undecided = true;
        }
    }
    if undecided {
        ConnectionKind::Undecided
    } else {
        ConnectionKind::Pushes
    }
}

/// The files this session's user attached (SPEC 8), by the name sent in SENDATTACH. Cloning
/// shares the table: the client that sends and the listener that serves hold the same one.
#[derive(Debug, Clone, Default)]
pub struct Offers {
    files: Arc<Mutex<HashMap<Bytes, PathBuf>>>,
    transfers: Arc<AtomicUsize>,
}

impl Offers {
    pub fn new() -> Offers {
        Offers::default()
    }

    /// Offers the file named `name` (as sent in SENDATTACH; a relative name is taken from the
    /// current directory now). Returns false if the name is not a usable path or the table
    /// is full.
    pub fn offer(&self, name: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(name) else { return false };
        if text.is_empty() || name.len() > MAX_FIELD_LEN {
            return false;
        }
        let Ok(path) = std::path::absolute(text) else { return false };
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if files.len() >= MAX_OFFERS && !files.contains_key(name) {
            return false;
        }
        files.insert(Bytes::copy_from_slice(name), path);
        true
    }

    /// The path of the file offered as `name`, if it was.
    pub fn path(&self, name: &[u8]) -> Option<PathBuf> {
        self.files.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub fn len(&self) -> usize {
        self.files.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the two fields after `GET FILE` (requester, file name) from `stream`, `buf` holding
/// what was read already (the operation included), within the idle timeout.
fn read_get_file_request(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<(Bytes, Bytes)> {
    let skip = GET_FILE_NAMES.iter().find(|n| buf.starts_with(n)).map_or(0, |n| n.len());
    let _ = buf.split_to(skip);
    let mut codec = Codec::new(MAX_FIELD_LEN);
    let mut fields = Vec::with_capacity(2);
    let mut chunk = [0u8; 512];
    // One deadline for the whole request, so a requester that sends a byte now and then
    // cannot hold one of the few transfer threads for long.
    let deadline = std::time::Instant::now() + IDLE_TIMEOUT;
    loop {
        while fields.len() < 2 {
            match codec.decode(buf).map_err(io::Error::other)? {
                Some(field) => fields.push(field),
                None => break,
            }
        }
        if fields.len() == 2 {
            let file = fields.pop().unwrap_or_default();
            let requester = fields.pop().unwrap_or_default();
            return Ok((requester, file));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "GET FILE request not complete in time"));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "GET FILE request cut short"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Serves one `GET FILE` connection (SPEC 8): `buf` holds the bytes read so far. Answers in
/// the sized form, and only for a file of `offers`. Returns what happened, for a log line.
pub fn serve_get_file(mut stream: TcpStream, mut buf: BytesMut, offers: &Offers) -> io::Result<u64> {
    let (requester, name) = read_get_file_request(&mut stream, &mut buf)?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let opened = offers.path(&name).ok_or(Refusal::NotOffered).and_then(|path| {
        let file = open_regular(&path)?;
        let size = file.metadata().map_err(Refusal::Open)?.len();
        Ok((file, size))
    });
    let (file, size) = match opened {
        Ok(opened) => opened,
        Err(why) => {
            tracing::info!("GET FILE {} from {}: {why}", Escaped(&name), Escaped(&requester));
            stream.write_all(b"ERROR\0")?;
            let _ = stream.shutdown(Shutdown::Write);
            return Err(io::Error::other(why.to_string()));
        }
    };
    let mut head = BytesMut::with_capacity(32);
    put_field(&mut head, b"OK");
    put_field(&mut head, itoa::Buffer::new().format(size).as_bytes());
    stream.write_all(&head)?;
    // Exactly `size` bytes: a file that shrank meanwhile ends short, which the receiver sees.
    let sent = copy_chunked(&mut file.take(size), &mut stream)?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(sent)
}

/// Why a listener answers `ERROR`.
#[derive(Debug)]
enum Refusal {
    NotOffered,
    NotAFile,
    Open(io::Error),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotOffered => f.write_str("not a file this user attached in this session"),
            Refusal::NotAFile => f.write_str("not a regular file (or a symbolic link)"),
            Refusal::Open(e) => write!(f, "cannot read it: {e}"),
        }
    }
}

/// Opens `path` for reading if it is a regular file. A symbolic link in its last component is
/// refused (another local user could have put one where an attached file was), and the open
/// never blocks (a FIFO planted there would hold a transfer thread).
fn open_regular(path: &Path) -> Result<File, Refusal> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                Refusal::NotAFile
            } else {
                Refusal::Open(e)
            }
        })?;
    if !file.metadata().map_err(Refusal::Open)?.is_file() {
        return Err(Refusal::NotAFile);
    }
    rustix::fs::fcntl_setfl(&file, OFlags::empty()).map_err(|e| Refusal::Open(e.into()))?;
    Ok(file)
}

fn copy_chunked(from: &mut impl Read, to: &mut impl Write) -> io::Result<u64> {
    let mut chunk = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&chunk[..n])?;
        total += n as u64;
    }
}

/// Runs [`serve_get_file`] on a thread of its own, so that a slow requester never holds up
/// the listener's pushes; past [`MAX_TRANSFERS`] at once the requester gets `ERROR`.
pub(crate) fn spawn_transfer(mut stream: TcpStream, buf: BytesMut, offers: &Offers) {
    let transfers = offers.transfers.clone();
    if transfers.fetch_add(1, Ordering::AcqRel) >= MAX_TRANSFERS {
        transfers.fetch_sub(1, Ordering::AcqRel);
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = stream.write_all(b"ERROR\0");
        return;
    }
    let offers = offers.clone();
    let spawned = std::thread::Builder::new().name("cartero-get-file".into()).spawn(move || {
        if let Err(e) = serve_get_file(stream, buf, &offers) {
            tracing::info!("GET FILE not served: {e}");
        }
        offers.transfers.fetch_sub(1, Ordering::AcqRel);
    });
    if spawned.is_err() {
        transfers.fetch_sub(1, Ordering::AcqRel);
    }
}

// ---------------------------------------------------------------------------------------------
// The requester's side

/// How a requester reads a listener's answer to `GET FILE` (SPEC 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnswerForm {
    /// The sized form if the answer starts with `OK\0` or is `ERROR\0`; a first byte 0 then
    /// the bytes; otherwise the raw bytes to the end of the stream.
    #[default]
    Auto,
    /// `OK\0<size>\0<bytes>`, or `ERROR\0`.
    Sized,
    /// A byte 0, then the file's bytes to the end of the stream.
    ZeroByte,
    /// The file's bytes to the end of the stream.
    Raw,
}

impl FromStr for AnswerForm {
    type Err = UnknownSetting;
    fn from_str(s: &str) -> Result<Self, UnknownSetting> {
        match s {
            "auto" => Ok(AnswerForm::Auto),
            "sized" => Ok(AnswerForm::Sized),
            "zero-byte" => Ok(AnswerForm::ZeroByte),
            "raw" => Ok(AnswerForm::Raw),
            _ => Err(UnknownSetting {
                what: "file answer form",
                given: s.into(),
                expected: "auto, sized, zero-byte, raw",
            }),
        }
    }
}

/// Why a GETFILE did not bring the file. In every case no file is left at the destination
/// (nor any temporary file beside it).
#[derive(Debug, thiserror::Error)]
pub enum GetFileError {
    #[error("cannot reach the user's listener at {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("the user's listener refused: it does not offer that file")]
    Refused,
    #[error("the transfer was cut short: {got} of {expected} bytes arrived")]
    Truncated { got: u64, expected: u64 },
    #[error("the listener sent nothing")]
    Empty,
    #[error("the listener's answer is not a file transfer: {0}")]
    BadAnswer(String),
    #[error("the listener went silent for {0:?}")]
    Timeout(Duration),
    #[error("the transfer failed: {0}")]
    Io(io::Error),
    #[error("cannot write {path}: {source}")]
    Local { path: PathBuf, source: io::Error },
    #[error("the request cannot be sent: {0}")]
    Invalid(String),
}

impl From<io::Error> for GetFileError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => GetFileError::Timeout(IDLE_TIMEOUT),
            _ => GetFileError::Io(e),
        }
    }
}

/// A temporary file beside the destination; removed when dropped unless kept.
struct Partial {
    path: PathBuf,
    file: Option<File>,
}

impl Partial {
    fn create(dest: &Path) -> Result<Partial, GetFileError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let local = |source| GetFileError::Local { path: dest.to_path_buf(), source };
        let name = dest.file_name().ok_or_else(|| local(io::Error::other("it names no file")))?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut temp = std::ffi::OsString::from(".");
        temp.push(name);
        temp.push(format!(".cartero-part-{}-{n}", std::process::id()));
        let path = dir.join(temp);
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(local)?;
        Ok(Partial { path, file: Some(file) })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), GetFileError> {
        let path = &self.path;
        match &mut self.file {
            Some(f) => f.write_all(bytes).map_err(|source| GetFileError::Local { path: path.clone(), source }),
            None => Ok(()),
        }
    }

    /// Flushes the file to disk and renames it to `dest`.
    fn keep(mut self, dest: &Path) -> Result<(), GetFileError> {
        let local = |source| GetFileError::Local { path: dest.to_path_buf(), source };
        if let Some(file) = self.file.take() {
            file.sync_all().map_err(local)?;
        }
        std::fs::rename(&self.path, dest).map_err(local)?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        self.file.take();
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// GETFILE (SPEC 8): asks the listener at `addr` for the file `remote` of its user, on behalf
/// of `requester`, and writes it to `local` (through a temporary file beside it). Returns
/// the file's size.
pub fn get_file(
    addr: SocketAddr,
    requester: &[u8],
    remote: &[u8],
    local: &Path,
    form: AnswerForm,
) -> Result<u64, GetFileError> {
    let codec = Codec::new(MAX_FIELD_LEN);
    for field in [requester, remote] {
        codec.check(field).map_err(|e| GetFileError::Invalid(e.to_string()))?;
    }
    let mut request = BytesMut::with_capacity(32 + requester.len() + remote.len());
    put_field(&mut request, b"GET FILE");
    put_field(&mut request, requester);
    put_field(&mut request, remote);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|source| GetFileError::Connect { addr, source })?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    stream.write_all(&request)?;
    let _ = stream.shutdown(Shutdown::Write);

    // Enough of the answer to tell its form: `ERROR\0` is the longest marker.
    let mut head = Vec::with_capacity(8);
    let mut eof = false;
    let mut byte = [0u8; 1];
    while head.len() < 6 && !(form == AnswerForm::Auto && decided(&head)) {
        if stream.read(&mut byte)? == 0 {
            eof = true;
            break;
        }
        head.push(byte[0]);
        if form != AnswerForm::Auto && form != AnswerForm::Sized {
            break;
        }
    }
    let form = match form {
        AnswerForm::Auto if head.starts_with(b"OK\0") || head == b"ERROR\0" => AnswerForm::Sized,
        AnswerForm::Auto if head.first() == Some(&0) => AnswerForm::ZeroByte,
        AnswerForm::Auto if head.is_empty() => return Err(GetFileError::Empty),
        AnswerForm::Auto => AnswerForm::Raw,
        other => other,
    };
    match form {
        AnswerForm::Sized => {
            if head == b"ERROR\0" {
                return Err(GetFileError::Refused);
            }
            if !head.starts_with(b"OK\0") {
                return Err(GetFileError::BadAnswer(format!("it starts {}", Escaped(&head))));
            }
            let mut buf = BytesMut::from(&head[3..]);
            let mut codec = Codec::new(20);
            let mut chunk = [0u8; 64];
            let size = loop {
                if let Some(field) = codec.decode(&mut buf).map_err(|e| GetFileError::BadAnswer(e.to_string()))? {
                    let text = std::str::from_utf8(&field).ok().filter(|t| t.bytes().all(|b| b.is_ascii_digit()));
                    break text
                        .and_then(|t| t.parse::<u64>().ok())
                        .ok_or_else(|| GetFileError::BadAnswer(format!("size {} is not a number", Escaped(&field))))?;
                }
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(GetFileError::BadAnswer("it ends before the size".into()));
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            let mut partial = Partial::create(local)?;
            let early = buf.split_to(buf.len().min(usize::try_from(size).unwrap_or(usize::MAX)));
            partial.write(&early)?;
            let mut got = early.len() as u64;
            got += receive(&mut (&mut stream).take(size - got), &mut partial)?;
            if got < size {
                return Err(GetFileError::Truncated { got, expected: size });
            }
            partial.keep(local)?;
            Ok(size)
        }
        AnswerForm::ZeroByte if head.first().is_some_and(|&b| b != 0) => Err(GetFileError::Refused),
        _ => {
            let mut partial = Partial::create(local)?;
            let skip = usize::from(form == AnswerForm::ZeroByte && head.first() == Some(&0));
            partial.write(&head[skip.min(head.len())..])?;
            let mut got = (head.len() - skip.min(head.len())) as u64;
            if !eof {
                got += receive(&mut stream, &mut partial)?;
            }
            partial.keep(local)?;
            Ok(got)
        }
    }
}

/// Whether the first bytes of an answer already tell its form (for [`AnswerForm::Auto`]).
fn decided(head: &[u8]) -> bool {
    let Some(&first) = head.first() else { return false };
    if first == 0 {
        return true;
    }
    let could_be = |marker: &[u8]| marker.starts_with(head) || head.starts_with(marker);
    head.starts_with(b"OK\0") || !(could_be(b"OK\0") || could_be(b"ERROR\0"))
}

fn receive(from: &mut impl Read, to: &mut Partial) -> Result<u64, GetFileError> {
    let mut chunk = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        to.write(&chunk[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_opened_never_a_link_or_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.txt");
        std::fs::write(&real, b"attached").unwrap();
        let mut text = String::new();
        open_regular(&real).unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "attached");
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(open_regular(&link), Err(Refusal::NotAFile)), "a link put where a file was");
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o644)).unwrap();
        // Without O_NONBLOCK this open would wait for a writer forever.
        assert!(matches!(open_regular(&fifo), Err(Refusal::NotAFile)));
        assert!(matches!(open_regular(dir.path()), Err(Refusal::NotAFile)));
        assert!(matches!(open_regular(&dir.path().join("gone")), Err(Refusal::Open(_))));
    }

    #[test]
    fn connections_are_told_apart_by_their_first_bytes() {
        assert_eq!(classify(b""), ConnectionKind::Undecided);
        assert_eq!(classify(b"GET"), ConnectionKind::Undecided);
        assert_eq!(classify(b"GET_FI"), ConnectionKind::Undecided);
        assert_eq!(classify(b"GET FILE\0ana"), ConnectionKind::GetFile);
        assert_eq!(classify(b"GET_FILE\0"), ConnectionKind::GetFile);
        assert_eq!(classify(b"SEND MESSAGE\0"), ConnectionKind::Pushes);
        assert_eq!(classify(b"GET FILES"), ConnectionKind::Pushes);
    }

    #[test]
    fn answer_forms_are_decided_by_their_first_bytes() {
        assert!(!decided(b""));
        assert!(decided(b"\0"));
        assert!(!decided(b"O"));
        assert!(decided(b"OK\0"));
        assert!(!decided(b"ERRO"));
        assert!(decided(b"hello"));
        assert!(decided(b"OKAY"));
    }

    #[test]
    fn offers_hold_only_usable_names() {
        let offers = Offers::new();
        assert!(offers.offer(b"/tmp/a.txt"));
        assert!(!offers.offer(b""));
        assert!(!offers.offer(&[b'/'; 256]));
        assert!(!offers.offer(b"\xff\xfe"));
        assert_eq!(offers.path(b"/tmp/a.txt"), Some(PathBuf::from("/tmp/a.txt")));
        assert_eq!(offers.path(b"/tmp/../tmp/a.txt"), None);
        assert_eq!(offers.len(), 1);
    }
}
