//! `cartero client`: the course's console client (SPEC 6).
//!
//! Commands come from standard input: typed at the `c> ` prompt on a terminal (pushes print
//! above the line being typed, without garbling it), or read line by line from a pipe. The
//! protocol's answers go to standard output exactly as SPEC 6 writes them; causes of
//! failures and usage hints go to standard error.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::console::{Input, Printer};
use crate::messaging::client::blocking::{Client, Listener};
use crate::messaging::client::ClientError;
use crate::messaging::files::{self, AnswerForm, Offers};
use crate::messaging::wire::{
    ConnectReply, ConnectedUsersReply, Course, DisconnectReply, RegisterReply, SendReply, UnregisterReply, UsersReply,
};
use crate::messaging::{Push, MAX_FIELD_LEN};

#[derive(clap::Args)]
pub struct Args {
    /// The server: a host name or a dotted address.
    #[arg(short, long)]
    server: String,
    /// The server's port.
    #[arg(short, long)]
    port: u16,
    /// Time one request may take.
    #[arg(long, default_value = "5s", value_parser = crate::cli::common::duration)]
    timeout: Duration,
    /// The web service (e.g. http://127.0.0.1:8000) every message goes through before SEND.
    #[arg(long)]
    normalizer: Option<String>,
    /// Which course year's result lines: `2022` (`SEND FAIL / USER DOES NOT EXIST`) or `2025`
    /// (`SEND FAIL, USER DOES NOT EXIST`).
    #[arg(long, default_value = "2022")]
    course: Course,
    /// How GETFILE reads the other listener's answer: `auto`, `sized`, `zero-byte` or `raw`.
    #[arg(long, default_value = "auto")]
    file_answer: AnswerForm,
    /// The address the listener binds (default: this machine's address towards the server,
    /// 127.0.0.1 for a local server; 0.0.0.0 for every interface).
    #[arg(long)]
    listen_host: Option<IpAddr>,
}

