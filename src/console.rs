//! Consoles, shared by every protocol: the console clients' input and printer, and a
//! server's console lines ([`ServerConsole`]).
//!
//! Lines are read from a terminal with a line editor (history, editing) when both standard
//! input and output are terminals, and line by line from standard input otherwise (a pipe, a
//! file, a script), after the same prompt printed on standard output. Lines that arrive on their own (a pushed message, a chat line) go through
//! a [`Printer`], which on a terminal prints them above the line being typed without garbling
//! it, and otherwise writes them to standard output at once.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::mpsc::{channel, sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustyline::error::ReadlineError;
use rustyline::ExternalPrinter;

/// Prints whole blocks of lines from any thread, one block at a time.
#[derive(Clone)]
pub struct Printer(Arc<Mutex<dyn FnMut(String) + Send>>);

impl Printer {
    /// A printer straight to standard output.
    pub fn stdout() -> Self {
        Printer(Arc::new(Mutex::new(|text: String| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}").and_then(|_| out.flush());
        })))
    }

    /// A printer that hands each block to `sink` (tests, GUIs).
    pub fn to(sink: impl FnMut(String) + Send + 'static) -> Self {
        Printer(Arc::new(Mutex::new(sink)))
    }

    /// Prints `text` (one or more lines, without the last newline).
    pub fn print(&self, text: impl Into<String>) {
        if let Ok(mut print) = self.0.lock() {
            print(text.into());
        }
    }
}

/// Where a console's command lines come from.
pub struct Input {
    editor: Option<rustyline::DefaultEditor>,
    prompt: String,
    stdin: std::io::StdinLock<'static>,
}

impl Input {
    /// Opens standard input, with a line editor showing `prompt` when standard input and
    /// output are both terminals. Returns the input and the printer to use for every line the
    /// console prints, or why the terminal cannot be used.
    pub fn open(prompt: &str) -> Result<(Input, Printer), String> {
        let stdin = std::io::stdin().lock();
        if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
            return Ok((Input { editor: None, prompt: prompt.to_string(), stdin }, Printer::stdout()));
        }
        let mut editor = rustyline::DefaultEditor::new().map_err(|e| format!("cannot use the terminal: {e}"))?;
        // Lines from other threads are printed above the line being typed.
        let printer = match editor.create_external_printer() {
            Ok(mut external) => Printer::to(move |text: String| {
                let _ = external.print(format!("{text}\n"));
            }),
            Err(_) => Printer::stdout(),
        };
        Ok((Input { editor: Some(editor), prompt: prompt.to_string(), stdin }, printer))
    }

    /// True when lines are typed at a terminal.
    pub fn is_terminal(&self) -> bool {
        self.editor.is_some()
    }

    /// The next line without its line ending; `None` at the end of input, on Ctrl-C or Ctrl-D
    /// at the terminal, or when the input cannot be read (said on standard error).
    pub fn read_line(&mut self) -> Option<String> {
        match &mut self.editor {
            Some(editor) => match editor.readline(&self.prompt) {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    Some(line)
                }
                Err(ReadlineError::Interrupted | ReadlineError::Eof) => None,
                Err(e) => {
                    eprintln!("cartero: cannot read the terminal: {e}");
                    None
                }
            },
            None => {
                // The prompt is printed whatever standard input is, as the course's clients
                // do with `input("c> ")`: scripts that grade by comparing output expect it.
                {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(self.prompt.as_bytes()).and_then(|_| out.flush());
                }
                let mut line = String::new();
                match self.stdin.read_line(&mut line) {
                    Ok(0) => None,
                    Ok(_) => {
                        let trimmed = line.trim_end_matches(['\n', '\r']).len();
                        line.truncate(trimmed);
                        Some(line)
                    }
                    Err(e) => {
                        eprintln!("cartero: cannot read standard input: {e}");
                        None
                    }
                }
            }
        }
    }
}

/// A server's console: its lines go to standard output from a thread of their own, in the
/// order given, so a slow terminal or pipe never holds up the service. When the queue is
/// full a line is dropped rather than waited for, and [`print`](Self::print) says so.
pub struct ServerConsole {
    queue: SyncSender<ToPrint>,
}

enum ToPrint {
    Line(String),
    /// Answered once every line before it is written.
    Flush(std::sync::mpsc::Sender<()>),
}

impl ServerConsole {
    /// Lines the queue holds before lines are dropped.
    const QUEUE: usize = 65_536;
    /// How long [`flush`](Self::flush) waits for standard output at most.
    const FLUSH_LIMIT: Duration = Duration::from_secs(5);

    /// Starts the printing thread.
    pub fn start() -> std::io::Result<ServerConsole> {
        let (tx, rx) = sync_channel(Self::QUEUE);
        std::thread::Builder::new().name("cartero-console".into()).spawn(move || {
            for item in rx {
                match item {
                    ToPrint::Line(line) => {
                        let mut out = std::io::stdout().lock();
                        // A closed standard output is no reason to stop serving.
                        let _ = writeln!(out, "{line}").and_then(|_| out.flush());
                    }
                    ToPrint::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        })?;
        Ok(ServerConsole { queue: tx })
    }

    /// Queues `line` (without its newline); false if it was dropped, the queue being full.
    pub fn print(&self, line: String) -> bool {
        self.queue.try_send(ToPrint::Line(line)).is_ok()
    }

    /// Waits until every line queued before the call is written (a few seconds at most, in
    /// case standard output is a pipe nobody reads); true if they were. A server calls it as
    /// it stops: the process would otherwise exit with its last lines still queued. Blocks
    /// the calling thread.
    pub fn flush(&self) -> bool {
        let until = Instant::now() + Self::FLUSH_LIMIT;
        let (done, written) = channel();
        let mut flush = ToPrint::Flush(done);
        loop {
            match self.queue.try_send(flush) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) if Instant::now() < until => {
                    flush = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Full(_)) => return false,
            }
        }
        written.recv_timeout(until.saturating_duration_since(Instant::now())).is_ok()
    }
}
