//! `cartero._native.ChatClient`: the chat client for Python (`cartero.chat.Client` wraps it).
//!
//! Every wait releases the GIL and runs in short slices, checking for signals between them,
//! so Ctrl-C interrupts it. Errors are the exception classes of `cartero.chat`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cartero::chat::client::blocking::{Client, Sender};
use cartero::chat::client::ClientError;
use cartero::chat::server::{Server as ChatServer, ServerConfig};
use cartero::chat::tls::ClientTls;
use cartero::chat::{Reply, Request};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// How long a wait runs between checks for Ctrl-C.
const SLICE: Duration = Duration::from_millis(100);

/// An instance of `cartero.chat.<name>(*args)` as a PyErr.
fn chat_error<'py>(py: Python<'py>, name: &str, args: impl pyo3::call::PyCallArgs<'py>) -> PyErr {
    match py.import("cartero.chat").and_then(|m| m.getattr(name)).and_then(|cls| cls.call1(args)) {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

fn to_py_error(py: Python<'_>, e: ClientError) -> PyErr {
    let message = e.to_string();
    match e {
        ClientError::Connect { .. } | ClientError::Timeout(_) | ClientError::Io(_) | ClientError::Handshake { .. } => {
            chat_error(py, "ConnectionFailed", (message,))
        }
        ClientError::Certificate { problem, .. } => chat_error(py, "CertificateError", (message, problem.kind())),
        ClientError::Tls(_) => chat_error(py, "InvalidInput", (message,)),
        ClientError::Closed => chat_error(py, "Closed", (message,)),
        ClientError::InvalidName(_) | ClientError::Encode(_) => chat_error(py, "InvalidInput", (message,)),
        ClientError::Refused { code, text } => chat_error(py, "NameRefused", (message, code, text)),
        ClientError::Error { code, text } => chat_error(py, "NameRefused", (message, Some(code), Some(text))),
        ClientError::Protocol(_) => chat_error(py, "ProtocolError", (message,)),
    }
}

/// Runs `f`, turning a Rust panic into `cartero.Error`.
fn guarded<T>(py: Python<'_>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(chat_error(py, "ChatError", ("internal error in cartero (a bug; please report it)",))))
}

fn seconds(value: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| PyValueError::new_err(format!("{what} must be a positive number of seconds, not {value}")))
}

/// One connection to a chat server, joined under a name.
#[pyclass(module = "cartero._native", name = "ChatClient")]
struct ChatClient {
    inner: Arc<Mutex<Client>>,
    sender: Sender,
    name: String,
}

impl ChatClient {
    fn request(&self, py: Python<'_>, request: Request) -> PyResult<()> {
        let sender = self.sender.clone();
        py.detach(move || sender.request(&request)).map_err(|e| to_py_error(py, e))
    }
}

