//! `cartero chat serve --web PORT` over real TCP on 127.0.0.1: the page, WebSocket users and
//! TCP users in one chat, and the WebSocket's bad input (binary frames, frames over 1024
//! bytes, an upgrade without its key, a tab that stops reading).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use cartero::chat::client::blocking::Client;
use cartero::chat::{Reply, Request};
use common::chat::{serve, serve_open};
use common::{Proc, LIMIT};
use tungstenite::{Message, WebSocket};

/// Starts `cartero chat serve` with the browser client, both on free loopback ports;
/// returns it, the chat port and the web port.
fn serve_web(extra: &[&str]) -> (Proc, u16, u16) {
    let (mut server, port) = serve_open(&[&["--web", "0"], extra].concat());
    let web = web_port(&mut server);
    (server, port, web)
}

/// The web port, from the server's second start line.
fn web_port(server: &mut Proc) -> u16 {
    let web = server.line();
    web.strip_prefix("s> init web http://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix('/'))
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("web line: {web:?}"))
}

/// A WebSocket user of `/ws`.
struct Ws(WebSocket<TcpStream>);

/// What a WebSocket read gave.
#[derive(Debug, PartialEq)]
enum Got {
    Text(String),
    Closed,
}

impl Ws {
    fn connect(web_port: u16) -> Ws {
        let stream = TcpStream::connect(("127.0.0.1", web_port)).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{web_port}/ws"), stream).unwrap();
        Ws(ws)
    }

    fn join(web_port: u16, name: &str) -> Ws {
        let mut ws = Ws::connect(web_port);
        ws.send(&format!("CONNECT|{name}"));
        assert_eq!(ws.recv(), Got::Text("CONNECT_ACK|OK".into()));
        ws
    }

    fn send(&mut self, text: &str) {
        self.0.send(Message::text(text)).unwrap();
    }

    /// The next text frame, or the end of the connection; panics when nothing comes in time.
    fn recv(&mut self) -> Got {
        loop {
            match self.0.read() {
                Ok(Message::Text(text)) => return Got::Text(text.to_string()),
                Ok(Message::Close(_)) => return Got::Closed,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("nothing from the server in time")
                }
                Err(_) => return Got::Closed,
            }
        }
    }

    fn text(&mut self) -> String {
        match self.recv() {
            Got::Text(text) => text,
            Got::Closed => panic!("the connection closed"),
        }
    }

    /// Text frames up to the first that `done` takes, which it returns.
    fn until(&mut self, done: impl Fn(&str) -> bool) -> String {
        loop {
            let text = self.text();
            if done(&text) {
                return text;
            }
        }
    }
}

fn tcp_join(port: u16, name: &str) -> Client {
    let mut c = Client::connect("127.0.0.1", port, LIMIT).unwrap();
    c.join(name).unwrap();
    c
}

fn next(c: &mut Client) -> Reply {
    c.recv_timeout(LIMIT).unwrap().expect("a message in time")
}

/// One HTTP/1.1 exchange on a fresh connection; returns the whole response as text (empty
/// when the server closed the connection unanswered).
fn http(web_port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", web_port)).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let _ = stream.write_all(request.as_bytes());
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("no whole response in time: {e}"),
    }
    String::from_utf8(response).unwrap()
}

