//! The C ABI (`include/cartero.h`, generated from this module by cbindgen): today the C face
//! of messaging (`src/ffi/messaging/`: its codec, engine and client), on the rules and types below,
//! which any later protocol's C face shares.
//!
//! Rules every function follows:
//! - Names are `cartero_<object>_<verb>`; objects are opaque, made by `_new` and released by
//!   `_free`, and `_free(NULL)` does nothing.
//! - Every function that can fail returns a [`cartero_result`]; `cartero_result_message`
//!   turns one into text. A NULL where a pointer is required gives
//!   `CARTERO_NULL_ARGUMENT`; a Rust panic is caught and gives `CARTERO_PANIC`, never an
//!   abort of the host program.
//! - Outputs come last and are written only when the function returns `CARTERO_OK`.
//! - Byte buffers always travel with their lengths; results the library makes are owned
//!   objects (`cartero_bytes`, `cartero_delivery`, `cartero_push`) the caller frees.
//! - Objects are not synchronized: use one from one thread at a time (a mutex around an
//!   engine is enough); different objects may be used from different threads.

#![allow(non_camel_case_types)]
// Every exported function checks its pointers before using them; the safety contract is
// the one of the header's documentation.
#![allow(clippy::missing_safety_doc)]

mod messaging;

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Every outcome of a cartero C function. The numbers are stable and never reused.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum cartero_result {
    CARTERO_OK = 0,
    /// Nothing more to take (no delivery, no event, no timeout): not an error.
    CARTERO_DONE = 1,
    CARTERO_NULL_ARGUMENT = 2,
    CARTERO_PANIC = 3,
    CARTERO_INVALID_ARGUMENT = 4,
    CARTERO_FIELD_TOO_LONG = 5,
    CARTERO_FIELD_CONTAINS_NUL = 6,
    /// More bytes are needed before anything can be taken.
    CARTERO_NEED_MORE = 7,
    /// The bytes are not a valid request; answer with `cartero_request_decoder_error_reply`.
    CARTERO_BAD_REQUEST = 8,
    /// No request is ready in the decoder.
    CARTERO_NO_REQUEST = 9,
    /// The delivery is not in flight (it ended already, or timed out).
    CARTERO_UNKNOWN_DELIVERY = 10,
    CARTERO_CONNECT_FAILED = 11,
    CARTERO_TIMEOUT = 12,
    CARTERO_IO_ERROR = 13,
    /// A peer's reply or push is not valid protocol.
    CARTERO_PROTOCOL_ERROR = 14,
    /// The listener is closed.
    CARTERO_CLOSED = 15,
    /// An internal buffer would grow past its bound: take what is there first.
    CARTERO_BUFFER_FULL = 16,
    /// GETFILE: the other user's listener does not offer that file (SPEC 8).
    CARTERO_REFUSED = 17,
    /// GETFILE: the transfer ended before the whole file arrived; nothing was kept.
    CARTERO_TRUNCATED = 18,
    /// GETFILE: the local file cannot be written.
    CARTERO_LOCAL_FILE = 19,
}

use cartero_result::*;

/// The longest field the protocol allows, NUL excluded: 255 bytes.
pub const CARTERO_MAX_FIELD_LEN: usize = 255;

/// Major, minor and patch version of this library; `cartero_version()` says the same.
pub const CARTERO_VERSION_MAJOR: u32 = 0;
pub const CARTERO_VERSION_MINOR: u32 = 1;
pub const CARTERO_VERSION_PATCH: u32 = 0;

/// The library's version as text, e.g. "0.1.0". The string is static.
#[no_mangle]
pub extern "C" fn cartero_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// A static, human-readable text for a result code (also for unknown numbers).
#[no_mangle]
pub extern "C" fn cartero_result_message(result: u32) -> *const c_char {
    let text: &'static str = match result {
        0 => "ok\0",
        1 => "nothing more to take\0",
        2 => "a required pointer argument is NULL\0",
        3 => "internal error (a panic was caught)\0",
        4 => "an argument is not valid\0",
        5 => "a field is longer than 255 bytes\0",
        6 => "a field contains a NUL byte\0",
        7 => "more bytes are needed\0",
        8 => "the bytes are not a valid request\0",
        9 => "no request is ready\0",
        10 => "the delivery is not in flight\0",
        11 => "cannot connect to the server\0",
        12 => "timed out\0",
        13 => "input/output error\0",
        14 => "the peer does not speak the protocol\0",
        15 => "closed\0",
        16 => "internal buffer full: take what is there first\0",
        17 => "the other user's listener does not offer that file\0",
        18 => "the transfer was cut short; no file was kept\0",
        19 => "the local file cannot be written\0",
        _ => "unknown result code\0",
    };
    text.as_ptr().cast()
}

