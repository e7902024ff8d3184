//! `cartero chat connect`: the chat console of SPEC-chat 6.
//!
//! Lines typed at the `> ` prompt (or read from a pipe, line by line): `@name text` sends a
//! private message, `/users` prints the last user list, `/logout` (or the end of input, or
//! Ctrl-C at the terminal) leaves; rooms (SPEC-chat 7): `/join #room`, `/part #room` (or
//! `/part` alone: the room of the last `/join`),
//! `#room text`, `/rooms`, `/history #room|*|name [n]` (n defaults to 20); any other
//! non-empty line is a broadcast. What the server
//! sends is printed as the original console client prints it, above the line being typed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::chat::client::blocking::{Client, Sender};
use crate::chat::client::{default_timeout, ClientError};
use crate::chat::tls::ClientTls;
use crate::chat::wire::{Reply, Request};
use crate::console::{Input, Printer};

#[derive(clap::Args)]
pub struct Args {
    /// The server: a host name or an address.
    #[arg(short, long, default_value = "localhost")]
    server: String,
    /// The server's port.
    #[arg(short, long, default_value_t = 8080)]
    port: u16,
    /// The user name (asked for when missing).
    #[arg(short, long)]
    name: Option<String>,
    /// Time to connect and to join.
    #[arg(long, default_value = "5s", value_parser = crate::cli::common::duration)]
    timeout: Duration,
    /// Connect over TLS (to the server's --tls-port), trusting the usual public authorities.
    #[arg(long)]
    tls: bool,
    /// Connect over TLS trusting only the certificates in this PEM file (a self-signed
    /// server's --tls-cert-out, or a private CA); implies --tls.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

/// How the console prints a message from the server (SPEC-chat 6).
pub fn reply_text(reply: &Reply) -> String {
    match reply {
        Reply::UserList(users) => format!("Usuarios conectados: {}", users.join(", ")),
        Reply::Message { from, content } => format!("Mensaje de {from}: {content}"),
        Reply::Broadcast { from, content } => format!("Broadcast de {from}: {content}"),
        Reply::Error { code, text } => format!("Error {code}: {text}"),
        Reply::ConnectAck(true) => "Conectado exitosamente".into(),
        Reply::ConnectAck(false) => "Conexión fallida".into(),
        Reply::Joined { room, members } => format!("[{room}] Miembros: {}", members.join(", ")),
        Reply::Parted { room, name } => format!("[{room}] {name} salió de la sala"),
        Reply::Room { room, from, content } => format!("[{room}] {from}: {content}"),
        Reply::RoomList(rooms) => format!("Salas: {}", rooms.join(", ")),
        Reply::History { target, from, millis, content } => {
            let at = std::time::UNIX_EPOCH + Duration::from_millis(*millis);
            format!("Historial de {target} [{}] {from}: {content}", humantime::format_rfc3339_seconds(at))
        }
        Reply::HistoryEnd(target) => format!("Fin del historial de {target}"),
    }
}

pub fn run(args: Args) -> ExitCode {
    let (mut input, printer) = match Input::open("> ") {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("cartero: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = if args.timeout.is_zero() { default_timeout() } else { args.timeout };
    let connected = if args.tls || args.ca.is_some() {
        ClientTls::new(args.ca.as_deref())
            .map_err(ClientError::from)
            .and_then(|tls| Client::connect_tls(&args.server, args.port, timeout, &tls))
    } else {
        Client::connect(&args.server, args.port, timeout)
    };
    let mut client = match connected {
        Ok(client) => client,
        Err(e) => {
            printer.print("Conexión fallida");
            eprintln!("cartero: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Join, asking again for a name typed here when the server refuses it.
    let asked = args.name.is_none();
    let mut name = args.name;
    loop {
        let candidate = match name.take() {
            Some(n) => n,
            None => {
                if !input.is_terminal() {
                    eprintln!("cartero: reading the user name from the first line of input");
                } else {
                    eprintln!("Nombre de usuario:");
                }
                match input.read_line() {
                    Some(line) => line.trim().to_string(),
                    None => return ExitCode::FAILURE,
                }
            }
        };
        match client.join(&candidate) {
            Ok(()) => {
                printer.print("Conectado exitosamente");
                break;
            }
            Err(e) => {
                printer.print("Conexión fallida");
                eprintln!("cartero: {e}");
                let retry = asked && matches!(e, ClientError::Refused { .. } | ClientError::InvalidName(_));
                if !retry {
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let sender = client.sender();
    let users = Arc::new(Mutex::new(Vec::<String>::new()));
    let gone = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let reader = {
        let (printer, users, gone) = (printer.clone(), users.clone(), gone.clone());
        std::thread::spawn(move || {
            receive(client, &printer, &users);
            gone.store(true, Ordering::Release);
            let _ = done_tx.send(());
        })
    };
    // The room of the last `/join`, for `/part` without a room.
    let mut last_room = None;
    while let Some(line) = input.read_line() {
        if gone.load(Ordering::Acquire) {
            break;
        }
        if !command(&line, &sender, &printer, &users, &mut last_room) {
            break;
        }
    }
    // Leave: DISCONNECT, and wait (bounded) for the server to close.
    if !gone.load(Ordering::Acquire) {
        if let Err(e) = sender.disconnect() {
            eprintln!("cartero: {e}");
        }
        if done_rx.recv_timeout(timeout).is_err() {
            sender.shutdown();
        }
    }
    let _ = reader.join();
    ExitCode::SUCCESS
}

/// Prints what the server sends until it closes.
fn receive(mut client: Client, printer: &Printer, users: &Mutex<Vec<String>>) {
    loop {
        match client.recv_timeout(Duration::from_millis(500)) {
            Ok(None) => {}
            Ok(Some(reply)) => {
                if let Reply::UserList(list) = &reply {
                    *users.lock().unwrap_or_else(|p| p.into_inner()) = list.clone();
                }
                printer.print(reply_text(&reply));
            }
            Err(ClientError::Closed) => break,
            Err(e) => {
                eprintln!("cartero: {e}");
                break;
            }
        }
    }
    printer.print("Desconectado del servidor");
}

/// Runs one typed line; false when the console should leave.
fn command(
    line: &str,
    sender: &Sender,
    printer: &Printer,
    users: &Mutex<Vec<String>>,
    last_room: &mut Option<String>,
) -> bool {
    let line = line.trim_end_matches(['\r', '\n']);
    let result = if let Some(rest) = line.strip_prefix('@') {
        let (to, text) = rest.split_once(' ').unwrap_or((rest, ""));
        if to.is_empty() {
            eprintln!("cartero: usage: @name text");
            return true;
        }
        sender.send(to, text)
    } else if line.starts_with('#') {
        let (room, text) = line.split_once(' ').unwrap_or((line, ""));
        sender.request(&Request::Room { room: room.to_string(), content: text.to_string() })
    } else if let Some(room) = line.strip_prefix("/join ") {
        *last_room = Some(room.trim().to_string());
        sender.request(&Request::Join(room.trim().to_string()))
    } else if line.trim() == "/part" || line.starts_with("/part ") {
        let named = line["/part".len()..].trim();
        let room = if named.is_empty() { last_room.take() } else { Some(named.to_string()) };
        let Some(room) = room else {
            eprintln!("cartero: usage: /part #sala");
            return true;
        };
        if last_room.as_deref() == Some(room.as_str()) {
            *last_room = None;
        }
        sender.request(&Request::Part(room))
    } else if line.trim() == "/rooms" {
        sender.request(&Request::Rooms)
    } else if let Some(rest) = line.strip_prefix("/history ") {
        let mut words = rest.split_whitespace();
        let (Some(target), n) = (words.next(), words.next()) else {
            eprintln!("cartero: usage: /history #sala|*|nombre [n]");
            return true;
        };
        let Ok(n) = n.unwrap_or("20").parse::<u64>() else {
            eprintln!("cartero: usage: /history #sala|*|nombre [n]");
            return true;
        };
        sender.request(&Request::History { target: target.to_string(), n })
    } else if line.trim() == "/users" {
        let list = users.lock().unwrap_or_else(|p| p.into_inner()).join(", ");
        printer.print(format!("Usuarios conectados: {list}"));
        return true;
    } else if line.trim() == "/logout" {
        return false;
    } else if line.trim().is_empty() {
        return true;
    } else {
        sender.broadcast(line)
    };
    match result {
        Ok(()) => true,
        Err(ClientError::Encode(e)) => {
            eprintln!("cartero: not sent: {e}");
            true
        }
        Err(e) => {
            eprintln!("cartero: {e}");
            false
        }
    }
}