/// The status line and headers of the response to `request`, read up to the blank line
/// (the connection may stay open after them).
fn http_head(web_port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", web_port)).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the response ends before its headers");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn the_page_is_served_whole_with_no_external_url() {
    let (_server, _port, web) = serve_web(&[]);
    let response = http(web, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/html; charset=utf-8"), "{head}");
    assert!(body.starts_with("<!doctype html>") && body.trim_end().ends_with("</html>"));
    assert!(body.contains("<style>") && body.contains("<script>"), "CSS and JS are inline");
    for external in ["http://", "https://", "//cdn", "src=\"", "href=\""] {
        assert!(!body.contains(external), "the page holds {external:?}");
    }
    let missing = http(web, "GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}

#[test]
fn websocket_and_tcp_users_talk_to_each_other() {
    let (mut server, port, web) = serve_web(&[]);
    let mut ana = Ws::join(web, "ana");
    assert_eq!(ana.text(), "USER_LIST|ana");
    let mut bob = tcp_join(port, "bob");
    assert_eq!(next(&mut bob), Reply::UserList(vec!["ana".into(), "bob".into()]));
    assert_eq!(ana.text(), "USER_LIST|ana,bob");
    ana.send("BROADCAST|hola a todos");
    assert_eq!(next(&mut bob), Reply::Broadcast { from: "ana".into(), content: "hola a todos".into() });
    assert_eq!(ana.text(), "BROADCAST|ana|hola a todos");
    bob.send("ana", "hola, ana").unwrap();
    assert_eq!(ana.text(), "MESSAGE|bob|hola, ana");
    ana.send("MESSAGE|bob|a|b");
    assert_eq!(next(&mut bob), Reply::Message { from: "ana".into(), content: "a|b".into() });
    // Rooms and history, as on a framed TCP connection.
    ana.send("JOIN|#sala");
    assert_eq!(ana.text(), "JOINED|#sala|ana");
    ana.send("ROOM|#sala|primero");
    assert_eq!(ana.text(), "ROOM|#sala|ana|primero");
    bob.sender().request(&Request::Join("#sala".into())).unwrap();
    assert_eq!(ana.text(), "JOINED|#sala|ana,bob");
    bob.sender().request(&Request::History { target: "#sala".into(), n: 10 }).unwrap();
    loop {
        match next(&mut bob) {
            Reply::History { target, from, content, .. } => {
                assert_eq!((target.as_str(), from.as_str(), content.as_str()), ("#sala", "ana", "primero"));
            }
            Reply::HistoryEnd(target) => {
                assert_eq!(target, "#sala");
                break;
            }
            _ => {}
        }
    }
    // A frame may not hold a line break: it is one message.
    ana.send("BROADCAST|uno\nBROADCAST|dos");
    assert_eq!(ana.text(), "ERROR|400|Salto de línea en el contenido");
    ana.send("DISCONNECT");
    assert_eq!(ana.recv(), Got::Closed);
    server.expect(&[
        "s> CONNECT ana OK",
        "s> CONNECT bob OK",
        "s> BROADCAST ana",
        "s> MESSAGE bob -> ana",
        "s> MESSAGE ana -> bob",
        "s> JOIN ana #sala",
        "s> ROOM ana -> #sala",
        "s> JOIN bob #sala",
        "s> ERROR 400 ana",
        "s> DISCONNECT ana",
    ]);
}

#[test]
fn a_binary_frame_gets_400_and_the_connection_goes_on() {
    let (mut server, _port, web) = serve_web(&[]);
    let mut ws = Ws::connect(web);
    ws.0.send(Message::binary(&b"CONNECT|ana"[..])).unwrap();
    assert_eq!(ws.text(), "ERROR|400|Solo se aceptan mensajes de texto");
    // Before it joins, the console names the user by the TCP peer of its HTTP connection.
    let peer = ws.0.get_ref().local_addr().unwrap();
    server.expect(&[&format!("s> ERROR 400 {peer}")]);
    ws.send("CONNECT|ana");
    assert_eq!(ws.text(), "CONNECT_ACK|OK");
    assert_eq!(ws.text(), "USER_LIST|ana");
    ws.0.send(Message::binary(vec![0xff; 10])).unwrap();
    assert_eq!(ws.text(), "ERROR|400|Solo se aceptan mensajes de texto");
    ws.send("BROADCAST|sigo");
    assert_eq!(ws.text(), "BROADCAST|ana|sigo");
}

#[test]
fn a_frame_over_1024_bytes_gets_413_and_the_connection_closes() {
    let (_server, port, web) = serve_web(&[]);
    let mut bob = tcp_join(port, "bob");
    assert_eq!(next(&mut bob), Reply::UserList(vec!["bob".into()]));
    for len in [1025, 2000] {
        let mut ws = Ws::join(web, "ana");
        assert_eq!(ws.text(), "USER_LIST|bob,ana");
        assert_eq!(next(&mut bob), Reply::UserList(vec!["bob".into(), "ana".into()]));
        // Exactly 1024 bytes is a message (here a second CONNECT: 409, and it goes on).
        ws.send(&format!("CONNECT|{}", "n".repeat(1024 - "CONNECT|".len())));
        assert_eq!(ws.text(), "ERROR|409|Ya conectado");
        let frame = format!("BROADCAST|{}", "x".repeat(len - "BROADCAST|".len()));
        assert_eq!(frame.len(), len);
        ws.send(&frame);
        assert_eq!(ws.text(), "ERROR|413|Mensaje demasiado largo");
        assert_eq!(ws.recv(), Got::Closed);
        // The others learn that ana left; nothing of the long frame reached them.
        assert_eq!(next(&mut bob), Reply::UserList(vec!["bob".into()]));
    }
}

#[test]
fn an_upgrade_without_its_key_is_refused_and_others_go_on() {
    let (_server, _port, web) = serve_web(&[]);
    let response = http_head(
        web,
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    let response = http(web, "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 4"), "{response}");
    assert!(!response.to_ascii_lowercase().contains("upgrade: websocket"), "{response}");
    let mut ws = Ws::join(web, "ana");
    assert_eq!(ws.text(), "USER_LIST|ana");
}

#[test]
fn silent_slow_and_oversized_http_requests_are_closed_and_others_go_on() {
    let (_server, _port, web) = serve_web(&["--connect-timeout", "1s"]);
    // Nothing at all, then half a head: each is closed once --connect-timeout passes.
    for sent in ["", "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "] {
        let mut stream = TcpStream::connect(("127.0.0.1", web)).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        stream.write_all(sent.as_bytes()).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("closed in time");
        assert!(rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&rest));
    }
    // A head past 16 KiB is refused without being kept.
    let huge = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n", "b".repeat(64 * 1024));
    let mut stream = TcpStream::connect(("127.0.0.1", web)).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let _ = stream.write_all(huge.as_bytes());
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    assert!(response.is_empty() || response.starts_with(b"HTTP/1.1 431"), "{}", String::from_utf8_lossy(&response));
    let mut ws = Ws::join(web, "ana");
    assert_eq!(ws.text(), "USER_LIST|ana");
}

#[test]
fn web_connections_count_against_max_connections_with_tcp_ones() {
    let (_server, port, web) = serve_web(&["--max-connections", "1"]);
    let mut bob = tcp_join(port, "bob");
    assert_eq!(next(&mut bob), Reply::UserList(vec!["bob".into()]));
    // The one connection allowed is taken: an HTTP connection is closed unanswered.
    let mut stream = TcpStream::connect(("127.0.0.1", web)).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    assert!(response.is_empty(), "{}", String::from_utf8_lossy(&response));
    bob.disconnect().unwrap();
    // Once bob's connection has closed, a browser gets in.
    let mut tries = 0;
    let page = loop {
        let response = http(web, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        if !response.is_empty() {
            break response;
        }
        tries += 1;
        assert!(tries < 1000, "bob's connection is never given back");
        thread::sleep(Duration::from_millis(10));
    };
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
}

#[test]
fn a_tab_that_stops_reading_gets_503_while_others_are_served() {
    let (mut server, port, web) = serve_web(&["--max-queued-messages", "200"]);
    let mut slow = Ws::join(web, "lento");
    server.expect(&["s> CONNECT lento OK"]);
    let mut calm = Ws::join(web, "calma");
    let mut loud = tcp_join(port, "ruido");
    assert_eq!(calm.until(|t| t.starts_with("USER_LIST|")), "USER_LIST|lento,calma");
    assert_eq!(calm.text(), "USER_LIST|lento,calma,ruido");
    let stop = Arc::new(AtomicBool::new(false));
    let (loud_got, calm_got) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sender = loud.sender();
    let sending = {
        let (stop, loud_got, calm_got) = (stop.clone(), loud_got.clone(), calm_got.clone());
        thread::spawn(move || {
            let body = "z".repeat(1000);
            // Never more than a hundred ahead of the readers that do read.
            for sent in 0..100_000usize {
                while sent > 100 + loud_got.load(Ordering::Acquire).min(calm_got.load(Ordering::Acquire)) {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                if stop.load(Ordering::Acquire) {
                    return;
                }
                sender.broadcast(&body).unwrap();
            }
        })
    };
    let loud_reader = thread::spawn({
        let stop = stop.clone();
        move || {
            let mut saw = false;
            while !(saw && stop.load(Ordering::Acquire)) {
                match loud.recv_timeout(Duration::from_millis(200)).unwrap() {
                    Some(Reply::UserList(users)) => saw |= users == ["calma", "ruido"],
                    Some(_) => {
                        loud_got.fetch_add(1, Ordering::Release);
                    }
                    None => {}
                }
            }
            loud
        }
    });
    let calm_reader = thread::spawn({
        let stop = stop.clone();
        move || {
            let mut saw = false;
            while !(saw && stop.load(Ordering::Acquire)) {
                let text = calm.text();
                if text.starts_with("USER_LIST|") {
                    saw |= text == "USER_LIST|calma,ruido";
                } else {
                    calm_got.fetch_add(1, Ordering::Release);
                }
            }
            calm
        }
    });
    while server.line() != "s> ERROR 503 lento" {}
    stop.store(true, Ordering::Release);
    sending.join().unwrap();
    let mut loud = loud_reader.join().unwrap();
    let mut calm = calm_reader.join().unwrap();
    // The tab that stopped reading gets what was written, then its ERROR, then the end.
    let mut last = None;
    while let Got::Text(text) = slow.recv() {
        last = Some(text);
    }
    assert_eq!(last.as_deref(), Some("ERROR|503|Lectura demasiado lenta"));
    loud.send("calma", "sigues?").unwrap();
    assert_eq!(calm.until(|t| t.starts_with("MESSAGE|")), "MESSAGE|ruido|sigues?");
    calm.send("MESSAGE|ruido|sigo");
    assert_eq!(
        std::iter::from_fn(|| Some(next(&mut loud))).find(|r| matches!(r, Reply::Message { .. })),
        Some(Reply::Message { from: "calma".into(), content: "sigo".into() })
    );
}

/// The per-address limits hold for browser users too: a connection past `--max-per-ip` gets
/// HTTP 429 instead of the upgrade, and a flood over the rate gets `ERROR|429` and a close.
#[test]
fn browser_users_share_the_per_address_limits() {
    let limits = ["--max-per-ip", "2", "--rate", "2", "--burst", "2", "--max-delay", "1s"];
    let (mut server, _) = serve(&[&["--web", "0", "--memory"], &limits[..]].concat());
    let web_port = web_port(&mut server);
    let mut ana = Ws::join(web_port, "ana");
    let _bea = Ws::join(web_port, "bea");
    let stream = TcpStream::connect(("127.0.0.1", web_port)).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    match tungstenite::client(format!("ws://127.0.0.1:{web_port}/ws"), stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 429)
        }
        other => panic!("a third connection from one address: {:?}", other.map(|_| ())),
    }
    // 2 at once, then 2 a second, for 1 s at most: 20 at once are a flood.
    for i in 0..20 {
        ana.send(&format!("BROADCAST|{i}"));
    }
    let error = ana.until(|t| t.starts_with("ERROR|"));
    assert_eq!(error, "ERROR|429|Demasiados mensajes");
    loop {
        if ana.recv() == Got::Closed {
            break;
        }
    }
}
