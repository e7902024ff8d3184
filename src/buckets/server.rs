//! The bucket server (SPEC-buckets 5): one store ([`Backend`]: a directory or an S3-compatible
//! object store), both vocabularies, many clients, on tokio.
//!
//! Each connection drives a [`Session`] over one fixed 64 KiB buffer: command lines, upload
//! bytes and discarded bytes all pass through it, and downloads go from the opened file to
//! the socket with `sendfile` (or from the object store's stream, chunk by chunk), so memory
//! per connection is bounded whatever the file size. A client
//! that sends nothing for the stall timeout in the middle of an upload, or reads nothing of a
//! download for as long, is dropped; one that sends no request for the idle timeout is closed.
//! On shutdown every connection is dropped at once: an upload in flight leaves nothing.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use futures_util::StreamExt;

use crate::console::ServerConsole;

use super::backend::{Backend, Body, Put, StoreConfig};
use super::store::{PutMode, StoreError};
use super::wire::{self, After, Command, Event, Op, Reply, Request, Session, Vocabulary};

/// The size of a connection's transfer buffer.
pub(crate) const BUFFER: usize = 64 * 1024;

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    /// Where the buckets are.
    pub store: StoreConfig,
    /// The largest upload accepted, in bytes.
    pub max_file_size: u64,
    /// How long an upload or download may go without a byte moving.
    pub stall_timeout: Duration,
    /// How long a connection may wait between requests.
    pub idle_timeout: Duration,
    /// Connections served at once; more are closed unanswered.
    pub max_connections: usize,
    /// Print the start lines and one line per request on standard output.
    pub console: bool,
}

impl ServerConfig {
    /// The defaults of SPEC-buckets 1 on `bind`, serving the directory `root`.
    pub fn new(bind: SocketAddr, root: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            bind,
            store: StoreConfig::Dir(root.into()),
            max_file_size: 1 << 30,
            stall_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            max_connections: 4096,
            console: false,
        }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot open the store {store}: {source}")]
    Store { store: String, source: StoreError },
}

struct Shared {
    store: Arc<dyn Backend>,
    config: ServerConfig,
    console: Option<ServerConsole>,
}

impl Shared {
    fn log(&self, line: String) {
        if let Some(console) = &self.console {
            // A full queue drops the line rather than slowing the service.
            console.print(line);
        }
    }
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Opens the store and binds the socket; with `config.console`, prints
    /// `s> init server <addr>:<port>` and `s> root <dir>` (or `s> store s3://...`).
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let store = config
            .store
            .open()
            .await
            .map_err(|source| ServerError::Store { store: config.store.to_string(), source })?;
        let listener =
            TcpListener::bind(config.bind).await.map_err(|source| ServerError::Bind { addr: config.bind, source })?;
        let console = match config.console {
            true => Some(ServerConsole::start().map_err(|source| ServerError::Bind { addr: config.bind, source })?),
            false => None,
        };
        let server = Server { listener, shared: Arc::new(Shared { store, config, console }) };
        let addr =
            server.local_addr().map_err(|source| ServerError::Bind { addr: server.shared.config.bind, source })?;
        server.shared.log(format!("s> init server {addr}"));
        server.shared.log(format!("s> {}", server.shared.store.describe()));
        Ok(server)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then drops every connection (uploads in flight
    /// leave nothing) and returns once they are gone.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Server { listener, shared } = self;
        let stop = CancellationToken::new();
        let connections = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(shared.config.max_connections.max(1)));
        tokio::pin!(shutdown);
        while let Some((stream, peer)) = crate::net::accept(&listener, &mut shutdown).await {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::warn!(
                    "refused connection from {peer}: {} connections in progress",
                    shared.config.max_connections
                );
                continue;
            };
            let shared = shared.clone();
            let stop = stop.clone();
            connections.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    result = serve_connection(&shared, stream, peer) => {
                        if let Err(e) = result {
                            tracing::debug!("{peer}: {e}");
                        }
                    }
                }
                drop(permit);
            });
        }
        tracing::info!("shutting down: closing every connection");
        drop(listener);
        stop.cancel();
        connections.close();
        connections.wait().await;
        // The last console lines are still queued: the process would exit before they are written.
        let _ = tokio::task::spawn_blocking(move || shared.console.as_ref().map(ServerConsole::flush)).await;
        Ok(())
    }
}

