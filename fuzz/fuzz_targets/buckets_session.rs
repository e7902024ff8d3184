//! Fuzzes the bucket server's sans-IO session: arbitrary bytes, in arbitrary pieces, through
//! `Session::handle`, acting on each event as the server does (an upload accepted or refused
//! after its line, a rejection's discard or close). Nothing may panic; every call makes
//! progress; a parsed request encodes back to a line that parses to it; every refusal is
//! one line that a client of the request reads as a failure.
#![no_main]

use cartero::buckets::wire::{parse_reply_head, parse_request, After, Event, ReplyHead, Session};
use cartero::buckets::{Command, Request};
use libfuzzer_sys::fuzz_target;

const MAX_FILE_SIZE: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&setup, stream)) = data.split_first() else { return };
    let piece = usize::from(setup % 64) + 1;
    let mut session = Session::new(MAX_FILE_SIZE);
    for (n, chunk) in stream.chunks(piece).enumerate() {
        let mut input = chunk;
        // Every event but the end of a zero-byte upload or discard takes at least one byte.
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds <= 2 * chunk.len() + 4, "the session makes no progress");
            let (taken, event) = session.handle(input);
            assert!(taken <= input.len());
            input = &input[taken..];
            match event {
                Event::NeedMore | Event::Closed => break,
                Event::Request(request) => {
                    if let Some(line) = Request::encode(request.vocabulary, &request.command) {
                        let again = parse_request(line.trim_end_matches('\n').as_bytes(), MAX_FILE_SIZE);
                        assert_eq!(again.as_ref(), Ok(&request), "{line:?}");
                    }
                    if let Command::Upload { size, .. } = request.command {
                        // The server refuses some uploads after their line (no such bucket).
                        if (setup ^ n as u8) & 0x80 == 0 {
                            session.receive(size);
                        } else {
                            session.discard(size);
                        }
                    }
                }
                Event::Rejected(rejection) => {
                    let mut reply = Vec::new();
                    rejection.reply().encode(&mut reply);
                    let line = reply.strip_suffix(b"\n").expect("a reply ends in \\n");
                    assert!(!line.contains(&b'\n'), "a refusal is one line: {reply:?}");
                    // A client of the request reads the refusal as a failure.
                    if let Some(op) = rejection.op {
                        let head =
                            parse_reply_head(rejection.vocabulary, op, std::str::from_utf8(line).expect("UTF-8"));
                        assert!(matches!(head, Ok(ReplyHead::Failed(_))), "{head:?} for {:?}", rejection.reason);
                    }
                    if rejection.after == After::Close {
                        assert_eq!(session.handle(b"x").1, Event::Closed);
                    }
                }
                Event::Data { .. } | Event::Discarded | Event::LineTooLong => {}
            }
        }
    }
});