/// The user connected from this client, with its listener and the thread printing pushes.
struct Connection {
    alias: String,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Connection {
    /// Stops the listener (which releases the port) and waits for its printer.
    fn close(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}

struct Console {
    client: Client,
    normalizer: Option<String>,
    timeout: Duration,
    printer: Printer,
    /// The alias last registered or connected: the sender of SEND.
    user: Option<String>,
    connection: Option<Connection>,
    course: Course,
    file_answer: AnswerForm,
    /// The files this session attached, served by its listener (SPEC 8).
    offers: Offers,
    /// Where each user listens, from the last USERS answer.
    known: HashMap<String, SocketAddr>,
    /// Where listeners bind, when given.
    listen_host: Option<IpAddr>,
    /// Held from a SEND's request to its printed reply, so that its acknowledgement (a push
    /// the listener may get first) never prints above the reply.
    replying: Arc<Mutex<()>>,
}

fn push_text(push: &Push) -> String {
    match push {
        Push::Message { sender, id, body } => format!(
            "s> MESSAGE {id} FROM {}\n   {}\n   END",
            String::from_utf8_lossy(sender),
            String::from_utf8_lossy(body)
        ),
        Push::Ack { id } => format!("s> SEND MESSAGE {id} OK"),
        Push::AttachMessage { sender, id, body, file } => format!(
            "s> MESSAGE {id} FROM {}\n   {}\n   END\n   FILE {}",
            String::from_utf8_lossy(sender),
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(file)
        ),
        Push::AttachAck { id, file } => format!("s> SENDATTACH MESSAGE {id} {} OK", String::from_utf8_lossy(file)),
    }
}

/// Tells the user why an operation failed, on standard error.
fn cause(e: &ClientError) {
    eprintln!("cartero: {e}");
}

impl Console {
    fn out(&self, line: &str) {
        self.printer.print(line);
    }

    /// The separator of the year's result lines: `FAIL / USER ...` or `FAIL, USER ...`.
    fn sep(&self) -> &'static str {
        match self.course {
            Course::Y2022 => " / ",
            Course::Y2025 => ", ",
        }
    }

    /// The user this client acts as: the connected one, else the last registered.
    fn current_user(&self) -> Option<String> {
        self.connection.as_ref().map(|c| c.alias.clone()).or_else(|| self.user.clone())
    }

    /// Runs one command line; returns false when the client should end.
    fn command(&mut self, line: &str) -> bool {
        let line = line.trim_end_matches(['\r', '\n']);
        let trimmed = line.trim_start();
        let (word, rest) = trimmed.split_once(char::is_whitespace).unwrap_or((trimmed, ""));
        let args: Vec<&str> = rest.split_whitespace().collect();
        match word.to_ascii_uppercase().as_str() {
            "" => {}
            "REGISTER" if !args.is_empty() => self.register(&args),
            "UNREGISTER" if args.len() == 1 => self.unregister(args[0]),
            "CONNECT" if args.len() == 1 => self.connect(args[0]),
            "DISCONNECT" if args.len() == 1 => self.disconnect(args[0]),
            "SEND" if args.len() >= 2 => {
                // The message is the rest of the line after the alias, inner spaces kept.
                let after_alias = rest.trim_start()[args[0].len()..].trim_start();
                self.send(args[0], after_alias)
            }
            "CONNECTEDUSERS" if args.is_empty() => self.connected_users(),
            "USERS" if args.is_empty() => self.users(),
            "SENDATTACH" if args.len() >= 3 => {
                // SPEC 8: the file is the last word, the message what lies between (quotes
                // around it are dropped).
                let after_alias = rest.trim_start()[args[0].len()..].trim();
                let file = args[args.len() - 1];
                let message = after_alias[..after_alias.len() - file.len()].trim();
                let message = message
                    .strip_prefix('"')
                    .and_then(|m| m.strip_suffix('"'))
                    .or_else(|| message.strip_prefix('\'').and_then(|m| m.strip_suffix('\'')))
                    .unwrap_or(message);
                self.send_attach(args[0], message, file)
            }
            "GETFILE" if args.len() == 3 => self.get_file(args[0], args[1], args[2]),
            "QUIT" if args.is_empty() => {
                if let Some(c) = &self.connection {
                    eprintln!("cartero: QUIT refused: {} is connected; DISCONNECT {} first", c.alias, c.alias);
                    return true;
                }
                return false;
            }
            "REGISTER" | "UNREGISTER" | "CONNECT" | "DISCONNECT" | "SEND" | "CONNECTEDUSERS" | "USERS"
            | "SENDATTACH" | "GETFILE" | "QUIT" => {
                eprintln!("cartero: usage: {}", usage(&word.to_ascii_uppercase()));
            }
            _ => eprintln!("cartero: unknown command {word:?}; commands: REGISTER, UNREGISTER, CONNECT, DISCONNECT, SEND, SENDATTACH, CONNECTEDUSERS, USERS, GETFILE, QUIT"),
        }
        true
    }

    fn register(&mut self, args: &[&str]) {
        let alias = args[0];
        let result = match args.get(1) {
            None => self.client.register_alias(alias),
            Some(date) => {
                let full_name = if args.len() > 2 { args[2..].join(" ") } else { alias.to_string() };
                self.client.register(full_name, alias, date)
            }
        };
        // The short form against a server that waits for the statement's three fields: it
        // times out, or answers 2.
        let short_form_refused =
            args.len() == 1 && matches!(result, Ok(RegisterReply::Error) | Err(ClientError::Timeout { .. }));
        let line = match result {
            Ok(RegisterReply::Ok) => {
                self.user = Some(alias.to_string());
                "s> REGISTER OK"
            }
            Ok(RegisterReply::AliasInUse) => "s> USERNAME IN USE",
            Ok(RegisterReply::Error) => "s> REGISTER FAIL",
            Err(e) => {
                cause(&e);
                "s> REGISTER FAIL"
            }
        };
        if short_form_refused {
            eprintln!("cartero: this server may need REGISTER <alias> <DD/MM/YYYY> [name]");
        }
        self.out(line);
    }

    fn unregister(&mut self, alias: &str) {
        let line = match self.client.unregister(alias) {
            Ok(UnregisterReply::Ok) => {
                if self.user.as_deref() == Some(alias) {
                    self.user = None;
                }
                "s> UNREGISTER OK"
            }
            Ok(UnregisterReply::NoSuchUser) => "s> USER DOES NOT EXIST",
            Ok(UnregisterReply::Error) => "s> UNREGISTER FAIL",
            Err(e) => {
                cause(&e);
                "s> UNREGISTER FAIL"
            }
        };
        self.out(line);
    }

    fn connect(&mut self, alias: &str) {
        if let Some(c) = &self.connection {
            // The statement's line for a user already connected (what the server's 2 gives).
            eprintln!("cartero: {} is already connected from this client; DISCONNECT {} first", c.alias, c.alias);
            self.out("s> USER ALREADY CONNECTED");
            return;
        }
        // Reachable from the server; the port is free by construction.
        let host = self.listen_host.unwrap_or_else(|| self.client.listen_host());
        let listener = match Listener::bind_offering(host, self.offers.clone()) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cartero: cannot open a listening port on {host}: {e}");
                self.out("s> CONNECT FAIL");
                return;
            }
        };
        let result = self.client.connect(alias, listener.port());
        let line = match &result {
            Ok(ConnectReply::Ok) => "s> CONNECT OK",
            Ok(ConnectReply::NoSuchUser) => "s> CONNECT FAIL, USER DOES NOT EXIST",
            Ok(ConnectReply::AlreadyConnected) => "s> USER ALREADY CONNECTED",
            Ok(ConnectReply::Error) => "s> CONNECT FAIL",
            Err(e) => {
                cause(e);
                "s> CONNECT FAIL"
            }
        };
        // The reply is printed before any push the listener may already hold.
        self.out(line);
        if !matches!(result, Ok(ConnectReply::Ok)) {
            return; // dropping the listener closes it
        }
        self.user = Some(alias.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let printer = self.printer.clone();
        let replying = self.replying.clone();
        let thread = std::thread::spawn(move || {
            let listener = listener;
            while !stopping.load(Ordering::Acquire) {
                match listener.recv_timeout(Duration::from_millis(100)) {
                    Ok(push) => {
                        let _order = replying.lock().unwrap_or_else(|p| p.into_inner());
                        printer.print(push_text(&push));
                    }
                    Err(true) => return,
                    Err(false) => {}
                }
            }
            // Print what arrived before the stop.
            while let Ok(push) = listener.recv_timeout(Duration::ZERO) {
                printer.print(push_text(&push));
            }
        });
        self.connection = Some(Connection { alias: alias.to_string(), stop, thread });
    }

