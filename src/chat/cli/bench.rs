//! `cartero chat bench`: broadcast fan-out on 127.0.0.1, side by side, against `cartero chat
//! serve` (a child process), a no-logic tokio relay (in this process: each line goes to every
//! connection, no names, no checks) and ngircd (a child with a generated configuration,
//! spoken to in IRC: NICK/USER, JOIN one channel, PRIVMSG to it as the broadcast).
//!
//! For each server: N users connect and join, then K of them broadcast at a fixed total rate,
//! then as fast as a window of messages in flight allows (user 0, who never sends, sees every
//! broadcast and paces the senders). Each run reports deliveries per second (one broadcast
//! reaching one user is one delivery) and end-to-end latency percentiles. Then the resident
//! memory each idle connection costs the server. Everything is bounded in count and time.

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
    /// Connected users.
    #[arg(long, default_value_t = 1000)]
    users: usize,
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
    /// Leave ngircd out (it is also left out, with a note, when it is not installed).
    #[arg(long)]
    no_ngircd: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Cartero,
    Relay,
    Ngircd,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Cartero => "cartero chat serve",
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
    /// Deliveries while the senders were sending.
    delivered: u64,
    /// Deliveries by the end of the run, and how many there should have been.
    delivered_total: u64,
    expected: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

pub fn run(args: Args) -> ExitCode {
    if let Err(e) = rlimit::increase_nofile_limit(65_536) {
        eprintln!("cartero: cannot raise the file descriptor limit: {e}");
    }
    if args.users < 2 || args.senders == 0 || args.senders >= args.users {
        eprintln!("cartero: need at least 2 users and 1 to users-1 senders");
        return ExitCode::FAILURE;
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
            "chat bench on 127.0.0.1: {} users, {} senders, {:?} per run; a delivery is one broadcast reaching one user",
            args.users, args.senders, args.duration
        );
        println!("{:<20} {:<22} {:>14} {:>9} {:>9} {:>8} {:>12}", "server", "run", "deliveries/s", "p50 ms", "p99 ms", "lost", "RSS/user");
        let mut kinds = vec![Kind::Cartero, Kind::Relay];
        if ngircd {
            kinds.push(Kind::Ngircd);
        }
        let mut failed = false;
        for kind in kinds {
            if let Err(e) = bench_one(kind, &args).await {
                eprintln!("cartero: {}: {e}", kind.label());
                failed = true;
            }
        }
        let idle: Vec<usize> = args.idle.iter().copied().filter(|n| *n > 0).collect();
        if !idle.is_empty() {
            println!();
            let header: Vec<String> = idle.iter().map(|n| format!("{n} idle")).collect();
            println!("memory per idle connection (server RSS growth / connections)");
            println!("{:<20} {}", "server", header.iter().map(|h| format!("{h:>14}")).collect::<String>());
            let mut kinds = vec![Kind::Cartero];
            if ngircd {
                kinds.push(Kind::Ngircd);
            }
            for kind in kinds {
                let mut row = format!("{:<20}", kind.label());
                for &n in &idle {
                    match idle_memory(kind, n).await {
                        Ok(per) => row.push_str(&format!("{:>10.2} KiB", per / 1024.0)),
                        Err(e) => {
                            eprintln!("cartero: {} with {n} idle connections: {e}", kind.label());
                            row.push_str(&format!("{:>14}", "-"));
                            failed = true;
                        }
                    }
                }
                println!("{row}");
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

async fn start(kind: Kind) -> Result<Target, String> {
    match kind {
        Kind::Cartero => start_cartero().await,
        Kind::Relay => {
            let addr = start_relay().await.map_err(|e| format!("cannot start the relay: {e}"))?;
            Ok(Target { kind, addr, child: None, _dir: None })
        }
        Kind::Ngircd => start_ngircd().await,
    }
}

async fn start_cartero() -> Result<Target, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        // Every bench user comes from 127.0.0.1: no per-address limits; history in memory.
        .args(["chat", "serve", "-p", "0", "--bind", "127.0.0.1", "--connect-timeout", "10m", "--memory"])
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
    let mut target =
        Target { kind: Kind::Cartero, addr: "127.0.0.1:0".parse().unwrap(), child: Some(child), _dir: None };
    let first = rx.recv_timeout(Duration::from_secs(10)).map_err(|_| "cartero chat serve did not start")?;
    target.addr = first
        .trim()
        .strip_prefix("s> init server ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("unexpected start line {first:?}"))?;
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
         RequireAuthPing = no\n",
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

/// Connects and joins user `i`; returns its halves once it may broadcast.
async fn login(kind: Kind, addr: SocketAddr, i: usize) -> Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(16 * 1024, read);
    let mut line = Vec::new();
    match kind {
        Kind::Relay => {}
        Kind::Cartero => {
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
            let mut joined = false;
            loop {
                read_line(&mut reader, &mut line).await?;
                let text = String::from_utf8_lossy(&line);
                // ":server 001 nick ...": the numeric is the second word.
                let numeric = text.split_whitespace().nth(1).unwrap_or("");
                if let Some(token) = text.strip_prefix("PING ") {
                    send(&mut write, format!("PONG {}\r\n", token.trim_end())).await?;
                } else if numeric == "001" && !joined {
                    joined = true;
                    send(&mut write, "JOIN #bench\r\n".into()).await?;
                } else if numeric == "366" {
                    break;
                } else if text.starts_with("ERROR") || numeric == "433" {
                    return Err(format!("u{i} refused: {}", text.trim_end()));
                }
            }
        }
    }
    Ok((reader, write))
}

/// Reads until stopped; counts broadcasts and, while measuring, their latencies.
async fn reader_task(
    kind: Kind,
    mut reader: BufReader<OwnedReadHalf>,
    observer: bool,
    counters: Arc<Counters>,
    latencies: Arc<std::sync::Mutex<Vec<u32>>>,
    base: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = tokio::select! {
            read = reader.read_until(b'\n', &mut line) => read,
            _ = stop.changed() => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        let text = line.trim_ascii_end();
        let payload = match kind {
            Kind::Cartero | Kind::Relay if text.starts_with(b"BROADCAST|") => text.rsplit(|b| *b == b'|').next(),
            Kind::Ngircd if memchr::memmem::find(text, b" PRIVMSG ").is_some() => text.rsplit(|b| *b == b':').next(),
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
            let now = base.elapsed().as_micros() as u64;
            let latency = now.saturating_sub(sent_us).min(u64::from(u32::MAX)) as u32;
            latencies.lock().unwrap_or_else(|p| p.into_inner()).push(latency);
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

async fn bench_one(kind: Kind, args: &Args) -> Result<(), String> {
    let target = start(kind).await?;
    let rss_before = target.child.as_ref().and_then(|c| rss_bytes(c.id()).ok());
    let counters = Arc::new(Counters::default());
    let base = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Log in with bounded concurrency; readers start as each user is in.
    let gate = Arc::new(Semaphore::new(64));
    let mut logins = Vec::with_capacity(args.users);
    let sinks: Vec<Arc<std::sync::Mutex<Vec<u32>>>> = (0..args.users).map(|_| Default::default()).collect();
    for (i, sink) in sinks.iter().enumerate() {
        let (gate, counters, stop, sink) = (gate.clone(), counters.clone(), stop_rx.clone(), sink.clone());
        let addr = target.addr;
        logins.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let (reader, write) = timeout(Duration::from_secs(30), login(kind, addr, i))
                .await
                .map_err(|_| format!("u{i} could not join within 30 s"))??;
            let reading = tokio::spawn(reader_task(kind, reader, i == 0, counters, sink, base, stop));
            Ok::<_, String>((User { write }, reading))
        }));
    }
    let mut users = Vec::with_capacity(args.users);
    let mut readers: Vec<tokio::task::JoinHandle<()>> = Vec::with_capacity(args.users);
    for login in logins {
        let (user, reader) = login.await.map_err(|e| e.to_string())??;
        users.push(user);
        readers.push(reader);
    }
    settle(&counters, Duration::from_millis(300), Duration::from_secs(60)).await;
    let rss_per_user = match (rss_before, target.child.as_ref().and_then(|c| rss_bytes(c.id()).ok())) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before) as f64 / args.users as f64),
        _ => None,
    };
    let recipients = if kind == Kind::Ngircd { args.users - 1 } else { args.users } as u64;
    let runs = [(format!("{} bcast/s", args.rate), Some(args.rate)), (format!("max (window {})", args.window), None)];
    for (name, rate) in runs {
        let result = measure(kind, &mut users, &counters, &sinks, base, args, rate, recipients).await?;
        let lost = result.expected.saturating_sub(result.delivered_total);
        let rss = rss_per_user.map_or("-".to_string(), |b| format!("{:.1} KiB", b / 1024.0));
        println!(
            "{:<20} {:<22} {:>14.0} {:>9.2} {:>9.2} {:>8} {:>12}",
            target.kind.label(),
            name,
            result.delivered as f64 / result.elapsed.as_secs_f64(),
            percentile_ms(&result.latencies_us, 0.5),
            percentile_ms(&result.latencies_us, 0.99),
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
    users: &mut [User],
    counters: &Arc<Counters>,
    sinks: &[Arc<std::sync::Mutex<Vec<u32>>>],
    base: Instant,
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
                let in_flight = sent - (counters.observed.load(Ordering::Acquire) - observed_start);
                if in_flight >= args.window {
                    let _ = timeout(Duration::from_millis(50), counters.observed_notify.notified()).await;
                    continue;
                }
            }
        }
        let user = &mut users[1 + next_sender % args.senders];
        next_sender += 1;
        let now_us = base.elapsed().as_micros() as u64;
        let line = match kind {
            Kind::Ngircd => format!("PRIVMSG #bench :{now_us}\r\n"),
            Kind::Cartero | Kind::Relay => format!("BROADCAST|{now_us}\n"),
        };
        user.write.write_all(line.as_bytes()).await.map_err(|e| format!("a sender failed: {e}"))?;
        sent += 1;
    }
    let elapsed = start.elapsed();
    let delivered_in_window = counters.delivered.load(Ordering::Relaxed);
    settle(counters, Duration::from_millis(300), Duration::from_secs(30)).await;
    counters.measuring.store(false, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    for sink in sinks {
        latencies_us.append(&mut sink.lock().unwrap_or_else(|p| p.into_inner()));
    }
    latencies_us.sort_unstable();
    Ok(RunResult {
        delivered: delivered_in_window,
        delivered_total: counters.delivered.load(Ordering::Relaxed),
        expected: sent * recipients,
        elapsed,
        latencies_us,
    })
}

async fn idle_memory(kind: Kind, n: usize) -> Result<f64, String> {
    let target = start(kind).await?;
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
    drop(streams);
    Ok(after.saturating_sub(before) as f64 / n as f64)
}
