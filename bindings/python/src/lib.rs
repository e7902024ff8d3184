//! `cartero._native`: cartero for Python. The package `cartero` re-exports it.
//!
//! Blocking calls release the GIL; waits for pushes run in short slices and check for
//! signals between them, so Ctrl-C interrupts them. A Rust panic becomes `cartero.Error`,
//! never pyo3's `PanicException` (which `except Exception` would miss).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cartero::client::blocking;
use cartero::client::ClientError;
use cartero::codec::{Codec, CodecError};
use cartero::engine::{DeliveryId, DeliveryOutcome, EngineConfig, Hold};
use cartero::messaging::files::{self, AnswerForm, GetFileError, Offers};
use cartero::server::{Server as RustServer, ServerConfig, Storage};
use cartero::wire::{
    CodeEncoding, ConnectReply, ConnectedUsersReply, DisconnectReply, PushNames, RegisterReply, Reply, Request,
    RequestDecoder as RustRequestDecoder, SendReply, UnregisterReply, UsersReply, WireSettings,
};
use cartero::Push;
use pyo3::exceptions::{PyStopIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio_util::codec::{Decoder, Encoder};

mod buckets;
mod chat;

/// How long a wait runs between checks for Ctrl-C.
const SLICE: Duration = Duration::from_millis(100);

/// An instance of `cartero.<name>` (an exception class of `cartero._errors`) as a PyErr.
fn error(py: Python<'_>, name: &str, message: impl Into<String>) -> PyErr {
    let message = message.into();
    match py.import("cartero._errors").and_then(|m| m.getattr(name)).and_then(|cls| cls.call1((message.clone(),))) {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

/// Runs `f`, turning a Rust panic into `cartero.Error`.
fn guarded<T>(py: Python<'_>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(error(py, "Error", format!("internal error in cartero (a bug; please report it): {what}")))
        }
    }
}

fn client_error(py: Python<'_>, e: ClientError) -> PyErr {
    match e {
        ClientError::Connect { .. } | ClientError::Timeout { .. } | ClientError::Io(_) => {
            error(py, "ConnectionFailed", e.to_string())
        }
        ClientError::Invalid(_) => error(py, "InvalidField", e.to_string()),
        ClientError::Protocol(_) | ClientError::NoReply | ClientError::Mismatch(_) => {
            error(py, "ServerError", e.to_string())
        }
    }
}

fn codes(name: &str) -> PyResult<CodeEncoding> {
    name.parse().map_err(|e: cartero::wire::UnknownSetting| PyValueError::new_err(e.to_string()))
}

fn push_names(name: &str) -> PyResult<PushNames> {
    name.parse().map_err(|e: cartero::wire::UnknownSetting| PyValueError::new_err(e.to_string()))
}

fn seconds(value: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| PyValueError::new_err(format!("{what} must be a positive number of seconds, not {value}")))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------- client

/// A client of one message-delivery server. Every request is its own connection.
#[pyclass(module = "cartero._native")]
struct Client {
    inner: blocking::Client,
    server: String,
    /// The web service every body goes through before SEND, if any.
    normalizer: Option<String>,
    timeout: Duration,
    /// The files this client attached in a SENDATTACH, served by its listeners (SPEC 8).
    offers: Offers,
    /// The alias last registered or connected from this client: GETFILE's requester.
    user: Mutex<Option<String>>,
    /// Where each user listens, from the last USERS answer.
    known: Mutex<HashMap<String, SocketAddr>>,
}

impl Client {
    fn set_user(&self, alias: &str) {
        *self.user.lock().unwrap_or_else(|p| p.into_inner()) = Some(alias.to_string());
    }

    /// The body as it goes out: through the web service when one is configured (SPEC 7).
    fn outgoing(&self, py: Python<'_>, body: &str) -> PyResult<String> {
        match &self.normalizer {
            None => Ok(body.to_string()),
            Some(url) => {
                let (url, text, timeout) = (url.clone(), body.to_string(), self.timeout);
                py.detach(move || cartero::webservice::normalize_remote(&url, &text, timeout))
                    .map_err(|e| error(py, "ConnectionFailed", format!("{e}; the message was not sent")))
            }
        }
    }

    /// Sends `request` with the GIL released.
    fn call(&self, py: Python<'_>, request: Request) -> PyResult<Reply> {
        let client = self.inner.clone();
        py.detach(move || client.request(&request)).map_err(|e| client_error(py, e))
    }
}

#[pymethods]
impl Client {
    /// `codes` is accepted for symmetry with the server; replies in either encoding are
    /// understood whatever it says.
    /// With `normalizer` (the web service's URL, e.g. "http://127.0.0.1:8000"), every body
    /// goes through it before SEND.
    #[new]
    #[pyo3(signature = (host, port, *, codes="ascii", timeout=5.0, normalizer=None))]
    fn new(host: String, port: u16, codes: &str, timeout: f64, normalizer: Option<String>) -> PyResult<Self> {
        self::codes(codes)?;
        let timeout = seconds(timeout, "timeout")?;
        let inner = blocking::Client::new(host.clone(), port).with_timeout(timeout);
        Ok(Client {
            inner,
            server: format!("{host}:{port}"),
            normalizer,
            timeout,
            offers: Offers::new(),
            user: Mutex::new(None),
            known: Mutex::new(HashMap::new()),
        })
    }

    fn __repr__(&self) -> String {
        format!("cartero.Client({:?})", self.server)
    }

    /// REGISTER a user; `birth_date` "DD/MM/YYYY". With `birth_date=None` it sends seed 000's
    /// one-field form (the alias alone). Raises AliasInUse, ServerError or ConnectionFailed.
    #[pyo3(signature = (full_name, alias, birth_date=None))]
    fn register(&self, py: Python<'_>, full_name: &str, alias: &str, birth_date: Option<&str>) -> PyResult<()> {
        guarded(py, || {
            let alias_bytes = Bytes::copy_from_slice(alias.as_bytes());
            let request = match birth_date {
                Some(date) => Request::Register {
                    full_name: Bytes::copy_from_slice(full_name.as_bytes()),
                    alias: alias_bytes,
                    birth_date: Some(Bytes::copy_from_slice(date.as_bytes())),
                },
                None => Request::Register { full_name: alias_bytes.clone(), alias: alias_bytes, birth_date: None },
            };
            match self.call(py, request)? {
                Reply::Register(RegisterReply::Ok) => {
                    self.set_user(alias);
                    Ok(())
                }
                Reply::Register(RegisterReply::AliasInUse) => {
                    Err(error(py, "AliasInUse", format!("alias {alias:?} is already registered")))
                }
                _ => Err(error(
                    py,
                    "ServerError",
                    format!("the server refused to register {alias:?} (check the birth date: DD/MM/YYYY)"),
                )),
            }
        })
    }

    /// UNREGISTER a user and its pending messages. Raises UserNotFound, ServerError.
    fn unregister(&self, py: Python<'_>, alias: &str) -> PyResult<()> {
        guarded(py, || {
            match self.call(py, Request::Unregister { alias: Bytes::copy_from_slice(alias.as_bytes()) })? {
                Reply::Unregister(UnregisterReply::Ok) => Ok(()),
                Reply::Unregister(UnregisterReply::NoSuchUser) => {
                    Err(error(py, "UserNotFound", format!("no user {alias:?}")))
                }
                _ => Err(error(py, "ServerError", format!("the server refused to unregister {alias:?}"))),
            }
        })
    }

    /// CONNECT a user: opens a Listener on a free port of `listen_host` (by default this
    /// machine's address towards the server, 127.0.0.1 for a local server) and tells the
    /// server to push there. Raises UserNotFound, AlreadyConnected, ServerError.
    #[pyo3(signature = (alias, *, listen_host=None))]
    fn connect(&self, py: Python<'_>, alias: &str, listen_host: Option<&str>) -> PyResult<Listener> {
        guarded(py, || {
            let ip: IpAddr = match listen_host {
                None => {
                    let inner = self.inner.clone();
                    py.detach(move || inner.listen_host())
                }
                Some(host) => {
                    host.parse().map_err(|_| PyValueError::new_err(format!("{host:?} is not an IP address")))?
                }
            };
            let listener = blocking::Listener::bind_offering(ip, self.offers.clone())
                .map_err(|e| error(py, "ConnectionFailed", format!("cannot listen on {ip}: {e}")))?;
            let port = listener.port();
            let request = Request::Connect {
                alias: Bytes::copy_from_slice(alias.as_bytes()),
                port: Bytes::from(port.to_string()),
            };
            match self.call(py, request)? {
                Reply::Connect(ConnectReply::Ok) => {
                    self.set_user(alias);
                    Ok(Listener {
                        inner: Arc::new(Mutex::new(Some(listener))),
                        port,
                        connected: Some((self.inner.clone(), alias.to_string())),
                    })
                }
                Reply::Connect(ConnectReply::NoSuchUser) => {
                    Err(error(py, "UserNotFound", format!("no user {alias:?}")))
                }
                Reply::Connect(ConnectReply::AlreadyConnected) => {
                    Err(error(py, "AlreadyConnected", format!("{alias:?} is already connected")))
                }
                _ => Err(error(py, "ServerError", format!("the server refused to connect {alias:?}"))),
            }
        })
    }

    /// DISCONNECT a user. Raises UserNotFound, NotConnected, ServerError.
    fn disconnect(&self, py: Python<'_>, alias: &str) -> PyResult<()> {
        guarded(py, || {
            match self.call(py, Request::Disconnect { alias: Bytes::copy_from_slice(alias.as_bytes()) })? {
                Reply::Disconnect(DisconnectReply::Ok) => Ok(()),
                Reply::Disconnect(DisconnectReply::NoSuchUser) => {
                    Err(error(py, "UserNotFound", format!("no user {alias:?}")))
                }
                Reply::Disconnect(DisconnectReply::NotConnected) => {
                    Err(error(py, "NotConnected", format!("{alias:?} is not connected")))
                }
                _ => Err(error(
                    py,
                    "ServerError",
                    format!("the server refused to disconnect {alias:?} (from another IP?)"),
                )),
            }
        })
    }

    /// SEND a message; returns its id. Raises UserNotFound, ServerError, InvalidField, and
    /// ConnectionFailed (nothing sent) if the normalizer cannot be reached.
    fn send(&self, py: Python<'_>, sender: &str, recipient: &str, body: &str) -> PyResult<u32> {
        guarded(py, || {
            let normalized;
            let body = match &self.normalizer {
                None => body,
                Some(url) => {
                    let (url, text, timeout) = (url.clone(), body.to_string(), self.timeout);
                    normalized = py
                        .detach(move || cartero::webservice::normalize_remote(&url, &text, timeout))
                        .map_err(|e| error(py, "ConnectionFailed", format!("{e}; the message was not sent")))?;
                    normalized.as_str()
                }
            };
            let request = Request::Send {
                sender: Bytes::copy_from_slice(sender.as_bytes()),
                recipient: Bytes::copy_from_slice(recipient.as_bytes()),
                body: Bytes::copy_from_slice(body.as_bytes()),
            };
            match self.call(py, request)? {
                Reply::Send(SendReply::Ok { id }) => Ok(id),
                Reply::Send(SendReply::NoSuchUser) => {
                    Err(error(py, "UserNotFound", format!("{sender:?} or {recipient:?} is not registered")))
                }
                _ => Err(error(
                    py,
                    "ServerError",
                    format!("the server refused the message from {sender:?} to {recipient:?}"),
                )),
            }
        })
    }

    /// SENDATTACH (course 2025/26): a message and the name of a file (an absolute path; only
    /// the name travels). Returns the message's id; the file is then offered to the
    /// recipient's `get_file` through this client's listener. Raises as `send`.
    fn send_attach(&self, py: Python<'_>, sender: &str, recipient: &str, body: &str, file: &str) -> PyResult<u32> {
        guarded(py, || {
            let body = self.outgoing(py, body)?;
            let request = Request::SendAttach {
                sender: Bytes::copy_from_slice(sender.as_bytes()),
                recipient: Bytes::copy_from_slice(recipient.as_bytes()),
                body: Bytes::from(body.into_bytes()),
                file: Bytes::copy_from_slice(file.as_bytes()),
            };
            match self.call(py, request)? {
                Reply::SendAttach(SendReply::Ok { id }) => {
                    self.offers.offer(file.as_bytes());
                    Ok(id)
                }
                Reply::SendAttach(SendReply::NoSuchUser) => {
                    Err(error(py, "UserNotFound", format!("{sender:?} or {recipient:?} is not registered")))
                }
                _ => Err(error(
                    py,
                    "ServerError",
                    format!("the server refused the attached message from {sender:?} to {recipient:?}"),
                )),
            }
        })
    }

    /// USERS (course 2025/26), as `alias` (or, with None, as this machine's IP): the connected
    /// users as `(name, ip, port)` tuples, oldest connection first. Raises NotConnected,
    /// ServerError.
    #[pyo3(signature = (alias=None))]
    fn users(&self, py: Python<'_>, alias: Option<&str>) -> PyResult<Vec<(String, String, u16)>> {
        guarded(py, || {
            let request = Request::Users { alias: alias.map(|a| Bytes::copy_from_slice(a.as_bytes())) };
            match self.call(py, request)? {
                Reply::Users(UsersReply::Ok { users }) => {
                    let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
                    known.clear();
                    for u in &users {
                        known.insert(text(&u.name), SocketAddr::new(u.ip, u.port));
                    }
                    Ok(users.iter().map(|u| (text(&u.name), u.ip.to_string(), u.port)).collect())
                }
                Reply::Users(UsersReply::NotConnected) => {
                    Err(error(py, "NotConnected", "the requester is not connected"))
                }
                _ => Err(error(py, "ServerError", "the server refused USERS (is the requester registered?)")),
            }
        })
    }

    /// GETFILE (course 2025/26): fetches `remote`, a file that `user` attached, from that
    /// user's listener into `local` (through a temporary file beside it, renamed once the
    /// whole file is in). The address comes from the last `users()` answer, refreshed once
    /// if `user` is not in it. `requester` defaults to the alias last registered or connected
    /// from this client; `form` is "auto", "sized", "zero-byte" or "raw". Returns the size.
    /// Raises NotConnected (the user is not connected), FileTransferFailed (no file left).
    #[pyo3(signature = (user, remote, local, *, requester=None, form="auto"))]
    fn get_file(
        &self,
        py: Python<'_>,
        user: &str,
        remote: &str,
        local: PathBuf,
        requester: Option<String>,
        form: &str,
    ) -> PyResult<u64> {
        guarded(py, || {
            let form: AnswerForm =
                form.parse().map_err(|e: cartero::wire::UnknownSetting| PyValueError::new_err(e.to_string()))?;
            let requester = requester
                .or_else(|| self.user.lock().unwrap_or_else(|p| p.into_inner()).clone())
                .ok_or_else(|| error(py, "NotConnected", "GETFILE needs a user: register or connect first"))?;
            let lookup = || self.known.lock().unwrap_or_else(|p| p.into_inner()).get(user).copied();
            let addr = match lookup() {
                Some(addr) => addr,
                None => {
                    // Once: the last USERS answer may be older than the user's CONNECT.
                    let _ = self.users(py, Some(&requester));
                    lookup().ok_or_else(|| error(py, "NotConnected", format!("{user:?} is not connected")))?
                }
            };
            let remote = remote.as_bytes().to_vec();
            let result = py.detach(move || files::get_file(addr, requester.as_bytes(), &remote, &local, form));
            result.map_err(|e| match e {
                GetFileError::Invalid(_) => error(py, "InvalidField", e.to_string()),
                _ => error(py, "FileTransferFailed", e.to_string()),
            })
        })
    }

    /// CONNECTEDUSERS, as `alias` (or, with None, as this machine's IP). Raises NotConnected,
    /// ServerError.
    #[pyo3(signature = (alias=None))]
    fn connected_users(&self, py: Python<'_>, alias: Option<&str>) -> PyResult<Vec<String>> {
        guarded(py, || {
            let request = Request::ConnectedUsers { alias: alias.map(|a| Bytes::copy_from_slice(a.as_bytes())) };
            match self.call(py, request)? {
                Reply::ConnectedUsers(ConnectedUsersReply::Ok { users }) => Ok(users.iter().map(|u| text(u)).collect()),
                Reply::ConnectedUsers(ConnectedUsersReply::NotConnected) => {
                    Err(error(py, "NotConnected", "the requester is not connected"))
                }
                _ => Err(error(py, "ServerError", "the server refused CONNECTEDUSERS (is the requester registered?)")),
            }
        })
    }
}

// -------------------------------------------------------------------------------- listener

fn push_to_py(py: Python<'_>, push: Push) -> PyResult<Py<PyAny>> {
    let types = py.import("cartero._types")?;
    let obj = match push {
        Push::Message { sender, id, body } => types.getattr("Message")?.call1((text(&sender), id, text(&body)))?,
        Push::Ack { id } => types.getattr("Ack")?.call1((id,))?,
        Push::AttachMessage { sender, id, body, file } => {
            types.getattr("AttachMessage")?.call1((text(&sender), id, text(&body), text(&file)))?
        }
        Push::AttachAck { id, file } => types.getattr("AttachAck")?.call1((id, text(&file)))?,
    };
    Ok(obj.unbind())
}

/// A user's listening socket. Iterating it yields `cartero.Message` and `cartero.Ack` as
/// they arrive; it ends when the listener is closed.
#[pyclass(module = "cartero._native")]
struct Listener {
    inner: Arc<Mutex<Option<blocking::Listener>>>,
    port: u16,
    /// The client and alias whose CONNECT opened it: `with` DISCONNECTs that user on exit.
    connected: Option<(blocking::Client, String)>,
}

impl Listener {
    /// Waits for a push, `timeout` at most (forever if None), in slices between which it
    /// checks for signals. Ok(None) when the time ran out; StopIteration once closed.
    fn wait(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<Option<Py<PyAny>>> {
        let until = timeout.map(|t| Instant::now() + t);
        loop {
            let slice = until.map_or(SLICE, |u| u.saturating_duration_since(Instant::now()).min(SLICE));
            let inner = self.inner.clone();
            // The lock is taken and dropped inside, without the GIL: nothing Python runs
            // while it is held.
            let got = py.detach(move || match inner.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                Some(listener) => listener.recv_timeout(slice).map_err(|closed| closed),
                None => Err(true),
            });
            match got {
                Ok(push) => return push_to_py(py, push).map(Some),
                Err(true) => return Err(PyStopIteration::new_err("the listener is closed")),
                Err(false) => {
                    py.check_signals()?;
                    if until.is_some_and(|u| Instant::now() >= u) {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

#[pymethods]
impl Listener {
    /// The port the listener accepts pushes on.
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        guarded(py, || self.wait(py, None))
    }

    /// The next push, or None if none arrives within `timeout` seconds (None: wait forever).
    #[pyo3(signature = (timeout=None))]
    fn receive(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        guarded(py, || {
            let timeout = timeout.map(|t| Duration::try_from_secs_f64(t.max(0.0)).unwrap_or(Duration::MAX));
            match self.wait(py, timeout) {
                Err(e) if e.is_instance_of::<PyStopIteration>(py) => Ok(None),
                other => other,
            }
        })
    }

    /// Stops listening and releases the port. Iteration then ends.
    fn close(&self, py: Python<'_>) {
        let inner = self.inner.clone();
        py.detach(move || {
            if let Some(mut listener) = inner.lock().unwrap_or_else(|p| p.into_inner()).take() {
                listener.close();
            }
        });
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Leaving `with client.connect(alias)` DISCONNECTs the user (if it is still connected),
    /// then closes the listener.
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        let is_open = self.inner.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        if let (true, Some((client, alias))) = (is_open, self.connected.clone()) {
            // Already disconnected, or the server is gone: nothing more to do on the way out.
            let _ = py.detach(move || client.disconnect(alias.as_bytes()));
        }
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        format!("cartero.Listener(port={})", self.port)
    }
}

// ---------------------------------------------------------------------------- sans-IO face

/// Decodes one request from a connection's bytes, for an `Engine` driven with your own
/// sockets.
#[pyclass(module = "cartero._native")]
struct RequestDecoder {
    decoder: RustRequestDecoder,
    buf: BytesMut,
    ready: Option<Request>,
    failed: bool,
    saw_bytes: bool,
}

impl RequestDecoder {
    fn step(&mut self, py: Python<'_>, eof: bool) -> PyResult<bool> {
        if self.ready.is_some() {
            return Ok(true);
        }
        if self.failed {
            return Err(error(py, "BadRequest", "the request was already found bad"));
        }
        let result = if eof { self.decoder.decode_eof(&mut self.buf) } else { self.decoder.decode(&mut self.buf) };
        match result {
            Ok(Some(request)) => {
                self.ready = Some(request);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => {
                self.failed = true;
                Err(error(py, "BadRequest", e.to_string()))
            }
        }
    }
}

#[pymethods]
impl RequestDecoder {
    #[new]
    fn new() -> Self {
        RequestDecoder {
            decoder: RustRequestDecoder::new(),
            buf: BytesMut::new(),
            ready: None,
            failed: false,
            saw_bytes: false,
        }
    }

    /// Feeds bytes read from the connection; True once a whole request is in. Raises
    /// BadRequest (answer with `error_reply()` and close).
    fn feed(&mut self, py: Python<'_>, data: &[u8]) -> PyResult<bool> {
        guarded(py, || {
            if self.ready.is_none() && !self.failed {
                self.saw_bytes |= !data.is_empty();
                self.buf.extend_from_slice(data);
            }
            self.step(py, false)
        })
    }

    /// Whether what arrived is a complete short form (CONNECTEDUSERS alone, a one-field
    /// REGISTER): wait only the grace period for more, then call `finish(False)`.
    fn has_short_form(&self) -> bool {
        self.ready.is_none() && !self.failed && self.decoder.has_short_form()
    }

    /// Ends the request at the end of the stream (`eof`) or when the grace period passed.
    /// True: a request is ready. False: nothing was sent (at eof), or no short form yet.
    /// Raises BadRequest.
    fn finish(&mut self, py: Python<'_>, eof: bool) -> PyResult<bool> {
        guarded(py, || {
            if eof {
                return if self.saw_bytes || self.ready.is_some() { self.step(py, true) } else { Ok(false) };
            }
            if self.ready.is_none() && !self.failed {
                self.ready = self.decoder.short_form();
            }
            Ok(self.ready.is_some())
        })
    }

    /// The answer to a bad request: the operation's "any other error" code, or b"" if the
    /// operation is unknown (then send nothing and close).
    #[pyo3(signature = (*, raw_codes=false))]
    fn error_reply<'py>(&self, py: Python<'py>, raw_codes: bool) -> Bound<'py, PyBytes> {
        let mut out = BytesMut::new();
        if let Some(op) = self.decoder.operation() {
            Reply::failure(op).encode(if raw_codes { CodeEncoding::Raw } else { CodeEncoding::Ascii }, &mut out);
        }
        PyBytes::new(py, &out)
    }
}

/// One push to make: connect to (ip, port), send `data`, shut down the sending side, read
/// until the listener closes, then report with `Engine.delivery_result`.
#[pyclass(module = "cartero._native", frozen, get_all)]
struct Delivery {
    id: u64,
    ip: String,
    port: u16,
    data: Py<PyBytes>,
    /// When it must be over, on the caller's clock.
    deadline: f64,
}

#[pymethods]
impl Delivery {
    fn __repr__(&self) -> String {
        format!("cartero.Delivery(id={}, to={}:{})", self.id, self.ip, self.port)
    }
}

/// The server's rules without I/O: feed it requests with their peer IP, send its replies,
/// make its deliveries and report how they went. `now` arguments are seconds of one
/// monotonic clock of yours (`time.monotonic()`).
#[pyclass(module = "cartero._native")]
struct Engine {
    engine: cartero::Engine,
    wire: WireSettings,
    epoch: Instant,
    /// The caller's clock reading that `epoch` stands for (set by the first `now`).
    base: Option<f64>,
    holds: std::collections::HashMap<u64, Hold>,
    next_hold: u64,
}

impl Engine {
    fn at(&mut self, now: f64) -> Instant {
        let base = *self.base.get_or_insert(now);
        self.epoch + Duration::try_from_secs_f64((now - base).max(0.0)).unwrap_or(Duration::ZERO)
    }

    fn clock(&self, instant: Instant) -> f64 {
        self.base.unwrap_or(0.0) + instant.saturating_duration_since(self.epoch).as_secs_f64()
    }
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (*, codes="ascii", push_names="spaced", delivery_timeout=2.0, max_users=None, max_pending=None))]
    fn new(
        codes: &str,
        push_names: &str,
        delivery_timeout: f64,
        max_users: Option<usize>,
        max_pending: Option<usize>,
    ) -> PyResult<Self> {
        let defaults = EngineConfig::default();
        let config = EngineConfig {
            delivery_timeout: seconds(delivery_timeout, "delivery_timeout")?,
            max_users: max_users.unwrap_or(defaults.max_users),
            max_pending_per_user: max_pending.unwrap_or(defaults.max_pending_per_user),
            ..defaults
        };
        Ok(Engine {
            engine: cartero::Engine::new(config),
            wire: WireSettings { codes: self::codes(codes)?, push_names: self::push_names(push_names)? },
            epoch: Instant::now(),
            base: None,
            holds: Default::default(),
            next_hold: 0,
        })
    }

    /// Answers the request ready in `decoder`, from a client at `peer_ip`. Returns the reply's
    /// bytes and a hold: call `release(hold)` once the reply is sent.
    fn handle_request<'py>(
        &mut self,
        py: Python<'py>,
        decoder: &mut RequestDecoder,
        peer_ip: &str,
    ) -> PyResult<(Bound<'py, PyBytes>, u64)> {
        guarded(py, || {
            let peer: IpAddr =
                peer_ip.parse().map_err(|_| PyValueError::new_err(format!("{peer_ip:?} is not an IP address")))?;
            let request =
                decoder.ready.take().ok_or_else(|| PyValueError::new_err("no request is ready in the decoder"))?;
            let (reply, hold) = self.engine.handle_request_held(peer, &request);
            self.next_hold += 1;
            self.holds.insert(self.next_hold, hold);
            let mut out = BytesMut::new();
            reply.encode(self.wire.codes, &mut out);
            Ok((PyBytes::new(py, &out), self.next_hold))
        })
    }

    /// Lets the pushes caused by a request go, once its reply is sent.
    fn release(&mut self, hold: u64) -> PyResult<()> {
        let hold = self
            .holds
            .remove(&hold)
            .ok_or_else(|| PyValueError::new_err(format!("no hold {hold} (released already?)")))?;
        self.engine.release(hold);
        Ok(())
    }

    /// The next push to make, or None.
    fn poll_delivery(&mut self, py: Python<'_>, now: f64) -> PyResult<Option<Delivery>> {
        guarded(py, || {
            let at = self.at(now);
            while let Some(d) = self.engine.poll_delivery(at) {
                match d.push.to_bytes(self.wire.push_names) {
                    Ok(data) => {
                        return Ok(Some(Delivery {
                            id: d.id.0,
                            ip: d.addr.ip().to_string(),
                            port: d.addr.port(),
                            data: PyBytes::new(py, &data).unbind(),
                            deadline: self.clock(d.deadline),
                        }))
                    }
                    Err(_) => {
                        let _ = self.engine.handle_delivery_result(d.id, DeliveryOutcome::Failed);
                    }
                }
            }
            Ok(None)
        })
    }

    /// Reports how delivery `id` went. False if it was not in flight any more (it timed out).
    fn delivery_result(&mut self, id: u64, delivered: bool) -> bool {
        let outcome = if delivered { DeliveryOutcome::Delivered } else { DeliveryOutcome::Failed };
        self.engine.handle_delivery_result(DeliveryId(id), outcome).is_ok()
    }

    /// The earliest deadline of a delivery in flight, or None.
    fn poll_timeout(&self) -> Option<f64> {
        self.engine.poll_timeout().map(|d| self.clock(d))
    }

    /// Fails the deliveries whose deadline passed; returns how many.
    fn handle_timeout(&mut self, now: f64) -> usize {
        let at = self.at(now);
        self.engine.handle_timeout(at)
    }

    /// The next console line of SPEC 5 ("s> ..."), or None.
    fn poll_event(&mut self) -> Option<String> {
        self.engine.poll_event().map(|e| format!("s> {e}"))
    }
}

/// Encodes fields as the protocol sends them: each followed by NUL. Raises InvalidField for
/// a field with a NUL or over 255 bytes.
#[pyfunction]
fn encode_fields<'py>(py: Python<'py>, fields: Vec<Vec<u8>>) -> PyResult<Bound<'py, PyBytes>> {
    guarded(py, || {
        let mut codec = Codec::new(cartero::MAX_FIELD_LEN);
        let mut out = BytesMut::new();
        for field in &fields {
            Encoder::<&[u8]>::encode(&mut codec, field, &mut out)
                .map_err(|e| error(py, "InvalidField", e.to_string()))?;
        }
        Ok(PyBytes::new(py, &out))
    })
}

