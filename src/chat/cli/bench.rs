//! `cartero chat bench`: broadcast fan-out on 127.0.0.1, side by side, against `cartero chat
//! serve` (a child process), a no-logic tokio relay (a child too: each line goes to every
//! connection, no names, no checks) and ngircd (a child with a generated configuration,
//! spoken to in IRC: NICK/USER; the senders become operators (OPER) exempt from flood
//! protection (user mode +F; otherwise 3 lines a second each) and broadcast with a
//! PRIVMSG to the server mask `$bench.cartero.local`, which reaches every user on the server,
//! the sender too, as a chat BROADCAST does. Not a channel: each JOIN is sent to every member,
//! so 10,000 joins are 50 million lines and take ngircd longer than a bench may).
//!
//! For each server: N users connect and join, then K of them broadcast at a fixed total rate,
//! then as fast as a window of messages in flight allows (user 0, who never sends, sees every
//! broadcast and paces the senders). Each run reports the connections the server held,
//! deliveries per second (one broadcast reaching one user is one delivery) and latency
//! percentiles twice: from the sender's write to the recipient's read (the whole path, the load
//! generator's own delays included) and to the bytes' arrival in the recipient's socket, by the
//! kernel's receive timestamp (SO_TIMESTAMPNS: what the server took, however late this process
//! reads); `--users 1000,10000` does it all for each count. Then the kernel's floor for each
//! count (the time to write one line to every connection with no server around it: see
//! [`floor`]), and the resident memory each idle connection costs the server, and its whole
//! RSS. cartero runs with `--memory` (no disk in the path) and without per-address limits
//! (every user is 127.0.0.1). Everything is bounded in count and time.
//!
//! The relay is `cartero chat bench --serve-relay` and the floor's far end `--hold ADDR`
//! (both hidden), so each process holds one file descriptor per user: `--users N` needs an
//! open-file limit of about N + 256 (and each `--idle` count n + 256). The bench raises its
//! own limit, the hard one too when it may (root), its servers inherit it, and it says so
//! when that is not enough.

use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::{sleep, timeout, Instant};

use crate::bench::{percentile_ms, rss_bytes};

#[derive(clap::Args)]
pub struct Args {
    /// Connected users (comma separated: every run for each count).
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize])]
    users: Vec<usize>,
    /// Users who broadcast (user 0 never does).
    #[arg(long, default_value_t = 100)]
    senders: usize,
    /// Broadcasts per second, over all senders, in the fixed-rate run.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Broadcasts in flight at most in the maximal-rate run.
    #[arg(long, default_value_t = 32)]
    window: u64,
    /// Length of each run.
    #[arg(long, default_value = "5s", value_parser = crate::cli::common::duration)]
    duration: Duration,
    /// Idle connections to measure memory with (comma separated; empty for none).
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 10000])]
    idle: Vec<usize>,
    /// Also run cartero with durable history (`--data` in a temporary directory).
    #[arg(long)]
    durable: bool,
    /// Leave ngircd out (it is also left out, with a note, when it is not installed).
    #[arg(long)]
    no_ngircd: bool,
    /// Be the baseline relay: print `relay ADDR`, serve until standard input ends (the bench
    /// runs its relay so, in a child process of its own, as the other servers).
    #[arg(long, hide = true)]
    serve_relay: bool,
    /// Be the far end of the kernel floor: connect `--users` times to ADDR, print `held`, keep
    /// the connections unread until standard input ends.
    #[arg(long, hide = true, value_name = "ADDR")]
    hold: Option<SocketAddr>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Cartero,
    /// cartero with `--data`: every message stored in SQLite before it is forwarded.
    CarteroDurable,
    Relay,
    Ngircd,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Cartero => "cartero chat serve",
            Kind::CarteroDurable => "cartero --data",
            Kind::Relay => "baseline relay",
            Kind::Ngircd => "ngircd",
        }
    }
}

