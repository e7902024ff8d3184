//! `cartero trace`: a transparent proxy that prints every exchange decoded, flagging what
//! departs from the protocol (a wrong code encoding, a missing NUL, an over-long field, an
//! unknown operation). With `--listener-proxy` it also stands between the server and each
//! client's listener (it rewrites CONNECT's port), so pushes are traced too.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::messaging::engine::{is_valid_birth_date, parse_port};
use crate::messaging::files::{classify, ConnectionKind};
use crate::messaging::wire::{
    CodeEncoding, Escaped, Operation, PushDecoder, PushNames, ReplyDecoder, Request, RequestDecoder,
};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;

#[derive(clap::Args)]
pub struct Args {
    /// Port to accept clients on.
    #[arg(long)]
    listen: u16,
    /// Address to accept clients on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// The server to forward to, as host:port.
    #[arg(long)]
    to: String,
    /// Also trace pushes: CONNECT's port is replaced by one of the tracer's, which forwards
    /// each push to the client's listener.
    #[arg(long)]
    listener_proxy: bool,
    /// The address the listener proxy binds (default: this machine's address towards the
    /// server, 127.0.0.1 for a local server).
    #[arg(long)]
    listen_host: Option<IpAddr>,
    /// The code encoding the server should use (others are flagged).
    #[arg(long, default_value = "ascii")]
    codes: CodeEncoding,
    /// The push spelling the server should use (others are flagged).
    #[arg(long, default_value = "spaced")]
    push_names: PushNames,
    /// Stop after this many client connections (0: never). Useful in scripts and tests.
    #[arg(long, default_value_t = 0)]
    max_connections: u64,
}

struct Tracer {
    upstream: String,
    listener_proxy: bool,
    /// Where the listener proxy binds.
    listen_host: IpAddr,
    codes: CodeEncoding,
    push_names: PushNames,
    color: bool,
    next: AtomicU64,
    order: std::sync::Mutex<Order>,
}

/// Keeps a push's line after the line of the request that caused it: while requests that
/// are complete have not printed their line yet, push lines wait.
#[derive(Default)]
struct Order {
    /// Complete requests whose line is not printed yet.
    open: u64,
    /// Push lines waiting for them.
    waiting: Vec<String>,
}

impl Tracer {
    fn render(&self, text: &str, deviations: &[String]) -> String {
        let mut out = text.to_string();
        for d in deviations {
            if self.color {
                out.push_str(&format!("  \x1b[1;31m[SPEC: {d}]\x1b[0m"));
            } else {
                out.push_str(&format!("  [SPEC: {d}]"));
            }
        }
        out
    }

    fn order(&self) -> std::sync::MutexGuard<'_, Order> {
        self.order.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn line(&self, text: &str, deviations: &[String]) {
        let _order = self.order();
        println!("{}", self.render(text, deviations));
    }

    /// A complete request: its pushes wait for its line.
    fn opened(&self) {
        self.order().open += 1;
    }

    /// A request's line; then the push lines that waited for it, if no other request is open.
    fn request_line(&self, text: &str, deviations: &[String], counted: bool) {
        let mut order = self.order();
        println!("{}", self.render(text, deviations));
        if counted {
            order.open = order.open.saturating_sub(1);
        }
        if order.open == 0 {
            for line in order.waiting.drain(..) {
                println!("{line}");
            }
        }
    }

    /// A push's line: now, or after the lines of the requests still open.
    fn push_line(&self, text: &str, deviations: &[String]) {
        let line = self.render(text, deviations);
        let mut order = self.order();
        if order.open == 0 {
            println!("{line}");
        } else {
            order.waiting.push(line);
        }
    }
}

fn show_request(r: &Request) -> String {
    let fields: Vec<String> = r.fields().iter().map(|f| Escaped(f).to_string()).collect();
    format!("{} {}", r.operation(), fields.join(" "))
}

/// Bytes of each direction of a connection kept for decoding; everything is forwarded, but
/// an exchange of this protocol is far smaller, so more would only be held for nothing.
const KEPT: usize = 16 * 1024;

