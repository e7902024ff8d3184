//! Chat clients on framed connections: [`Client`] (tokio) and [`blocking::Client`] (threads).
//!
//! Both open a connection, [`join`](Client::join) under a name (SPEC-chat 3: `CONNECT`, then
//! `CONNECT_ACK`), send private messages and broadcasts, and hand over what the server sends
//! as [`Reply`] values (user lists, messages, broadcasts, errors), in the server's order.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

use crate::chat::codec::{CodecError, Frame, LineCodec};
use crate::chat::tls::{server_name, CertificateProblem, ClientTls, TlsError};
use crate::chat::wire::{check_name, parse_reply, NameError, Reply, Request};

/// How long one step (connecting, a reply) may take unless told otherwise.
pub fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    /// The server's certificate was refused (TLS).
    #[error("the certificate of {addr} is refused: {problem}")]
    Certificate { addr: String, problem: CertificateProblem },
    /// The TLS handshake failed for another reason than the certificate (often: the port
    /// does not speak TLS).
    #[error("TLS handshake with {addr} failed: {source}{}", if *plain { " (is it a plain, not a TLS, port?)" } else { "" })]
    Handshake { addr: String, source: io::Error, plain: bool },
    /// TLS could not be set up here (a `--ca` file, a host name).
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("no answer from the server within {0:?}")]
    Timeout(Duration),
    #[error("the server closed the connection")]
    Closed,
    #[error("invalid name: {0}")]
    InvalidName(#[from] NameError),
    /// `CONNECT_ACK|FAIL`, with the ERROR that came with it, if any.
    #[error("the server refused the name{}", match (code, text) { (Some(c), Some(t)) => format!(": {c} {t}"), _ => String::new() })]
    Refused { code: Option<u16>, text: Option<String> },
    /// The server answered CONNECT with an ERROR only (409: already joined).
    #[error("the server answered {code} {text}")]
    Error { code: u16, text: String },
    #[error("the server sent something that is not a chat message: {0:?}")]
    Protocol(String),
    #[error("the message cannot be sent: {0}")]
    Encode(CodecError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<CodecError> for ClientError {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::Io(e) => ClientError::Io(e),
            other => ClientError::Encode(other),
        }
    }
}

/// The error of a failed TLS handshake with `addr`.
fn handshake_error(addr: &str, e: io::Error, timeout: Duration) -> ClientError {
    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
        return ClientError::Timeout(timeout);
    }
    let rustls_error = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    if let Some(problem) = rustls_error.and_then(CertificateProblem::of) {
        return ClientError::Certificate { addr: addr.to_string(), problem };
    }
    // A plain server answers a ClientHello with an ERROR line, which is no TLS record.
    let plain =
        matches!(rustls_error, Some(rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. }))
            || e.kind() == io::ErrorKind::UnexpectedEof;
    ClientError::Handshake { addr: addr.to_string(), source: e, plain }
}

fn decode(frame: Frame) -> Result<Reply, ClientError> {
    match frame {
        Frame::Line(line) => {
            parse_reply(&line).map_err(|_| ClientError::Protocol(String::from_utf8_lossy(&line).into()))
        }
        Frame::TooLong => Err(ClientError::Protocol("a line over 1 MiB".into())),
    }
}

/// A chat connection (tokio), over plain TCP or TLS.
pub struct Client {
    reader: Receiver,
    writer: Sender,
    timeout: Duration,
    peer: SocketAddr,
}

/// The sending half of a [`Client`], for tasks that send while another one receives.
pub struct Sender {
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    buf: BytesMut,
}

/// The receiving half of a [`Client`].
pub struct Receiver {
    reader: Box<dyn AsyncRead + Send + Unpin>,
    buf: BytesMut,
    codec: LineCodec,
    closed: bool,
}

async fn open(addr: &str, timeout: Duration) -> Result<(TcpStream, SocketAddr), ClientError> {
    let fail = |source| ClientError::Connect { addr: addr.to_string(), source };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| fail(io::ErrorKind::TimedOut.into()))?
        .map_err(fail)?;
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().map_err(fail)?;
    Ok((stream, peer))
}