/// A server under test; children are killed when it is dropped.
struct Target {
    kind: Kind,
    addr: SocketAddr,
    child: Option<Child>,
    _dir: Option<TempDir>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one run measured.
struct RunResult {
    /// Users connected and joined when the run ended.
    held: u64,
    /// Deliveries while the senders were sending.
    delivered: u64,
    /// Deliveries by the end of the run, and how many there should have been.
    delivered_total: u64,
    expected: u64,
    elapsed: Duration,
    /// Per delivery, sorted: to the recipient's read, and to the arrival in its socket.
    read_us: Vec<u32>,
    arrival_us: Vec<u32>,
}

/// Raises the open-file limit to `need` (the hard limit too, when allowed); returns the
/// soft limit now in force.
fn raise_fd_limit(need: u64) -> u64 {
    use rlimit::Resource;
    if let Ok((soft, hard)) = rlimit::getrlimit(Resource::NOFILE) {
        if soft >= need {
            return soft;
        }
        if hard < need {
            // Allowed as root (CAP_SYS_RESOURCE); otherwise the soft limit goes up to the hard one.
            let _ = rlimit::setrlimit(Resource::NOFILE, need, need);
        }
    }
    match rlimit::increase_nofile_limit(need) {
        Ok(soft) => soft,
        Err(e) => {
            eprintln!("cartero: cannot raise the file descriptor limit: {e}");
            rlimit::getrlimit(Resource::NOFILE).map_or(0, |(soft, _)| soft)
        }
    }
}

pub fn run(args: Args) -> ExitCode {
    if args.serve_relay {
        return serve_relay(args.users.iter().copied().max().unwrap_or(0) as u64 + 256);
    }
    if let Some(addr) = args.hold {
        return match floor::hold(addr, args.users.iter().copied().max().unwrap_or(0)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cartero: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.users.is_empty() || args.users.iter().any(|&n| n < 2 || args.senders >= n) || args.senders == 0 {
        eprintln!("cartero: need at least 2 users and 1 to users-1 senders for every user count");
        return ExitCode::FAILURE;
    }
    let most_users = args.users.iter().copied().max().unwrap_or(0) as u64;
    let most_idle = args.idle.iter().copied().max().unwrap_or(0) as u64;
    let need = most_users.max(most_idle) + 256;
    let limit = raise_fd_limit(need);
    if limit < need {
        eprintln!(
            "cartero: the open-file limit is {limit}; {most_users} users need about {need}; raise it \
             (ulimit -n) or expect refused connections"
        );
    }
    let runtime = match crate::cli::common::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let ngircd = !args.no_ngircd && which("ngircd").is_some();
    if !args.no_ngircd && !ngircd {
        eprintln!("cartero: ngircd is not installed (Debian: apt-get install ngircd); its rows are left out");
    }
    runtime.block_on(async {
        println!(
            "chat bench on 127.0.0.1: {} senders, {:?} per run, open-file limit {limit}; a delivery is one \
             broadcast reaching one user; cartero with --memory",
            args.senders, args.duration
        );
        println!(
            "latencies in ms from the sender's write: to the recipient's read (read), and to the bytes' \
             arrival in its socket by the kernel's stamp (arrive)"
        );
        println!(
            "{:<20} {:>6} {:<22} {:>6} {:>14} {:>9} {:>9} {:>10} {:>10} {:>8} {:>12}",
            "server",
            "users",
            "run",
            "held",
            "deliveries/s",
            "read p50",
            "read p99",
            "arrive p50",
            "arrive p99",
            "lost",
            "RSS/user"
        );
        let mut kinds = vec![Kind::Cartero, Kind::Relay];
        if args.durable {
            kinds.insert(1, Kind::CarteroDurable);
        }
        if ngircd {
            kinds.push(Kind::Ngircd);
        }
        let mut failed = false;
        for &users in &args.users {
            for &kind in &kinds {
                if let Err(e) = bench_one(kind, &args, users).await {
                    eprintln!("cartero: {} with {users} users: {e}", kind.label());
                    failed = true;
                }
            }
        }
        println!();
        println!(
            "kernel floor: one line written to each connection by threads doing nothing else, {} rounds",
            floor::ROUNDS
        );
        println!(
            "{:<20} {:>6} {:>8} {:>10} {:>10} {:>12}",
            "", "users", "threads", "median ms", "fastest ms", "us a write"
        );
        for &users in &args.users {
            match tokio::task::spawn_blocking(move || floor::measure(users))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
            {
                Ok(rows) => {
                    for row in rows {
                        println!(
                            "{:<20} {users:>6} {:>8} {:>10.2} {:>10.2} {:>12.2}",
                            "write floor",
                            row.threads,
                            row.median.as_secs_f64() * 1e3,
                            row.fastest.as_secs_f64() * 1e3,
                            row.median.as_secs_f64() * 1e6 / users as f64
                        );
                    }
                }
                Err(e) => {
                    eprintln!("cartero: the write floor with {users} connections: {e}");
                    failed = true;
                }
            }
        }
        let idle: Vec<usize> = args.idle.iter().copied().filter(|n| *n > 0).collect();
        if !idle.is_empty() {
            println!();
            println!("idle connections");
            println!("{:<20} {:>6} {:>6} {:>14} {:>14}", "server", "idle", "held", "RSS/conn", "RSS total");
            let mut kinds = vec![Kind::Cartero, Kind::Relay];
            if ngircd {
                kinds.push(Kind::Ngircd);
            }
            for kind in kinds {
                for &n in &idle {
                    match idle_memory(kind, n).await {
                        Ok(idle) => println!(
                            "{:<20} {n:>6} {:>6} {:>10.2} KiB {:>10.1} MiB",
                            kind.label(),
                            idle.held,
                            idle.per_conn / 1024.0,
                            idle.total as f64 / (1024.0 * 1024.0)
                        ),
                        Err(e) => {
                            eprintln!("cartero: {} with {n} idle connections: {e}", kind.label());
                            failed = true;
                        }
                    }
                }
            }
        }
        if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

async fn start(kind: Kind, users: usize) -> Result<Target, String> {
    match kind {
        Kind::Cartero => start_cartero(false).await,
        Kind::CarteroDurable => start_cartero(true).await,
        Kind::Relay => start_relay_child(users).await,
        Kind::Ngircd => start_ngircd().await,
    }
}

async fn start_cartero(durable: bool) -> Result<Target, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = if durable {
        let dir = std::env::temp_dir().join(format!("cartero-chat-bench-data-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Some(TempDir(dir))
    } else {
        None
    };
    let mut command = Command::new(exe);
    command.args(["chat", "serve", "-p", "0", "--bind", "127.0.0.1", "--connect-timeout", "10m"]);
    match &dir {
        Some(dir) => command.arg("--data").arg(&dir.0),
        None => command.arg("--memory"),
    };
    let mut child = command
        // Every bench user comes from 127.0.0.1: no per-address limits.
        .args(["--max-per-ip", "0", "--rate", "0"])
        .args(["--max-connections", "30000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start cartero chat serve: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::{BufRead, Read};
        let mut reader = std::io::BufReader::new(stdout);
        let mut first = String::new();
        let _ = reader.read_line(&mut first);
        let _ = tx.send(first);
        // The event log is read and dropped, so the server never waits on it.
        let mut sink = [0u8; 65536];
        while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
    });
    let mut target = Target {
        kind: if durable { Kind::CarteroDurable } else { Kind::Cartero },
        addr: "127.0.0.1:0".parse().unwrap(),
        child: Some(child),
        _dir: dir,
    };
    let first = rx.recv_timeout(Duration::from_secs(10)).map_err(|_| "cartero chat serve did not start")?;
    target.addr = first
        .trim()
        .strip_prefix("s> init server ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("unexpected start line {first:?}"))?;
    Ok(target)
}

fn serve_relay(need: u64) -> ExitCode {
    raise_fd_limit(need);
    let runtime = match crate::cli::common::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let addr = match start_relay().await {
            Ok(addr) => addr,
            Err(e) => {
                eprintln!("cartero: cannot start the relay: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("relay {addr}");
        // Until the bench closes our standard input (or is gone).
        let _ = tokio::task::spawn_blocking(|| {
            use std::io::Read;
            let mut sink = [0u8; 64];
            while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        })
        .await;
        ExitCode::SUCCESS
    })
}

async fn start_relay_child(users: usize) -> Result<Target, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["chat", "bench", "--serve-relay", "--users", &users.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the relay: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut target = Target { kind: Kind::Relay, addr: "127.0.0.1:0".parse().unwrap(), child: Some(child), _dir: None };
    let first = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut first = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut first);
        first
    });
    let first = timeout(Duration::from_secs(10), first)
        .await
        .map_err(|_| "the relay did not start")?
        .map_err(|e| e.to_string())?;
    target.addr = first
        .trim()
        .strip_prefix("relay ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("unexpected relay start line {first:?}"))?;
    Ok(target)
}

/// The no-logic baseline: every line to every connection, unbounded queues, no checks.
async fn start_relay() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    type Peers = Arc<std::sync::Mutex<Vec<(u64, mpsc::UnboundedSender<bytes::Bytes>)>>>;
    let peers: Peers = Default::default();
    tokio::spawn(async move {
        let mut next = 0u64;
        while let Ok((stream, _)) = listener.accept().await {
            next += 1;
            let id = next;
            let _ = stream.set_nodelay(true);
            let (read, mut write) = stream.into_split();
            let (tx, mut rx) = mpsc::unbounded_channel::<bytes::Bytes>();
            peers.lock().unwrap_or_else(|p| p.into_inner()).push((id, tx));
            tokio::spawn(async move {
                while let Some(first) = rx.recv().await {
                    let mut batch = first.to_vec();
                    while let Ok(more) = rx.try_recv() {
                        batch.extend_from_slice(&more);
                    }
                    if write.write_all(&batch).await.is_err() {
                        return;
                    }
                }
            });
            let peers = peers.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(read);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let bytes = bytes::Bytes::copy_from_slice(&line);
                            for (_, tx) in peers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                                let _ = tx.send(bytes.clone());
                            }
                        }
                    }
                }
                peers.lock().unwrap_or_else(|p| p.into_inner()).retain(|(i, _)| *i != id);
            });
        }
    });
    Ok(addr)
}

