//! Helpers for the tests of `cartero chat`: a server on a free loopback port, and a raw
//! framed connection that writes and reads lines.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use socket2::{Domain, Socket, Type};

use super::{Proc, LIMIT};

/// Starts `cartero chat serve` on a free port of 127.0.0.1 with `args` (it keeps its default
/// limits and needs `--memory` or `--data`); returns it, its start line read, and the port.
pub fn serve(args: &[&str]) -> (Proc, u16) {
    let mut server = Proc::start(&[&["chat", "serve", "-p", "0", "--bind", "127.0.0.1"], args].concat());
    let init = server.line();
    let port = init.strip_prefix("s> init server 127.0.0.1:").unwrap_or_else(|| panic!("start line: {init:?}"));
    (server, port.parse().unwrap_or_else(|_| panic!("start line: {init:?}")))
}

/// [`serve`] as most tests want it: history in memory, and no per-address limits, since
/// every test client comes from 127.0.0.1.
pub fn serve_open(extra: &[&str]) -> (Proc, u16) {
    serve(&[&["--memory", "--max-per-ip", "0", "--rate", "0"], extra].concat())
}

/// A raw framed connection: writes lines or bytes, reads lines; every read waits [`LIMIT`]
/// at most.
pub struct Raw {
    pub stream: TcpStream,
    pending: Vec<u8>,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        Raw::connect_from("127.0.0.1", port)
    }

    /// A connection from `from`, an address of the loopback network (Linux answers all of
    /// 127.0.0.0/8), so that per-address limits can tell clients apart.
    pub fn connect_from(from: &str, port: u16) -> Raw {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.bind(&format!("{from}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        socket.connect_timeout(&to.into(), LIMIT).unwrap();
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        Raw { stream, pending: Vec::new() }
    }

    /// Connects and joins as `name`, reading `CONNECT_ACK|OK` and the user lists up to the
    /// one that names `name` last.
    pub fn join(port: u16, name: &str) -> Raw {
        Raw::join_from("127.0.0.1", port, name)
    }

    /// [`join`](Self::join) from `from` (see [`connect_from`](Self::connect_from)).
    pub fn join_from(from: &str, port: u16, name: &str) -> Raw {
        let mut raw = Raw::connect_from(from, port);
        raw.send(&format!("CONNECT|{name}"));
        raw.expect(&["CONNECT_ACK|OK"]);
        loop {
            let list = raw.line().expect("a user list");
            assert!(list.starts_with("USER_LIST|"), "{list}");
            if list.ends_with(&format!(",{name}")) || list == format!("USER_LIST|{name}") {
                return raw;
            }
        }
    }

    /// Writes `line` and its `\n`.
    pub fn send(&mut self, line: &str) {
        self.write(format!("{line}\n").as_bytes());
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next line, without its `\n`; `None` at the end of the connection (or a reset).
    pub fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Some(String::from_utf8(line[..i].to_vec()).unwrap());
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// The next line that is not a user list (a newer list may replace an unsent older one,
    /// so tests about other things skip them); `None` at the end of the connection.
    pub fn event(&mut self) -> Option<String> {
        loop {
            match self.line() {
                Some(list) if list.starts_with("USER_LIST|") => continue,
                other => return other,
            }
        }
    }

    /// Reads `lines`, exactly.
    pub fn expect(&mut self, lines: &[&str]) {
        for want in lines {
            assert_eq!(self.line().as_deref(), Some(*want));
        }
    }

    /// Reads `lines`, skipping the user lists before each.
    pub fn expect_events(&mut self, lines: &[&str]) {
        for want in lines {
            assert_eq!(self.event().as_deref(), Some(*want));
        }
    }
}
