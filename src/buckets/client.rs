//! Clients of any bucket server, in either vocabulary: [`Client`] (async, tokio) and
//! [`blocking::Client`] (a thread of its own). Transfers stream through a fixed buffer; every
//! read and write is bounded by the client's timeout; replies are read strictly
//! ([`wire::parse_reply_head`]) and lines are bounded.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::store::{Name, NameError};
use super::wire::{self, BadReply, Command, Op, ReplyHead, Request, Vocabulary};

/// The transfer buffer, as the server's.
const BUFFER: usize = 64 * 1024;
/// The longest reply line read (a listing line holds two names and a size).
const MAX_REPLY_LINE: usize = 2048;
/// The most entries of a listing read.
const MAX_LISTING: u64 = 1_000_000;

/// What a client call can fail with. The `Display` text is one readable line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("bad name {name:?}: {reason}")]
    BadName { name: String, reason: NameError },
    #[error("the {vocabulary} vocabulary has no such command")]
    Unsupported { vocabulary: Vocabulary },
    /// The server refused, with its reason.
    #[error("the server refused: {0}")]
    Refused(String),
    /// EAFIT: the file exists and uploads never overwrite.
    #[error("the file exists (the eafit vocabulary never overwrites)")]
    Exists,
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    #[error("the connection closed in the middle of a reply")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the local file changed size while it was being uploaded")]
    SourceChanged,
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl From<BadReply> for ClientError {
    fn from(e: BadReply) -> ClientError {
        ClientError::Protocol(e.to_string())
    }
}

/// One file of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub bucket: String,
    pub name: String,
    pub size: u64,
}

fn name(text: &str) -> Result<Name, ClientError> {
    Name::parse(text.as_bytes()).map_err(|reason| ClientError::BadName { name: text.to_owned(), reason })
}

/// An async client on one connection.
pub struct Client {
    stream: BufReader<TcpStream>,
    vocabulary: Vocabulary,
    timeout: Duration,
}

impl Client {
    /// Connects to `host:port`; requests use `vocabulary`. The default timeout is 30 s.
    pub async fn connect(host: &str, port: u16, vocabulary: Vocabulary) -> Result<Client, ClientError> {
        let addr = format!("{host}:{port}");
        let timeout = Duration::from_secs(30);
        let connect = tokio::time::timeout(timeout, TcpStream::connect((host, port))).await;
        let stream = match connect {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(ClientError::Connect { addr, source }),
            Err(_) => return Err(ClientError::Connect { addr, source: io::ErrorKind::TimedOut.into() }),
        };
        let _ = stream.set_nodelay(true);
        Ok(Client { stream: BufReader::with_capacity(BUFFER, stream), vocabulary, timeout })
    }