/// Splits a stream into NUL-terminated fields, however its bytes arrive.
#[pyclass(module = "cartero._native")]
struct FieldDecoder {
    codec: Codec,
    buf: BytesMut,
}

#[pymethods]
impl FieldDecoder {
    #[new]
    #[pyo3(signature = (max_len=255))]
    fn new(max_len: usize) -> Self {
        FieldDecoder { codec: Codec::new(max_len), buf: BytesMut::new() }
    }

    /// Feeds bytes; returns the fields they completed. Raises InvalidField when a field runs
    /// past `max_len` (the stream cannot be resynchronized after that).
    fn feed<'py>(&mut self, py: Python<'py>, data: &[u8]) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        guarded(py, || {
            self.buf.extend_from_slice(data);
            let mut fields = Vec::new();
            loop {
                match self.codec.decode(&mut self.buf) {
                    Ok(Some(f)) => fields.push(PyBytes::new(py, &f)),
                    Ok(None) => return Ok(fields),
                    Err(e @ CodecError::FieldTooLong { .. }) => return Err(error(py, "InvalidField", e.to_string())),
                    Err(e) => return Err(error(py, "Error", e.to_string())),
                }
            }
        })
    }
}

// ---------------------------------------------------------------------------------- server

/// A `cartero serve` running in the background of this process.
#[pyclass(module = "cartero._native")]
struct Server {
    port: u16,
    host: String,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[pymethods]
impl Server {
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    #[getter]
    fn host(&self) -> String {
        self.host.clone()
    }