impl Client {
    /// Connects to `addr` (`host:port`), within `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        let (stream, peer) = open(addr, timeout).await?;
        let (read, write) = stream.into_split();
        Ok(Client::over(Box::new(read), Box::new(write), timeout, peer))
    }

    /// Connects to `addr` (`host:port`) over TLS, checking the server's certificate against
    /// `tls`'s roots and the name `host`; connecting and the handshake each within `timeout`.
    pub async fn connect_tls(addr: &str, timeout: Duration, tls: &ClientTls) -> Result<Client, ClientError> {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        let name = server_name(host)?;
        let (stream, peer) = open(addr, timeout).await?;
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        let stream = tokio::time::timeout(timeout, connector.connect(name, stream))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|e| handshake_error(addr, e, timeout))?;
        let (read, write) = tokio::io::split(stream);
        Ok(Client::over(Box::new(read), Box::new(write), timeout, peer))
    }

    fn over(
        read: Box<dyn AsyncRead + Send + Unpin>,
        write: Box<dyn AsyncWrite + Send + Unpin>,
        timeout: Duration,
        peer: SocketAddr,
    ) -> Client {
        Client {
            reader: Receiver { reader: read, buf: BytesMut::new(), codec: LineCodec::for_replies(), closed: false },
            writer: Sender { writer: write, buf: BytesMut::new() },
            timeout,
            peer,
        }
    }

    /// Connects and joins as `name`.
    pub async fn connect_as(addr: &str, name: &str, timeout: Duration) -> Result<Client, ClientError> {
        let mut client = Client::connect(addr, timeout).await?;
        client.join(name).await?;
        Ok(client)
    }

    /// The server's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }

    /// Sends `CONNECT|name` and waits for `CONNECT_ACK`. On `FAIL` the connection stays open
    /// for another try.
    pub async fn join(&mut self, name: &str) -> Result<(), ClientError> {
        check_name(name)?;
        self.writer.request(&Request::Connect(name.to_string())).await?;
        match self.recv().await? {
            Reply::ConnectAck(true) => Ok(()),
            Reply::ConnectAck(false) => {
                // The ERROR that says why comes right behind, on framed connections.
                match self.recv().await {
                    Ok(Reply::Error { code, text }) => Err(ClientError::Refused { code: Some(code), text: Some(text) }),
                    _ => Err(ClientError::Refused { code: None, text: None }),
                }
            }
            Reply::Error { code, text } => Err(ClientError::Error { code, text }),
            other => Err(ClientError::Protocol(format!("{other:?} before CONNECT_ACK"))),
        }
    }

    /// `MESSAGE|to|content`.
    pub async fn send(&mut self, to: &str, content: &str) -> Result<(), ClientError> {
        self.writer.send(to, content).await
    }

    /// `BROADCAST|content`.
    pub async fn broadcast(&mut self, content: &str) -> Result<(), ClientError> {
        self.writer.broadcast(content).await
    }

    /// `DISCONNECT`, then waits (within the timeout) for the server to close.
    pub async fn disconnect(mut self) -> Result<(), ClientError> {
        self.writer.disconnect().await?;
        let timeout = self.timeout;
        let _ =
            tokio::time::timeout(timeout, async { while let Ok(Some(_)) = self.reader.next_event().await {} }).await;
        Ok(())
    }

    /// The next message from the server, waiting at most the client's timeout.
    pub async fn recv(&mut self) -> Result<Reply, ClientError> {
        match tokio::time::timeout(self.timeout, self.reader.next_event()).await {
            Err(_) => Err(ClientError::Timeout(self.timeout)),
            Ok(Ok(None)) => Err(ClientError::Closed),
            Ok(Ok(Some(reply))) => Ok(reply),
            Ok(Err(e)) => Err(e),
        }
    }

    /// The next message from the server, however long it takes; `None` once it closed.
    pub async fn next_event(&mut self) -> Result<Option<Reply>, ClientError> {
        self.reader.next_event().await
    }

    /// Splits the connection so that one task can send while another receives.
    pub fn into_split(self) -> (Sender, Receiver) {
        (self.writer, self.reader)
    }
}

impl Sender {
    /// Sends any request (checked: no line break, at most 1024 bytes).
    pub async fn request(&mut self, request: &Request) -> Result<(), ClientError> {
        self.buf.clear();
        LineCodec::for_requests().encode(request, &mut self.buf)?;
        self.writer.write_all(&self.buf).await?;
        // TLS keeps records until flushed; plain TCP has nothing to flush.
        self.writer.flush().await?;
        Ok(())
    }

    /// `MESSAGE|to|content`.
    pub async fn send(&mut self, to: &str, content: &str) -> Result<(), ClientError> {
        self.request(&Request::Message { to: to.to_string(), content: content.to_string() }).await
    }

    /// `BROADCAST|content`.
    pub async fn broadcast(&mut self, content: &str) -> Result<(), ClientError> {
        self.request(&Request::Broadcast(content.to_string())).await
    }

    /// `DISCONNECT` (the server then closes the connection).
    pub async fn disconnect(&mut self) -> Result<(), ClientError> {
        self.request(&Request::Disconnect).await
    }
}

