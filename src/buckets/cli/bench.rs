//! `cartero buckets bench`: cartero's bucket server against a no-logic baseline on 127.0.0.1,
//! side by side in one run.
//!
//! The baseline is the least a server can do for the same work: a raw TCP receiver that
//! reads a length-prefixed body into a temporary file, fsyncs it, renames it into place and
//! fsyncs the directory (as cartero does), and a raw sender that streams a file back, both
//! through a 64 KiB buffer on a thread per connection. Both are driven by the same raw
//! clients. cartero runs as its own process (`cartero buckets serve`), so its memory can be
//! sampled while the big file goes through.
//!
//! With `--s3 s3://S3BUCKET[/PREFIX]` it times the S3 backend instead: cartero on the object
//! store, the same load sent to the store directly through `object_store` (the same part size
//! and parts in flight as cartero's), and cartero on a directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bench::rss_bytes;
use crate::buckets::s3::{S3Config, PART};

const BUFFER: usize = 64 * 1024;
const SMALL: usize = 4096;

#[derive(clap::Args)]
pub struct Args {
    /// The size of the big file uploaded and downloaded (1G, 64M...).
    #[arg(long, default_value = "1G", value_parser = super::byte_size)]
    size: u64,
    /// How many 4 KiB uploads to time at each concurrency.
    #[arg(long, default_value_t = 2000)]
    small_ops: usize,
    /// The concurrencies of the small uploads, comma-separated.
    #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Where the files go (a temporary directory inside it, removed at the end).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
    /// Time the S3 backend on this object store (credentials from the AWS_* variables):
    /// cartero on it, the store driven directly, and cartero on a directory.
    #[arg(long, value_name = "s3://S3BUCKET[/PREFIX]")]
    s3: Option<String>,
    /// The object store's URL for --s3 (http:// allowed).
    #[arg(long, value_name = "URL", requires = "s3")]
    endpoint: Option<String>,
}

/// Which server a client talks to, and so how it frames an upload or a download.
#[derive(Clone, Copy)]
enum Kind {
    Cartero,
    Baseline,
}

pub fn run(args: Args) -> ExitCode {
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cartero: bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &Args) -> Result<(), String> {
    if let Some(url) = &args.s3 {
        return bench_s3(args, url);
    }
    let work = WorkDir::new(&args.dir)?;
    let source = work.path().join("source");
    write_source(&source, args.size).map_err(|e| format!("cannot write the source file: {e}"))?;
    let baseline_root = work.path().join("baseline");
    std::fs::create_dir(&baseline_root).map_err(|e| e.to_string())?;
    let baseline = start_baseline(baseline_root).map_err(|e| format!("cannot start the baseline: {e}"))?;
    let mut server = CarteroServer::start(&dir_args(&work.path().join("cartero")))?;
    let cartero = server.addr;
    let rt = |kind: Kind| match kind {
        Kind::Cartero => cartero,
        Kind::Baseline => baseline,
    };
    // cartero needs its bucket; the baseline has none.
    let mut c = TcpStream::connect(cartero).map_err(|e| e.to_string())?;
    c.write_all(b"CREATE_B bench\n").map_err(|e| e.to_string())?;
    expect_line(&mut BufReader::new(&c), "300 BCS")?;

    println!(
        "buckets bench on 127.0.0.1: one file of {} MiB, {} uploads of 4 KiB per concurrency",
        args.size >> 20,
        args.small_ops
    );
    println!("{:<32} {:>12} {:>12} {:>8}", "", "cartero", "baseline", "ratio");

    let rss_before = rss_bytes(server.pid())?;
    let sampler = RssSampler::start(server.pid());
    let mut results = Vec::new();
    for kind in [Kind::Cartero, Kind::Baseline] {
        let started = Instant::now();
        upload_file(kind, rt(kind), &source, args.size, "big")?;
        results.push(mb_per_s(args.size, started.elapsed()));
    }
    row("upload, one file, MB/s", results[0], results[1]);
    let mut results = Vec::new();
    for kind in [Kind::Cartero, Kind::Baseline] {
        let started = Instant::now();
        download_file(kind, rt(kind), "big", args.size)?;
        results.push(mb_per_s(args.size, started.elapsed()));
    }
    row("download, one file, MB/s", results[0], results[1]);
    let peak = sampler.stop();
    for &n in &args.concurrency {
        let mut results = Vec::new();
        for kind in [Kind::Cartero, Kind::Baseline] {
            let started = Instant::now();
            small_uploads(kind, rt(kind), n.max(1), args.small_ops)?;
            results.push(args.small_ops as f64 / started.elapsed().as_secs_f64());
        }
        row(&format!("4 KiB uploads/s, concurrency {n}"), results[0], results[1]);
    }
    println!(
        "cartero server RSS: {:.1} MiB before the big transfers, {:.1} MiB at most during them (growth {:.1} MiB)",
        mib(rss_before),
        mib(peak.max(rss_before)),
        mib(peak.saturating_sub(rss_before))
    );
    server.stop();
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64().max(1e-9)
}