    /// Stops the server: requests in progress finish, then it returns. Safe to call twice.
    fn stop(&self, py: Python<'_>) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            py.detach(move || {
                let _ = thread.join();
            });
        }
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.stop(py);
        false
    }

    fn __repr__(&self) -> String {
        format!("cartero.Server({}:{})", self.host, self.port)
    }
}

/// Starts the Rust server in the background and returns once it listens. `port=0` picks a
/// free port (see `.port`). With `memory=False`, state is kept in `data` (a directory).
#[pyfunction]
#[pyo3(signature = (port=0, *, host="127.0.0.1", memory=true, data=None, codes="ascii", push_names="spaced",
                    request_timeout=5.0, delivery_timeout=2.0, grace=0.1, console=false))]
#[allow(clippy::too_many_arguments)]
fn serve(
    py: Python<'_>,
    port: u16,
    host: &str,
    memory: bool,
    data: Option<PathBuf>,
    codes: &str,
    push_names: &str,
    request_timeout: f64,
    delivery_timeout: f64,
    grace: f64,
    console: bool,
) -> PyResult<Server> {
    guarded(py, || {
        let ip: IpAddr = host.parse().map_err(|_| PyValueError::new_err(format!("{host:?} is not an IP address")))?;
        let storage = match (memory, data) {
            (true, None) => Storage::Memory,
            (false, Some(dir)) => Storage::Sqlite(dir),
            (false, None) => Storage::Sqlite(PathBuf::from("./cartero-data")),
            (true, Some(_)) => return Err(PyValueError::new_err("give data=... with memory=False")),
        };
        let config = ServerConfig {
            bind: SocketAddr::new(ip, port),
            storage,
            wire: WireSettings { codes: self::codes(codes)?, push_names: self::push_names(push_names)? },
            engine: EngineConfig {
                delivery_timeout: seconds(delivery_timeout, "delivery_timeout")?,
                ..EngineConfig::default()
            },
            request_timeout: seconds(request_timeout, "request_timeout")?,
            grace: seconds(grace, "grace")?,
            console,
            ..ServerConfig::default()
        };
        in_background(py, "cartero-server", move |ready, stop| async move {
            match RustServer::bind(config).await {
                Ok(server) => {
                    ready(server.local_addr().map_err(|e| e.to_string()));
                    let _ = server
                        .run(async move {
                            let _ = stop.await;
                        })
                        .await;
                }
                Err(e) => ready(Err(e.to_string())),
            }
        })
    })
}

