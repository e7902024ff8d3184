//! `cartero bench`: a load generator for the server, with a baseline to compare against.
//!
//! A run registers and connects `--users` simulated users, each with a real listener on
//! 127.0.0.1, then `--concurrency` workers send `--messages` SENDs among them. A message
//! counts once its delivery and its acknowledgement have both arrived; the run checks that
//! every message answered with an id arrives exactly once. The baseline is a minimal tokio
//! server doing the same socket work (accept, read the fields, reply, connect out twice to
//! push) with no protocol logic: the ratio of the two is the cost of cartero itself.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bench::rss_bytes;
use crate::messaging::client::{Client, Listener};
use crate::messaging::server::{Server, ServerConfig, Storage};
use crate::messaging::wire::{ConnectReply, RegisterReply, SendReply};
use crate::messaging::{codec::Codec, wire::Push};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(clap::Args)]
pub struct Args {
    /// Concurrency levels to run, comma separated: workers sending at once.
    #[arg(long, value_delimiter = ',', default_value = "16,256")]
    concurrency: Vec<usize>,
    /// Simulated users, each with its own listener.
    #[arg(long, default_value_t = 64)]
    users: usize,
    /// SENDs in each run.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Skip the baseline server.
    #[arg(long)]
    no_baseline: bool,
    /// Also measure the memory of this many idle registered users in a `cartero serve`
    /// process (0 skips it).
    #[arg(long, default_value_t = 0)]
    idle_users: usize,
    /// Also run cartero with its durable store, in a fresh directory under this one, and
    /// compare it with the in-memory run.
    #[arg(long)]
    data: Option<std::path::PathBuf>,
    /// Also run cartero on this PostgreSQL database (`postgres://user@host:port/db`), one node,
    /// and compare it with the in-memory run. Use a scratch database: its cartero tables are
    /// emptied before each run.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Also run N `--shared` nodes on the `--store` database, for each N listed (comma
    /// separated, e.g. `1,2,3`): each node a server of this process with its own pool, each
    /// SEND sent to the next node in turn, as DNS round-robin would.
    #[arg(long, value_delimiter = ',', requires = "store")]
    nodes: Vec<usize>,
    /// Also measure a restart: fill a store with this many pending messages, then time a
    /// `cartero serve` process from launch until it answers (0 skips it).
    #[arg(long, default_value_t = 0)]
    restart_pending: usize,
    /// How long to wait for the last deliveries after the last SEND.
    #[arg(long, default_value = "30s", value_parser = crate::cli::common::duration)]
    drain_timeout: Duration,
}

