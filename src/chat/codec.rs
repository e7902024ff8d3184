//! Bytes <-> lines: the framing of framed chat connections (SPEC-chat 1).
//!
//! Every message ends with `\n`; a `\r` right before it is dropped. [`LineCodec`] splits a
//! byte stream into [`Frame`]s, bounded by a maximum length chosen at construction.
//!
//! # Over-long lines
//! A line longer than the maximum gives one [`Frame::TooLong`] and is then discarded up to
//! and including its `\n`, however long it is, keeping at most `max + 1` bytes of it in
//! memory: the decoder says so as soon as it knows (when more than `max + 1` bytes have come
//! without a `\n`, or at the `\n`), and decoding goes on with the next line. This is not a
//! decoder error, so a `FramedRead` keeps going after it (SPEC-chat 4: the connection stays
//! open). The frames a stream gives do not depend on how it is split into reads.
//!
//! Bytes after the last `\n` when the stream ends are not a message and are dropped (but if
//! they were already too long, their [`Frame::TooLong`] was given).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::chat::wire::{Reply, Request};

/// One item of a framed stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A line, without its `\n` or `\r\n`.
    Line(Bytes),
    /// A line over the maximum, discarded.
    TooLong,
}

/// Why the codec failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The encoder was given a message that holds a `\n`.
    #[error("the message holds a line break")]
    LineBreak,
    /// The encoder was given a message over the maximum.
    #[error("message of {len} bytes is over the maximum of {max}")]
    TooLong { len: usize, max: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Decoder and encoder of `\n`-terminated lines of at most `max` bytes.
///
/// The decoder keeps a resume cursor, so bytes already scanned for `\n` are never scanned
/// again, and never scans past `max + 2` bytes of one line.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max: usize,
    /// Bytes at the front of the buffer known to hold no `\n`.
    scanned: usize,
    /// Inside an over-long line, already reported: drop bytes up to its `\n`.
    discarding: bool,
}

impl LineCodec {
    /// A codec for lines of at most `max` bytes, terminator excluded.
    pub fn new(max: usize) -> Self {
        LineCodec { max, scanned: 0, discarding: false }
    }

    /// The codec a server uses for clients' lines (SPEC-chat 1: 1024 bytes).
    pub fn for_requests() -> Self {
        LineCodec::new(crate::chat::wire::MAX_MESSAGE)
    }

    /// The codec a client uses for a server's lines: user lists may be long on framed
    /// connections, so up to 1 MiB.
    pub fn for_replies() -> Self {
        LineCodec::new(1 << 20)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Decoder for LineCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if self.discarding {
            match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    buf.advance(i + 1);
                    self.discarding = false;
                }
                None => {
                    buf.clear();
                    return Ok(None);
                }
            }
        }
        // A line of `max` bytes may be followed by `\r` and `\n`: scan no further than that.
        let window = buf.len().min(self.max + 2);
        match memchr::memchr(b'\n', &buf[self.scanned.min(window)..window]) {
            Some(i) => {
                let end = self.scanned + i;
                self.scanned = 0;
                let mut line = buf.split_to(end + 1);
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                if line.len() > self.max {
                    return Ok(Some(Frame::TooLong));
                }
                Ok(Some(Frame::Line(line.freeze())))
            }
            None if buf.len() > self.max + 1 => {
                // Too long whatever comes next: report it now and drop it as it comes.
                self.scanned = 0;
                self.discarding = true;
                match memchr::memchr(b'\n', &buf[window..]) {
                    Some(i) => {
                        buf.advance(window + i + 1);
                        self.discarding = false;
                    }
                    None => buf.clear(),
                }
                Ok(Some(Frame::TooLong))
            }
            None => {
                self.scanned = window;
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let frame = self.decode(buf)?;
        if frame.is_none() {
            // An unterminated tail is not a message.
            buf.clear();
            self.scanned = 0;
            self.discarding = false;
        }
        Ok(frame)
    }
}

impl LineCodec {
    fn encode_line(&self, write: impl FnOnce(&mut BytesMut), dst: &mut BytesMut) -> Result<(), CodecError> {
        let start = dst.len();
        write(dst);
        let len = dst.len() - start;
        if memchr::memchr(b'\n', &dst[start..]).is_some() {
            dst.truncate(start);
            return Err(CodecError::LineBreak);
        }
        if len > self.max {
            dst.truncate(start);
            return Err(CodecError::TooLong { len, max: self.max });
        }
        dst.put_u8(b'\n');
        Ok(())
    }
}

impl Encoder<&Request> for LineCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &Request, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_line(|out| item.write(out), dst)
    }
}