/// Reads `from` to its end, writing every byte on to `to`; returns the first `KEPT` bytes.
async fn relay(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match from.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = KEPT.saturating_sub(seen.len()).min(n);
                seen.extend_from_slice(&chunk[..room]);
                if to.write_all(&chunk[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
    seen
}

/// Decodes what a server answered to `op`, with the deviations it shows.
fn judge_reply(tracer: &Tracer, op: Option<Operation>, bytes: &[u8]) -> (String, Vec<String>, Option<u8>) {
    let mut deviations = Vec::new();
    let Some(op) = op else {
        return if bytes.is_empty() {
            ("(no reply)".into(), deviations, None)
        } else {
            deviations.push("a reply to an unknown operation".into());
            (format!("{}", Escaped(bytes)), deviations, None)
        };
    };
    if bytes.is_empty() {
        deviations.push("no reply".into());
        return ("(no reply)".into(), deviations, None);
    }
    if bytes[0].is_ascii_digit() && bytes.get(1) != Some(&0) {
        deviations.push("ASCII result code without its NUL".into());
    }
    let mut decoder = ReplyDecoder::new(op);
    let mut buf = BytesMut::from(bytes);
    match decoder.decode_eof(&mut buf) {
        Ok(Some(reply)) => {
            if let Some(enc) = decoder.seen_encoding().filter(|e| *e != tracer.codes) {
                deviations.push(format!("result code in {enc} encoding, expected {}", tracer.codes));
            }
            if !buf.is_empty() {
                deviations.push(format!("{} extra bytes after the reply", buf.len()));
            }
            (super::show::reply(&reply), deviations, Some(reply.code()))
        }
        Ok(None) => ("(no reply)".into(), vec!["no reply".into()], None),
        Err(e) => {
            deviations.push(e.to_string());
            (format!("{}", Escaped(bytes)), deviations, None)
        }
    }
}

async fn trace_connection(tracer: Arc<Tracer>, client: TcpStream, peer: SocketAddr) {
    let n = tracer.next.fetch_add(1, Ordering::Relaxed) + 1;
    let server = match TcpStream::connect(tracer.upstream.as_str()).await {
        Ok(s) => s,
        Err(e) => {
            tracer.line(&format!("#{n} {peer}: cannot reach the server {}: {e}", tracer.upstream), &[]);
            return;
        }
    };
    let (client_rd, client_wr) = client.into_split();
    let (server_rd, mut server_wr) = server.into_split();
    let back = tokio::spawn(relay(server_rd, client_wr));

    // Client to server, decoding as it goes; a CONNECT is held back to rewrite its port.
    let mut client_rd = client_rd;
    let mut decoder = RequestDecoder::new();
    let mut buf = BytesMut::new();
    let mut request: Option<Request> = None;
    let mut deviations = Vec::new();
    // Why the request is not valid, when the decoder says so.
    let mut invalid: Option<String> = None;
    // This request is complete: pushes it causes wait for its line.
    let mut counted = false;
    let mut held = Vec::new();
    let mut rewritten = false;
    let mut chunk = [0u8; 4096];
    loop {
        let n = match client_rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Only the request's own bytes are decoded (its fields are bounded, so this is too).
        if request.is_none() && deviations.is_empty() {
            buf.extend_from_slice(&chunk[..n]);
            match decoder.decode(&mut buf) {
                Ok(Some(r)) => request = Some(r),
                Ok(None) => {}
                Err(e) => {
                    invalid = Some(e.to_string());
                    deviations.push(e.to_string());
                }
            }
            if request.is_some() && !counted {
                counted = true;
                tracer.opened();
            }
        }
        // A CONNECT is held until complete (to rewrite its port); a bad one is not held.
        let holding = tracer.listener_proxy
            && decoder.operation() == Some(Operation::Connect)
            && request.is_none()
            && deviations.is_empty();
        if holding {
            held.extend_from_slice(&chunk[..n]);
            continue;
        }
        if let (true, false, Some(Request::Connect { alias, port })) = (tracer.listener_proxy, rewritten, &request) {
            // Nothing of this CONNECT has been forwarded yet: send it with our port instead.
            rewritten = true;
            let ours = proxy_listener(tracer.clone(), peer.ip(), alias.clone(), port.clone()).await;
            let mut out = BytesMut::new();
            let _ = Request::Connect { alias: alias.clone(), port: ours }.encode(&mut out);
            held.clear();
            out.extend_from_slice(&buf); // anything after the request
            if server_wr.write_all(&out).await.is_err() {
                break;
            }
            continue;
        }
        if !held.is_empty() && server_wr.write_all(&std::mem::take(&mut held)).await.is_err() {
            break;
        }
        if server_wr.write_all(&chunk[..n]).await.is_err() {
            break;
        }
    }
    if request.is_none() && deviations.is_empty() {
        match decoder.decode_eof(&mut buf) {
            Ok(Some(r)) => request = Some(r),
            Ok(None) => {}
            Err(e) => {
                // A request cut short is incomplete; any other error says what is wrong.
                if !matches!(e, crate::messaging::wire::ProtocolError::Truncated) {
                    invalid = Some(e.to_string());
                }
                deviations.push(e.to_string());
            }
        }
    }
    if !held.is_empty() {
        let _ = server_wr.write_all(&held).await;
    }
    let _ = server_wr.shutdown().await;
    let reply_bytes = back.await.unwrap_or_default();
    let op = request.as_ref().map(Request::operation).or(decoder.operation());
    let (reply, reply_deviations, code) = judge_reply(&tracer, op, &reply_bytes);
    deviations.extend(reply_deviations);
    deviations.extend(accepted_wrongly(request.as_ref(), invalid.as_deref(), code));
    let shown = match (&request, op, &invalid) {
        (Some(r), _, _) => show_request(r),
        // The decoder's own words: `unknown operation "HELLO"`, a field over its limit...
        (None, Some(op), Some(why)) => format!("({op} request not valid: {why})"),
        (None, None, Some(why)) => format!("({why})"),
        (None, Some(op), None) => format!("(incomplete {op} request)"),
        (None, None, None) => "(incomplete request)".to_string(),
    };
    tracer.request_line(&format!("#{n} {peer} {shown} => {reply}"), &deviations, counted);
}

/// Answers that are wrong whatever the server's state: 0 to a request that is not valid (a
/// field over 255 bytes, say), to a CONNECT whose port is not 1..65535, or to a REGISTER
/// whose birth date is not a real date.
fn accepted_wrongly(request: Option<&Request>, invalid: Option<&str>, code: Option<u8>) -> Vec<String> {
    if code != Some(0) {
        return vec![];
    }
    match (request, invalid) {
        (None, Some(why)) => vec![format!("a request that is not valid ({why}) was accepted")],
        (Some(Request::Connect { port, .. }), _) if parse_port(port).is_none() => {
            vec![format!("port {} is not 1..65535 but was accepted", Escaped(port))]
        }
        (Some(Request::Register { birth_date: Some(date), .. }), _) if !is_valid_birth_date(date) => {
            vec![format!("birth date {} is not a real date but was accepted", Escaped(date))]
        }
        _ => vec![],
    }
}

/// Opens a listener that forwards each push to the client's real listener at
/// `client_ip:port`, tracing it; returns the port to give the server instead.
/// A GET FILE exchange as the trace shows it: the request's fields, and the answer's head
/// (the sized form's `OK` and size, `ERROR`, or how many bytes of another form).
fn show_get_file(request: &[u8], answer: &[u8]) -> String {
    let fields: Vec<String> = request.split(|&b| b == 0).take(3).map(|f| Escaped(f).to_string()).collect();
    let mut parts = answer.splitn(3, |&b| b == 0);
    let head = match (parts.next(), parts.next()) {
        (Some(b"OK"), Some(size)) => format!("OK, {} bytes", String::from_utf8_lossy(size)),
        (Some(b"ERROR"), _) => "ERROR".into(),
        _ if answer.is_empty() => "(no answer)".into(),
        _ => format!("{} bytes in another form", answer.len()),
    };
    format!("{} => {head}", fields.join(" "))
}

async fn proxy_listener(tracer: Arc<Tracer>, client_ip: IpAddr, alias: Bytes, port: Bytes) -> Bytes {
    let real = std::str::from_utf8(&port).ok().and_then(|p| p.parse::<u16>().ok());
    let (Some(real), Ok(listener)) = (real, TcpListener::bind((tracer.listen_host, 0)).await) else {
        return port; // not a port we can stand in for: pass it through untouched
    };
    let Ok(local) = listener.local_addr() else { return port };
    tracer.line(
        &format!("   listener of {} at {client_ip}:{real} is traced through port {}", Escaped(&alias), local.port()),
        &[],
    );
    tokio::spawn(async move {
        while let Ok((push_in, _)) = listener.accept().await {
            let tracer = tracer.clone();
            let alias = alias.clone();
            tokio::spawn(async move {
                let target = SocketAddr::new(client_ip, real);
                let Ok(Ok(push_out)) = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target)).await
                else {
                    tracer.line(&format!("   push to {}: cannot reach its listener at {target}", Escaped(&alias)), &[]);
                    return;
                };
                let (in_rd, in_wr) = push_in.into_split();
                let (out_rd, out_wr) = push_out.into_split();
                let back = tokio::spawn(relay(out_rd, in_wr));
                let bytes = relay(in_rd, out_wr).await;
                let answer = back.await.unwrap_or_default();
                if classify(&bytes) == ConnectionKind::GetFile {
                    // SPEC 8: another client's GETFILE, through the traced listener.
                    tracer.line(
                        &format!("   get file from {}: {}", Escaped(&alias), show_get_file(&bytes, &answer)),
                        &[],
                    );
                    return;
                }
                let mut decoder = PushDecoder::new();
                let mut buf = BytesMut::from(&bytes[..]);
                let mut deviations = Vec::new();
                let shown = match decoder.decode_eof(&mut buf) {
                    Ok(Some(push)) => {
                        if let Some(names) = decoder.seen_names().filter(|n| *n != tracer.push_names) {
                            deviations.push(format!("push spelled {names}, expected {}", tracer.push_names));
                        }
                        format!(
                            "{} {}",
                            push.name(decoder.seen_names().unwrap_or(tracer.push_names)),
                            super::show::push_fields(&push)
                        )
                    }
                    Ok(None) => "(empty push connection)".into(),
                    Err(e) => {
                        deviations.push(e.to_string());
                        Escaped(&bytes).to_string()
                    }
                };
                tracer.push_line(&format!("   push to {}: {shown}", Escaped(&alias)), &deviations);
            });
        }
    });
    Bytes::from(local.port().to_string())
}

