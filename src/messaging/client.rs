//! The client side: one method per operation with typed outcomes, and listeners that
//! receive the server's pushes. [`Client`] and [`Listener`] are async (tokio);
//! [`blocking`] has the same API for plain threads.
//!
//! Each request is its own connection (SPEC 1): connect, write the request, half-close,
//! read the reply. Replies in either code encoding and pushes in either spelling are
//! understood.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

use crate::messaging::codec::CodecError;
use crate::messaging::files::{self, classify, ConnectionKind, Offers};
use crate::messaging::wire::{
    ConnectReply, ConnectedUsersReply, DisconnectReply, ProtocolError, Push, PushDecoder, RegisterReply, Reply,
    ReplyDecoder, Request, SendReply, UnregisterReply, UsersReply,
};

/// Why a request got no valid reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the server at {server}: {source}")]
    Connect { server: String, source: io::Error },
    #[error("the server at {server} did not answer within {timeout:?}")]
    Timeout { server: String, timeout: Duration },
    #[error("connection to the server failed: {0}")]
    Io(#[from] io::Error),
    #[error("the server's reply is not valid: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("the server closed the connection without replying")]
    NoReply,
    #[error("the request cannot be sent: {0}")]
    Invalid(#[from] CodecError),
    /// The server answered with a reply of another operation (never from a correct server).
    #[error("the server replied to another operation: {0:?}")]
    Mismatch(Reply),
}

/// Where the server is, and how long one request may take.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    timeout: Duration,
}

/// How long one request may take unless a client is told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl Target {
    fn new(host: String, port: u16) -> Target {
        Target { host, port, timeout: DEFAULT_TIMEOUT }
    }

    fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Feeds a reply decoder from `read` until it yields a reply or the stream ends.
fn finish_reply(decoder: &mut ReplyDecoder, buf: &mut BytesMut, eof: bool) -> Result<Option<Reply>, ClientError> {
    let reply = if eof { decoder.decode_eof(buf)? } else { decoder.decode(buf)? };
    match reply {
        Some(reply) => Ok(Some(reply)),
        None if eof => Err(ClientError::NoReply),
        None => Ok(None),
    }
}

/// Generates a client's constructors and typed operation methods from its `request` method;
/// `$($await)*` is `.await` for the async client and nothing for the blocking one.
macro_rules! operations {
    ($($async_:ident)? ; $($await_:tt)*) => {
        /// A client of the server at `host` (a name or an address) and `port`; each request
        /// may take [`DEFAULT_TIMEOUT`] at most.
        pub fn new(host: impl Into<String>, port: u16) -> Self {
            Client { target: Target::new(host.into(), port) }
        }

        pub fn with_timeout(mut self, timeout: Duration) -> Self {
            self.target.timeout = timeout;
            self
        }

        /// REGISTER (SPEC 2.1). `birth_date` as `DD/MM/YYYY`.
        pub $($async_)? fn register(&self, full_name: impl AsRef<[u8]>, alias: impl AsRef<[u8]>, birth_date: impl AsRef<[u8]>) -> Result<RegisterReply, ClientError> {
            let request = Request::Register { full_name: bytes(full_name), alias: bytes(alias), birth_date: Some(bytes(birth_date)) };
            match self.request(&request)$($await_)*? { Reply::Register(r) => Ok(r), other => Err(ClientError::Mismatch(other)) }
        }

        /// REGISTER in seed 000's short form: the alias is the only field.
        pub $($async_)? fn register_alias(&self, alias: impl AsRef<[u8]>) -> Result<RegisterReply, ClientError> {
            let alias = bytes(alias);
            let request = Request::Register { full_name: alias.clone(), alias, birth_date: None };
            match self.request(&request)$($await_)*? { Reply::Register(r) => Ok(r), other => Err(ClientError::Mismatch(other)) }
        }

        /// UNREGISTER (SPEC 2.2).
        pub $($async_)? fn unregister(&self, alias: impl AsRef<[u8]>) -> Result<UnregisterReply, ClientError> {
            match self.request(&Request::Unregister { alias: bytes(alias) })$($await_)*? { Reply::Unregister(r) => Ok(r), other => Err(ClientError::Mismatch(other)) }
        }

        /// CONNECT (SPEC 2.3): `port` is where this user's listener accepts pushes.
        pub $($async_)? fn connect(&self, alias: impl AsRef<[u8]>, port: u16) -> Result<ConnectReply, ClientError> {
            let request = Request::Connect { alias: bytes(alias), port: Bytes::from(port.to_string()) };
            match self.request(&request)$($await_)*? { Reply::Connect(r) => Ok(r), other => Err(ClientError::Mismatch(other)) }
        }

        /// DISCONNECT (SPEC 2.4).
        pub $($async_)? fn disconnect(&self, alias: impl AsRef<[u8]>) -> Result<DisconnectReply, ClientError> {
            match self.request(&Request::Disconnect { alias: bytes(alias) })$($await_)*? { Reply::Disconnect(r) => Ok(r), other => Err(ClientError::Mismatch(other)) }
        }

        /// SEND (SPEC 2.5): `Ok { id }` carries the message's id.
        pub $($async_)? fn send(&self, sender: impl AsRef<[u8]>, recipient: impl AsRef<[u8]>, body: impl AsRef<[u8]>) -> Result<SendReply, ClientError> {
            let request = Request::Send { sender: bytes(sender), recipient: bytes(recipient), body: bytes(body) };
            match self.request(&request)$($await_)*? { Reply::Send(r) => Ok(r), other => Err(ClientError::Mismatch(other)) }
        }

        /// CONNECTEDUSERS (SPEC 2.6), with the requester's alias or without it.
        pub $($async_)? fn connected_users(&self, alias: Option<&[u8]>) -> Result<ConnectedUsersReply, ClientError> {
            let request = Request::ConnectedUsers { alias: alias.map(Bytes::copy_from_slice) };
            match self.request(&request)$($await_)*? { Reply::ConnectedUsers(r) => Ok(r), other => Err(ClientError::Mismatch(other)) }
        }

        /// USERS (SPEC 8): the connected users with their listening addresses.
        pub $($async_)? fn users(&self, alias: Option<&[u8]>) -> Result<UsersReply, ClientError> {
            let request = Request::Users { alias: alias.map(Bytes::copy_from_slice) };
            match self.request(&request)$($await_)*? { Reply::Users(r) => Ok(r), other => Err(ClientError::Mismatch(other)) }
        }

        /// SENDATTACH (SPEC 8): a message and the name of a file (only the name travels). To
        /// let the recipient fetch the file, offer it on the sender's listener
        /// ([`Offers::offer`]) once the reply is `Ok`.
        pub $($async_)? fn send_attach(&self, sender: impl AsRef<[u8]>, recipient: impl AsRef<[u8]>, body: impl AsRef<[u8]>, file: impl AsRef<[u8]>) -> Result<SendReply, ClientError> {
            let request = Request::SendAttach { sender: bytes(sender), recipient: bytes(recipient), body: bytes(body), file: bytes(file) };
            match self.request(&request)$($await_)*? { Reply::SendAttach(r) => Ok(r), other => Err(ClientError::Mismatch(other)) }
        }
    };
}