async fn start_ngircd() -> Result<Target, String> {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        probe.local_addr().map_err(|e| e.to_string())?.port()
    };
    let dir = std::env::temp_dir().join(format!("cartero-chat-bench-ngircd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir = TempDir(dir);
    let motd = dir.0.join("motd");
    let _ = std::fs::write(&motd, "bench\n");
    let conf = dir.0.join("ngircd.conf");
    let text = format!(
        "[Global]\nName = bench.cartero.local\nInfo = cartero chat bench\nListen = 127.0.0.1\nPorts = {port}\n\
         MotdFile = {}\nPidFile = {}\n\n[Limits]\nMaxConnections = 0\nMaxConnectionsIP = 0\nMaxJoins = 0\n\
         MaxNickLength = 16\nPingTimeout = 600\nPongTimeout = 600\n\n[Options]\nDNS = no\nIdent = no\nPAM = no\n\
         RequireAuthPing = no\n\n\
         [Operator]\nName = bench\nPassword = bench\n",
        motd.display(),
        dir.0.join("ngircd.pid").display()
    );
    std::fs::write(&conf, text).map_err(|e| format!("cannot write the ngircd configuration: {e}"))?;
    let ngircd = which("ngircd").ok_or("ngircd is not installed")?;
    let child = Command::new(ngircd)
        .arg("--nodaemon")
        .arg("--config")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start ngircd: {e}"))?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let target = Target { kind: Kind::Ngircd, addr, child: Some(child), _dir: Some(dir) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            return Err("ngircd did not start listening within 10 s".into());
        }
        sleep(Duration::from_millis(50)).await;
    }
    Ok(target)
}

