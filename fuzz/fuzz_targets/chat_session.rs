//! Fuzzes the chat server's sans-IO core: arbitrary bytes, cut into pieces that the input
//! shares among four connections (framed and legacy), through each connection's line codec
//! and the engine, with durable history or without, stores that succeed or fail, and
//! connections that close. Nothing may panic; a parsed request must write back to a line
//! that parses to it; every message the engine sends must parse as a reply, and on a framed
//! connection end in `\n`.
#![no_main]

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use cartero::chat::wire::{max_message, parse_reply, parse_request};
use cartero::chat::{ConnId, Engine, Frame, Leave, LineCodec, Mode, Output};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const CONNS: usize = 4;

struct Conn {
    id: ConnId,
    mode: Mode,
    codec: LineCodec,
    buf: BytesMut,
}

struct Run {
    engine: Engine,
    /// The mode of each connection the engine may still write to.
    modes: HashMap<ConnId, Mode>,
    next_id: u64,
    /// Whether the next store of a message succeeds.
    store_ok: bool,
}

impl Run {
    fn open(&mut self, mode: Mode) -> Conn {
        self.next_id += 1;
        let id = ConnId(self.next_id);
        self.engine.open(id, mode);
        self.modes.insert(id, mode);
        Conn { id, mode, codec: LineCodec::for_requests(), buf: BytesMut::new() }
    }

    fn handle(&mut self, conn: ConnId, frame: &Frame, now: u64) {
        if let Frame::Line(line) = frame {
            if let Ok(request) = parse_request(line) {
                let mut again = BytesMut::new();
                request.write(&mut again);
                assert_eq!(parse_request(&again).as_ref(), Ok(&request), "a request writes back to itself");
            }
        }
        self.engine.handle(conn, frame, now);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(output) = self.engine.poll_output() {
            self.carry_out(output);
        }
    }

    fn carry_out(&mut self, output: Output) {
        match output {
            Output::Send { to, bytes } => self.check_sent(to, &bytes),
            Output::Close { conn } => {
                self.modes.remove(&conn);
            }
            Output::Log(event) => {
                let _ = event.line(|conn| format!("connection {}", conn.0));
            }
            Output::Append(append) => {
                if self.store_ok {
                    self.engine.remember(&append.record);
                    for then in append.then {
                        self.carry_out(then);
                    }
                } else {
                    self.engine.store_failed(append.sender);
                }
            }
        }
    }

    fn check_sent(&self, to: ConnId, bytes: &Bytes) {
        let mode = *self.modes.get(&to).expect("sent only to open connections");
        match mode {
            Mode::Framed => {
                let lines = bytes.strip_suffix(b"\n").expect("a framed message ends in \\n");
                lines.split(|&b| b == b'\n').for_each(assert_reply);
            }
            Mode::Legacy => assert_reply(bytes),
        }
    }
}

fn assert_reply(message: &[u8]) {
    assert!(parse_reply(message).is_ok(), "a reply that does not parse: {:?}", String::from_utf8_lossy(message));
}

fuzz_target!(|data: &[u8]| {
    let Some((&setup, stream)) = data.split_first() else { return };
    let piece = usize::from(setup % 32) + 2;
    let mut engine = Engine::new();
    engine.set_durable_history(setup & 0x20 != 0);
    let mut run = Run { engine, modes: HashMap::new(), next_id: 0, store_ok: true };
    let mode_of = |i: usize| if i == 2 || (i == 3 && setup & 0x40 != 0) { Mode::Legacy } else { Mode::Framed };
    let mut conns: Vec<Conn> = (0..CONNS).map(|i| run.open(mode_of(i))).collect();
    for (now, chunk) in (1u64..).zip(stream.chunks(piece)) {
        // The first byte says whose bytes the rest are, and what else happens.
        let (&control, bytes) = chunk.split_first().expect("chunks are not empty");
        let i = usize::from(control) % CONNS;
        run.store_ok = control & 0x40 == 0;
        if control >= 0xF0 || !run.modes.contains_key(&conns[i].id) {
            // The connection closes (or was closed by the engine): a new one takes its place.
            run.engine.close(conns[i].id, Leave::Closed);
            run.modes.remove(&conns[i].id);
            run.drain();
            conns[i] = run.open(mode_of(i));
            continue;
        }
        let conn = &mut conns[i];
        let id = conn.id;
        match conn.mode {
            Mode::Legacy => {
                let frame = if bytes.len() > max_message() {
                    Frame::TooLong
                } else {
                    Frame::Line(Bytes::copy_from_slice(bytes))
                };
                run.handle(id, &frame, now);
            }
            Mode::Framed => {
                conn.buf.extend_from_slice(bytes);
                let mut frames = Vec::new();
                while let Ok(Some(frame)) = conn.codec.decode(&mut conn.buf) {
                    frames.push(frame);
                }
                for frame in frames {
                    if !run.modes.contains_key(&id) {
                        break;
                    }
                    run.handle(id, &frame, now);
                }
            }
        }
    }
});
