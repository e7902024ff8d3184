//! `cartero._native.BucketsClient` and `serve_buckets`: the bucket store for Python; the
//! package side is `cartero.buckets`.
//!
//! Transfers stream with the GIL released; a Python file object is read or written one chunk
//! at a time, taking the GIL only for that call.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use cartero::buckets::client::{blocking, ClientError};
use cartero::buckets::server::{Server as RustServer, ServerConfig};
use cartero::buckets::{Name, Vocabulary};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// An instance of the exception class `cartero.buckets.<name>` as a PyErr.
fn error(py: Python<'_>, name: &str, message: String) -> PyErr {
    match py.import("cartero.buckets").and_then(|m| m.getattr(name)).and_then(|cls| cls.call1((message,))) {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

fn client_error(py: Python<'_>, e: ClientError) -> PyErr {
    let class = match &e {
        ClientError::Connect { .. } | ClientError::Timeout(_) | ClientError::Closed | ClientError::Io(_) => {
            "ConnectionFailed"
        }
        ClientError::BadName { .. } => "InvalidName",
        ClientError::Unsupported { .. } => "Unsupported",
        ClientError::Refused(_) => "Refused",
        ClientError::Exists => "FileExists",
        ClientError::Protocol(_) => "ProtocolError",
        ClientError::SourceChanged => "SourceChanged",
    };
    error(py, class, e.to_string())
}

/// A client of one bucket server, on one connection.
#[pyclass(module = "cartero._native")]
pub struct BucketsClient {
    inner: Mutex<Option<blocking::Client>>,
}

impl BucketsClient {
    /// Runs `f` on the connection with the GIL released.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut blocking::Client) -> Result<T, ClientError> + Send,
    ) -> PyResult<T> {
        let result = py.detach(|| {
            let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            match guard.as_mut() {
                Some(client) => Some(f(client)),
                None => None,
            }
        });
        match result {
            Some(result) => result.map_err(|e| client_error(py, e)),
            None => Err(error(py, "ConnectionFailed", "the client is closed".into())),
        }
    }
}

#[pymethods]
impl BucketsClient {
    #[new]
    #[pyo3(signature = (host, port, *, vocabulary="codes", timeout=30.0))]
    fn new(py: Python<'_>, host: &str, port: u16, vocabulary: &str, timeout: f64) -> PyResult<BucketsClient> {
        let vocabulary: Vocabulary = vocabulary.parse().map_err(PyValueError::new_err)?;
        let timeout = Duration::try_from_secs_f64(timeout).ok().filter(|d| !d.is_zero()).ok_or_else(|| {
            PyValueError::new_err(format!("timeout must be a positive number of seconds, not {timeout}"))
        })?;
        let host = host.to_owned();
        let client = py
            .detach(move || blocking::Client::connect(&host, port, vocabulary).map(|c| c.with_timeout(timeout)))
            .map_err(|e| client_error(py, e))?;
        Ok(BucketsClient { inner: Mutex::new(Some(client)) })
    }

    fn list_buckets(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.with(py, |c| c.list_buckets())
    }

    /// `(bucket, name, size)` for each file of `bucket`, or of every bucket.
    #[pyo3(signature = (bucket=None))]
    fn list_files(&self, py: Python<'_>, bucket: Option<String>) -> PyResult<Vec<(String, String, u64)>> {
        let files = self.with(py, move |c| c.list_files(bucket.as_deref()))?;
        Ok(files.into_iter().map(|f| (f.bucket, f.name, f.size)).collect())
    }

    fn create_bucket(&self, py: Python<'_>, bucket: String) -> PyResult<()> {
        self.with(py, move |c| c.create_bucket(&bucket))
    }

    fn delete_bucket(&self, py: Python<'_>, bucket: String) -> PyResult<()> {
        self.with(py, move |c| c.delete_bucket(&bucket))
    }

    fn delete_file(&self, py: Python<'_>, bucket: String, name: String) -> PyResult<()> {
        self.with(py, move |c| c.delete_file(&bucket, &name))
    }

    /// Uploads the file at `path` as `bucket/name`, streaming it from disk.
    fn upload_path(&self, py: Python<'_>, bucket: String, path: PathBuf, name: String) -> PyResult<u64> {
        let file = std::fs::File::open(&path)
            .map_err(|e| PyErr::from(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))))?;
        let size = file.metadata()?.len();
        self.with(py, move |c| c.upload(&bucket, &name, size, file, |_| {}))?;
        Ok(size)
    }

    /// Uploads exactly `size` bytes read from the binary file object `source`.
    fn upload_reader(
        &self,
        py: Python<'_>,
        bucket: String,
        name: String,
        size: u64,
        source: Py<PyAny>,
    ) -> PyResult<()> {
        let reader = PyReader { source, failure: None };
        let mut reader = reader;
        let result = self.with(py, |c| c.upload(&bucket, &name, size, &mut reader, |_| {}));
        match reader.failure.take() {
            Some(e) => Err(e),
            None => result,
        }
    }

    /// Downloads `bucket/name` to the path `dest` (a directory gets `dest/name`) through a
    /// temporary file beside it, renamed into place; returns the path written.
    fn download_path(&self, py: Python<'_>, bucket: String, name: String, dest: PathBuf) -> PyResult<PathBuf> {
        Name::parse(name.as_bytes()).map_err(|e| error(py, "InvalidName", format!("bad name {name:?}: {e}")))?;
        let target = if dest.is_dir() { dest.join(&name) } else { dest };
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = target
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| PyValueError::new_err(format!("{} is not a file path", target.display())))?;
        let tmp = dir.join(format!(".{file_name}.cartero-{}.part", std::process::id()));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let written = self.with(py, |c| {
            let mut file = file;
            c.download(&bucket, &name, &mut file, |_| {}, |_| {})?;
            file.sync_all()?;
            Ok(())
        });
        match written.and_then(|()| rename(&tmp, &target)) {
            Ok(()) => Ok(target),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Downloads `bucket/name` into the binary file object `sink`; returns the size.
    fn download_writer(&self, py: Python<'_>, bucket: String, name: String, sink: Py<PyAny>) -> PyResult<u64> {
        let mut writer = PyWriter { sink, failure: None };
        let result = self.with(py, |c| c.download(&bucket, &name, &mut writer, |_| {}, |_| {}));
        match writer.failure.take() {
            Some(e) => Err(e),
            None => result,
        }
    }

    /// Says goodbye and closes the connection. Safe to call twice.
    fn close(&self, py: Python<'_>) {
        let client = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(client) = client {
            let _ = py.detach(move || client.quit());
        }
    }
}