fn row(what: &str, cartero: f64, baseline: f64) {
    let ratio = if baseline > 0.0 { cartero / baseline * 100.0 } else { 0.0 };
    println!("{what:<32} {cartero:>12.1} {baseline:>12.1} {ratio:>7.0}%");
}

fn write_source(path: &Path, size: u64) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    file.flush()
}

fn expect_line(reader: &mut impl BufRead, want: &str) -> Result<(), String> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    if line.trim_end() == want {
        Ok(())
    } else {
        Err(format!("expected {want:?}, got {line:?}"))
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Sends `size` bytes of `body` as file `name`; waits for the server's answer.
fn upload(kind: Kind, stream: &mut TcpStream, name: &str, size: u64, body: &mut impl Read) -> Result<(), String> {
    match kind {
        Kind::Cartero => stream.write_all(format!("UPLOAD bench {name} {size}\n").as_bytes()),
        Kind::Baseline => {
            let mut head = [0u8; 1 + 8 + 1];
            head[0] = b'U';
            head[1..9].copy_from_slice(&size.to_be_bytes());
            head[9] = name.len() as u8;
            stream.write_all(&head).and_then(|_| stream.write_all(name.as_bytes()))
        }
    }
    .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; BUFFER];
    let mut left = size;
    while left > 0 {
        let n = body.read(&mut buf[..(left as usize).min(BUFFER)]).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the source ended early".into());
        }
        stream.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    match kind {
        Kind::Cartero => {
            let mut reply = [0u8; 9];
            stream.read_exact(&mut reply).map_err(|e| e.to_string())?;
            if &reply != b"700 FUBS\n" {
                return Err(format!("upload answered {:?}", String::from_utf8_lossy(&reply)));
            }
        }
        Kind::Baseline => {
            let mut ok = [0u8; 1];
            stream.read_exact(&mut ok).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn upload_file(kind: Kind, addr: SocketAddr, source: &Path, size: u64, name: &str) -> Result<(), String> {
    let mut stream = connect(addr)?;
    let mut file = std::fs::File::open(source).map_err(|e| e.to_string())?;
    upload(kind, &mut stream, name, size, &mut file)
}

/// Downloads `name` and drops the bytes, checking the size.
fn download_file(kind: Kind, addr: SocketAddr, name: &str, size: u64) -> Result<(), String> {
    let mut stream = connect(addr)?;
    let announced = match kind {
        Kind::Cartero => {
            stream.write_all(format!("DOWNLOAD bench {name}\n").as_bytes()).map_err(|e| e.to_string())?;
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while byte[0] != b'\n' && line.len() < 64 {
                stream.read_exact(&mut byte).map_err(|e| e.to_string())?;
                line.push(byte[0]);
            }
            let text = String::from_utf8_lossy(&line);
            text.trim_end()
                .strip_prefix("900 FDBS ")
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or(format!("download answered {text:?}"))?
        }
        Kind::Baseline => {
            let mut head = vec![b'D', name.len() as u8];
            head.extend_from_slice(name.as_bytes());
            stream.write_all(&head).map_err(|e| e.to_string())?;
            let mut n = [0u8; 8];
            stream.read_exact(&mut n).map_err(|e| e.to_string())?;
            u64::from_be_bytes(n)
        }
    };
    if announced != size {
        return Err(format!("download announced {announced} bytes, not {size}"));
    }
    let mut buf = vec![0u8; BUFFER];
    let mut left = size;
    while left > 0 {
        let n = stream.read(&mut buf[..(left as usize).min(BUFFER)]).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the download ended early".into());
        }
        left -= n as u64;
    }
    Ok(())
}

/// `ops` uploads of 4 KiB over `workers` connections at once, each under its own name.
fn small_uploads(kind: Kind, addr: SocketAddr, workers: usize, ops: usize) -> Result<(), String> {
    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..workers)
        .map(|w| {
            let next = next.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let mut stream = connect(addr)?;
                let body = vec![w as u8; SMALL];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= ops {
                        return Ok(());
                    }
                    upload(kind, &mut stream, &format!("s{w}-{}", i % 64), SMALL as u64, &mut &body[..])?;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a worker panicked".to_string())??;
    }
    Ok(())
}

/// The no-logic baseline: a thread per connection, length-prefixed bodies.
fn start_baseline(root: PathBuf) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let root = Arc::new(root);
    let counter = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (root, counter) = (root.clone(), counter.clone());
            std::thread::spawn(move || {
                let _ = baseline_connection(stream, &root, &counter);
            });
        }
    });
    Ok(addr)
}