/// Shared by the readers of one server.
#[derive(Default)]
struct Counters {
    /// Broadcasts received by anyone, during the measured window.
    delivered: AtomicU64,
    /// Bytes received by anyone (to see when traffic settles).
    bytes: AtomicU64,
    /// Broadcasts user 0 has seen.
    observed: AtomicU64,
    observed_notify: Notify,
    measuring: AtomicBool,
    /// Connections the server closed (or that failed) after joining.
    closed: AtomicU64,
}

struct User {
    write: OwnedWriteHalf,
}

async fn send(w: &mut OwnedWriteHalf, text: String) -> Result<(), String> {
    w.write_all(text.as_bytes()).await.map_err(|e| e.to_string())
}

async fn read_line(reader: &mut BufReader<OwnedReadHalf>, line: &mut Vec<u8>) -> Result<(), String> {
    line.clear();
    match reader.read_until(b'\n', line).await {
        Ok(0) => Err("the server closed a connection".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Connects and joins user `i`; returns its halves once it may broadcast (a `sender` on
/// ngircd is an operator by then).
async fn login(
    kind: Kind,
    addr: SocketAddr,
    i: usize,
    sender: bool,
) -> Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    crate::net::stamp_arrivals(&stream);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(16 * 1024, read);
    let mut line = Vec::new();
    match kind {
        Kind::Relay => {}
        Kind::Cartero | Kind::CarteroDurable => {
            send(&mut write, format!("CONNECT|u{i}\n")).await?;
            loop {
                read_line(&mut reader, &mut line).await?;
                if line.starts_with(b"CONNECT_ACK|OK") {
                    break;
                }
                if line.starts_with(b"CONNECT_ACK|FAIL") || line.starts_with(b"ERROR|") {
                    return Err(format!("u{i} refused: {}", String::from_utf8_lossy(&line).trim_end()));
                }
            }
        }
        Kind::Ngircd => {
            send(&mut write, format!("NICK u{i}\r\nUSER u{i} 0 * :bench\r\n")).await?;
            loop {
                read_line(&mut reader, &mut line).await?;
                let text = String::from_utf8_lossy(&line);
                // ":server 001 nick ...": the numeric is the second word.
                let numeric = text.split_whitespace().nth(1).unwrap_or("");
                if let Some(token) = text.strip_prefix("PING ") {
                    send(&mut write, format!("PONG {}\r\n", token.trim_end())).await?;
                } else if numeric == "376" || numeric == "422" {
                    // The end of the welcome (its MOTD, or none): a user may be sent to.
                    if !sender {
                        break;
                    }
                    send(&mut write, "OPER bench bench\r\n".into()).await?;
                } else if numeric == "381" {
                    // An operator, and with +F exempt from flood protection, which would
                    // hold each sender to 3 lines a second. The PING's answer comes once
                    // ngircd reads this connection again (a MODE costs a pause).
                    send(&mut write, format!("MODE u{i} +F\r\nPING :ready\r\n")).await?;
                } else if text.contains(" PONG ") && text.trim_end().ends_with(":ready") {
                    break;
                } else if text.starts_with("ERROR") || ["433", "464", "491", "501"].contains(&numeric) {
                    return Err(format!("u{i} refused: {}", text.trim_end()));
                }
            }
        }
    }
    Ok((reader, write))
}

/// Bytes a reader holds without a line end before it gives the connection up.
const MAX_PENDING: usize = 1 << 20;

/// Latencies in microseconds, per delivery: to the recipient's read, and to the bytes'
/// arrival in its socket (by the kernel's stamp).
#[derive(Default)]
struct Samples {
    read_us: Vec<u32>,
    arrival_us: Vec<u32>,
}

/// Now on the real-time clock, in microseconds since the Unix epoch: what a broadcast
/// carries, since the kernel stamps arrivals on that clock.
fn wall_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn elapsed_us(since_us: u64, until_us: u64) -> u32 {
    until_us.saturating_sub(since_us).min(u64::from(u32::MAX)) as u32
}

/// Reads until stopped; counts broadcasts and, while measuring, their latencies. Lines come
/// from `reader`'s buffer first, then from reads that carry the kernel's arrival stamp.
async fn reader_task(
    kind: Kind,
    reader: BufReader<OwnedReadHalf>,
    observer: bool,
    counters: Arc<Counters>,
    samples: Arc<std::sync::Mutex<Samples>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut pending = reader.buffer().to_vec();
    let read = reader.into_inner();
    let socket: &TcpStream = read.as_ref();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut arrived_us = None;
    loop {
        // Lines are read in place; what they took goes in one drain after them (this is the
        // load generator's hot path, on the cores the server uses too).
        let mut start = 0;
        while let Some(len) = memchr::memchr(b'\n', &pending[start..]) {
            let text = pending[start..start + len].trim_ascii_end();
            start += len + 1;
            let payload = match kind {
                Kind::Cartero | Kind::CarteroDurable | Kind::Relay if text.starts_with(b"BROADCAST|") => {
                    text.rsplit(|b| *b == b'|').next()
                }
                Kind::Ngircd if memchr::memmem::find(text, b" PRIVMSG ").is_some() => {
                    text.rsplit(|b| *b == b':').next()
                }
                _ => None,
            };
            let Some(sent_us) = payload.and_then(|p| std::str::from_utf8(p).ok()).and_then(|p| p.parse::<u64>().ok())
            else {
                continue;
            };
            if observer {
                counters.observed.fetch_add(1, Ordering::Release);
                counters.observed_notify.notify_one();
            }
            if counters.measuring.load(Ordering::Relaxed) {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                let mut samples = samples.lock().unwrap_or_else(|p| p.into_inner());
                samples.read_us.push(elapsed_us(sent_us, wall_us()));
                if let Some(at) = arrived_us {
                    samples.arrival_us.push(elapsed_us(sent_us, at));
                }
            }
        }
        pending.drain(..start);
        tokio::select! {
            ready = socket.readable() => if ready.is_err() {
                counters.closed.fetch_add(1, Ordering::Relaxed);
                break;
            },
            _ = stop.changed() => break,
        }
        match socket.try_io(tokio::io::Interest::READABLE, || crate::net::read_stamped(socket, &mut chunk)) {
            Ok((n, at)) if n > 0 && pending.len() < MAX_PENDING => {
                counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                pending.extend_from_slice(&chunk[..n]);
                arrived_us = at.map(|d| d.as_micros() as u64);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // Closed, failed, or a line longer than any server here sends.
            _ => {
                counters.closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
}

/// Waits until no byte has arrived for `quiet`, at most `limit`.
async fn settle(counters: &Counters, quiet: Duration, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut last = counters.bytes.load(Ordering::Relaxed);
    while Instant::now() < deadline {
        sleep(quiet).await;
        let now = counters.bytes.load(Ordering::Relaxed);
        if now == last {
            return;
        }
        last = now;
    }
}

async fn bench_one(kind: Kind, args: &Args, n: usize) -> Result<(), String> {
    let target = start(kind, n).await?;
    let joining = Instant::now();
    let rss_before = target.child.as_ref().and_then(|c| rss_bytes(c.id()).ok());
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Log in with bounded concurrency; readers start as each user is in. A user the server
    // refuses is counted out (the table says how many it held); user 0 must be in. ngircd
    // listens with a backlog of 10: more connects at once overflow it, and a dropped SYN is
    // retried after 1, 3, 7... seconds, past the join timeout.
    let gate = Arc::new(Semaphore::new(if kind == Kind::Ngircd { 8 } else { 64 }));
    let mut logins = Vec::with_capacity(n);
    let sinks: Vec<Arc<std::sync::Mutex<Samples>>> = (0..n).map(|_| Default::default()).collect();
    for (i, sink) in sinks.iter().enumerate() {
        let (gate, counters, stop, sink) = (gate.clone(), counters.clone(), stop_rx.clone(), sink.clone());
        let (addr, senders) = (target.addr, args.senders);
        logins.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let sender = (1..=senders).contains(&i);
            let (reader, write) = timeout(Duration::from_secs(30), login(kind, addr, i, sender))
                .await
                .map_err(|_| format!("u{i} could not join within 30 s"))??;
            let reading = tokio::spawn(reader_task(kind, reader, i == 0, counters, sink, stop));
            Ok::<_, String>((User { write }, reading))
        }));
    }
    let mut users: Vec<Option<User>> = Vec::with_capacity(n);
    let mut readers: Vec<tokio::task::JoinHandle<()>> = Vec::with_capacity(n);
    let mut refused = 0usize;
    let mut first_error = None;
    for login in logins {
        match login.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((user, reader)) => {
                users.push(Some(user));
                readers.push(reader);
            }
            Err(e) => {
                users.push(None);
                refused += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = &first_error {
        eprintln!("cartero: {}: {refused} of {n} users could not join; the first: {e}", kind.label());
    }
    if users[0].is_none() || !users.iter().skip(1).take(args.senders).any(Option::is_some) {
        return Err(first_error.unwrap_or_default());
    }
    settle(&counters, Duration::from_millis(300), Duration::from_secs(60)).await;
    let joined = (n - refused) as u64;
    // Progress, on standard error: joining 10,000 users takes a while.
    eprintln!("cartero: {}: {joined} users joined in {:.1} s", kind.label(), joining.elapsed().as_secs_f64());
    let rss_per_user = match (rss_before, target.child.as_ref().and_then(|c| rss_bytes(c.id()).ok())) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before) as f64 / joined as f64),
        _ => None,
    };
    let runs = [(format!("{} bcast/s", args.rate), Some(args.rate)), (format!("max (window {})", args.window), None)];
    for (name, rate) in runs {
        let held = joined - counters.closed.load(Ordering::Relaxed);
        // Every server sends a broadcast to its sender too (ngircd does for a server mask).
        let mut result = measure(kind, &mut users, &counters, &sinks, args, rate, held).await?;
        result.held = joined - counters.closed.load(Ordering::Relaxed);
        let lost = result.expected.saturating_sub(result.delivered_total);
        let rss = rss_per_user.map_or("-".to_string(), |b| format!("{:.1} KiB", b / 1024.0));
        println!(
            "{:<20} {n:>6} {:<22} {:>6} {:>14.0} {:>9.2} {:>9.2} {:>10.2} {:>10.2} {:>8} {:>12}",
            target.kind.label(),
            name,
            result.held,
            result.delivered as f64 / result.elapsed.as_secs_f64(),
            percentile_ms(&result.read_us, 0.5),
            percentile_ms(&result.read_us, 0.99),
            percentile_ms(&result.arrival_us, 0.5),
            percentile_ms(&result.arrival_us, 0.99),
            lost,
            rss
        );
    }
    let _ = stop_tx.send(true);
    drop(users);
    for reader in readers {
        let _ = reader.await;
    }
    Ok(())
}

/// One run: broadcasts for `args.duration` at `rate` a second (or as fast as the window
/// allows), then waits for the traffic to settle.
#[allow(clippy::too_many_arguments)]
async fn measure(
    kind: Kind,
    users: &mut [Option<User>],
    counters: &Arc<Counters>,
    sinks: &[Arc<std::sync::Mutex<Samples>>],
    args: &Args,
    rate: Option<u32>,
    recipients: u64,
) -> Result<RunResult, String> {
    // Latencies are kept by the readers; each run takes a fresh count.
    counters.delivered.store(0, Ordering::Relaxed);
    let observed_start = counters.observed.load(Ordering::Acquire);
    counters.measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let end = start + args.duration;
    let mut sent: u64 = 0;
    let mut next_sender = 0usize;
    let interval = rate.map(|r| Duration::from_secs_f64(1.0 / f64::from(r.max(1))));
    let senders: Vec<usize> = (1..=args.senders).filter(|&i| users[i].is_some()).collect();
    while Instant::now() < end {
        match interval {
            Some(every) => {
                let due = start + every * (sent as u32);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.min(end)).await;
                    continue;
                }
            }
            None => {
                // Saturating: a late delivery of the run before may be seen after `observed_start`.
                let seen = counters.observed.load(Ordering::Acquire).saturating_sub(observed_start);
                let in_flight = sent.saturating_sub(seen);
                if in_flight >= args.window {
                    let _ = timeout(Duration::from_millis(50), counters.observed_notify.notified()).await;
                    continue;
                }
            }
        }
        let Some(user) = users[senders[next_sender % senders.len()]].as_mut() else {
            return Err("a sender is gone".into());
        };
        next_sender += 1;
        let now_us = wall_us();
        let line = match kind {
            Kind::Ngircd => format!("PRIVMSG $bench.cartero.local :{now_us}\r\n"),
            Kind::Cartero | Kind::CarteroDurable | Kind::Relay => format!("BROADCAST|{now_us}\n"),
        };
        user.write.write_all(line.as_bytes()).await.map_err(|e| format!("a sender failed: {e}"))?;
        sent += 1;
    }
    let elapsed = start.elapsed();
    let delivered_in_window = counters.delivered.load(Ordering::Relaxed);
    settle(counters, Duration::from_millis(300), Duration::from_secs(30)).await;
    counters.measuring.store(false, Ordering::Relaxed);
    let (mut read_us, mut arrival_us) = (Vec::new(), Vec::new());
    for sink in sinks {
        let mut samples = sink.lock().unwrap_or_else(|p| p.into_inner());
        read_us.append(&mut samples.read_us);
        arrival_us.append(&mut samples.arrival_us);
    }
    read_us.sort_unstable();
    arrival_us.sort_unstable();
    Ok(RunResult {
        held: 0,
        delivered: delivered_in_window,
        delivered_total: counters.delivered.load(Ordering::Relaxed),
        expected: sent * recipients,
        elapsed,
        read_us,
        arrival_us,
    })
}

/// What idle connections cost a server.
struct Idle {
    /// Connections still open after the pause.
    held: usize,
    /// RSS growth per connection, in bytes.
    per_conn: f64,
    /// The server's whole RSS with them, in bytes.
    total: u64,
}

async fn idle_memory(kind: Kind, n: usize) -> Result<Idle, String> {
    let target = start(kind, n).await?;
    let pid = target.child.as_ref().map(Child::id).ok_or("no process to measure")?;
    sleep(Duration::from_millis(200)).await;
    let before = rss_bytes(pid)?;
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let gate = gate.clone();
        let addr = target.addr;
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            timeout(Duration::from_secs(10), TcpStream::connect(addr))
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| e.to_string())
        }));
    }
    let mut streams = Vec::with_capacity(n);
    for task in tasks {
        streams.push(task.await.map_err(|e| e.to_string())??);
    }
    sleep(Duration::from_millis(500)).await;
    let after = rss_bytes(pid)?;
    // A closed connection reads 0 bytes or fails; an open one has nothing, or a greeting.
    let mut probe = [0u8; 512];
    let held = streams
        .iter()
        .filter(|s| match s.try_read(&mut probe) {
            Ok(read) => read > 0,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        })
        .count();
    drop(streams);
    Ok(Idle { held, per_conn: after.saturating_sub(before) as f64 / n as f64, total: after })
}

