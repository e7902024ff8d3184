//! The RPC log of the 2025/26 course (SPEC 8, Part 3): an ONC-RPC service, described by
//! `rpc/cartero_log.x`, that prints the operations a server reports.
//!
//! - [`serve`]: the service (`cartero rpclog serve`), over TCP, registered with the local
//!   rpcbind (portmapper version 2) for as long as it runs.
//! - [`Reporter`]: the server's side. [`Reporter::report`] never blocks and never fails: the
//!   entry goes into a bounded queue; one thread finds the service through rpcbind at the
//!   `LOG_RPC_IP` host and calls it with short timeouts. What cannot be reported is counted
//!   and said on standard error at most once a minute.
//!
//! The RPC messages (call and reply headers, record marking) are the `onc-rpc` crate's; the
//! arguments (three XDR strings, one optional) are written and read here, since no
//! maintained XDR crate fits (see the closing note of issue 15 in the docs).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use onc_rpc::auth::AuthFlavor;
use onc_rpc::{AcceptedReply, AcceptedStatus, CallBody, MessageType, ReplyBody, RpcMessage};

use crate::messaging::wire::Request;

/// The program, version and procedure of `rpc/cartero_log.x`.
pub(crate) const PROGRAM: u32 = 0x2000_0F15;
pub(crate) const VERSION: u32 = 1;
pub(crate) const LOG_OPERATION: u32 = 1;
const PMAP_PROGRAM: u32 = 100_000;
const PMAP_VERSION: u32 = 2;
const PMAP_SET: u32 = 1;
const PMAP_UNSET: u32 = 2;
const PMAP_GETPORT: u32 = 3;
const IPPROTO_TCP: u32 = 6;
const PMAP_PORT: u16 = 111;
/// The largest RPC record either side reads.
const MAX_RECORD: usize = 4096;
/// Entries waiting for the reporter thread at most; more are dropped (and counted).
const QUEUE: usize = 1024;
/// How long one report may take: connecting, and each read or write.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// How often, at most, the reporter tells of failures on standard error.
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// Connections `cartero rpclog serve` serves at once.
const MAX_CONNECTIONS: usize = 64;

/// Why an RPC exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the peer's RPC message is not valid: {0}")]
    Malformed(String),
    #[error("the call was refused: {0}")]
    Refused(String),
    #[error("the RPC log program is not registered with rpcbind at {0}")]
    NotRegistered(IpAddr),
}

/// One operation, as `LOG_OPERATION` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub user: Bytes,
    pub operation: Bytes,
    pub file: Option<Bytes>,
}

impl LogEntry {
    /// The entry of a request: who asked, which operation, and SENDATTACH's file.
    pub fn of(request: &Request) -> LogEntry {
        let empty = Bytes::new();
        let (user, file) = match request {
            Request::Register { alias, .. }
            | Request::Unregister { alias }
            | Request::Connect { alias, .. }
            | Request::Disconnect { alias } => (alias.clone(), None),
            Request::ConnectedUsers { alias } | Request::Users { alias } => (alias.clone().unwrap_or(empty), None),
            Request::Send { sender, .. } => (sender.clone(), None),
            Request::SendAttach { sender, file, .. } => (sender.clone(), Some(file.clone())),
        };
        LogEntry { user, operation: Bytes::from_static(request.operation().name().as_bytes()), file }
    }

    /// The XDR of `cartero_log_entry`.
    pub fn to_xdr(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.user.len() + self.operation.len());
        put_string(&mut out, &self.user);
        put_string(&mut out, &self.operation);
        match &self.file {
            None => out.extend_from_slice(&0u32.to_be_bytes()),
            Some(file) => {
                out.extend_from_slice(&1u32.to_be_bytes());
                put_string(&mut out, file);
            }
        }
        out
    }

    pub fn from_xdr(mut xdr: &[u8]) -> Option<LogEntry> {
        let user = take_string(&mut xdr)?;
        let operation = take_string(&mut xdr)?;
        let file = match take_u32(&mut xdr)? {
            0 => None,
            1 => Some(take_string(&mut xdr)?),
            _ => return None,
        };
        xdr.is_empty().then_some(LogEntry { user, operation, file })
    }
}

/// XDR `string<>`: the length, the bytes, zeros to a multiple of four.
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    let s = &s[..s.len().min(255)];
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
    out.extend(std::iter::repeat_n(0, (4 - s.len() % 4) % 4));
}

fn take_u32(xdr: &mut &[u8]) -> Option<u32> {
    let (head, rest) = xdr.split_first_chunk::<4>()?;
    *xdr = rest;
    Some(u32::from_be_bytes(*head))
}