    fn disconnect(&mut self, alias: &str) {
        let result = self.client.disconnect(alias);
        // The listener stops whatever the server answered (SPEC 6).
        if self.connection.as_ref().is_some_and(|c| c.alias == alias) {
            if let Some(c) = self.connection.take() {
                c.close();
            }
        }
        let sep = self.sep();
        let line = match result {
            Ok(DisconnectReply::Ok) => "s> DISCONNECT OK".into(),
            Ok(DisconnectReply::NoSuchUser) => format!("s> DISCONNECT FAIL{sep}USER DOES NOT EXIST"),
            Ok(DisconnectReply::NotConnected) => format!("s> DISCONNECT FAIL{sep}USER NOT CONNECTED"),
            Ok(DisconnectReply::Error) => "s> DISCONNECT FAIL".into(),
            Err(e) => {
                cause(&e);
                "s> DISCONNECT FAIL".into()
            }
        };
        self.out(&line);
    }

    /// The message as it goes out: through the web service when one is configured (SPEC 7).
    /// `None` (with the cause on standard error) when it cannot go.
    fn outgoing(&self, body: &str) -> Option<String> {
        let body = match &self.normalizer {
            None => body.to_string(),
            Some(url) => match crate::messaging::webservice::normalize_remote(url, body, self.timeout) {
                Ok(text) => text,
                Err(e) => {
                    eprintln!("cartero: {e}; the message was not sent");
                    return None;
                }
            },
        };
        if body.len() > MAX_FIELD_LEN {
            eprintln!("cartero: the message has {} bytes; at most {MAX_FIELD_LEN} fit", body.len());
            return None;
        }
        Some(body)
    }