#[pymethods]
impl ChatClient {
    /// Connects to `host:port` and joins as `name`; each step waits `timeout` seconds at most.
    /// With `tls` (or `ca`), over TLS, trusting the certificates of the PEM file `ca` only,
    /// or the public authorities without it.
    #[new]
    #[pyo3(signature = (host, port, name, timeout=5.0, tls=false, ca=None))]
    fn new(
        py: Python<'_>,
        host: String,
        port: u16,
        name: String,
        timeout: f64,
        tls: bool,
        ca: Option<std::path::PathBuf>,
    ) -> PyResult<Self> {
        let timeout = seconds(timeout, "timeout")?;
        guarded(py, || {
            let joined = {
                let name = name.clone();
                py.detach(move || -> Result<Client, ClientError> {
                    let mut client = if tls || ca.is_some() {
                        let tls = ClientTls::new(ca.as_deref())?;
                        Client::connect_tls(&host, port, timeout, &tls)?
                    } else {
                        Client::connect(&host, port, timeout)?
                    };
                    client.join(&name)?;
                    Ok(client)
                })
            };
            let client = joined.map_err(|e| to_py_error(py, e))?;
            let sender = client.sender();
            Ok(ChatClient { inner: Arc::new(Mutex::new(client)), sender, name })
        })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// `MESSAGE|to|content`.
    fn send(&self, py: Python<'_>, to: String, content: String) -> PyResult<()> {
        let sender = self.sender.clone();
        py.detach(move || sender.send(&to, &content)).map_err(|e| to_py_error(py, e))
    }

    /// `BROADCAST|content`.
    fn broadcast(&self, py: Python<'_>, content: String) -> PyResult<()> {
        let sender = self.sender.clone();
        py.detach(move || sender.broadcast(&content)).map_err(|e| to_py_error(py, e))
    }

    /// `JOIN|room`.
    fn join(&self, py: Python<'_>, room: String) -> PyResult<()> {
        self.request(py, Request::Join(room))
    }

    /// `PART|room`.
    fn part(&self, py: Python<'_>, room: String) -> PyResult<()> {
        self.request(py, Request::Part(room))
    }

    /// `ROOM|room|content`.
    fn room(&self, py: Python<'_>, room: String, content: String) -> PyResult<()> {
        self.request(py, Request::Room { room, content })
    }

    /// `ROOMS`.
    fn rooms(&self, py: Python<'_>) -> PyResult<()> {
        self.request(py, Request::Rooms)
    }

    /// `HISTORY|target|n`.
    fn history(&self, py: Python<'_>, target: String, n: u64) -> PyResult<()> {
        self.request(py, Request::History { target, n })
    }

    /// `DISCONNECT`: the server then closes the connection.
    fn disconnect(&self, py: Python<'_>) -> PyResult<()> {
        let sender = self.sender.clone();
        py.detach(move || sender.disconnect()).map_err(|e| to_py_error(py, e))
    }

    /// Closes the connection without a word (the server takes it as DISCONNECT).
    fn close(&self) {
        self.sender.shutdown();
    }

    /// The next message from the server as `(kind, a, b)`: `("user_list", [names], None)`,
    /// `("message", sender, content)`, `("broadcast", sender, content)`,
    /// `("error", code, text)`, `("joined", room, [names])`, `("parted", room, name)`,
    /// `("room", room, (sender, content))`, `("room_list", [rooms], None)`,
    /// `("history", target, (sender, millis, content))` or `("history_end", target, None)`. None when nothing came within `timeout` seconds (forever
    /// when None); raises `cartero.chat.Closed` once the server closed the connection.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        let until = match timeout {
            None => None,
            Some(t) if t <= 0.0 => Some(Instant::now()),
            Some(t) => Some(Instant::now() + seconds(t, "timeout")?),
        };
        loop {
            let slice = until.map_or(SLICE, |u| u.saturating_duration_since(Instant::now()).min(SLICE));
            let inner = self.inner.clone();
            // The lock is taken and dropped without the GIL: no Python runs while it is held.
            let got = py.detach(move || inner.lock().unwrap_or_else(|p| p.into_inner()).recv_timeout(slice));
            match got {
                Ok(Some(reply)) => return reply_to_py(py, reply).map(Some),
                Ok(None) => {
                    py.check_signals()?;
                    if until.is_some_and(|u| Instant::now() >= u) {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(to_py_error(py, e)),
            }
        }
    }
}

fn reply_to_py(py: Python<'_>, reply: Reply) -> PyResult<Py<PyAny>> {
    let tuple = match reply {
        Reply::UserList(users) => ("user_list", users, None::<String>).into_pyobject(py)?.into_any(),
        Reply::Message { from, content } => ("message", from, content).into_pyobject(py)?.into_any(),
        Reply::Broadcast { from, content } => ("broadcast", from, content).into_pyobject(py)?.into_any(),
        Reply::Error { code, text } => ("error", code, text).into_pyobject(py)?.into_any(),
        Reply::ConnectAck(ok) => ("connect_ack", ok, None::<String>).into_pyobject(py)?.into_any(),
        Reply::Joined { room, members } => ("joined", room, members).into_pyobject(py)?.into_any(),
        Reply::Parted { room, name } => ("parted", room, name).into_pyobject(py)?.into_any(),
        Reply::Room { room, from, content } => ("room", room, (from, content)).into_pyobject(py)?.into_any(),
        Reply::RoomList(rooms) => ("room_list", rooms, None::<String>).into_pyobject(py)?.into_any(),
        Reply::History { target, from, millis, content } => {
            ("history", target, (from, millis, content)).into_pyobject(py)?.into_any()
        }
        Reply::HistoryEnd(target) => ("history_end", target, None::<String>).into_pyobject(py)?.into_any(),
    };
    Ok(tuple.unbind())
}

/// Starts a chat server (SPEC-chat's limits) in the background; returns a handle with `.port`
/// and `.stop()`.
#[pyfunction]
#[pyo3(signature = (port=0, *, host="127.0.0.1"))]
fn serve_chat(py: Python<'_>, port: u16, host: &str) -> PyResult<crate::Server> {
    let ip: std::net::IpAddr =
        host.parse().map_err(|_| PyValueError::new_err(format!("{host:?} is not an IP address")))?;
    let config = ServerConfig::new(std::net::SocketAddr::new(ip, port));
    crate::in_background(py, "cartero-chat", move |ready, stop| async move {
        match ChatServer::bind(config).await {
            Ok(server) => match server.local_addr() {
                Ok(addr) => {
                    ready(Ok(addr));
                    let _ = server
                        .run(async move {
                            let _ = stop.await;
                        })
                        .await;
                }
                Err(e) => ready(Err(e.to_string())),
            },
            Err(e) => ready(Err(e.to_string())),
        }
    })
}

/// Adds the chat's classes and functions to `cartero._native`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ChatClient>()?;
    m.add_function(wrap_pyfunction!(serve_chat, m)?)
}