impl Receiver {
    /// The next message from the server; `None` once it closed.
    /// Cancel-safe: a message partly read stays buffered for the next call.
    pub async fn next_event(&mut self) -> Result<Option<Reply>, ClientError> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf)? {
                return decode(frame).map(Some);
            }
            if self.closed {
                return Ok(None);
            }
            self.buf.reserve(8192);
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                self.closed = true;
                if let Some(frame) = self.codec.decode_eof(&mut self.buf)? {
                    return decode(frame).map(Some);
                }
            }
        }
    }
}

/// The same client on plain threads: blocking calls, each bounded.
pub mod blocking {
    use std::io::{self, Read, Write};
    use std::net::{Shutdown, TcpStream, ToSocketAddrs};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    use bytes::BytesMut;
    use rustls::ClientConnection;
    use tokio_util::codec::{Decoder, Encoder};

    use super::{decode, handshake_error, ClientError};
    use crate::chat::codec::LineCodec;
    use crate::chat::tls::{server_name, ClientTls};
    use crate::chat::wire::{check_name, Reply, Request};

    /// A chat connection (blocking), over plain TCP or TLS. Receiving and sending may happen
    /// on different threads: [`Client::sender`] gives a handle for sending.
    pub struct Client {
        /// The receiving side of the socket (a clone of the sender's).
        stream: TcpStream,
        buf: BytesMut,
        codec: LineCodec,
        sender: Sender,
        timeout: Duration,
        closed: bool,
    }

    /// Sends on a [`Client`]'s connection from any thread.
    #[derive(Clone)]
    pub struct Sender {
        link: Arc<Mutex<Link>>,
    }

    /// The sending side of the socket and, on TLS, the session both sides go through: the
    /// receiving thread reads the socket without the lock and takes it only to decrypt.
    struct Link {
        stream: TcpStream,
        tls: Option<Box<ClientConnection>>,
    }

    impl Link {
        /// Writes out every TLS record the session holds.
        fn flush_tls(&mut self) -> io::Result<()> {
            if let Some(tls) = &mut self.tls {
                while tls.wants_write() {
                    tls.write_tls(&mut self.stream)?;
                }
            }
            Ok(())
        }
    }

    fn open(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, ClientError> {
        let addr = format!("{host}:{port}");
        let fail = |source| ClientError::Connect { addr: addr.clone(), source };
        let mut last = io::Error::from(io::ErrorKind::NotFound);
        let addrs = (host, port).to_socket_addrs().map_err(fail)?;
        for candidate in addrs {
            match TcpStream::connect_timeout(&candidate, timeout) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = e,
            }
        }
        Err(fail(last))
    }

    impl Client {
        /// Connects to `host:port`, each step within `timeout`.
        pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<Client, ClientError> {
            let stream = open(host, port, timeout)?;
            Client::over(stream, None, timeout, &format!("{host}:{port}"))
        }