    fn send(&mut self, recipient: &str, body: &str) {
        let Some(sender) = self.current_user() else {
            eprintln!("cartero: SEND needs a user: REGISTER or CONNECT first");
            self.out("s> SEND FAIL");
            return;
        };
        let Some(body) = self.outgoing(body) else {
            self.out("s> SEND FAIL");
            return;
        };
        let sep = self.sep();
        let replying = self.replying.clone();
        let _order = replying.lock().unwrap_or_else(|p| p.into_inner());
        let line = match self.client.send(&sender, recipient, body) {
            Ok(SendReply::Ok { id }) => format!("s> SEND OK - MESSAGE {id}"),
            Ok(SendReply::NoSuchUser) => format!("s> SEND FAIL{sep}USER DOES NOT EXIST"),
            Ok(SendReply::Error) => "s> SEND FAIL".into(),
            Err(e) => {
                cause(&e);
                "s> SEND FAIL".into()
            }
        };
        self.out(&line);
    }

    /// SENDATTACH (SPEC 8); on success the file is offered to the recipient's GETFILE.
    fn send_attach(&mut self, recipient: &str, message: &str, file: &str) {
        let Some(sender) = self.current_user() else {
            eprintln!("cartero: SENDATTACH needs a user: REGISTER or CONNECT first");
            self.out("s> SENDATTACH FAIL");
            return;
        };
        if file.len() > MAX_FIELD_LEN {
            eprintln!("cartero: the file name has {} bytes; at most {MAX_FIELD_LEN} fit", file.len());
            self.out("s> SENDATTACH FAIL");
            return;
        }
        if !Path::new(file).is_absolute() {
            eprintln!("cartero: {file:?} is not an absolute path (the statement asks for one); it is sent as is");
        }
        let Some(message) = self.outgoing(message) else {
            self.out("s> SENDATTACH FAIL");
            return;
        };
        let replying = self.replying.clone();
        let _order = replying.lock().unwrap_or_else(|p| p.into_inner());
        let line = match self.client.send_attach(&sender, recipient, message, file) {
            Ok(SendReply::Ok { id }) => {
                if !self.offers.offer(file.as_bytes()) {
                    eprintln!("cartero: {file:?} cannot be offered to GETFILE from this client");
                }
                format!("s> SENDATTACH OK - MESSAGE {id}")
            }
            Ok(SendReply::NoSuchUser) => "s> SENDATTACH FAIL, USER DOES NOT EXIST".into(),
            Ok(SendReply::Error) => "s> SENDATTACH FAIL".into(),
            Err(e) => {
                cause(&e);
                "s> SENDATTACH FAIL".into()
            }
        };
        self.out(&line);
    }

    /// USERS (SPEC 8): the names, one per line; their addresses are kept for GETFILE.
    fn users(&mut self) {
        let sep = self.sep();
        let alias = self.current_user();
        match self.client.users(alias.as_deref().map(str::as_bytes)) {
            Ok(UsersReply::Ok { users }) => {
                self.known = users
                    .iter()
                    .map(|u| (String::from_utf8_lossy(&u.name).into_owned(), SocketAddr::new(u.ip, u.port)))
                    .collect();
                let mut lines = vec![format!("s> CONNECTED USERS ({} users connected) OK", users.len())];
                lines.extend(users.iter().map(|u| String::from_utf8_lossy(&u.name).into_owned()));
                self.out(&lines.join("\n"));
            }
            Ok(UsersReply::NotConnected) => self.out(&format!("s> CONNECTED USERS FAIL{sep}USER IS NOT CONNECTED")),
            Ok(UsersReply::Error) => self.out("s> CONNECTED USERS FAIL"),
            Err(e) => {
                cause(&e);
                self.out("s> CONNECTED USERS FAIL");
            }
        }
    }

