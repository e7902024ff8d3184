//! Per-address limits of `cartero chat serve` (issue 17), with its defaults: 16 connections
//! per IP address, then `ERROR|429`; a burst of 5 messages, then 2 per second, the excess
//! delayed, and a client more than 10 s over the rate dropped with `ERROR|429`. Another
//! address (127.0.0.2, which Linux loopback answers) is not affected.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};

use common::{Proc, LIMIT};
use socket2::{Domain, Socket, Type};

fn chat_serve() -> (Proc, u16) {
    let mut server = Proc::start(&["chat", "serve", "-p", "0", "--bind", "127.0.0.1", "--memory"]);
    let init = server.line();
    let port = init.strip_prefix("s> init server 127.0.0.1:").unwrap_or_else(|| panic!("start line: {init:?}"));
    (server, port.parse().unwrap())
}

struct Raw {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Raw {
    /// A connection from `from` (an address of the loopback network).
    fn connect(from: &str, port: u16) -> Raw {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.bind(&format!("{from}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        socket.connect_timeout(&to.into(), LIMIT).unwrap();
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Raw { stream, reader }
    }

    fn join(from: &str, port: u16, name: &str) -> Raw {
        let mut raw = Raw::connect(from, port);
        raw.send(&format!("CONNECT|{name}"));
        assert_eq!(raw.line(), Some("CONNECT_ACK|OK".into()));
        raw
    }

    fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).unwrap();
        self.stream.write_all(b"\n").unwrap();
    }

    /// The next line that is not a user list; `None` at the end of the connection.
    fn line(&mut self) -> Option<String> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).expect("a line in time") == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n').to_string();
            if !line.starts_with("USER_LIST|") {
                return Some(line);
            }
        }
    }
}

#[test]
fn the_17th_connection_from_one_address_is_refused_and_others_are_not() {
    let (mut server, port) = chat_serve();
    let mut open: Vec<Raw> = (0..16).map(|_| Raw::connect("127.0.0.1", port)).collect();
    let mut extra = Raw::connect("127.0.0.1", port);
    assert_eq!(extra.line(), Some("ERROR|429|Demasiadas conexiones desde esta dirección".into()));
    assert_eq!(extra.line(), None, "then closed");
    server.expect(&[&format!("s> ERROR 429 {}", extra.stream.local_addr().unwrap())]);
    // Another address has its own count.
    let _zoe = Raw::join("127.0.0.2", port, "zoe");
    // Those open are served; once one closes, another may come in.
    let mut first = open.remove(0);
    first.send("CONNECT|ana");
    assert_eq!(first.line(), Some("CONNECT_ACK|OK".into()));
    drop(first);
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let mut again = Raw::connect("127.0.0.1", port);
        again.send("CONNECT|ana2");
        match again.line().as_deref() {
            Some("CONNECT_ACK|OK") => break,
            Some("ERROR|429|Demasiadas conexiones desde esta dirección") => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "the closed connection was never counted out");
    }
}

#[test]
fn a_flood_is_delayed_then_dropped_and_another_address_goes_on() {
    let (_server, port) = chat_serve();
    let mut zoe = Raw::join("127.0.0.2", port, "zoe");
    let mut ana = Raw::join("127.0.0.1", port, "ana");
    // Past the burst, messages are delayed, not refused: all arrive, in order.
    let burst: String = (0..8).map(|i| format!("BROADCAST|a{i}\n")).collect();
    ana.stream.write_all(burst.as_bytes()).unwrap();
    for i in 0..8 {
        assert_eq!(ana.line(), Some(format!("BROADCAST|ana|a{i}")));
        assert_eq!(zoe.line(), Some(format!("BROADCAST|ana|a{i}")));
    }
    // A flood (more than 10 s of messages at 2 per second) is dropped with 429.
    let flood: String = (0..60).map(|i| format!("BROADCAST|f{i}\n")).collect();
    ana.stream.write_all(flood.as_bytes()).unwrap();
    let mut echoed = 0;
    loop {
        match ana.line() {
            Some(line) if line == format!("BROADCAST|ana|f{echoed}") => echoed += 1,
            Some(line) => {
                assert_eq!(line, "ERROR|429|Demasiados mensajes");
                break;
            }
            None => panic!("closed without ERROR|429"),
        }
    }
    assert!(echoed < 60, "not every message of the flood was taken");
    assert_eq!(ana.line(), None, "then closed");
    // Zoe, on another address, goes on at her own rate.
    for i in 0..echoed {
        assert_eq!(zoe.line(), Some(format!("BROADCAST|ana|f{i}")));
    }
    for i in 0..3 {
        zoe.send(&format!("BROADCAST|z{i}"));
        assert_eq!(zoe.line(), Some(format!("BROADCAST|zoe|z{i}")));
    }
}
