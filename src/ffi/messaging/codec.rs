//! C ABI of the field codec: feed bytes, take fields, encode a field.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::ffi::cartero_result::{self, *};
use crate::ffi::{arg_mut, boxed, bytes_arg, cartero_bytes, free, give_bytes, guard, out};
use crate::messaging::codec::{Codec, CodecError};

/// Bytes a field decoder holds at most before the caller must take fields.
const MAX_BUFFERED: usize = 1 << 20;

/// Splits a byte stream into NUL-terminated fields.
pub struct cartero_field_decoder {
    codec: Codec,
    buf: BytesMut,
    failed: bool,
}

fn codec_error(e: &CodecError) -> cartero_result {
    match e {
        CodecError::FieldTooLong { .. } | CodecError::TooLongToEncode { .. } => CARTERO_FIELD_TOO_LONG,
        CodecError::ContainsNul { .. } => CARTERO_FIELD_CONTAINS_NUL,
        CodecError::Truncated { .. } => CARTERO_NEED_MORE,
        CodecError::Io(_) => CARTERO_IO_ERROR,
    }
}

/// A decoder of fields of at most `max_len` bytes (255 for this protocol).
#[no_mangle]
pub extern "C" fn cartero_field_decoder_new(
    max_len: usize,
    decoder_out: *mut *mut cartero_field_decoder,
) -> cartero_result {
    guard(|| {
        let o = out(decoder_out)?;
        *o = boxed(cartero_field_decoder { codec: Codec::new(max_len), buf: BytesMut::new(), failed: false });
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cartero_field_decoder_free(decoder: *mut cartero_field_decoder) {
    free(decoder)
}

/// Appends `len` bytes of the stream. `CARTERO_BUFFER_FULL` (nothing appended) if more than
/// 1 MiB would wait: take fields first.
#[no_mangle]
pub extern "C" fn cartero_field_decoder_feed(
    decoder: *mut cartero_field_decoder,
    bytes: *const u8,
    len: usize,
) -> cartero_result {
    guard(|| {
        let d = arg_mut(decoder)?;
        let bytes = bytes_arg(bytes, len)?;
        if d.buf.len() + bytes.len() > MAX_BUFFERED {
            return Err(CARTERO_BUFFER_FULL);
        }
        d.buf.extend_from_slice(bytes);
        Ok(())
    })
}

/// Takes the next whole field (without its NUL): `CARTERO_OK` with `*field_out` set,
/// `CARTERO_NEED_MORE` if no whole field has arrived, or `CARTERO_FIELD_TOO_LONG`, after
/// which the stream cannot be resynchronized and every call fails the same way.
#[no_mangle]
pub extern "C" fn cartero_field_decoder_next(
    decoder: *mut cartero_field_decoder,
    field_out: *mut *mut cartero_bytes,
) -> cartero_result {
    guard(|| {
        let d = arg_mut(decoder)?;
        let o = out(field_out)?;
        if d.failed {
            return Err(CARTERO_FIELD_TOO_LONG);
        }
        match d.codec.decode(&mut d.buf) {
            Ok(Some(field)) => {
                give_bytes(field.to_vec(), o);
                Ok(())
            }
            Ok(None) => Err(CARTERO_NEED_MORE),
            Err(e) => {
                d.failed = true;
                Err(codec_error(&e))
            }
        }
    })
}

/// Encodes one field (its bytes and the NUL), refusing a NUL inside or more than `max_len`
/// bytes.
#[no_mangle]
pub extern "C" fn cartero_field_encode(
    field: *const u8,
    len: usize,
    max_len: usize,
    bytes_out: *mut *mut cartero_bytes,
) -> cartero_result {
    guard(|| {
        let field = bytes_arg(field, len)?;
        let o = out(bytes_out)?;
        let mut codec = Codec::new(max_len);
        let mut dst = BytesMut::new();
        tokio_util::codec::Encoder::<&[u8]>::encode(&mut codec, field, &mut dst).map_err(|e| codec_error(&e))?;
        give_bytes(dst.to_vec(), o);
        Ok(())
    })
}