fn baseline_connection(mut stream: TcpStream, root: &Path, counter: &AtomicU64) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let dir = std::fs::File::open(root)?;
    let mut buf = vec![0u8; BUFFER];
    loop {
        let mut op = [0u8; 1];
        if stream.read(&mut op)? == 0 {
            return Ok(());
        }
        match op[0] {
            b'U' => {
                let mut head = [0u8; 9];
                stream.read_exact(&mut head)?;
                let size = u64::from_be_bytes(head[..8].try_into().unwrap_or_default());
                let mut name = vec![0u8; head[8] as usize];
                stream.read_exact(&mut name)?;
                let tmp = root.join(format!(".tmp-{}", counter.fetch_add(1, Ordering::Relaxed)));
                let mut file = std::fs::File::create(&tmp)?;
                let mut left = size;
                while left > 0 {
                    let n = stream.read(&mut buf[..(left as usize).min(BUFFER)])?;
                    if n == 0 {
                        return Ok(());
                    }
                    file.write_all(&buf[..n])?;
                    left -= n as u64;
                }
                file.sync_all()?;
                std::fs::rename(&tmp, root.join(String::from_utf8_lossy(&name).as_ref()))?;
                dir.sync_all()?;
                stream.write_all(b"K")?;
            }
            b'D' => {
                let mut len = [0u8; 1];
                stream.read_exact(&mut len)?;
                let mut name = vec![0u8; len[0] as usize];
                stream.read_exact(&mut name)?;
                let mut file = std::fs::File::open(root.join(String::from_utf8_lossy(&name).as_ref()))?;
                let size = file.metadata()?.len();
                stream.write_all(&size.to_be_bytes())?;
                let mut left = size;
                while left > 0 {
                    let n = file.read(&mut buf[..(left as usize).min(BUFFER)])?;
                    if n == 0 {
                        return Ok(());
                    }
                    stream.write_all(&buf[..n])?;
                    left -= n as u64;
                }
            }
            _ => return Ok(()),
        }
    }
}