/// Runs `f`, turning a panic into `CARTERO_PANIC`.
fn guard(f: impl FnOnce() -> Result<(), cartero_result>) -> cartero_result {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CARTERO_OK,
        Ok(Err(code)) => code,
        Err(_) => CARTERO_PANIC,
    }
}

fn arg<'a, T>(p: *const T) -> Result<&'a T, cartero_result> {
    // SAFETY: the caller passes NULL or a valid pointer, as the header documents.
    unsafe { p.as_ref() }.ok_or(CARTERO_NULL_ARGUMENT)
}

fn arg_mut<'a, T>(p: *mut T) -> Result<&'a mut T, cartero_result> {
    // SAFETY: as for `arg`, and not aliased during the call.
    unsafe { p.as_mut() }.ok_or(CARTERO_NULL_ARGUMENT)
}

/// A NUL-terminated C string's bytes.
fn cstr<'a>(p: *const c_char) -> Result<&'a [u8], cartero_result> {
    if p.is_null() {
        return Err(CARTERO_NULL_ARGUMENT);
    }
    // SAFETY: non-NULL, and the caller passes a NUL-terminated string.
    Ok(unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// An optional C string: NULL means none.
fn opt_cstr<'a>(p: *const c_char) -> Option<&'a [u8]> {
    cstr(p).ok()
}

/// `len` bytes at `p`; NULL is accepted when `len` is 0.
fn bytes_arg<'a>(p: *const u8, len: usize) -> Result<&'a [u8], cartero_result> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(CARTERO_NULL_ARGUMENT);
    }
    // SAFETY: non-NULL, and the caller passes `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Checks an output pointer, so nothing happens when it is NULL.
fn out<'a, T>(p: *mut T) -> Result<&'a mut T, cartero_result> {
    arg_mut(p)
}

/// Hands a Rust value to C as an owned pointer.
fn boxed<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Takes back an owned pointer made by `boxed`, if not NULL, and drops it.
fn free<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: `p` came from `boxed` and is freed once, as the header documents.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// An owned byte buffer made by the library: a reply, a push's bytes, a console line, a field.
pub struct cartero_bytes {
    data: Vec<u8>,
}

/// The buffer's bytes (NULL for a NULL buffer). Valid until `cartero_bytes_free`.
#[no_mangle]
pub extern "C" fn cartero_bytes_data(bytes: *const cartero_bytes) -> *const u8 {
    arg(bytes).map_or(std::ptr::null(), |b| b.data.as_ptr())
}

/// The buffer's length in bytes (0 for a NULL buffer).
#[no_mangle]
pub extern "C" fn cartero_bytes_len(bytes: *const cartero_bytes) -> usize {
    arg(bytes).map_or(0, |b| b.data.len())
}

#[no_mangle]
pub extern "C" fn cartero_bytes_free(bytes: *mut cartero_bytes) {
    free(bytes)
}

fn give_bytes(data: Vec<u8>, out_ptr: &mut *mut cartero_bytes) {
    *out_ptr = boxed(cartero_bytes { data });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_limit_is_the_protocols() {
        assert_eq!(CARTERO_MAX_FIELD_LEN, crate::MAX_FIELD_LEN);
    }

    #[test]
    fn version_defines_match_the_package() {
        assert_eq!(CARTERO_VERSION_MAJOR.to_string(), env!("CARGO_PKG_VERSION_MAJOR"));
        assert_eq!(CARTERO_VERSION_MINOR.to_string(), env!("CARGO_PKG_VERSION_MINOR"));
        assert_eq!(CARTERO_VERSION_PATCH.to_string(), env!("CARGO_PKG_VERSION_PATCH"));
        let v = unsafe { CStr::from_ptr(cartero_version()) }.to_str().unwrap();
        assert_eq!(v, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn every_result_has_its_own_message() {
        let messages: std::collections::HashSet<_> =
            (0..=16).map(|r| unsafe { CStr::from_ptr(cartero_result_message(r)) }.to_str().unwrap()).collect();
        assert_eq!(messages.len(), 17);
        let unknown = unsafe { CStr::from_ptr(cartero_result_message(999)) }.to_str().unwrap();
        assert_eq!(unknown, "unknown result code");
    }

    #[test]
    fn a_panic_becomes_a_result_code() {
        assert_eq!(guard(|| panic!("boom")), CARTERO_PANIC);
        assert_eq!(guard(|| Err(CARTERO_TIMEOUT)), CARTERO_TIMEOUT);
    }
}