fn take_string(xdr: &mut &[u8]) -> Option<Bytes> {
    let len = take_u32(xdr)? as usize;
    if len > 255 {
        return None;
    }
    let padded = len.div_ceil(4) * 4;
    if xdr.len() < padded {
        return None;
    }
    let s = Bytes::copy_from_slice(&xdr[..len]);
    *xdr = &xdr[padded..];
    Some(s)
}

/// Reads one RPC record (a single last fragment) of at most [`MAX_RECORD`] bytes, its
/// header included. `Ok(None)` at a clean end of stream.
fn read_record(stream: &mut TcpStream) -> Result<Option<Vec<u8>>, RpcError> {
    let mut header = [0u8; 4];
    match stream.read(&mut header[..1])? {
        0 => return Ok(None),
        _ => stream.read_exact(&mut header[1..])?,
    }
    let word = u32::from_be_bytes(header);
    let len = (word & 0x7fff_ffff) as usize;
    if word & 0x8000_0000 == 0 || len + 4 > MAX_RECORD {
        return Err(RpcError::Malformed(format!("record of {len} bytes (fragmented or too long)")));
    }
    let mut record = vec![0u8; len + 4];
    record[..4].copy_from_slice(&header);
    stream.read_exact(&mut record[4..])?;
    Ok(Some(record))
}

/// One call over TCP to `addr`: returns the reply's result bytes.
fn call(addr: SocketAddr, program: u32, version: u32, procedure: u32, args: &[u8]) -> Result<Vec<u8>, RpcError> {
    static XID: AtomicU64 = AtomicU64::new(1);
    let xid = XID.fetch_add(1, Ordering::Relaxed) as u32;
    let body = CallBody::new(
        program,
        version,
        procedure,
        AuthFlavor::<&[u8]>::AuthNone(None),
        AuthFlavor::<&[u8]>::AuthNone(None),
        args,
    );
    let message = RpcMessage::new(xid, MessageType::Call(body)).serialise()?;
    let mut stream = TcpStream::connect_timeout(&addr, CALL_TIMEOUT)?;
    stream.set_read_timeout(Some(CALL_TIMEOUT))?;
    stream.set_write_timeout(Some(CALL_TIMEOUT))?;
    stream.write_all(&message)?;
    let record = read_record(&mut stream)?.ok_or_else(|| RpcError::Malformed("no reply".into()))?;
    let reply = RpcMessage::try_from(&record[..]).map_err(|e| RpcError::Malformed(e.to_string()))?;
    if reply.xid() != xid {
        return Err(RpcError::Malformed("reply to another call".into()));
    }
    match reply.reply_body() {
        Some(ReplyBody::Accepted(a)) => match a.status() {
            AcceptedStatus::Success(result) => Ok(result.to_vec()),
            other => Err(RpcError::Refused(format!("{other:?}"))),
        },
        Some(ReplyBody::Denied(d)) => Err(RpcError::Refused(format!("{d:?}"))),
        None => Err(RpcError::Malformed("a call where a reply was due".into())),
    }
}

fn mapping(port: u16) -> Vec<u8> {
    [PROGRAM, VERSION, IPPROTO_TCP, u32::from(port)].iter().flat_map(|w| w.to_be_bytes()).collect()
}

fn pmap(host: IpAddr) -> SocketAddr {
    SocketAddr::new(host, PMAP_PORT)
}

/// Registers the log program at `port` (TCP) with the rpcbind of this machine.
pub fn register(port: u16) -> Result<(), RpcError> {
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // A mapping left by an earlier run that did not end cleanly is replaced.
    let _ = call(pmap(local), PMAP_PROGRAM, PMAP_VERSION, PMAP_UNSET, &mapping(0));
    let result = call(pmap(local), PMAP_PROGRAM, PMAP_VERSION, PMAP_SET, &mapping(port))?;
    match take_u32(&mut &result[..]) {
        Some(1) => Ok(()),
        _ => Err(RpcError::Refused("rpcbind did not take the mapping".into())),
    }
}

/// Removes the log program's mapping from this machine's rpcbind.
pub fn unregister() -> Result<(), RpcError> {
    call(pmap(IpAddr::V4(Ipv4Addr::LOCALHOST)), PMAP_PROGRAM, PMAP_VERSION, PMAP_UNSET, &mapping(0)).map(drop)
}