    /// GETFILE (SPEC 8): the file `remote` of `user`, from its listener, to `local`.
    fn get_file(&mut self, user: &str, remote: &str, local: &str) {
        let Some(requester) = self.current_user() else {
            eprintln!("cartero: GETFILE needs a user: REGISTER or CONNECT first");
            self.out("c> FILE TRANSFER FAILED");
            return;
        };
        let mut addr = self.known.get(user).copied();
        if addr.is_none() {
            // Once: the last USERS answer may be older than the user's CONNECT.
            if let Ok(UsersReply::Ok { users }) = self.client.users(Some(requester.as_bytes())) {
                self.known = users
                    .iter()
                    .map(|u| (String::from_utf8_lossy(&u.name).into_owned(), SocketAddr::new(u.ip, u.port)))
                    .collect();
            }
            addr = self.known.get(user).copied();
        }
        let Some(addr) = addr else {
            self.out("c> FILE TRANSFER FAILED, user not connected.");
            return;
        };
        match files::get_file(addr, requester.as_bytes(), remote.as_bytes(), Path::new(local), self.file_answer) {
            Ok(_) => self.out("c> FILE TRANSFER OK"),
            Err(e) => {
                eprintln!("cartero: {e}; no file was written to {local}");
                self.out("c> FILE TRANSFER FAILED");
            }
        }
    }

    fn connected_users(&mut self) {
        let sep = self.sep();
        let alias = self.current_user();
        let line = match self.client.connected_users(alias.as_deref().map(str::as_bytes)) {
            Ok(ConnectedUsersReply::Ok { users }) => {
                let names: Vec<String> = users.iter().map(|u| String::from_utf8_lossy(u).into_owned()).collect();
                format!("s> CONNECTED USERS ({} users connected) OK - {}", names.len(), names.join(", "))
            }
            Ok(ConnectedUsersReply::NotConnected) => format!("s> CONNECTED USERS FAIL{sep}USER IS NOT CONNECTED"),
            Ok(ConnectedUsersReply::Error) => "s> CONNECTED USERS FAIL".into(),
            Err(e) => {
                cause(&e);
                "s> CONNECTED USERS FAIL".into()
            }
        };
        self.out(&line);
    }

    /// At the end of input: a connected user is disconnected first.
    fn finish(&mut self) {
        if let Some(alias) = self.connection.as_ref().map(|c| c.alias.clone()) {
            self.disconnect(&alias);
        }
    }
}

fn usage(command: &str) -> &'static str {
    match command {
        "REGISTER" => "REGISTER <alias> [<DD/MM/YYYY> [<full name>]]",
        "UNREGISTER" => "UNREGISTER <alias>",
        "CONNECT" => "CONNECT <alias>",
        "DISCONNECT" => "DISCONNECT <alias>",
        "SEND" => "SEND <alias> <message>",
        "SENDATTACH" => "SENDATTACH <alias> <message> <absolute file name>",
        "CONNECTEDUSERS" => "CONNECTEDUSERS",
        "USERS" => "USERS",
        "GETFILE" => "GETFILE <alias> <remote file> <local file>",
        _ => "QUIT",
    }
}

pub fn run(args: Args) -> ExitCode {
    let client = Client::new(args.server, args.port).with_timeout(args.timeout);
    let (mut input, printer) = match Input::open("c> ") {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("cartero: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut console = Console {
        client,
        normalizer: args.normalizer,
        timeout: args.timeout,
        printer,
        user: None,
        connection: None,
        course: args.course,
        file_answer: args.file_answer,
        offers: Offers::new(),
        known: HashMap::new(),
        replying: Arc::new(Mutex::new(())),
        listen_host: args.listen_host,
    };
    while let Some(line) = input.read_line() {
        if !console.command(&line) {
            return ExitCode::SUCCESS;
        }
    }
    // At the end of input (or Ctrl-C at the terminal), a connected user is disconnected.
    console.finish();
    ExitCode::SUCCESS
}