/// What one run measured.
struct RunResult {
    errors: u64,
    delivered: u64,
    acked: u64,
    lost: u64,
    duplicated: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl RunResult {
    fn ops_per_sec(&self) -> f64 {
        self.acked.min(self.delivered) as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        crate::bench::percentile_ms(&self.latencies_us, p)
    }
}

/// What the listeners received, shared with the progress line.
#[derive(Default)]
struct Received {
    messages: AtomicU64,
    acks: AtomicU64,
    /// Count per (sender index, id) and per (acked user index, id).
    message_counts: Mutex<HashMap<(usize, u32), u32>>,
    ack_counts: Mutex<HashMap<(usize, u32), u32>>,
}

pub fn run(args: Args) -> ExitCode {
    if args.users < 2 || args.messages == 0 || args.concurrency.contains(&0) {
        eprintln!("cartero: bench needs at least 2 users, 1 message and a concurrency of 1 or more");
        return ExitCode::FAILURE;
    }
    let runtime = match crate::cli::common::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let mut failed = false;
    println!(
        "cartero bench: {} users with listeners on 127.0.0.1; {} SENDs per run, each delivered and acknowledged",
        args.users, args.messages
    );
    let mut table = Table::default();
    for &concurrency in &args.concurrency {
        let durable = args.data.as_ref().map(|dir| {
            let run_dir = dir.join(format!("bench-{}-c{concurrency}", std::process::id()));
            let result = runtime.block_on(async {
                match start_cartero(Storage::Sqlite(run_dir.clone())).await {
                    Ok(addr) => run_load("durable", &[addr], &args, concurrency).await,
                    Err(e) => Err(format!("cannot start the durable server: {e}")),
                }
            });
            (run_dir, result)
        });
        let postgres = args.store.as_ref().map(|url| {
            runtime.block_on(async {
                let url = url.clone();
                let reset = tokio::task::spawn_blocking(move || crate::messaging::pg::empty(&url))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                if let Err(e) = reset {
                    return Err(format!("cannot empty the database: {e}"));
                }
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let config = ServerConfig {
                    bind: SocketAddr::new(LOOPBACK, 0),
                    storage: Storage::Postgres(args.store.clone().unwrap_or_default()),
                    max_connections: 4096,
                    ..ServerConfig::default()
                };
                let server = Server::bind(config).await.map_err(|e| format!("cannot start on PostgreSQL: {e}"))?;
                let addr = server.local_addr().map_err(|e| e.to_string())?;
                let running = tokio::spawn(server.run(async {
                    let _ = stopped.await;
                }));
                let result = run_load("postgres", &[addr], &args, concurrency).await;
                // Stopped, so that the next run's server may own the database.
                drop(stop);
                let _ = running.await;
                result
            })
        });
        let shared: Vec<(usize, Result<RunResult, String>)> = match &args.store {
            Some(url) => {
                args.nodes.iter().map(|&n| (n, runtime.block_on(run_shared(url, n, &args, concurrency)))).collect()
            }
            None => Vec::new(),
        };
        let result = runtime.block_on(async {
            let cartero = match start_cartero(Storage::Memory).await {
                Ok(addr) => run_load("cartero", &[addr], &args, concurrency).await,
                Err(e) => Err(format!("cannot start the server: {e}")),
            };
            let baseline = if args.no_baseline {
                None
            } else {
                Some(match start_baseline().await {
                    Ok(addr) => run_load("baseline", &[addr], &args, concurrency).await,
                    Err(e) => Err(format!("cannot start the baseline: {e}")),
                })
            };
            (cartero, baseline)
        });
        match result {
            (Ok(c), baseline) => {
                let base_rate = baseline.as_ref().and_then(|b| b.as_ref().ok()).map(RunResult::ops_per_sec);
                failed |= c.errors > 0 || c.lost > 0 || c.duplicated > 0;
                table.row("cartero (memory)", concurrency, &c, base_rate.map(|b| (b, "baseline")));
                if let Some((dir, durable)) = durable {
                    match durable {
                        Ok(d) => {
                            failed |= d.errors > 0 || d.lost > 0 || d.duplicated > 0;
                            table.row("cartero (durable)", concurrency, &d, Some((c.ops_per_sec(), "memory")));
                        }
                        Err(e) => {
                            eprintln!("cartero: durable run at concurrency {concurrency}: {e}");
                            failed = true;
                        }
                    }
                    let _ = std::fs::remove_dir_all(dir);
                }
                match postgres {
                    Some(Ok(p)) => {
                        failed |= p.errors > 0 || p.lost > 0 || p.duplicated > 0;
                        table.row("cartero (postgres)", concurrency, &p, Some((c.ops_per_sec(), "memory")));
                    }
                    Some(Err(e)) => {
                        eprintln!("cartero: PostgreSQL run at concurrency {concurrency}: {e}");
                        failed = true;
                    }
                    None => {}
                }
                for (n, result) in shared {
                    match result {
                        Ok(p) => {
                            failed |= p.errors > 0 || p.lost > 0 || p.duplicated > 0;
                            let name = format!("cartero (shared, {})", crate::text::count(n as u64, "node"));
                            table.row(&name, concurrency, &p, Some((c.ops_per_sec(), "memory")));
                        }
                        Err(e) => {
                            eprintln!("cartero: {n} shared nodes at concurrency {concurrency}: {e}");
                            failed = true;
                        }
                    }
                }
                match baseline {
                    Some(Ok(b)) => table.row("baseline", concurrency, &b, None),
                    Some(Err(e)) => eprintln!("cartero: baseline at concurrency {concurrency}: {e}"),
                    None => {}
                }
            }
            (Err(e), _) => {
                eprintln!("cartero: run at concurrency {concurrency} failed: {e}");
                failed = true;
            }
        }
    }
    table.print();
    if args.idle_users > 0 {
        match runtime.block_on(measure_idle_users(args.idle_users)) {
            Ok((per_user, total)) => println!(
                "memory: {} idle registered users cost {:.1} MiB in the server process: {:.0} bytes each",
                args.idle_users,
                total as f64 / (1024.0 * 1024.0),
                per_user
            ),
            Err(e) => {
                eprintln!("cartero: memory measurement failed: {e}");
                failed = true;
            }
        }
    }
    if args.restart_pending > 0 {
        match measure_restart(args.restart_pending) {
            Ok((fill, ready)) => println!(
                "restart: {} pending messages (written in {:.1?}); cartero serve answered {:.2?} after launch",
                args.restart_pending, fill, ready
            ),
            Err(e) => {
                eprintln!("cartero: restart measurement failed: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The results, printed as one Markdown table once every run is over.
#[derive(Default)]
struct Table {
    rows: Vec<String>,
}

impl Table {
    /// A run's row; `reference` is the rate it is compared with and what that rate is.
    fn row(&mut self, server: &str, concurrency: usize, r: &RunResult, reference: Option<(f64, &str)>) {
        let compared = reference
            .map_or_else(|| "-".to_string(), |(rate, of)| format!("{:.0}% of {of}", 100.0 * r.ops_per_sec() / rate));
        self.rows.push(format!(
            "| {server} | {concurrency} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {compared} |",
            r.ops_per_sec(),
            (r.delivered + r.acked) as f64 / r.elapsed.as_secs_f64(),
            r.percentile(0.5),
            r.percentile(0.99),
            r.errors,
            r.lost,
            r.duplicated,
        ));
    }

    fn print(&self) {
        if self.rows.is_empty() {
            return;
        }
        println!();
        println!(
            "| server | concurrency | messages/s | pushes/s | SEND p50 (ms) | SEND p99 (ms) | errors | lost | duplicated | rate compared |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for row in &self.rows {
            println!("{row}");
        }
        println!();
        println!(
            "- concurrency: SENDs in flight at once; messages/s: messages both delivered and acknowledged, per second"
        );
        println!("- pushes/s: deliveries plus acknowledgements per second; SEND p50/p99: the SEND's round trip, in milliseconds");
        println!("- lost: answered with an id but never delivered or acknowledged; duplicated: pushed more than once");
        println!(
            "- rate compared: messages/s over the baseline's (memory) or over cartero in memory's (durable, postgres, shared)"
        );
    }
}

async fn start_cartero(storage: Storage) -> Result<SocketAddr, String> {
    let config =
        ServerConfig { bind: SocketAddr::new(LOOPBACK, 0), storage, max_connections: 4096, ..ServerConfig::default() };
    let server = Server::bind(config).await.map_err(|e| e.to_string())?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    // Runs until the bench's runtime ends.
    tokio::spawn(server.run(std::future::pending()));
    Ok(addr)
}

/// `nodes` shared nodes on the emptied database at `url`, each SEND to the next in turn; the
/// nodes are stopped before this returns.
async fn run_shared(url: &str, nodes: usize, args: &Args, concurrency: usize) -> Result<RunResult, String> {
    if nodes == 0 {
        return Err("a run needs at least one node".into());
    }
    // The last run's nodes let go of the database a moment after they stop.
    let mut tries = 0;
    loop {
        let url = url.to_string();
        let reset = tokio::task::spawn_blocking(move || crate::messaging::pg::empty(&url))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match reset {
            Ok(()) => break,
            Err(e) if tries >= 25 => return Err(format!("cannot empty the database: {e}")),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut addrs = Vec::new();
    let mut running = Vec::new();
    for _ in 0..nodes {
        let config = ServerConfig {
            bind: SocketAddr::new(LOOPBACK, 0),
            storage: Storage::Shared(crate::messaging::pg_shared::NodeConfig::new(url)),
            max_connections: 4096,
            ..ServerConfig::default()
        };
        let server = Server::bind(config).await.map_err(|e| format!("cannot start a node: {e}"))?;
        addrs.push(server.local_addr().map_err(|e| e.to_string())?);
        let mut stopped = stopped.clone();
        running.push(tokio::spawn(server.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })));
    }
    let name = format!("shared x{nodes}");
    let result = run_load(&name, &addrs, args, concurrency).await;
    let _ = stop.send(true);
    for r in running {
        let _ = r.await;
    }
    result
}

/// The load, against one server or, for shared nodes, against each of `servers` in turn.
async fn run_load(name: &str, servers: &[SocketAddr], args: &Args, concurrency: usize) -> Result<RunResult, String> {
    let clients: Vec<Client> = servers
        .iter()
        .map(|s| Client::new(s.ip().to_string(), s.port()).with_timeout(Duration::from_secs(10)))
        .collect();
    let Some(client) = clients.first().cloned() else { return Err("no server to load".into()) };
    let received = Arc::new(Received::default());
    let aliases: Vec<String> = (0..args.users).map(|i| format!("u{i}")).collect();
    let index: Arc<HashMap<Bytes, usize>> =
        Arc::new(aliases.iter().enumerate().map(|(i, a)| (Bytes::from(a.clone()), i)).collect());

    // Users, each registered and connected with a listener of its own.
    let mut collectors = Vec::new();
    for (i, alias) in aliases.iter().enumerate() {
        let mut listener = Listener::bind(LOOPBACK).await.map_err(|e| format!("listener: {e}"))?;
        match client.register(alias, alias, "01/01/2000").await {
            Ok(RegisterReply::Ok) => {}
            other => return Err(format!("REGISTER {alias}: {other:?}")),
        }
        match client.connect(alias, listener.port()).await {
            Ok(ConnectReply::Ok) => {}
            other => return Err(format!("CONNECT {alias}: {other:?}")),
        }
        let received = received.clone();
        let index = index.clone();
        collectors.push(tokio::spawn(async move {
            while let Some(push) = listener.next().await {
                match push {
                    Push::Message { sender, id, .. } | Push::AttachMessage { sender, id, .. } => {
                        let sender = index.get(&sender).copied().unwrap_or(usize::MAX);
                        *received.message_counts.lock().unwrap().entry((sender, id)).or_default() += 1;
                        received.messages.fetch_add(1, Ordering::Relaxed);
                    }
                    Push::Ack { id } | Push::AttachAck { id, .. } => {
                        *received.ack_counts.lock().unwrap().entry((i, id)).or_default() += 1;
                        received.acks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let tickets = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let sent_ok = Arc::new(AtomicU64::new(0));
    let expected = Arc::new(Mutex::new(Vec::with_capacity(args.messages)));
    let start = Instant::now();
    let progress = spawn_progress(name, concurrency, args.messages, sent_ok.clone(), errors.clone(), received.clone());
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (clients, aliases, tickets, errors, sent_ok, expected) =
            (clients.clone(), aliases.clone(), tickets.clone(), errors.clone(), sent_ok.clone(), expected.clone());
        let (messages, users) = (args.messages, args.users);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let k = tickets.fetch_add(1, Ordering::Relaxed);
                if k >= messages {
                    return latencies;
                }
                let sender = k % users;
                let recipient = (sender + 1 + (k / users) % (users - 1)) % users;
                let t = Instant::now();
                match clients[k % clients.len()]
                    .send(&aliases[sender], &aliases[recipient], "benchmark message of a typical size, sixty bytes")
                    .await
                {
                    Ok(SendReply::Ok { id }) => {
                        latencies.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        sent_ok.fetch_add(1, Ordering::Relaxed);
                        expected.lock().unwrap().push((sender, id));
                    }
                    Ok(other) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("SEND answered {other:?}");
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("SEND failed: {e}");
                    }
                }
            }
        }));
    }
    let mut latencies_us = Vec::with_capacity(args.messages);
    for w in workers {
        latencies_us.extend(w.await.map_err(|e| e.to_string())?);
    }
    latencies_us.sort_unstable();

    // Wait for the deliveries and acknowledgements of every message answered with an id.
    let ok = sent_ok.load(Ordering::Relaxed);
    let drain_until = Instant::now() + args.drain_timeout;
    while (received.messages.load(Ordering::Relaxed) < ok || received.acks.load(Ordering::Relaxed) < ok)
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    if let Some(progress) = progress {
        progress.abort();
    }
    clear_progress();
    eprintln!("bench: {name} at concurrency {concurrency}: done in {elapsed:.1?}");
    for c in collectors {
        c.abort();
    }

    let messages = received.message_counts.lock().unwrap();
    let acks = received.ack_counts.lock().unwrap();
    let expected = expected.lock().unwrap();
    let lost = expected.iter().filter(|key| !messages.contains_key(key) || !acks.contains_key(key)).count() as u64;
    let duplicated = messages.values().chain(acks.values()).map(|&n| u64::from(n.saturating_sub(1))).sum::<u64>()
        + messages.len().saturating_sub(expected.len()) as u64;
    Ok(RunResult {
        errors: errors.load(Ordering::Relaxed),
        delivered: received.messages.load(Ordering::Relaxed),
        acked: received.acks.load(Ordering::Relaxed),
        lost,
        duplicated,
        elapsed,
        latencies_us,
    })
}

/// On a terminal, a line on standard error redrawn twice a second with where the run is;
/// nothing elsewhere (each run says when it is done).
fn spawn_progress(
    name: &str,
    concurrency: usize,
    total: usize,
    sent: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    received: Arc<Received>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let name = name.to_string();
    Some(tokio::spawn(async move {
        let start = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let line = format!(
                "[{name} c={concurrency} {:.0}s] sent {}/{total}, delivered {}, acked {}, errors {}",
                start.elapsed().as_secs_f64(),
                sent.load(Ordering::Relaxed),
                received.messages.load(Ordering::Relaxed),
                received.acks.load(Ordering::Relaxed),
                errors.load(Ordering::Relaxed)
            );
            progress(&line);
        }
    }))
}

/// Redraws the progress line in place on the terminal.
fn progress(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r{line}\x1b[K");
    let _ = err.flush();
}

fn clear_progress() {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K");
    }
}

// ------------------------------------------------------------------------------- baseline

/// A minimal server doing the protocol's socket work and nothing else: it reads the fields,
/// answers 0, and for a SEND connects out to the recipient and then to the sender.
async fn start_baseline() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind((LOOPBACK, 0)).await?;
    let addr = listener.local_addr()?;
    let listeners: Arc<Mutex<HashMap<Bytes, (SocketAddr, u32)>>> = Arc::default();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else { continue };
            let listeners = listeners.clone();
            tokio::spawn(async move {
                let _ = baseline_connection(stream, peer, &listeners).await;
            });
        }
    });
    Ok(addr)
}

async fn baseline_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    listeners: &Mutex<HashMap<Bytes, (SocketAddr, u32)>>,
) -> std::io::Result<()> {
    let mut codec = Codec::new(255);
    let mut buf = BytesMut::with_capacity(1024);
    let mut fields: Vec<Bytes> = Vec::with_capacity(4);
    let wanted = |op: &[u8]| match op {
        b"REGISTER" | b"SEND" => 4,
        b"CONNECT" => 3,
        _ => 2,
    };
    while fields.first().is_none_or(|op| fields.len() < wanted(op)) {
        match codec.decode(&mut buf).map_err(std::io::Error::other)? {
            Some(field) => fields.push(field),
            None => {
                if stream.read_buf(&mut buf).await? == 0 {
                    return Ok(());
                }
            }
        }
    }
    let mut reply = b"0\0".to_vec();
    let mut pushes = Vec::new();
    match &fields[0][..] {
        b"CONNECT" => {
            let port: u16 = std::str::from_utf8(&fields[2]).ok().and_then(|p| p.parse().ok()).unwrap_or(0);
            listeners.lock().unwrap().insert(fields[1].clone(), (SocketAddr::new(peer.ip(), port), 0));
        }
        b"SEND" => {
            let mut map = listeners.lock().unwrap();
            let id = map.get_mut(&fields[1]).map(|(_, last)| {
                *last += 1;
                *last
            });
            if let (Some(id), Some(&(to, _)), Some(&(from, _))) = (id, map.get(&fields[2]), map.get(&fields[1])) {
                reply.extend_from_slice(format!("{id}\0").as_bytes());
                let message =
                    [b"SEND MESSAGE\0", &fields[1][..], b"\0", id.to_string().as_bytes(), b"\0", &fields[3][..], b"\0"]
                        .concat();
                pushes.push((to, message));
                pushes.push((from, format!("SEND MESS ACK\0{id}\0").into_bytes()));
            }
        }
        _ => {}
    }
    stream.write_all(&reply).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 256];
    while stream.read(&mut sink).await? > 0 {}
    for (addr, bytes) in pushes {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(&bytes).await?;
        s.shutdown().await?;
        while s.read(&mut sink).await? > 0 {}
    }
    Ok(())
}