/// Why a connection ended early (for the debug log only).
#[derive(Debug, thiserror::Error)]
enum ConnectionEnd {
    #[error("idle for too long")]
    Idle,
    #[error("stalled for too long")]
    Stalled,
    #[error("closed in the middle of a transfer")]
    Cut,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// An upload being received, or the reason it already failed (its bytes are still read, to
/// stay in step).
struct Receiving {
    request: String,
    vocabulary: Vocabulary,
    upload: Result<Box<dyn Put>, StoreError>,
}

async fn serve_connection(shared: &Shared, mut stream: TcpStream, peer: SocketAddr) -> Result<(), ConnectionEnd> {
    let _ = stream.set_nodelay(true);
    let config = &shared.config;
    let mut session = Session::new(config.max_file_size);
    let mut buf = vec![0u8; BUFFER];
    let (mut start, mut end) = (0, 0);
    let mut out = Vec::with_capacity(1024);
    let mut receiving: Option<Receiving> = None;
    // A refused codes upload: its reply waits for its bytes to be discarded.
    let mut pending: Option<(String, Reply)> = None;
    loop {
        let (n, event) = session.handle(&buf[start..end]);
        let taken = start..start + n;
        start += n;
        match event {
            Event::NeedMore => {
                let limit = match session.phase() {
                    wire::Phase::Line => config.idle_timeout,
                    _ => config.stall_timeout,
                };
                let read = match tokio::time::timeout(limit, stream.read(&mut buf)).await {
                    Ok(read) => read?,
                    Err(_) if session.phase() == wire::Phase::Line => return Err(ConnectionEnd::Idle),
                    Err(_) => return Err(ConnectionEnd::Stalled),
                };
                if read == 0 {
                    return match session.phase() {
                        wire::Phase::Line => Ok(()),
                        _ => Err(ConnectionEnd::Cut),
                    };
                }
                (start, end) = (0, read);
            }
            Event::Closed => {
                linger(&mut stream, &mut buf).await;
                return Ok(());
            }
            Event::LineTooLong => {
                let reply = Reply::BadCommand(format!("line longer than {} bytes", wire::MAX_LINE));
                shared.log(format!("s> {peer} (line too long) -> {}", reply.status()));
                send(&mut stream, &mut out, &reply, config.stall_timeout).await?;
                linger(&mut stream, &mut buf).await;
                return Ok(());
            }
            Event::Rejected(rejection) => {
                let reply = rejection.reply();
                match rejection.after {
                    After::Discard(_) => pending = Some((rejection.line, reply)),
                    After::Continue | After::Close => {
                        shared.log(format!("s> {peer} {} -> {}", rejection.line, reply.status()));
                        send(&mut stream, &mut out, &reply, config.stall_timeout).await?;
                    }
                }
            }
            Event::Discarded => {
                if let Some((line, reply)) = pending.take() {
                    shared.log(format!("s> {peer} {line} -> {}", reply.status()));
                    send(&mut stream, &mut out, &reply, config.stall_timeout).await?;
                }
            }
            Event::Data { last } => {
                let Some(rx) = receiving.as_mut() else { return Ok(()) };
                if let Ok(put) = &mut rx.upload {
                    if let Err(e) = put.write(&buf[taken]).await {
                        rx.upload = Err(e);
                    }
                }
                if last {
                    let rx = receiving.take().expect("receiving");
                    let reply = match finish_upload(rx.upload).await {
                        Ok(()) => Reply::Done(rx.vocabulary, Op::Upload),
                        Err(e) => Reply::Failed(rx.vocabulary, Op::Upload, e.to_string()),
                    };
                    shared.log(format!("s> {peer} {} -> {}", rx.request, reply.status()));
                    send(&mut stream, &mut out, &reply, config.stall_timeout).await?;
                }
            }
            Event::Request(request) => {
                let text = log_text(&request);
                match serve_request(shared, request, &mut stream, &mut out, &mut session).await? {
                    Served::Replied(status) => shared.log(format!("s> {peer} {text} -> {status}")),
                    Served::Receive(vocabulary, upload, size) => {
                        session.receive(size);
                        receiving = Some(Receiving { request: text, vocabulary, upload: Ok(upload) });
                    }
                    Served::Discard(reply, size) => {
                        session.discard(size);
                        pending = Some((text, reply));
                    }
                }
            }
        }
    }
}

enum Served {
    /// Answered; the status for the log.
    Replied(&'static str),
    /// An upload whose bytes come next.
    Receive(Vocabulary, Box<dyn Put>, u64),
    /// A codes upload refused after its line: drop its bytes, then answer.
    Discard(Reply, u64),
}

async fn serve_request(
    shared: &Shared,
    request: Request,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    session: &mut Session,
) -> Result<Served, ConnectionEnd> {
    let Request { vocabulary: v, command } = request;
    let op = command.op();
    let stall = shared.config.stall_timeout;
    let store = shared.store.clone();
    let reply = match command {
        Command::Help => Reply::Listing(v, Op::Help, wire::help_lines()),
        Command::Quit => {
            session.close();
            Reply::Done(v, Op::Quit)
        }
        Command::CreateBucket(b) => done(v, op, store.create_bucket(b).await),
        Command::DeleteBucket(b) => done(v, op, store.delete_bucket(b).await),
        Command::DeleteFile { bucket, file } => done(v, op, store.delete_file(bucket, file).await),
        Command::ListBuckets => match store.list_buckets().await {
            Ok(names) => Reply::Listing(v, op, names.into_iter().map(|n| n.to_string()).collect()),
            Err(e) => Reply::Failed(v, op, e.to_string()),
        },
        Command::ListFiles(bucket) => match store.list_files(bucket).await {
            Ok(files) => Reply::Listing(
                v,
                op,
                files
                    .into_iter()
                    .map(|f| match v {
                        Vocabulary::Codes => format!("{} {} {}", f.bucket, f.name, f.size),
                        Vocabulary::Eafit => format!("{} {}", f.name, f.size),
                    })
                    .collect(),
            ),
            Err(e) => Reply::Failed(v, op, e.to_string()),
        },
        Command::Download { bucket, file } => match store.get(bucket, file).await {
            Ok(download) => {
                let header = Reply::Download(v, download.size);
                send(stream, out, &header, stall).await?;
                match download.body {
                    Body::File(file) => send_file(stream, file, download.size, stall).await?,
                    Body::Stream(chunks) => send_stream(stream, chunks, download.size, stall).await?,
                }
                return Ok(Served::Replied(header.status()));
            }
            Err(e) => Reply::Failed(v, op, e.to_string()),
        },
        Command::Upload { bucket, file, size } => {
            let mode = match v {
                Vocabulary::Codes => PutMode::Replace,
                Vocabulary::Eafit => PutMode::CreateNew,
            };
            let begun = async {
                if mode == PutMode::CreateNew && store.file_exists(bucket.clone(), file.clone()).await? {
                    return Err(StoreError::FileExists);
                }
                store.begin_put(bucket, file, mode, size).await
            }
            .await;
            match (v, begun) {
                (_, Ok(upload)) => {
                    if v == Vocabulary::Eafit {
                        send(stream, out, &Reply::Ack, stall).await?;
                    }
                    return Ok(Served::Receive(v, upload, size));
                }
                (Vocabulary::Codes, Err(e)) => return Ok(Served::Discard(Reply::Failed(v, op, e.to_string()), size)),
                (Vocabulary::Eafit, Err(StoreError::FileExists)) => Reply::Exist,
                (Vocabulary::Eafit, Err(e)) => Reply::Failed(v, op, e.to_string()),
            }
        }
    };
    send(stream, out, &reply, stall).await?;
    Ok(Served::Replied(reply.status()))
}

fn done(v: Vocabulary, op: Op, result: Result<(), StoreError>) -> Reply {
    match result {
        Ok(()) => Reply::Done(v, op),
        Err(e) => Reply::Failed(v, op, e.to_string()),
    }
}

/// Makes a received upload visible, whole.
async fn finish_upload(upload: Result<Box<dyn Put>, StoreError>) -> Result<(), StoreError> {
    upload?.commit().await
}

async fn send(stream: &mut TcpStream, out: &mut Vec<u8>, reply: &Reply, stall: Duration) -> Result<(), ConnectionEnd> {
    out.clear();
    reply.encode(out);
    match tokio::time::timeout(stall, stream.write_all(out)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ConnectionEnd::Stalled),
    }
}

/// Streams exactly `size` bytes of `file` to the client with `sendfile` (the kernel copies
/// from the page cache to the socket; no buffer of ours), at most 1 MiB per call; every call
/// must make progress within `stall`. A file shorter than announced (changed in place behind
/// the store's back) ends the connection, since the reply's size cannot be honoured.
async fn send_file(
    stream: &mut TcpStream,
    file: std::fs::File,
    size: u64,
    stall: Duration,
) -> Result<(), ConnectionEnd> {
    let mut offset = 0u64;
    while offset < size {
        let want = (size - offset).min(1 << 20) as usize;
        let sent = stream.async_io(tokio::io::Interest::WRITABLE, || {
            let mut at = offset;
            rustix::fs::sendfile(&*stream, &file, Some(&mut at), want).map_err(io::Error::from)
        });
        let n = match tokio::time::timeout(stall, sent).await {
            Ok(Ok(n)) => n,
            // A file system without sendfile: the same through a buffer.
            Ok(Err(e)) if offset == 0 && matches!(e.raw_os_error(), Some(code) if is_unsupported(code)) => {
                return copy_file(stream, tokio::fs::File::from_std(file), size, stall).await;
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(ConnectionEnd::Stalled),
        };
        if n == 0 {
            return Err(ConnectionEnd::Cut);
        }
        offset += n as u64;
    }
    Ok(())
}

/// Streams exactly `size` bytes of an object store's chunks to the client; every chunk must
/// arrive, and be sent, within `stall`. A stream that fails or ends early ends the connection
/// (the reply's size cannot be honoured; the client sees a short download).
async fn send_stream(
    stream: &mut TcpStream,
    mut chunks: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, StoreError>>,
    size: u64,
    stall: Duration,
) -> Result<(), ConnectionEnd> {
    let mut left = size;
    while left > 0 {
        let chunk = match tokio::time::timeout(stall, chunks.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(e))) => return Err(ConnectionEnd::Io(io::Error::other(e))),
            Ok(None) => return Err(ConnectionEnd::Cut),
            Err(_) => return Err(ConnectionEnd::Stalled),
        };
        let n = (chunk.len() as u64).min(left) as usize;
        match tokio::time::timeout(stall, stream.write_all(&chunk[..n])).await {
            Ok(result) => result?,
            Err(_) => return Err(ConnectionEnd::Stalled),
        }
        left -= n as u64;
    }
    Ok(())
}

