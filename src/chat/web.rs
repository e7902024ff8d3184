//! The browser client: `cartero chat serve --web PORT` (`docs/chat.md`, "Browser client").
//!
//! One HTTP listener serves the page (`GET /`, HTML, CSS and JS in one file built into the
//! binary) and the WebSocket endpoint `GET /ws`. Each text frame is one chat message without
//! its `\n`, both ways, through the same engine as the TCP connections, so browser and TCP
//! users see each other. A WebSocket connection is a framed connection to the engine with its
//! own bounded [`Outbox`], written one message per frame: a tab that stops reading is dropped
//! with `ERROR|503` like a slow TCP reader. Frames over 1024 bytes are refused by the
//! WebSocket layer (`ERROR|413`, then the connection closes); binary frames get `ERROR|400`
//! (docs/protocols/chat.md, section 9). HTTP and WebSocket connections count against
//! `max_connections` with the TCP ones; an HTTP connection that sends no request head for
//! `connect_timeout` is closed.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use tokio_util::task::TaskTracker;

use crate::chat::codec::Frame;
use crate::chat::engine::{ConnId, Leave, Mode};
use crate::chat::server::{admit, leave_hub, lock, refuse, release_due, unix_millis, End, Outbox, Shared};
use crate::chat::wire::{self, Code, MAX_MESSAGE};

/// The page: HTML with its CSS and JS inline, no external URL.
const PAGE: &str = include_str!("web/index.html");
/// What the page may load and where it may connect: nothing but itself.
const PAGE_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:";
/// Bytes an HTTP connection may buffer for a request's head (cookies included).
const MAX_HTTP_BUFFER: usize = 16 * 1024;
/// Bytes read from a WebSocket at once.
const READ_BUFFER: usize = 4096;
/// Bytes a WebSocket may hold unwritten: the longest message the server sends (a user list
/// of 256 KiB) with room to spare; messages go out one at a time.
const MAX_WRITE_BUFFER: usize = 1 << 20;
/// WebSocket connections take their ids from the top half, the TCP server's counter the
/// bottom one, so the two never meet.
const FIRST_WEB_ID: u64 = 1 << 63;
/// How long a closing WebSocket is given for its close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct WebState {
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    tasks: TaskTracker,
    next_id: Arc<AtomicU64>,
}

/// Serves the page and `/ws` on `listener` until `stop` turns true. Each HTTP connection
/// must send a request's head within `connect_timeout` (also between requests) and in at
/// most [`MAX_HTTP_BUFFER`] bytes, else it is closed.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    tasks: TaskTracker,
) {
    let state = WebState {
        shared: shared.clone(),
        stop: stop.clone(),
        tasks: tasks.clone(),
        next_id: Arc::new(AtomicU64::new(FIRST_WEB_ID)),
    };
    let app = Router::new().route("/", get(page)).route("/ws", get(ws)).with_state(state);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(shared.config.connect_timeout).max_buf_size(MAX_HTTP_BUFFER);
    let stop_connections = stop.clone();
    let shutdown = async {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    tokio::pin!(shutdown);
    while let Some((stream, peer)) = crate::net::accept(&listener, &mut shutdown).await {
        let stats = &shared.stats;
        if stats.connections.load(Ordering::Relaxed) >= shared.config.max_connections {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("{peer}: refused, {} connections open", shared.config.max_connections);
            continue;
        }
        let _ = stream.set_nodelay(true);
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let io = TokioIo::new(Counted { stream, shared: shared.clone() });
        let service = TowerToHyperService::new(app.clone().layer(Extension(Peer(peer))));
        let connection = http.serve_connection(io, service).with_upgrades();
        let (mut stop, grace) = (stop_connections.clone(), shared.config.drop_grace);
        tasks.spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(grace, connection).await;
        });
    }
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}

/// `GET /ws`: a WebSocket upgrade (axum answers a request without the right headers with a
/// 4xx status and no upgrade).
async fn ws(
    State(state): State<WebState>,
    Extension(Peer(peer)): Extension<Peer>,
    upgrade: WebSocketUpgrade,
) -> impl IntoResponse {
    let upgrade = upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER);
    let WebState { shared, stop, tasks, next_id } = state;
    // The per-address connection limit counts browser users as it counts TCP ones.
    if !lock(&shared.limiter).open(peer.ip(), shared.origin.elapsed()) {
        lock(&shared.hub).log(format!("s> ERROR {} {peer}", Code::TooManyRequests.number()));
        return (StatusCode::TOO_MANY_REQUESTS, wire::TEXT_TOO_MANY_CONNECTIONS).into_response();
    }
    let id = ConnId(next_id.fetch_add(1, Ordering::Relaxed));
    upgrade
        .on_failed_upgrade({
            let shared = shared.clone();
            move |_| lock(&shared.limiter).close(peer.ip(), shared.origin.elapsed())
        })
        .on_upgrade(move |socket| {
            tasks.track_future(async move {
                connection(shared.clone(), socket, peer, id, stop).await;
                lock(&shared.limiter).close(peer.ip(), shared.origin.elapsed());
            })
        })
        .into_response()
}

/// The TCP peer of an HTTP connection: the address the console shows for a WebSocket user
/// who has not joined.
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