/// The TCP port of the log program at `host`, from its rpcbind.
pub fn find(host: IpAddr) -> Result<u16, RpcError> {
    let result = call(pmap(host), PMAP_PROGRAM, PMAP_VERSION, PMAP_GETPORT, &mapping(0))?;
    match take_u32(&mut &result[..]).and_then(|p| u16::try_from(p).ok()) {
        Some(0) | None => Err(RpcError::NotRegistered(host)),
        Some(port) => Ok(port),
    }
}

/// Calls `LOG_OPERATION` at `addr`.
pub fn log(addr: SocketAddr, entry: &LogEntry) -> Result<(), RpcError> {
    call(addr, PROGRAM, VERSION, LOG_OPERATION, &entry.to_xdr()).map(drop)
}

// ---------------------------------------------------------------------------------------------
// The service

/// Answers one call: the reply's bytes, and the entry to print if it is a valid log call.
fn answer(record: &[u8]) -> Result<(Vec<u8>, Option<LogEntry>), RpcError> {
    let message = RpcMessage::try_from(record).map_err(|e| RpcError::Malformed(e.to_string()))?;
    let call = message.call_body().ok_or_else(|| RpcError::Malformed("a reply where a call was due".into()))?;
    let mut entry = None;
    let status: AcceptedStatus<&[u8]> = if call.program() != PROGRAM {
        AcceptedStatus::ProgramUnavailable
    } else if call.program_version() != VERSION {
        AcceptedStatus::ProgramMismatch { low: VERSION, high: VERSION }
    } else {
        match call.procedure() {
            0 => AcceptedStatus::Success(&[]),
            LOG_OPERATION => match LogEntry::from_xdr(call.payload()) {
                Some(e) => {
                    entry = Some(e);
                    AcceptedStatus::Success(&[])
                }
                None => AcceptedStatus::GarbageArgs,
            },
            _ => AcceptedStatus::ProcedureUnavailable,
        }
    };
    let reply = ReplyBody::Accepted(AcceptedReply::new(AuthFlavor::<&[u8]>::AuthNone(None), status));
    let bytes = RpcMessage::new(message.xid(), MessageType::Reply(reply)).serialise()?;
    Ok((bytes, entry))
}

/// Serves one connection: each call's entry goes to `print`, then its reply goes back.
fn serve_connection(mut stream: TcpStream, print: &(dyn Fn(&LogEntry) + Sync)) -> Result<(), RpcError> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    while let Some(record) = read_record(&mut stream)? {
        let (reply, entry) = answer(&record)?;
        if let Some(entry) = entry {
            print(&entry);
        }
        stream.write_all(&reply)?;
    }
    Ok(())
}

/// A running log service: its port, until [`stop`](Self::stop) (or drop) unregisters it.
pub struct Service {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts the log service on `bind` (port 0 picks one), registers it with this machine's
/// rpcbind, and prints each entry with `print` (from the connections' threads).
pub fn serve(bind: SocketAddr, print: impl Fn(&LogEntry) + Send + Sync + 'static) -> Result<Service, RpcError> {
    let listener = TcpListener::bind(bind)?;
    let port = listener.local_addr()?.port();
    register(port)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let print: Arc<dyn Fn(&LogEntry) + Send + Sync> = Arc::new(print);
    let open = Arc::new(AtomicUsize::new(0));
    let thread = std::thread::Builder::new().name("cartero-rpclog".into()).spawn(move || {
        for stream in listener.incoming() {
            if stopping.load(Ordering::Acquire) {
                return;
            }
            let Ok(stream) = stream else { continue };
            if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                open.fetch_sub(1, Ordering::AcqRel);
                continue; // dropped: the caller sees the connection close
            }
            let (print, open) = (print.clone(), open.clone());
            let spawned = std::thread::Builder::new().name("cartero-rpclog-conn".into()).spawn(move || {
                if let Err(e) = serve_connection(stream, &*print) {
                    tracing::info!("RPC log connection ended: {e}");
                }
                open.fetch_sub(1, Ordering::AcqRel);
            });
            if spawned.is_err() {
                tracing::warn!("cannot start a thread for an RPC log connection");
            }
        }
    })?;
    Ok(Service { port, stop, thread: Some(thread) })
}

impl Service {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Unregisters the service and stops accepting.
    pub fn stop(&mut self) {
        if self.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = unregister() {
            tracing::warn!("cannot remove the RPC log's mapping from rpcbind: {e}");
        }
        let _ = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], self.port)), Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// The server's side

/// Counts of a [`Reporter`]'s work.
#[derive(Debug, Default)]
pub struct ReporterStats {
    pub reported: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

/// Reports operations to the RPC log at one host, from a thread of its own (see the module
/// docs). Dropping it lets the thread end once the queue is empty.
#[derive(Clone)]
pub struct Reporter {
    queue: SyncSender<LogEntry>,
    stats: Arc<ReporterStats>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter").field("stats", &self.stats).finish()
    }
}