fn is_unsupported(code: i32) -> bool {
    [rustix::io::Errno::INVAL, rustix::io::Errno::NOSYS, rustix::io::Errno::OPNOTSUPP]
        .iter()
        .any(|e| e.raw_os_error() == code)
}

/// [`send_file`] through one buffer, for files that `sendfile` cannot read.
async fn copy_file(
    stream: &mut TcpStream,
    mut file: tokio::fs::File,
    size: u64,
    stall: Duration,
) -> Result<(), ConnectionEnd> {
    let mut buf = vec![0u8; BUFFER];
    let mut left = size;
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(ConnectionEnd::Cut);
        }
        match tokio::time::timeout(stall, stream.write_all(&buf[..n])).await {
            Ok(result) => result?,
            Err(_) => return Err(ConnectionEnd::Stalled),
        }
        left -= n as u64;
    }
    Ok(())
}

/// Closes gracefully: ends our side, then drops what the client still sends for a bounded
/// while, so that closing with unread input (a refused upload's bytes, the rest of an
/// over-long line) does not reset the connection and destroy the reply before it is read.
async fn linger(stream: &mut TcpStream, buf: &mut [u8]) {
    let _ = stream.shutdown().await;
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut dropped = 0usize;
    while dropped < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(buf)).await {
            Ok(Ok(n)) if n > 0 => dropped += n,
            _ => return,
        }
    }
}

/// How long and how much a closing connection drains.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 << 20;

/// `<COMMAND> <args>` for the log line.
fn log_text(request: &Request) -> String {
    let line = Request::encode(request.vocabulary, &request.command).unwrap_or_default();
    let line = line.trim_end();
    match request.vocabulary {
        Vocabulary::Codes => line.to_owned(),
        Vocabulary::Eafit => line.replacen(',', " ", 1),
    }
}