// --------------------------------------------------------------------------------- memory

/// Starts `cartero serve` as a process of its own, registers `users` idle users over TCP and
/// returns the growth of its resident memory, per user and in all.
async fn measure_idle_users(users: usize) -> Result<(f64, u64), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["serve", "-p", "0", "--bind", "127.0.0.1", "--memory"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start cartero serve: {e}"))?;
    let result = async {
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).ok_or("the server printed no start line")?;
        let port: u16 = first.rsplit(':').next().and_then(|p| p.parse().ok()).ok_or(format!("start line {first:?}"))?;
        // The console prints a line per REGISTER; keep reading so the server never waits.
        std::thread::spawn(move || for _ in lines {});
        let pid = child.id();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = rss_bytes(pid)?;
        let client = Client::new("127.0.0.1", port).with_timeout(Duration::from_secs(10));
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (client, next) = (client.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= users {
                        return Ok(());
                    }
                    let alias = format!("idle{i:07}");
                    match client.register(format!("Idle User Number {i:07}"), &alias, "01/01/2000").await {
                        Ok(RegisterReply::Ok) => {}
                        other => return Err(format!("REGISTER {alias}: {other:?}")),
                    }
                    if i % 20_000 == 0 {
                        progress(&format!("registered {i}/{users} idle users"));
                    }
                }
            }));
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        clear_progress();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = rss_bytes(pid)?;
        let grown = after.saturating_sub(before);
        Ok((grown as f64 / users as f64, grown))
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