/// A TCP stream counted in [`Stats::connections`](crate::chat::server::Stats) while open.
struct Counted {
    stream: TcpStream,
    shared: Arc<Shared>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

type Sink = SplitSink<WebSocket, Message>;
type Sending = Pin<Box<dyn Future<Output = (Sink, Result<(), axum::Error>)> + Send>>;

/// One WebSocket user, from the upgrade to the close.
async fn connection(
    shared: Arc<Shared>,
    socket: WebSocket,
    peer: SocketAddr,
    id: ConnId,
    mut stop: watch::Receiver<bool>,
) {
    let config = &shared.config;
    let outbox = Arc::new(Outbox::new(peer));
    {
        let mut hub = lock(&shared.hub);
        hub.outboxes.insert(id, outbox.clone());
        hub.engine.open(id, Mode::Framed);
    }
    let (sink, mut stream) = socket.split();
    // The sink is here when no frame is being sent, inside `sending` while one is.
    let mut sink = Some(sink);
    let mut sending: Option<Sending> = None;
    let join_deadline = Instant::now() + config.connect_timeout;
    let mut join_checked = false;
    let mut reading = true;
    // Messages over the per-address rate, with when each may be handled.
    let mut waiting: VecDeque<(Instant, Frame)> = VecDeque::new();
    // Once the connection is ending, what is queued has this long to be written.
    let mut end_deadline: Option<Instant> = None;
    let timer = sleep_until(join_deadline);
    tokio::pin!(timer);
    let mut armed = Some(join_deadline);
    let leave = loop {
        let (pending, end) = outbox.state();
        if end != End::Open {
            reading = false;
            if !pending && sending.is_none() {
                break if end == End::Overflow { Leave::SlowReader } else { Leave::Closed };
            }
            end_deadline.get_or_insert_with(|| Instant::now() + config.drop_grace);
        }
        if sending.is_none() {
            if let Some(bytes) = outbox.pop() {
                let Some(mut s) = sink.take() else { break Leave::Closed };
                let frame = Message::Text(text_frame(bytes));
                sending = Some(Box::pin(async move {
                    let sent = s.send(frame).await;
                    (s, sent)
                }));
            }
        }
        let wake_at = [(!join_checked).then_some(join_deadline), end_deadline, waiting.front().map(|(at, _)| *at)]
            .into_iter()
            .flatten()
            .min();
        if let Some(at) = wake_at {
            if armed != Some(at) {
                timer.as_mut().reset(at);
                armed = Some(at);
            }
        }
        tokio::select! {
            // New messages, or the queue's end (an overflow while a frame waits for a tab
            // that reads no more).
            _ = outbox.notify.notified() => {}
            (s, sent) = in_flight(&mut sending) => {
                sending = None;
                sink = Some(s);
                if sent.is_err() {
                    break Leave::Closed;
                }
            }
            message = stream.next(), if reading => match message {
                None | Some(Ok(Message::Close(_))) => break Leave::Closed,
                Some(Ok(Message::Text(text))) => {
                    let frame = Frame::Line(Bytes::from(text));
                    admit(&shared, id, &outbox, peer.ip(), vec![frame], &mut waiting);
                }
                Some(Ok(Message::Binary(_))) => {
                    let mut hub = lock(&shared.hub);
                    hub.engine.error(id, Code::BadRequest, wire::TEXT_BINARY);
                    hub.dispatch();
                }
                // tungstenite answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(e)) => {
                    if !too_long(e) {
                        break Leave::Closed;
                    }
                    // The frame's length was refused before its bytes were read, so the
                    // stream cannot go on: answer as for a long TCP line, then close.
                    let mut hub = lock(&shared.hub);
                    hub.engine.handle(id, &Frame::TooLong, unix_millis());
                    hub.dispatch();
                    drop(hub);
                    outbox.close_after_flush();
                }
            },
            _ = &mut timer, if wake_at.is_some() => {
                armed = None;
                let now = Instant::now();
                release_due(&shared, id, &mut waiting, now);
                if end_deadline.is_some_and(|d| now >= d) {
                    break if end == End::Overflow { Leave::SlowReader } else { Leave::Closed };
                }
                if !join_checked && now >= join_deadline {
                    join_checked = true;
                    let joined = lock(&shared.hub).engine.is_joined(id);
                    if !joined {
                        refuse(&shared, id, &outbox, Code::Timeout, wire::TEXT_TIMEOUT);
                    }
                }
            }
            _ = stop.changed() => break Leave::Closed,
        }
    };
    leave_hub(&shared, id, leave);
    if let Some(mut s) = sink {
        let _ = tokio::time::timeout(CLOSE_WAIT, s.close()).await;
    }
}

/// The frame being sent, or never.
async fn in_flight(sending: &mut Option<Sending>) -> (Sink, Result<(), axum::Error>) {
    match sending {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// A queued message as a text frame: without its `\n`. The server only sends UTF-8 (it
/// forwards only what it parsed as UTF-8).
fn text_frame(mut bytes: Bytes) -> Utf8Bytes {
    if bytes.last() == Some(&b'\n') {
        bytes.truncate(bytes.len() - 1);
    }
    Utf8Bytes::try_from(bytes.clone()).unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned().into())
}

/// True when the WebSocket layer refused a frame or message over the size limit.
fn too_long(e: axum::Error) -> bool {
    e.into_inner().downcast_ref::<tungstenite::Error>().is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}