impl Encoder<&Reply> for LineCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &Reply, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_line(|out| item.write(out), dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(codec: &mut LineCodec, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                out.push(frame);
            }
            assert!(buf.len() <= codec.max() + 2 + chunk.len(), "memory bounded");
        }
        while let Some(frame) = codec.decode_eof(&mut buf).unwrap() {
            out.push(frame);
        }
        out
    }

    fn line(text: &[u8]) -> Frame {
        Frame::Line(Bytes::copy_from_slice(text))
    }

    #[test]
    fn lines_crlf_and_tail() {
        let frames = decode_all(&mut LineCodec::new(8), &[b"ab\ncd\r\n\n\r\nx\ry\nrest"]);
        assert_eq!(frames, vec![line(b"ab"), line(b"cd"), line(b""), line(b""), line(b"x\ry")]);
    }

    #[test]
    fn exactly_at_the_maximum_and_one_past() {
        let mut codec = LineCodec::new(4);
        assert_eq!(decode_all(&mut codec, &[b"abcd\n"]), vec![line(b"abcd")]);
        assert_eq!(decode_all(&mut codec, &[b"abcd\r\n"]), vec![line(b"abcd")]);
        assert_eq!(decode_all(&mut codec, &[b"abcde\nok\n"]), vec![Frame::TooLong, line(b"ok")]);
        assert_eq!(decode_all(&mut codec, &[b"abcde\r\nok\n"]), vec![Frame::TooLong, line(b"ok")]);
        assert_eq!(decode_all(&mut codec, &[b"abcd\r", b"\n"]), vec![line(b"abcd")]);
    }

    #[test]
    fn a_megabyte_without_newline_is_one_too_long_in_bounded_memory() {
        let mut codec = LineCodec::new(1024);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for _ in 0..256 {
            buf.extend_from_slice(&[b'x'; 4096]);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
            assert!(buf.len() <= 1026);
        }
        buf.extend_from_slice(b"x\nBROADCAST|hi\n");
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        assert_eq!(frames, vec![Frame::TooLong, line(b"BROADCAST|hi")]);
    }

    #[test]
    fn encoder_refuses_line_breaks_and_over_long() {
        let mut codec = LineCodec::new(20);
        let mut dst = BytesMut::new();
        codec.encode(&Request::Broadcast("hola".into()), &mut dst).unwrap();
        assert_eq!(&dst[..], b"BROADCAST|hola\n");
        assert!(matches!(codec.encode(&Request::Broadcast("a\nb".into()), &mut dst), Err(CodecError::LineBreak)));
        assert!(matches!(
            codec.encode(&Request::Broadcast("x".repeat(11)), &mut dst),
            Err(CodecError::TooLong { len: 21, max: 20 })
        ));
        assert_eq!(&dst[..], b"BROADCAST|hola\n");
    }

    fn stream() -> impl Strategy<Value = Vec<u8>> {
        // Short lines, long lines, CR, LF and other bytes, mixed.
        proptest::collection::vec(
            prop_oneof![
                3 => Just(b'\n'),
                1 => Just(b'\r'),
                10 => any::<u8>(),
                2 => proptest::collection::vec(Just(b'a'), 0..40).prop_map(|v| v.len() as u8),
            ],
            0..300,
        )
    }

    /// What the frames must be, computed the obvious way on the whole stream.
    fn model(bytes: &[u8], max: usize) -> Vec<Frame> {
        let mut out = Vec::new();
        let mut parts: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        let tail = parts.pop().unwrap_or_default();
        for part in parts {
            let part = part.strip_suffix(b"\r").unwrap_or(part);
            out.push(if part.len() > max { Frame::TooLong } else { line(part) });
        }
        // An unterminated tail is no message, but one too long whatever follows is reported.
        if tail.len() > max + 1 {
            out.push(Frame::TooLong);
        }
        out
    }

    proptest! {
        #[test]
        fn any_split_decodes_like_the_model(bytes in stream(), cuts in proptest::collection::vec(any::<usize>(), 0..20), max in 0usize..30) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for cut in cuts {
                chunks.push(&bytes[at..cut]);
                at = cut;
            }
            chunks.push(&bytes[at..]);
            let whole = decode_all(&mut LineCodec::new(max), &[&bytes]);
            let split = decode_all(&mut LineCodec::new(max), &chunks);
            prop_assert_eq!(&whole, &model(&bytes, max));
            prop_assert_eq!(split, whole);
        }

        #[test]
        fn byte_by_byte_decodes_like_the_model(bytes in stream(), max in 0usize..30) {
            let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(decode_all(&mut LineCodec::new(max), &chunks), model(&bytes, max));
        }
    }
}