/// The kernel's cost of one fan-out with no server around it: one chat line written to each of
/// N loopback connections, from one thread and from one thread per core, with nothing else in
/// the writing threads (no runtime, no queue, no task per connection). No server delivers a
/// broadcast to N users faster on this machine. The far ends are held, unread, by a child
/// (`--hold`), so each process needs about N file descriptors.
mod floor {
    use std::io::{BufRead, Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    pub(super) const ROUNDS: usize = 10;
    const LINE: &[u8] = b"BROADCAST|u1|1796000000000000\n";

    pub struct Row {
        pub threads: usize,
        pub median: Duration,
        pub fastest: Duration,
    }

    pub fn measure(n: usize) -> Result<Vec<Row>, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut holder = Command::new(exe)
            .args(["chat", "bench", "--users", &n.to_string(), "--hold", &addr.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the far end: {e}"))?;
        let result = write_rounds(n, &listener, &mut holder);
        if result.is_err() {
            // It may still be connecting to the listener, whose backlog nobody drains now:
            // waiting for it to see its input end could take minutes of SYN retries.
            let _ = holder.kill();
        }
        // Its standard input ends: the far end lets its connections go and exits.
        drop(holder.stdin.take());
        let _ = holder.wait();
        result
    }

    fn write_rounds(n: usize, listener: &TcpListener, holder: &mut std::process::Child) -> Result<Vec<Row>, String> {
        // Accepts without blocking, so a far end that fails (it says why on standard error)
        // ends this too.
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut conns = Vec::with_capacity(n);
        let deadline = Instant::now() + Duration::from_secs(60);
        while conns.len() < n {
            match listener.accept() {
                Ok((conn, _)) => {
                    conn.set_nonblocking(false).map_err(|e| e.to_string())?;
                    conn.set_nodelay(true).map_err(|e| e.to_string())?;
                    conns.push(conn);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Ok(Some(status)) = holder.try_wait() {
                        return Err(format!("the far end ended ({status}) after {} connections", conns.len()));
                    }
                    if Instant::now() > deadline {
                        return Err(format!("only {} of {n} connections within 60 s", conns.len()));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        }
        let mut ready = String::new();
        std::io::BufReader::new(holder.stdout.take().ok_or("no stdout from the far end")?)
            .read_line(&mut ready)
            .map_err(|e| e.to_string())?;
        if ready.trim() != "held" {
            return Err(format!("the far end said {ready:?}"));
        }
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let mut rows = Vec::new();
        for threads in if cores > 1 { vec![1, cores] } else { vec![1] } {
            let mut rounds = Vec::with_capacity(ROUNDS);
            for _ in 0..ROUNDS {
                let start = Instant::now();
                let failed = std::thread::scope(|scope| {
                    let parts: Vec<_> = conns
                        .chunks(n.div_ceil(threads))
                        .map(|part| scope.spawn(move || part.iter().any(|mut conn| conn.write_all(LINE).is_err())))
                        .collect();
                    parts.into_iter().any(|part| part.join().unwrap_or(true))
                });
                rounds.push(start.elapsed());
                if failed {
                    return Err("a write failed".into());
                }
                // Apart, as broadcasts are; the lines pile up unread (600 bytes each at most).
                std::thread::sleep(Duration::from_millis(100));
            }
            rounds.sort();
            rows.push(Row { threads, median: rounds[ROUNDS / 2], fastest: rounds[0] });
        }
        Ok(rows)
    }

    /// The far end: connects `n` times to `addr`, says `held`, keeps them unread until its
    /// standard input ends.
    pub fn hold(addr: SocketAddr, n: usize) -> Result<(), String> {
        let limit = super::raise_fd_limit(n as u64 + 64);
        if limit < n as u64 + 64 {
            return Err(format!("the open-file limit is {limit}; {n} connections need about {}", n + 64));
        }
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            held.push(TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?);
        }
        println!("held");
        let _ = std::io::stdout().flush();
        let mut rest = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut rest);
        Ok(())
    }
}