    /// Bounds every read and write (not whole transfers) by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    pub fn vocabulary(&self) -> Vocabulary {
        self.vocabulary
    }

    async fn timed<T>(&self, work: impl std::future::Future<Output = io::Result<T>>) -> Result<T, ClientError> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ClientError::Timeout(self.timeout)),
        }
    }

    async fn send(&mut self, command: &Command) -> Result<(), ClientError> {
        let line = Request::encode(self.vocabulary, command)
            .ok_or(ClientError::Unsupported { vocabulary: self.vocabulary })?;
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.stream.get_mut().write_all(line.as_bytes())).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }

    /// One reply line, at most [`MAX_REPLY_LINE`] bytes, without its `\n`.
    async fn line(&mut self) -> Result<String, ClientError> {
        let mut line = Vec::new();
        let timeout = self.timeout;
        let limited = (&mut self.stream).take(MAX_REPLY_LINE as u64 + 1);
        tokio::pin!(limited);
        let read = tokio::time::timeout(timeout, limited.read_until(b'\n', &mut line)).await;
        match read {
            Err(_) => return Err(ClientError::Timeout(timeout)),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(_)) => {}
        }
        if line.last() != Some(&b'\n') {
            return Err(if line.len() > MAX_REPLY_LINE {
                ClientError::Protocol(format!("a reply line longer than {MAX_REPLY_LINE} bytes"))
            } else {
                ClientError::Closed
            });
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8(line).map_err(|e| ClientError::Protocol(format!("a reply line that is not UTF-8: {e}")))
    }

    async fn head(&mut self, op: Op) -> Result<ReplyHead, ClientError> {
        let line = self.line().await?;
        Ok(wire::parse_reply_head(self.vocabulary, op, &line)?)
    }

    async fn simple(&mut self, command: Command) -> Result<(), ClientError> {
        let op = command.op();
        self.send(&command).await?;
        match self.head(op).await? {
            ReplyHead::Done => Ok(()),
            ReplyHead::Failed(reason) => Err(ClientError::Refused(reason)),
            other => Err(ClientError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    async fn listing(&mut self, command: Command) -> Result<Vec<String>, ClientError> {
        let op = command.op();
        self.send(&command).await?;
        match self.head(op).await? {
            ReplyHead::Count(n) if n <= MAX_LISTING => {
                let mut lines = Vec::with_capacity(n.min(1024) as usize);
                for _ in 0..n {
                    lines.push(self.line().await?);
                }
                Ok(lines)
            }
            ReplyHead::Count(n) => Err(ClientError::Protocol(format!("a listing of {n} entries"))),
            ReplyHead::Failed(reason) => Err(ClientError::Refused(reason)),
            other => Err(ClientError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// The help text (codes vocabulary only).
    pub async fn help(&mut self) -> Result<Vec<String>, ClientError> {
        self.listing(Command::Help).await
    }

    /// The bucket names, sorted as the server sends them.
    pub async fn list_buckets(&mut self) -> Result<Vec<String>, ClientError> {
        self.listing(Command::ListBuckets).await
    }

    pub async fn create_bucket(&mut self, bucket: &str) -> Result<(), ClientError> {
        self.simple(Command::CreateBucket(name(bucket)?)).await
    }

    pub async fn delete_bucket(&mut self, bucket: &str) -> Result<(), ClientError> {
        self.simple(Command::DeleteBucket(name(bucket)?)).await
    }

    pub async fn delete_file(&mut self, bucket: &str, file: &str) -> Result<(), ClientError> {
        self.simple(Command::DeleteFile { bucket: name(bucket)?, file: name(file)? }).await
    }

    /// The files of one bucket, or of every bucket (`None`, codes vocabulary only).
    pub async fn list_files(&mut self, bucket: Option<&str>) -> Result<Vec<RemoteFile>, ClientError> {
        let bucket = bucket.map(name).transpose()?;
        let lines = self.listing(Command::ListFiles(bucket.clone())).await?;
        let mut files = Vec::with_capacity(lines.len());
        for line in lines {
            let parts: Vec<&str> = line.split(' ').collect();
            let file = match (self.vocabulary, parts.as_slice()) {
                (Vocabulary::Codes, [b, f, size]) => (b.to_string(), f.to_string(), size),
                (Vocabulary::Eafit, [f, size]) => {
                    (bucket.as_ref().map(|b| b.to_string()).unwrap_or_default(), f.to_string(), size)
                }
                _ => return Err(ClientError::Protocol(format!("a listing line {line:?}"))),
            };
            let size = file.2.parse().map_err(|_| ClientError::Protocol(format!("a listing line {line:?}")))?;
            files.push(RemoteFile { bucket: file.0, name: file.1, size });
        }
        Ok(files)
    }

    /// Uploads exactly `size` bytes read from `source` as `bucket/file`; `progress` is told
    /// the bytes sent so far. Codes: replaces an existing file. EAFIT: refuses
    /// ([`ClientError::Exists`]) when the file exists.
    pub async fn upload<R: AsyncRead + Unpin>(
        &mut self,
        bucket: &str,
        file: &str,
        size: u64,
        mut source: R,
        mut progress: impl FnMut(u64),
    ) -> Result<(), ClientError> {
        let command = Command::Upload { bucket: name(bucket)?, file: name(file)?, size };
        self.send(&command).await?;
        if self.vocabulary == Vocabulary::Eafit {
            match self.head(Op::Upload).await? {
                ReplyHead::Ack => {}
                ReplyHead::Exist => return Err(ClientError::Exists),
                ReplyHead::Failed(reason) => return Err(ClientError::Refused(reason)),
                other => return Err(ClientError::Protocol(format!("unexpected reply {other:?} before the bytes"))),
            }
        }
        let mut buf = vec![0u8; BUFFER];
        let mut sent = 0u64;
        while sent < size {
            let want = ((size - sent) as usize).min(buf.len());
            let n = match self.timed(source.read(&mut buf[..want])).await {
                Ok(n) => n,
                Err(e) => {
                    // The server waits for bytes we cannot give: this connection is done.
                    let _ = self.stream.get_mut().shutdown().await;
                    return Err(e);
                }
            };
            if n == 0 {
                // The server waits for bytes we do not have: this connection is done.
                let _ = self.stream.get_mut().shutdown().await;
                return Err(ClientError::SourceChanged);
            }
            let timeout = self.timeout;
            let written = tokio::time::timeout(timeout, self.stream.get_mut().write_all(&buf[..n])).await;
            match written {
                Ok(Ok(())) => {}
                // The server may have refused and closed early (a size over its limit): its
                // reply says why.
                Ok(Err(e)) => {
                    return match self.head(Op::Upload).await {
                        Ok(ReplyHead::Failed(reason)) => Err(ClientError::Refused(reason)),
                        _ => Err(e.into()),
                    }
                }
                Err(_) => return Err(ClientError::Timeout(timeout)),
            }
            sent += n as u64;
            progress(sent);
        }
        match self.head(Op::Upload).await? {
            ReplyHead::Done => Ok(()),
            ReplyHead::Failed(reason) => Err(ClientError::Refused(reason)),
            other => Err(ClientError::Protocol(format!("unexpected reply {other:?} after the bytes"))),
        }
    }

    /// Downloads `bucket/file` into `sink`; `start` is told the size before the first byte,
    /// `progress` the bytes received so far. Returns the size.
    pub async fn download<W: AsyncWrite + Unpin>(
        &mut self,
        bucket: &str,
        file: &str,
        mut sink: W,
        start: impl FnOnce(u64),
        mut progress: impl FnMut(u64),
    ) -> Result<u64, ClientError> {
        self.send(&Command::Download { bucket: name(bucket)?, file: name(file)? }).await?;
        let size = match self.head(Op::Download).await? {
            ReplyHead::Count(size) => size,
            ReplyHead::Failed(reason) => return Err(ClientError::Refused(reason)),
            other => return Err(ClientError::Protocol(format!("unexpected reply {other:?}"))),
        };
        start(size);
        let mut got = 0u64;
        while got < size {
            let timeout = self.timeout;
            let chunk = match tokio::time::timeout(timeout, self.stream.fill_buf()).await {
                Ok(result) => result?,
                Err(_) => return Err(ClientError::Timeout(timeout)),
            };
            if chunk.is_empty() {
                return Err(ClientError::Closed);
            }
            let n = chunk.len().min((size - got) as usize);
            let written = tokio::time::timeout(timeout, sink.write_all(&chunk[..n])).await;
            match written {
                Ok(result) => result?,
                Err(_) => return Err(ClientError::Timeout(timeout)),
            }
            self.stream.consume(n);
            got += n as u64;
            progress(got);
        }
        self.timed(sink.flush()).await?;
        Ok(size)
    }

    /// Says goodbye (`QUIT` or `EXIT`) and waits for the reply.
    pub async fn quit(mut self) -> Result<(), ClientError> {
        self.simple(Command::Quit).await
    }
}

/// The same client for code without an async runtime: each call runs on a small runtime of
/// the client's own.
pub mod blocking {
    use std::io::{Read, Write};
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use super::{ClientError, RemoteFile, Vocabulary};

    /// A blocking client on one connection.
    pub struct Client {
        runtime: tokio::runtime::Runtime,
        inner: super::Client,
    }

    impl Client {
        pub fn connect(host: &str, port: u16, vocabulary: Vocabulary) -> Result<Client, ClientError> {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let inner = runtime.block_on(super::Client::connect(host, port, vocabulary))?;
            Ok(Client { runtime, inner })
        }

        pub fn with_timeout(mut self, timeout: Duration) -> Client {
            self.inner = self.inner.with_timeout(timeout);
            self
        }

        pub fn help(&mut self) -> Result<Vec<String>, ClientError> {
            self.runtime.block_on(self.inner.help())
        }

        pub fn list_buckets(&mut self) -> Result<Vec<String>, ClientError> {
            self.runtime.block_on(self.inner.list_buckets())
        }

        pub fn list_files(&mut self, bucket: Option<&str>) -> Result<Vec<RemoteFile>, ClientError> {
            self.runtime.block_on(self.inner.list_files(bucket))
        }

        pub fn create_bucket(&mut self, bucket: &str) -> Result<(), ClientError> {
            self.runtime.block_on(self.inner.create_bucket(bucket))
        }

        pub fn delete_bucket(&mut self, bucket: &str) -> Result<(), ClientError> {
            self.runtime.block_on(self.inner.delete_bucket(bucket))
        }

        pub fn delete_file(&mut self, bucket: &str, file: &str) -> Result<(), ClientError> {
            self.runtime.block_on(self.inner.delete_file(bucket, file))
        }

        /// Uploads exactly `size` bytes of `source` as `bucket/file`.
        pub fn upload(
            &mut self,
            bucket: &str,
            file: &str,
            size: u64,
            source: impl Read + Unpin,
            progress: impl FnMut(u64),
        ) -> Result<(), ClientError> {
            self.runtime.block_on(self.inner.upload(bucket, file, size, SyncRead(source), progress))
        }

        /// Downloads `bucket/file` into `sink`; returns its size.
        pub fn download(
            &mut self,
            bucket: &str,
            file: &str,
            sink: impl Write + Unpin,
            start: impl FnOnce(u64),
            progress: impl FnMut(u64),
        ) -> Result<u64, ClientError> {
            self.runtime.block_on(self.inner.download(bucket, file, SyncWrite(sink), start, progress))
        }

        pub fn quit(self) -> Result<(), ClientError> {
            let Client { runtime, inner } = self;
            runtime.block_on(inner.quit())
        }
    }

    /// A `Read` seen as an `AsyncRead`: each poll reads synchronously, which is right on the
    /// client's own single-threaded runtime, where nothing else waits.
    struct SyncRead<R>(R);

    impl<R: Read + Unpin> tokio::io::AsyncRead for SyncRead<R> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self.0.read(buf.initialize_unfilled())?;
            buf.advance(n);
            Poll::Ready(Ok(()))
        }
    }

    struct SyncWrite<W>(W);

    impl<W: Write + Unpin> tokio::io::AsyncWrite for SyncWrite<W> {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            Poll::Ready(self.0.write(buf))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(self.0.flush())
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(self.0.flush())
        }
    }
}