impl Reporter {
    /// A reporter to the log service at `host` (a name or an address, as `LOG_RPC_IP`).
    pub fn start(host: String) -> io::Result<Reporter> {
        let (queue, entries) = sync_channel(QUEUE);
        let stats = Arc::new(ReporterStats::default());
        let counters = stats.clone();
        std::thread::Builder::new()
            .name("cartero-rpclog-reporter".into())
            .spawn(move || report_all(&host, entries, &counters))?;
        Ok(Reporter { queue, stats })
    }

    /// Queues `entry`; never blocks. A full queue drops it (counted).
    pub fn report(&self, entry: LogEntry) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.queue.try_send(entry) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> &ReporterStats {
        &self.stats
    }
}

fn report_all(host: &str, entries: Receiver<LogEntry>, stats: &ReporterStats) {
    let mut service: Option<SocketAddr> = None;
    let last_said: Mutex<Option<Instant>> = Mutex::new(None);
    let mut failed_since = 0u64;
    for entry in entries {
        let result = (|| -> Result<(), RpcError> {
            let ip = match (host, 0).to_socket_addrs()?.next() {
                Some(a) => a.ip(),
                None => return Err(RpcError::Io(io::Error::other(format!("{host} has no address")))),
            };
            let addr = match service {
                Some(a) => a,
                None => SocketAddr::new(ip, find(ip)?),
            };
            service = Some(addr);
            log(addr, &entry)
        })();
        match result {
            Ok(()) => {
                stats.reported.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                // Found again next time: the service may have restarted on another port.
                service = None;
                stats.failed.fetch_add(1, Ordering::Relaxed);
                failed_since += 1;
                let mut said = last_said.lock().unwrap_or_else(|p| p.into_inner());
                if said.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
                    eprintln!(
                        "cartero: the RPC log at {host} failed {failed_since} time(s) since the last notice: {e} \
                         (operations go on; next notice in a minute at the earliest)"
                    );
                    *said = Some(Instant::now());
                    failed_since = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_xdr_with_padding() {
        let entry = LogEntry { user: "ana".into(), operation: "SENDATTACH".into(), file: Some("/tmp/a.txt".into()) };
        let xdr = entry.to_xdr();
        assert_eq!(&xdr[..8], b"\0\0\0\x03ana\0");
        assert_eq!(xdr.len() % 4, 0);
        assert_eq!(LogEntry::from_xdr(&xdr), Some(entry));
        let plain = LogEntry { user: "bob".into(), operation: "USERS".into(), file: None };
        assert_eq!(LogEntry::from_xdr(&plain.to_xdr()), Some(plain));
        assert_eq!(LogEntry::from_xdr(b"\0\0\x01\0"), None, "a string over 255 bytes");
        assert_eq!(LogEntry::from_xdr(b"\0\0\0\x05ab"), None, "cut short");
    }

    #[test]
    fn calls_get_their_replies_and_bad_calls_their_status() {
        let entry = LogEntry { user: "ana".into(), operation: "REGISTER".into(), file: None };
        let body = CallBody::new(
            PROGRAM,
            VERSION,
            LOG_OPERATION,
            AuthFlavor::<&[u8]>::AuthNone(None),
            AuthFlavor::<&[u8]>::AuthNone(None),
            entry.to_xdr(),
        );
        let record = RpcMessage::new(7, MessageType::Call(body)).serialise().unwrap();
        let (reply, got) = answer(&record).unwrap();
        assert_eq!(got, Some(entry));
        let reply = RpcMessage::try_from(&reply[..]).unwrap();
        assert_eq!(reply.xid(), 7);
        assert!(
            matches!(reply.reply_body(), Some(ReplyBody::Accepted(a)) if matches!(a.status(), AcceptedStatus::Success(_)))
        );
        let body = CallBody::new(
            PROGRAM,
            VERSION,
            LOG_OPERATION,
            AuthFlavor::<&[u8]>::AuthNone(None),
            AuthFlavor::<&[u8]>::AuthNone(None),
            vec![1u8, 2],
        );
        let record = RpcMessage::new(8, MessageType::Call(body)).serialise().unwrap();
        let (reply, got) = answer(&record).unwrap();
        assert_eq!(got, None);
        let reply = RpcMessage::try_from(&reply[..]).unwrap();
        assert!(
            matches!(reply.reply_body(), Some(ReplyBody::Accepted(a)) if matches!(a.status(), AcceptedStatus::GarbageArgs))
        );
    }
}