/// Runs the future `start` makes on a runtime in a thread of its own, and returns once it
/// reports, through its first argument, the address it serves on (or why it cannot). The
/// handle's `stop()` completes its second argument, then joins the thread.
fn in_background<F, Fut>(py: Python<'_>, name: &str, start: F) -> PyResult<Server>
where
    F: FnOnce(Box<dyn FnOnce(Result<SocketAddr, String>) + Send>, tokio::sync::oneshot::Receiver<()>) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("cannot start the runtime: {e}")));
                    return;
                }
            };
            let ready = Box::new(move |result| {
                let _ = ready_tx.send(result);
            });
            runtime.block_on(start(ready, stop_rx));
        })
        .map_err(|e| error(py, "Error", format!("cannot start the {name} thread: {e}")))?;
    match py.detach(move || ready_rx.recv()) {
        Ok(Ok(addr)) => Ok(Server {
            port: addr.port(),
            host: addr.ip().to_string(),
            stop: Mutex::new(Some(stop_tx)),
            thread: Mutex::new(Some(thread)),
        }),
        Ok(Err(e)) => Err(error(py, "Error", e)),
        Err(_) => Err(error(py, "Error", format!("the {name} thread ended before it was ready"))),
    }
}

/// Starts the web service of part 2 (SOAP with its WSDL at /?wsdl, JSON at /normalize) in
/// the background; returns a handle with `.port` and `.stop()`.
#[pyfunction]
#[pyo3(signature = (port=0, *, host="127.0.0.1"))]
fn serve_webservice(py: Python<'_>, port: u16, host: &str) -> PyResult<Server> {
    guarded(py, || {
        let ip: IpAddr = host.parse().map_err(|_| PyValueError::new_err(format!("{host:?} is not an IP address")))?;
        let addr = SocketAddr::new(ip, port);
        in_background(py, "cartero-webservice", move |ready, stop| async move {
            let reported = std::sync::Arc::new(Mutex::new(Some(ready)));
            let on_bound = reported.clone();
            let served = cartero::webservice::serve(
                addr,
                move |at| {
                    if let Some(ready) = on_bound.lock().unwrap_or_else(|p| p.into_inner()).take() {
                        ready(Ok(at));
                    }
                },
                async move {
                    let _ = stop.await;
                },
            )
            .await;
            let unreported = reported.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let (Err(e), Some(ready)) = (served, unreported) {
                ready(Err(format!("cannot serve on {addr}: {e}")));
            }
        })
    })
}

/// Panics inside the library, to test that a panic surfaces as `cartero.Error`.
#[pyfunction]
fn _panic_for_tests(py: Python<'_>) -> PyResult<()> {
    guarded(py, || panic!("deliberate panic for the tests"))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Client>()?;
    m.add_class::<Listener>()?;
    m.add_class::<RequestDecoder>()?;
    m.add_class::<Delivery>()?;
    m.add_class::<Engine>()?;
    m.add_class::<FieldDecoder>()?;
    m.add_class::<Server>()?;
    m.add_function(wrap_pyfunction!(encode_fields, m)?)?;
    m.add_function(wrap_pyfunction!(serve, m)?)?;
    m.add_function(wrap_pyfunction!(serve_webservice, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    buckets::register(m)?;
    chat::register(m)?;
    Ok(())
}