fn rename(from: &Path, to: &Path) -> PyResult<()> {
    std::fs::rename(from, to).map_err(|e| PyErr::from(std::io::Error::new(e.kind(), format!("{}: {e}", to.display()))))
}

/// A Python binary file object as a `Read`: each read takes the GIL for one `read(n)` call.
struct PyReader {
    source: Py<PyAny>,
    failure: Option<PyErr>,
}

impl Read for PyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        Python::attach(|py| {
            let got = self.source.bind(py).call_method1("read", (buf.len(),)).and_then(|chunk| {
                let bytes = chunk.cast_into::<PyBytes>().map_err(|_| {
                    PyValueError::new_err("the file object must be opened in binary mode (read() gave no bytes)")
                })?;
                let data = bytes.as_bytes();
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                Ok(n)
            });
            got.map_err(|e| {
                self.failure = Some(e);
                std::io::Error::other("reading the Python file object failed")
            })
        })
    }
}

/// A Python binary file object as a `Write`: each write takes the GIL for one `write(b)`.
struct PyWriter {
    sink: Py<PyAny>,
    failure: Option<PyErr>,
}

impl Write for PyWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Python::attach(|py| {
            let result = self.sink.bind(py).call_method1("write", (PyBytes::new(py, buf),));
            match result {
                Ok(_) => Ok(buf.len()),
                Err(e) => {
                    self.failure = Some(e);
                    Err(std::io::Error::other("writing to the Python file object failed"))
                }
            }
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts a bucket server over `root` in the background; returns a handle with `.port` and
/// `.stop()`.
#[pyfunction]
#[pyo3(signature = (root, port=0, *, host="127.0.0.1", max_file_size=1 << 30))]
fn serve_buckets(py: Python<'_>, root: PathBuf, port: u16, host: &str, max_file_size: u64) -> PyResult<crate::Server> {
    let ip: IpAddr = host.parse().map_err(|_| PyValueError::new_err(format!("{host:?} is not an IP address")))?;
    let mut config = ServerConfig::new(SocketAddr::new(ip, port), root);
    config.max_file_size = max_file_size;
    crate::in_background(py, "cartero-buckets", move |ready, stop| async move {
        match RustServer::bind(config).await {
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

/// Adds the bucket classes and functions to `cartero._native`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<BucketsClient>()?;
    m.add_function(wrap_pyfunction!(serve_buckets, m)?)?;
    Ok(())
}