/// The bench's own directory, removed when it ends.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(parent: &Path) -> Result<WorkDir, String> {
        let path = parent.join(format!("cartero-buckets-bench-{}", std::process::id()));
        std::fs::create_dir(&path).map_err(|e| format!("cannot make {}: {e}", path.display()))?;
        Ok(WorkDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `cartero buckets serve` as a child process.
struct CarteroServer {
    child: Child,
    addr: SocketAddr,
}

fn dir_args(root: &Path) -> Vec<std::ffi::OsString> {
    vec!["--root".into(), root.into()]
}

impl CarteroServer {
    /// `cartero buckets serve` with `store` (`--root DIR`, `--backend URL ...`).
    fn start(store: &[std::ffi::OsString]) -> Result<CarteroServer, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["buckets", "serve", "-p", "0", "--bind", "127.0.0.1", "--max-file-size", "1T"])
            .args(store)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start cartero buckets serve: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let Some(first) = lines.next().and_then(Result::ok) else {
            let mut why = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut why);
            }
            return Err(format!("the server did not start: {}", why.trim()));
        };
        let addr = first
            .strip_prefix("s> init server ")
            .and_then(|a| a.parse().ok())
            .ok_or(format!("start line {first:?}"))?;
        // One log line per request: keep reading so the server never waits on its stdout.
        std::thread::spawn(move || for _ in lines {});
        Ok(CarteroServer { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CarteroServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Samples a process's RSS every 20 ms; [`RssSampler::stop`] gives the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_bytes(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        RssSampler { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// `--s3`: cartero on the object store, the store directly, cartero on a directory.
fn bench_s3(args: &Args, url: &str) -> Result<(), String> {
    let config = S3Config::parse(url, args.endpoint.clone()).map_err(|e| e.to_string())?;
    let work = WorkDir::new(&args.dir)?;
    let source = work.path().join("source");
    write_source(&source, args.size).map_err(|e| format!("cannot write the source file: {e}"))?;
    let direct = Direct::new(&config)?;
    let mut s3_args: Vec<std::ffi::OsString> = vec!["--backend".into(), url.into()];
    if let Some(endpoint) = &args.endpoint {
        s3_args.extend(["--endpoint".into(), endpoint.into()]);
    }
    let mut on_s3 = CarteroServer::start(&s3_args)?;
    let mut on_dir = CarteroServer::start(&dir_args(&work.path().join("cartero")))?;
    for addr in [on_s3.addr, on_dir.addr] {
        let mut c = connect(addr)?;
        c.write_all(b"CREATE_B bench\n").map_err(|e| e.to_string())?;
        expect_line(&mut BufReader::new(&c), "300 BCS").map_err(|e| format!("{e} (remove the bench bucket)"))?;
    }
    let where_ = args.endpoint.as_deref().map(|e| format!(" at {e}")).unwrap_or_default();
    println!(
        "buckets bench, S3 backend on {url}{where_}: one file of {} MiB, {} uploads of 4 KiB per concurrency",
        args.size >> 20,
        args.small_ops
    );
    println!("{:<32} {:>12} {:>12} {:>8} {:>12}", "", "cartero-s3", "S3 direct", "ratio", "cartero-dir");
    let rss_before = rss_bytes(on_s3.pid())?;
    let sampler = RssSampler::start(on_s3.pid());
    let timed = |work: &mut dyn FnMut() -> Result<(), String>| -> Result<f64, String> {
        let started = Instant::now();
        work()?;
        Ok(started.elapsed().as_secs_f64().max(1e-9))
    };
    let secs = [
        timed(&mut || upload_file(Kind::Cartero, on_s3.addr, &source, args.size, "big"))?,
        timed(&mut || direct.upload_file(&source, args.size))?,
        timed(&mut || upload_file(Kind::Cartero, on_dir.addr, &source, args.size, "big"))?,
    ];
    row_s3("upload, one file, MB/s", secs.map(|s| args.size as f64 / 1e6 / s));
    let secs = [
        timed(&mut || download_file(Kind::Cartero, on_s3.addr, "big", args.size))?,
        timed(&mut || direct.download_file(args.size))?,
        timed(&mut || download_file(Kind::Cartero, on_dir.addr, "big", args.size))?,
    ];
    row_s3("download, one file, MB/s", secs.map(|s| args.size as f64 / 1e6 / s));
    let peak = sampler.stop();
    for &n in &args.concurrency {
        let n = n.max(1);
        let secs = [
            timed(&mut || small_uploads(Kind::Cartero, on_s3.addr, n, args.small_ops))?,
            timed(&mut || direct.small_uploads(n, args.small_ops))?,
            timed(&mut || small_uploads(Kind::Cartero, on_dir.addr, n, args.small_ops))?,
        ];
        row_s3(&format!("4 KiB uploads/s, concurrency {n}"), secs.map(|s| args.small_ops as f64 / s));
    }
    println!(
        "cartero-s3 server RSS: {:.1} MiB before the big transfers, {:.1} MiB at most during them (growth {:.1} MiB)",
        mib(rss_before),
        mib(peak.max(rss_before)),
        mib(peak.saturating_sub(rss_before))
    );
    let mut c = connect(on_s3.addr)?;
    c.write_all(b"DELETE_B bench\n").map_err(|e| e.to_string())?;
    expect_line(&mut BufReader::new(&c), "600 DBS")?;
    direct.clean()?;
    on_s3.stop();
    on_dir.stop();
    Ok(())
}

fn row_s3(what: &str, [s3, direct, dir]: [f64; 3]) {
    let ratio = if direct > 0.0 { s3 / direct * 100.0 } else { 0.0 };
    println!("{what:<32} {s3:>12.1} {direct:>12.1} {ratio:>7.0}% {dir:>12.1}");
}

/// The object store driven directly, under `<prefix>/bench-direct-<pid>/`.
struct Direct {
    store: Arc<object_store::aws::AmazonS3>,
    base: object_store::path::Path,
    runtime: tokio::runtime::Runtime,
}

impl Direct {
    fn new(config: &S3Config) -> Result<Direct, String> {
        let store = crate::buckets::s3::client(config).map_err(|e| e.to_string())?;
        let prefix = config.prefix.split('/').filter(|s| !s.is_empty());
        let base = object_store::path::Path::from_iter(prefix).join(format!("bench-direct-{}", std::process::id()));
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
        Ok(Direct { store: Arc::new(store), base, runtime })
    }

    /// As cartero does: one PUT up to a part, else parts of [`PART`] with one in flight
    /// while the next is read.
    fn upload_file(&self, source: &Path, size: u64) -> Result<(), String> {
        use object_store::ObjectStoreExt;
        let path = self.base.clone().join("big");
        let mut file = std::fs::File::open(source).map_err(|e| e.to_string())?;
        self.runtime.block_on(async {
            let part = |file: &mut std::fs::File| -> Result<Vec<u8>, String> {
                let mut buf = Vec::with_capacity(PART);
                Read::by_ref(file).take(PART as u64).read_to_end(&mut buf).map_err(|e| e.to_string())?;
                Ok(buf)
            };
            if size <= PART as u64 {
                let body = part(&mut file)?;
                self.store.put(&path, body.into()).await.map_err(|e| e.to_string())?;
                return Ok(());
            }
            let mut upload = self.store.put_multipart(&path).await.map_err(|e| e.to_string())?;
            let mut in_flight: Option<tokio::task::JoinHandle<object_store::Result<()>>> = None;
            loop {
                let body = part(&mut file)?;
                if body.is_empty() {
                    break;
                }
                if let Some(previous) = in_flight.take() {
                    previous.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
                }
                in_flight = Some(tokio::spawn(upload.put_part(bytes::Bytes::from(body).into())));
            }
            if let Some(previous) = in_flight.take() {
                previous.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            }
            upload.complete().await.map_err(|e| e.to_string())?;
            Ok(())
        })
    }

    fn download_file(&self, size: u64) -> Result<(), String> {
        use futures_util::StreamExt;
        use object_store::ObjectStoreExt;
        self.runtime.block_on(async {
            let got = self.store.get(&self.base.clone().join("big")).await.map_err(|e| e.to_string())?;
            let mut chunks = got.into_stream();
            let mut total = 0u64;
            while let Some(chunk) = chunks.next().await {
                total += chunk.map_err(|e| e.to_string())?.len() as u64;
            }
            if total != size {
                return Err(format!("the direct download gave {total} bytes, not {size}"));
            }
            Ok(())
        })
    }

    fn small_uploads(&self, workers: usize, ops: usize) -> Result<(), String> {
        use object_store::ObjectStoreExt;
        let next = Arc::new(AtomicUsize::new(0));
        self.runtime.block_on(async {
            let tasks: Vec<_> = (0..workers)
                .map(|w| {
                    let (store, base, next) = (self.store.clone(), self.base.clone(), next.clone());
                    tokio::spawn(async move {
                        let body = bytes::Bytes::from(vec![w as u8; SMALL]);
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= ops {
                                return Ok::<(), String>(());
                            }
                            let path = base.clone().join(format!("s{w}-{}", i % 64));
                            store.put(&path, body.clone().into()).await.map_err(|e| e.to_string())?;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.map_err(|e| e.to_string())??;
            }
            Ok(())
        })
    }

    /// Removes what the direct runs wrote.
    fn clean(&self) -> Result<(), String> {
        use futures_util::TryStreamExt;
        use object_store::{ObjectStore, ObjectStoreExt};
        self.runtime.block_on(async {
            let paths: Vec<_> = self
                .store
                .list(Some(&self.base))
                .map_ok(|m| m.location)
                .try_collect()
                .await
                .map_err(|e| e.to_string())?;
            for p in paths {
                self.store.delete(&p).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }
}
