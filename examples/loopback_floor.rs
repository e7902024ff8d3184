//! What one fan-out costs the kernel on this machine, with no server around it: the time to
//! write one chat line to each of N loopback TCP connections, from one thread and from one
//! thread per core, with nothing else in the writing process (no runtime, no queue, no task
//! per connection). No server can deliver a broadcast to N users faster than this, so it is
//! the floor for `cartero chat bench`'s fan-out latencies (docs/chat.md).
//!
//! ```sh
//! cargo run --release --example loopback_floor -- 10000
//! ```
//!
//! The other ends are held, unread, by a child process (this program run with `--hold`), so
//! each process needs an open-file limit of about N + 64; it raises its own.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 10;
const LINE: &[u8] = b"BROADCAST|u1|1796000000000000\n";

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parse = |s: Option<&String>, what: &str| -> Result<usize, String> {
        s.map_or(Ok(10_000), |s| s.parse().map_err(|_| format!("{what} must be a number, not {s:?}")))
    };
    if args.first().map(String::as_str) == Some("--hold") {
        let addr: SocketAddr = args.get(1).and_then(|a| a.parse().ok()).ok_or("--hold needs ADDR N")?;
        return hold(addr, parse(args.get(2), "N")?);
    }
    let n = parse(args.first(), "N")?;
    if n == 0 || n > 100_000 {
        return Err("N must be 1 to 100,000".into());
    }
    raise_fd_limit(n as u64 + 64)?;

    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut holder = Command::new(exe)
        .args(["--hold", &addr.to_string(), &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the holder: {e}"))?;
    // Accepts without blocking, so a holder that fails (it says why on standard error) ends
    // this too instead of leaving it waiting.
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut conns = Vec::with_capacity(n);
    while conns.len() < n {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false).map_err(|e| e.to_string())?;
                conn.set_nodelay(true).map_err(|e| e.to_string())?;
                conns.push(conn);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = holder.try_wait() {
                    return Err(format!("the holder ended ({status}) after {} connections", conns.len()));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
    // The holder says when all its connects returned.
    let mut ready = String::new();
    std::io::BufReader::new(holder.stdout.take().ok_or("no holder stdout")?)
        .read_line(&mut ready)
        .map_err(|e| e.to_string())?;
    if ready.trim() != "held" {
        return Err(format!("the holder failed: {ready:?}"));
    }

    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("one {}-byte line to each of {n} loopback connections, {ROUNDS} rounds, 200 ms apart", LINE.len());
    for threads in [1, cores] {
        let mut rounds = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for part in conns.chunks(n.div_ceil(threads)) {
                    scope.spawn(move || {
                        for mut conn in part {
                            // 10 rounds of 31 bytes fit any socket buffer: never blocks.
                            let _ = conn.write_all(LINE);
                        }
                    });
                }
            });
            rounds.push(start.elapsed());
            std::thread::sleep(Duration::from_millis(200));
        }
        rounds.sort();
        let median = rounds[ROUNDS / 2];
        println!(
            "{threads} thread(s): median {:.1} ms, fastest {:.1} ms ({:.2} us a write, median)",
            median.as_secs_f64() * 1e3,
            rounds[0].as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e6 / n as f64
        );
    }
    drop(holder.stdin.take());
    let _ = holder.wait();
    Ok(())
}

/// The child: connects `n` times to `addr`, says `held`, keeps them unread until its
/// standard input ends.
fn hold(addr: SocketAddr, n: usize) -> Result<(), String> {
    raise_fd_limit(n as u64 + 64)?;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?);
    }
    println!("held");
    let _ = std::io::stdout().flush();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    Ok(())
}

fn raise_fd_limit(need: u64) -> Result<(), String> {
    let soft = rlimit::increase_nofile_limit(need).map_err(|e| format!("cannot raise the open-file limit: {e}"))?;
    if soft < need {
        return Err(format!("the open-file limit is {soft}; {need} are needed (ulimit -n)"));
    }
    Ok(())
}