        /// Connects to `host:port` over TLS, checking the server's certificate against
        /// `tls`'s roots and the name `host`; each step within `timeout`.
        pub fn connect_tls(host: &str, port: u16, timeout: Duration, tls: &ClientTls) -> Result<Client, ClientError> {
            let name = server_name(host)?;
            let addr = format!("{host}:{port}");
            let mut stream = open(host, port, timeout)?;
            let mut session = ClientConnection::new(tls.config.clone(), name)
                .map_err(|e| handshake_error(&addr, io::Error::new(io::ErrorKind::InvalidData, e), timeout))?;
            let deadline = Instant::now() + timeout;
            stream.set_write_timeout(Some(timeout))?;
            while session.is_handshaking() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ClientError::Timeout(timeout));
                }
                stream.set_read_timeout(Some(left))?;
                if let Err(e) = session.complete_io(&mut stream) {
                    // Tell the server why, when rustls has an alert to send.
                    let _ = session.write_tls(&mut stream);
                    return Err(handshake_error(&addr, e, timeout));
                }
            }
            stream.set_write_timeout(None)?;
            Client::over(stream, Some(Box::new(session)), timeout, &addr)
        }

        fn over(
            stream: TcpStream,
            tls: Option<Box<ClientConnection>>,
            timeout: Duration,
            addr: &str,
        ) -> Result<Client, ClientError> {
            let writer =
                stream.try_clone().map_err(|source| ClientError::Connect { addr: addr.to_string(), source })?;
            Ok(Client {
                stream,
                buf: BytesMut::new(),
                codec: LineCodec::for_replies(),
                sender: Sender { link: Arc::new(Mutex::new(Link { stream: writer, tls })) },
                timeout,
                closed: false,
            })
        }

        /// A handle that sends on this connection.
        pub fn sender(&self) -> Sender {
            self.sender.clone()
        }

        /// Sends `CONNECT|name` and waits (within the timeout) for `CONNECT_ACK`; on `FAIL`
        /// the connection stays open for another try.
        pub fn join(&mut self, name: &str) -> Result<(), ClientError> {
            check_name(name)?;
            self.sender.request(&Request::Connect(name.to_string()))?;
            let timeout = self.timeout;
            match self.recv_timeout(timeout)? {
                None => Err(ClientError::Timeout(timeout)),
                Some(Reply::ConnectAck(true)) => Ok(()),
                Some(Reply::ConnectAck(false)) => match self.recv_timeout(timeout) {
                    Ok(Some(Reply::Error { code, text })) => {
                        Err(ClientError::Refused { code: Some(code), text: Some(text) })
                    }
                    _ => Err(ClientError::Refused { code: None, text: None }),
                },
                Some(Reply::Error { code, text }) => Err(ClientError::Error { code, text }),
                Some(other) => Err(ClientError::Protocol(format!("{other:?} before CONNECT_ACK"))),
            }
        }

        /// `MESSAGE|to|content`.
        pub fn send(&self, to: &str, content: &str) -> Result<(), ClientError> {
            self.sender.send(to, content)
        }

        /// `BROADCAST|content`.
        pub fn broadcast(&self, content: &str) -> Result<(), ClientError> {
            self.sender.broadcast(content)
        }

        /// `DISCONNECT` (the server then closes the connection).
        pub fn disconnect(&self) -> Result<(), ClientError> {
            self.sender.disconnect()
        }

        /// The next message from the server within `wait`: `Ok(None)` when none came in
        /// time, `Err(Closed)` once the server closed.
        pub fn recv_timeout(&mut self, wait: Duration) -> Result<Option<Reply>, ClientError> {
            let deadline = Instant::now() + wait;
            loop {
                if let Some(frame) = self.codec.decode(&mut self.buf)? {
                    return decode(frame).map(Some);
                }
                if self.closed {
                    return Err(ClientError::Closed);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
                let mut chunk = [0u8; 8192];
                match self.stream.read(&mut chunk) {
                    Ok(0) => {
                        self.closed = true;
                        if let Some(frame) = self.codec.decode_eof(&mut self.buf)? {
                            return decode(frame).map(Some);
                        }
                    }
                    Ok(n) => self.take(&chunk[..n])?,
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => self.closed = true,
                    Err(e) => return Err(e.into()),
                }
            }
        }

        /// Adds bytes read from the socket to the buffer, decrypted on TLS.
        fn take(&mut self, mut bytes: &[u8]) -> Result<(), ClientError> {
            let mut link = self.sender.lock();
            let Link { stream, tls } = &mut *link;
            let Some(tls) = tls else {
                self.buf.extend_from_slice(bytes);
                return Ok(());
            };
            while !bytes.is_empty() {
                tls.read_tls(&mut bytes)?;
                if let Err(e) = tls.process_new_packets() {
                    let _ = tls.write_tls(stream);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e).into());
                }
                let mut plain = [0u8; 8192];
                loop {
                    match tls.reader().read(&mut plain) {
                        // The server's close_notify.
                        Ok(0) => {
                            self.closed = true;
                            break;
                        }
                        Ok(n) => self.buf.extend_from_slice(&plain[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            // Answers the session owes (a key update), if any.
            link.flush_tls()?;
            Ok(())
        }
    }

    impl Sender {
        fn lock(&self) -> MutexGuard<'_, Link> {
            self.link.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Sends any request (checked: no line break, at most 1024 bytes).
        pub fn request(&self, request: &Request) -> Result<(), ClientError> {
            let mut out = BytesMut::new();
            LineCodec::for_requests().encode(request, &mut out)?;
            let mut link = self.lock();
            if link.tls.is_none() {
                link.stream.write_all(&out)?;
                return Ok(());
            }
            let mut rest = &out[..];
            while !rest.is_empty() {
                let Some(tls) = &mut link.tls else { break };
                let n = tls.writer().write(rest)?;
                rest = &rest[n..];
                link.flush_tls()?;
            }
            Ok(())
        }

        /// `MESSAGE|to|content`.
        pub fn send(&self, to: &str, content: &str) -> Result<(), ClientError> {
            self.request(&Request::Message { to: to.to_string(), content: content.to_string() })
        }

        /// `BROADCAST|content`.
        pub fn broadcast(&self, content: &str) -> Result<(), ClientError> {
            self.request(&Request::Broadcast(content.to_string()))
        }

        /// `DISCONNECT` (the server then closes the connection).
        pub fn disconnect(&self) -> Result<(), ClientError> {
            self.request(&Request::Disconnect)
        }

        /// Closes the connection both ways (a receiving thread then sees `Closed`); on TLS
        /// after a close_notify.
        pub fn shutdown(&self) {
            let mut link = self.lock();
            if let Some(tls) = &mut link.tls {
                tls.send_close_notify();
                let _ = link.stream.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = link.flush_tls();
            }
            let _ = link.stream.shutdown(Shutdown::Both);
        }
    }
}
