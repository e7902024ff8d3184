//! Bytes <-> fields: the protocol's NUL-terminated byte strings.
//!
//! Every field on the wire, in both directions, is a byte string ended by one NUL byte
//! (SPEC 1). [`Codec`] splits a byte stream into those fields and writes them back.
//!
//! # Over-long fields
//! The maximum field length is chosen at construction; there is no unbounded default. When
//! `max_len` bytes have arrived without a NUL, [`Codec::decode`] returns
//! [`CodecError::FieldTooLong`] at once, without waiting for (or buffering) the rest of the
//! field. The error is final for the stream: the codec does not know where the next field
//! starts, and tokio's `FramedRead` ends the stream after any decoder error anyway. The
//! protocol answers such a request with its "any other error" code and closes the
//! connection (SPEC 4), so no resynchronisation is attempted.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The longest field the protocol allows, NUL excluded (SPEC 1: 255 bytes).
pub const MAX_FIELD_LEN: usize = 255;

/// Why a field could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// `max_len` bytes arrived and none of them was the terminating NUL.
    #[error("field longer than {max_len} bytes")]
    FieldTooLong { max_len: usize },
    /// The stream ended in the middle of a field (`len` bytes without their NUL).
    #[error("stream ended inside a field ({len} bytes without a terminating NUL)")]
    Truncated { len: usize },
    /// The encoder was given a field that contains a NUL byte.
    #[error("field contains a NUL byte at offset {offset}")]
    ContainsNul { offset: usize },
    /// The encoder was given a field over the maximum length.
    #[error("field of {len} bytes is over the maximum of {max_len}")]
    TooLongToEncode { len: usize, max_len: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Decoder and encoder of NUL-terminated fields, bounded by a maximum length.
///
/// The decoder keeps a resume cursor: bytes it has already scanned for a NUL are never
/// scanned again, so feeding a field one byte at a time costs linear time in total.
#[derive(Debug, Clone)]
pub struct Codec {
    max_len: usize,
    /// How many bytes at the front of the buffer are known to hold no NUL.
    scanned: usize,
}

impl Codec {
    /// A codec for fields of at most `max_len` bytes (NUL excluded).
    pub fn new(max_len: usize) -> Self {
        Codec { max_len, scanned: 0 }
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Bytes of an unfinished field already seen by the decoder.
    pub fn partial_len(&self) -> usize {
        self.scanned
    }

    /// Checks `field` as the encoder would, without writing it.
    pub fn check(&self, field: &[u8]) -> Result<(), CodecError> {
        if field.len() > self.max_len {
            return Err(CodecError::TooLongToEncode { len: field.len(), max_len: self.max_len });
        }
        match memchr::memchr(0, field) {
            Some(offset) => Err(CodecError::ContainsNul { offset }),
            None => Ok(()),
        }
    }
}

impl Decoder for Codec {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        // A field of max_len bytes has its NUL at index max_len at the latest.
        let limit = buf.len().min(self.max_len + 1);
        if let Some(pos) = memchr::memchr(0, &buf[self.scanned..limit]) {
            let end = self.scanned + pos;
            self.scanned = 0;
            let field = buf.split_to(end).freeze();
            buf.advance(1); // the NUL
            return Ok(Some(field));
        }
        if limit > self.max_len {
            return Err(CodecError::FieldTooLong { max_len: self.max_len });
        }
        self.scanned = limit;
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        match self.decode(buf)? {
            Some(field) => Ok(Some(field)),
            None if buf.is_empty() => Ok(None),
            None => Err(CodecError::Truncated { len: buf.len() }),
        }
    }
}

impl Encoder<&[u8]> for Codec {
    type Error = CodecError;

    fn encode(&mut self, field: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        self.check(field)?;
        dst.reserve(field.len() + 1);
        dst.put_slice(field);
        dst.put_u8(0);
        Ok(())
    }
}

impl Encoder<Bytes> for Codec {
    type Error = CodecError;

    fn encode(&mut self, field: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        Encoder::<&[u8]>::encode(self, &field, dst)
    }
}

/// Appends `field` and its NUL to `dst` without checks: for fields the caller built itself
/// (numbers, operation names) or already validated.
pub(crate) fn put_field(dst: &mut BytesMut, field: &[u8]) {
    dst.reserve(field.len() + 1);
    dst.put_slice(field);
    dst.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut Codec, bytes: &[u8]) -> Result<Vec<Bytes>, CodecError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = codec.decode_eof(&mut buf)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn splits_fields_and_keeps_every_byte_but_nul() {
        let mut c = Codec::new(255);
        let got = decode_all(&mut c, b"SEND\0a\nb\t\xff\0\0").unwrap();
        assert_eq!(got, vec![Bytes::from_static(b"SEND"), Bytes::from_static(b"a\nb\t\xff"), Bytes::new()]);
    }

    #[test]
    fn field_exactly_at_the_maximum_is_accepted_and_one_past_is_not() {
        let mut ok = vec![b'x'; 255];
        ok.push(0);
        assert_eq!(decode_all(&mut Codec::new(255), &ok).unwrap()[0].len(), 255);

        let mut long = vec![b'x'; 256];
        long.push(0);
        let err = decode_all(&mut Codec::new(255), &long).unwrap_err();
        assert!(matches!(err, CodecError::FieldTooLong { max_len: 255 }));
    }

    #[test]
    fn over_long_field_fails_before_its_end_arrives() {
        let mut c = Codec::new(4);
        let mut buf = BytesMut::from(&b"abcd"[..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"e");
        assert!(matches!(c.decode(&mut buf), Err(CodecError::FieldTooLong { max_len: 4 })));
    }

    #[test]
    fn resumes_without_rescanning() {
        let mut c = Codec::new(255);
        let mut buf = BytesMut::new();
        for &b in b"hello" {
            buf.extend_from_slice(&[b]);
            assert!(c.decode(&mut buf).unwrap().is_none());
        }
        assert_eq!(c.partial_len(), 5);
        buf.extend_from_slice(b"\0");
        assert_eq!(c.decode(&mut buf).unwrap().unwrap(), "hello");
        assert_eq!(c.partial_len(), 0);
    }

    #[test]
    fn truncated_stream_is_an_error_at_eof() {
        let err = decode_all(&mut Codec::new(255), b"REGISTER\0ali").unwrap_err();
        assert!(matches!(err, CodecError::Truncated { len: 3 }));
    }

    #[test]
    fn encoder_refuses_nul_and_over_long_fields() {
        let mut c = Codec::new(3);
        let mut dst = BytesMut::new();
        assert!(matches!(c.encode(&b"a\0b"[..], &mut dst), Err(CodecError::ContainsNul { offset: 1 })));
        assert!(matches!(c.encode(&b"abcd"[..], &mut dst), Err(CodecError::TooLongToEncode { len: 4, max_len: 3 })));
        assert!(dst.is_empty(), "nothing is written on error");
        c.encode(&b"abc"[..], &mut dst).unwrap();
        assert_eq!(&dst[..], b"abc\0");
    }
}