pub fn run(args: Args) -> ExitCode {
    let runtime = match crate::cli::common::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind((args.bind, args.listen)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cartero: cannot listen on {}:{}: {e}", args.bind, args.listen);
                return ExitCode::FAILURE;
            }
        };
        let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        println!("tracing {local} -> {} (expecting {} codes, {} push names)", args.to, args.codes, args.push_names);
        let listen_host = args.listen_host.unwrap_or_else(|| {
            use std::net::ToSocketAddrs;
            match args.to.to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(server)) => crate::messaging::client::local_address_towards(server),
                _ => IpAddr::from([0, 0, 0, 0]),
            }
        });
        let tracer = Arc::new(Tracer {
            upstream: args.to,
            listener_proxy: args.listener_proxy,
            listen_host,
            codes: args.codes,
            push_names: args.push_names,
            color: std::io::stdout().is_terminal(),
            next: AtomicU64::new(0),
            order: Default::default(),
        });
        // Tracks the connections in flight without keeping the finished ones.
        let tasks = tokio_util::task::TaskTracker::new();
        let mut accepted = 0;
        loop {
            let (client, peer) = tokio::select! {
                r = listener.accept() => match r { Ok(pair) => pair, Err(_) => continue },
                _ = crate::shutdown::signal() => break,
            };
            tasks.spawn(trace_connection(tracer.clone(), client, peer));
            accepted += 1;
            if args.max_connections > 0 && accepted >= args.max_connections {
                break;
            }
        }
        tasks.close();
        tasks.wait().await;
        ExitCode::SUCCESS
    })
}