fn bytes(b: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(b.as_ref())
}

fn encode(request: &Request) -> Result<BytesMut, ClientError> {
    let mut out = BytesMut::new();
    request.encode(&mut out)?;
    Ok(out)
}

/// An async client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    target: Target,
}

impl Client {
    /// Sends one request on its own connection and returns the server's reply.
    pub async fn request(&self, request: &Request) -> Result<Reply, ClientError> {
        let out = encode(request)?;
        let t = &self.target;
        match tokio::time::timeout(t.timeout, self.exchange(request, &out)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout { server: t.name(), timeout: t.timeout }),
        }
    }

    async fn exchange(&self, request: &Request, out: &[u8]) -> Result<Reply, ClientError> {
        let t = &self.target;
        let mut stream = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|source| ClientError::Connect { server: t.name(), source })?;
        stream.write_all(out).await?;
        stream.shutdown().await?;
        let mut decoder = ReplyDecoder::new(request.operation());
        let mut buf = BytesMut::with_capacity(256);
        loop {
            let eof = stream.read_buf(&mut buf).await? == 0;
            if let Some(reply) = finish_reply(&mut decoder, &mut buf, eof)? {
                return Ok(reply);
            }
        }
    }

    operations!(async ; .await);
}

/// How long a listener waits for a push connection to finish before dropping it.
const PUSH_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes one push connection may carry: a push is four fields of at most 256.
const MAX_PUSH_BYTES: usize = 4096;

/// Reads one connection to a listener: a push connection to its end, decoding what it
/// carried; a `GET FILE` request (SPEC 8) is handed to a transfer thread serving `offers`.
/// A push connection comes back still open: closing it tells the server the push arrived,
/// so the caller closes it only once the pushes are queued. Closed earlier, the server's
/// next push could be queued first.
async fn read_pushes(mut stream: TcpStream, offers: &Offers) -> Result<(Vec<Push>, Option<TcpStream>), ProtocolError> {
    let mut buf = BytesMut::with_capacity(512);
    let read_all = async {
        while stream.read_buf(&mut buf).await? > 0 {
            if classify(&buf) == ConnectionKind::GetFile {
                return Ok(true);
            }
            if buf.len() > MAX_PUSH_BYTES {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "push connection carries too much"));
            }
        }
        Ok::<_, io::Error>(false)
    };
    let get_file = match tokio::time::timeout(PUSH_READ_TIMEOUT, read_all).await {
        Ok(result) => result?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "push connection did not end").into()),
    };
    if get_file {
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        files::spawn_transfer(stream, buf, offers);
        return Ok((Vec::new(), None));
    }
    Ok((decode_pushes(&mut buf)?, Some(stream)))
}