// -------------------------------------------------------------------------------- restart

/// Writes `pending` messages among 1,000 offline users straight into a fresh store, then
/// starts `cartero serve` on it and times launch to first answer (a CONNECTEDUSERS).
fn measure_restart(pending: usize) -> Result<(Duration, Duration), String> {
    use crate::messaging::engine::Change;
    use crate::messaging::store::Store;
    let dir = std::env::temp_dir().join(format!("cartero-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = (|| {
        let started = Instant::now();
        {
            let mut store = Store::open(&dir).map_err(|e| e.to_string())?;
            let users = 1_000;
            let alias = |i: usize| Bytes::from(format!("user{i:04}"));
            let registered: Vec<Change> = (0..users)
                .map(|i| Change::Registered { alias: alias(i), full_name: alias(i), birth_date: None })
                .collect();
            store.commit(&registered).map_err(|e| e.to_string())?;
            let body = Bytes::from_static(b"a pending message of a typical size, about sixty bytes long");
            let mut ids = vec![0u32; users];
            let mut written = 0;
            while written < pending {
                let batch: Vec<Change> = (written..(written + 50_000).min(pending))
                    .map(|n| {
                        let sender = n % users;
                        ids[sender] += 1;
                        Change::Stored {
                            recipient: alias((n * 7 + 1) % users),
                            sender: alias(sender),
                            id: ids[sender],
                            body: body.clone(),
                            file: None,
                        }
                    })
                    .collect();
                written += batch.len();
                store.commit(&batch).map_err(|e| e.to_string())?;
                progress(&format!("written {written}/{pending} pending messages"));
            }
        }
        clear_progress();
        let fill = started.elapsed();
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let launched = Instant::now();
        let mut child = Command::new(exe)
            .args(["serve", "-p", "0", "--bind", "127.0.0.1", "--data"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start cartero serve: {e}"))?;
        let answered = (|| {
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let first =
                BufReader::new(stdout).lines().next().and_then(Result::ok).ok_or("the server printed no start line")?;
            let port: u16 =
                first.rsplit(':').next().and_then(|p| p.parse().ok()).ok_or(format!("start line {first:?}"))?;
            let client = crate::messaging::client::blocking::Client::new("127.0.0.1", port);
            client.connected_users(None).map_err(|e| e.to_string())?;
            Ok::<_, String>(launched.elapsed())
        })();
        let _ = child.kill();
        let _ = child.wait();
        Ok((fill, answered?))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