fn decode_pushes(buf: &mut BytesMut) -> Result<Vec<Push>, ProtocolError> {
    let mut decoder = PushDecoder::new();
    let mut pushes = Vec::new();
    while let Some(push) = decoder.decode_eof(buf)? {
        pushes.push(push);
    }
    Ok(pushes)
}

/// A user's listening socket: binds a free port and yields the server's pushes in order.
/// Each push connection is read to its end and then closed, which tells the server the push
/// was received (SPEC 3). Malformed pushes are logged and skipped.
pub struct Listener {
    addr: SocketAddr,
    pushes: mpsc::Receiver<Push>,
    task: tokio::task::JoinHandle<()>,
}

/// Pushes a listener holds before it stops accepting more.
const LISTENER_QUEUE: usize = 1024;

impl Listener {
    /// Listens on a free port of `ip` (`0.0.0.0` to be reachable from other machines). A
    /// `GET FILE` gets `ERROR`: this listener offers no file.
    pub async fn bind(ip: IpAddr) -> io::Result<Listener> {
        Listener::bind_offering(ip, Offers::new()).await
    }

    /// [`bind`](Self::bind), serving `GET FILE` (SPEC 8) for the files in `offers`.
    pub async fn bind_offering(ip: IpAddr, offers: Offers) -> io::Result<Listener> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, pushes) = mpsc::channel(LISTENER_QUEUE);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, from)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let tx = tx.clone();
                let offers = offers.clone();
                tokio::spawn(async move {
                    match read_pushes(stream, &offers).await {
                        Ok((pushes, connection)) => {
                            for push in pushes {
                                if tx.send(push).await.is_err() {
                                    return;
                                }
                            }
                            drop(connection);
                        }
                        Err(e) => tracing::warn!("bad push from {from}: {e}"),
                    }
                });
            }
        });
        Ok(Listener { addr, pushes, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The next push, waiting for it; `None` once the listener is closed.
    pub async fn next(&mut self) -> Option<Push> {
        self.pushes.recv().await
    }

    /// Stops accepting: the port is released at once.
    pub fn close(&mut self) {
        self.task.abort();
        self.pushes.close();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The local address of the socket that reaches `server`: where a listener is reachable
/// from that server (127.0.0.1 for a local server, the LAN address for a remote one). No
/// packet is sent. The unspecified address (every interface) when it cannot be told.
pub fn local_address_towards(server: SocketAddr) -> IpAddr {
    let any: SocketAddr = match server {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    std::net::UdpSocket::bind(any)
        .and_then(|socket| socket.connect(server).and_then(|_| socket.local_addr()))
        .map_or(any.ip(), |local| local.ip())
}

/// The same client and listener for code without an async runtime.
pub mod blocking {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
    use std::sync::Arc;
    use std::thread::JoinHandle;
    use std::time::Instant;

    use super::*;

    /// A blocking client of one server.
    #[derive(Debug, Clone)]
    pub struct Client {
        target: Target,
    }

    impl Client {
        /// Sends one request on its own connection and returns the server's reply.
        pub fn request(&self, request: &Request) -> Result<Reply, ClientError> {
            let out = encode(request)?;
            let t = &self.target;
            let deadline = Instant::now() + t.timeout;
            let timed_out = || ClientError::Timeout { server: t.name(), timeout: t.timeout };
            let mut stream = self.open(deadline)?;
            let left = |stream: &TcpStream| -> Result<(), ClientError> {
                let left =
                    deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or_else(timed_out)?;
                stream.set_read_timeout(Some(left))?;
                stream.set_write_timeout(Some(left))?;
                Ok(())
            };
            left(&stream)?;
            stream.write_all(&out).map_err(|e| io_or_timeout(e, timed_out))?;
            let _ = stream.shutdown(Shutdown::Write);
            let mut decoder = ReplyDecoder::new(request.operation());
            let mut buf = BytesMut::with_capacity(256);
            let mut chunk = [0u8; 1024];
            loop {
                left(&stream)?;
                let n = stream.read(&mut chunk).map_err(|e| io_or_timeout(e, timed_out))?;
                buf.extend_from_slice(&chunk[..n]);
                if let Some(reply) = finish_reply(&mut decoder, &mut buf, n == 0)? {
                    return Ok(reply);
                }
            }
        }

        /// The address a listener of this client binds by default: the local address of
        /// the socket that reaches the server (see [`local_address_towards`]), or every
        /// interface when the server's name does not resolve.
        pub fn listen_host(&self) -> IpAddr {
            let t = &self.target;
            match (t.host.as_str(), t.port).to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(server)) => local_address_towards(server),
                _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            }
        }

        fn open(&self, deadline: Instant) -> Result<TcpStream, ClientError> {
            let t = &self.target;
            let unreachable = |source| ClientError::Connect { server: t.name(), source };
            let addrs = (t.host.as_str(), t.port).to_socket_addrs().map_err(unreachable)?;
            let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
            for addr in addrs {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ClientError::Timeout { server: t.name(), timeout: t.timeout });
                }
                match TcpStream::connect_timeout(&addr, left) {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = e,
                }
            }
            Err(unreachable(last))
        }

        operations!( ; );
    }

    fn io_or_timeout(e: io::Error, timed_out: impl Fn() -> ClientError) -> ClientError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => timed_out(),
            _ => ClientError::Io(e),
        }
    }

    /// A blocking listener: a thread accepts push connections and queues their pushes.
    pub struct Listener {
        addr: SocketAddr,
        pushes: Receiver<Push>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Listener {
        /// Listens on a free port of `ip` (`0.0.0.0` to be reachable from other machines). A
        /// `GET FILE` gets `ERROR`: this listener offers no file.
        pub fn bind(ip: IpAddr) -> io::Result<Listener> {
            Listener::bind_offering(ip, Offers::new())
        }

        /// [`bind`](Self::bind), serving `GET FILE` (SPEC 8) for the files in `offers`, each
        /// on a thread of its own.
        pub fn bind_offering(ip: IpAddr, offers: Offers) -> io::Result<Listener> {
            let listener = TcpListener::bind(SocketAddr::new(ip, 0))?;
            let addr = listener.local_addr()?;
            let (tx, pushes) = sync_channel(LISTENER_QUEUE);
            let stop = Arc::new(AtomicBool::new(false));
            let stopping = stop.clone();
            let thread =
                std::thread::Builder::new().name(format!("cartero-listener-{}", addr.port())).spawn(move || {
                    for stream in listener.incoming() {
                        if stopping.load(Ordering::Acquire) {
                            return;
                        }
                        let Ok(mut stream) = stream else { continue };
                        let received = match read_connection(&mut stream) {
                            Ok((buf, true)) => {
                                files::spawn_transfer(stream, buf, &offers);
                                continue;
                            }
                            Ok((mut buf, false)) => decode_pushes(&mut buf).map_err(io::Error::other),
                            Err(e) => Err(e),
                        };
                        match received {
                            Ok(received) => {
                                for push in received {
                                    if tx.send(push).is_err() {
                                        return;
                                    }
                                }
                            }
                            Err(e) => tracing::warn!("bad push: {e}"),
                        }
                    }
                })?;
            Ok(Listener { addr, pushes, stop, thread: Some(thread) })
        }

        pub fn local_addr(&self) -> SocketAddr {
            self.addr
        }

        pub fn port(&self) -> u16 {
            self.addr.port()
        }

        /// The next push, waiting for it; `None` once the listener is closed.
        pub fn recv(&self) -> Option<Push> {
            self.pushes.recv().ok()
        }

        /// The next push if one arrives within `timeout`; `Err(true)` if the listener is
        /// closed, `Err(false)` if the time ran out.
        pub fn recv_timeout(&self, timeout: Duration) -> Result<Push, bool> {
            self.pushes.recv_timeout(timeout).map_err(|e| e == RecvTimeoutError::Disconnected)
        }

        /// Stops the listener and releases its port.
        pub fn close(&mut self) {
            if self.stop.swap(true, Ordering::AcqRel) {
                return;
            }
            // Wake the accept with a connection of our own, on loopback.
            let wake = match self.addr.ip() {
                ip if ip.is_unspecified() && ip.is_ipv4() => SocketAddr::from(([127, 0, 0, 1], self.addr.port())),
                ip if ip.is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, self.addr.port())),
                _ => self.addr,
            };
            let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            self.close();
        }
    }

    /// Reads a push connection to its end, or the start of a `GET FILE` request (then the
    /// flag is true and the rest is for [`files::spawn_transfer`]).
    fn read_connection(stream: &mut TcpStream) -> io::Result<(BytesMut, bool)> {
        stream.set_read_timeout(Some(PUSH_READ_TIMEOUT))?;
        let mut buf = BytesMut::with_capacity(512);
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Ok((buf, false));
            }
            buf.extend_from_slice(&chunk[..n]);
            if classify(&buf) == ConnectionKind::GetFile {
                return Ok((buf, true));
            }
            if buf.len() > MAX_PUSH_BYTES {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "push connection carries too much"));
            }
        }
    }
}
