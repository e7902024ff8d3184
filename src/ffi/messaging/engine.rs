//! C ABI of the sans-IO server: a request decoder per connection, and the engine.
//!
//! A C server reads a connection's bytes into `cartero_request_decoder_feed` until it says
//! `CARTERO_OK`, hands the request to `cartero_engine_handle_request`, writes the reply,
//! then releases the request's hold and drains `cartero_engine_poll_delivery`, making one
//! connection per delivery and reporting each with `cartero_engine_delivery_result`.

use std::ffi::{c_char, CString};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::ffi::cartero_result::{self, *};
use crate::ffi::{arg, arg_mut, boxed, cartero_bytes, cstr, free, give_bytes, guard, out};
use crate::messaging::engine::{Delivery, DeliveryId, DeliveryOutcome, Engine, EngineConfig, EngineError, Hold};
use crate::messaging::wire::{CodeEncoding, PushNames, Reply, Request, RequestDecoder, WireSettings};

/// Settings of an engine; `cartero_engine_config_default` fills in the defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cartero_engine_config {
    /// 0: result codes as an ASCII digit and NUL ("0\0"); 1: one raw byte.
    pub raw_codes: bool,
    /// 0: pushes named "SEND MESSAGE"/"SEND MESS ACK"; 1: "SEND_MESSAGE"/"SEND_MESS_ACK".
    pub underscored_push_names: bool,
    /// How long one delivery may take, connect to close, in milliseconds.
    pub delivery_timeout_ms: u32,
    pub max_users: u64,
    pub max_pending_per_user: u64,
    pub max_pending_total: u64,
}

/// Fills `*config_out` with the defaults (ASCII codes, spaced names, 2 s, and the limits of
/// `cartero serve`).
#[no_mangle]
pub extern "C" fn cartero_engine_config_default(config_out: *mut cartero_engine_config) -> cartero_result {
    guard(|| {
        let o = out(config_out)?;
        let d = EngineConfig::default();
        *o = cartero_engine_config {
            raw_codes: false,
            underscored_push_names: false,
            delivery_timeout_ms: d.delivery_timeout.as_millis() as u32,
            max_users: d.max_users as u64,
            max_pending_per_user: d.max_pending_per_user as u64,
            max_pending_total: d.max_pending_total as u64,
        };
        Ok(())
    })
}

/// Decodes one request from a connection's bytes.
pub struct cartero_request_decoder {
    decoder: RequestDecoder,
    buf: BytesMut,
    ready: Option<Request>,
    failed: bool,
    saw_bytes: bool,
}

#[no_mangle]
pub extern "C" fn cartero_request_decoder_new(decoder_out: *mut *mut cartero_request_decoder) -> cartero_result {
    guard(|| {
        let o = out(decoder_out)?;
        *o = boxed(cartero_request_decoder {
            decoder: RequestDecoder::new(),
            buf: BytesMut::new(),
            ready: None,
            failed: false,
            saw_bytes: false,
        });
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cartero_request_decoder_free(decoder: *mut cartero_request_decoder) {
    free(decoder)
}

impl cartero_request_decoder {
    fn step(&mut self, eof: bool) -> Result<(), cartero_result> {
        if self.ready.is_some() {
            return Ok(());
        }
        if self.failed {
            return Err(CARTERO_BAD_REQUEST);
        }
        let result = if eof { self.decoder.decode_eof(&mut self.buf) } else { self.decoder.decode(&mut self.buf) };
        match result {
            Ok(Some(request)) => {
                self.ready = Some(request);
                Ok(())
            }
            Ok(None) if eof && !self.saw_bytes => Err(CARTERO_DONE),
            Ok(None) => Err(CARTERO_NEED_MORE),
            Err(_) => {
                self.failed = true;
                Err(CARTERO_BAD_REQUEST)
            }
        }
    }
}

/// Feeds bytes read from the connection. `CARTERO_OK`: a request is ready (bytes after it
/// are ignored). `CARTERO_NEED_MORE`: read more, waiting at most the grace period if
/// `cartero_request_decoder_has_short_form` says so. `CARTERO_BAD_REQUEST`: answer with
/// `cartero_request_decoder_error_reply` and close.
#[no_mangle]
pub extern "C" fn cartero_request_decoder_feed(
    decoder: *mut cartero_request_decoder,
    bytes: *const u8,
    len: usize,
) -> cartero_result {
    guard(|| {
        let d = arg_mut(decoder)?;
        let bytes = crate::ffi::bytes_arg(bytes, len)?;
        if d.ready.is_none() && !d.failed {
            d.saw_bytes |= !bytes.is_empty();
            d.buf.extend_from_slice(bytes);
        }
        d.step(false)
    })
}

/// Whether what arrived is a complete short-form request (CONNECTEDUSERS without alias, or
/// a one-field REGISTER): then wait only the grace period for more, and call
/// `cartero_request_decoder_finish` when it passes.
#[no_mangle]
pub extern "C" fn cartero_request_decoder_has_short_form(decoder: *const cartero_request_decoder) -> bool {
    arg(decoder).is_ok_and(|d| d.ready.is_none() && !d.failed && d.decoder.has_short_form())
}

/// Ends the request: at the end of the connection's stream (`eof`) or when the grace period
/// passed. `CARTERO_OK`: a request is ready. `CARTERO_DONE`: the client sent nothing; close
/// without answering. `CARTERO_NEED_MORE`: not at eof and no short form yet.
/// `CARTERO_BAD_REQUEST`: answer with the error reply.
#[no_mangle]
pub extern "C" fn cartero_request_decoder_finish(decoder: *mut cartero_request_decoder, eof: bool) -> cartero_result {
    guard(|| {
        let d = arg_mut(decoder)?;
        if eof {
            return d.step(true);
        }
        if d.ready.is_none() && !d.failed {
            d.ready = d.decoder.short_form();
        }
        d.step(false)
    })
}

/// The answer to a bad or unfinished request: the operation's "any other error" code when
/// the operation is known, else an empty buffer (send nothing, just close).
#[no_mangle]
pub extern "C" fn cartero_request_decoder_error_reply(
    decoder: *const cartero_request_decoder,
    raw_codes: bool,
    reply_out: *mut *mut cartero_bytes,
) -> cartero_result {
    guard(|| {
        let d = arg(decoder)?;
        let o = out(reply_out)?;
        let mut bytes = BytesMut::new();
        if let Some(op) = d.decoder.operation() {
            Reply::failure(op).encode(if raw_codes { CodeEncoding::Raw } else { CodeEncoding::Ascii }, &mut bytes);
        }
        give_bytes(bytes.to_vec(), o);
        Ok(())
    })
}

/// The message-delivery server's state and rules, without I/O.
pub struct cartero_engine {
    engine: Engine,
    wire: WireSettings,
    /// The instant that the caller's `now_ms` 0 stands for.
    epoch: Instant,
    holds: std::collections::HashMap<u64, Hold>,
    next_hold: u64,
}

impl cartero_engine {
    fn at(&self, now_ms: u64) -> Result<Instant, cartero_result> {
        self.epoch.checked_add(Duration::from_millis(now_ms)).ok_or(CARTERO_INVALID_ARGUMENT)
    }

    fn ms(&self, instant: Instant) -> u64 {
        instant.saturating_duration_since(self.epoch).as_millis() as u64
    }
}

/// A new engine. `config` may be NULL for the defaults. `now_ms` arguments of the other
/// functions are milliseconds of one monotonic clock of the caller (e.g. CLOCK_MONOTONIC),
/// any origin.
#[no_mangle]
pub extern "C" fn cartero_engine_new(
    config: *const cartero_engine_config,
    engine_out: *mut *mut cartero_engine,
) -> cartero_result {
    guard(|| {
        let o = out(engine_out)?;
        let mut c = cartero_engine_config {
            raw_codes: false,
            underscored_push_names: false,
            delivery_timeout_ms: 0,
            max_users: 0,
            max_pending_per_user: 0,
            max_pending_total: 0,
        };
        if config.is_null() {
            let r = cartero_engine_config_default(&mut c);
            if r != CARTERO_OK {
                return Err(r);
            }
        } else {
            c = *arg(config)?;
        }
        let size = |n: u64| usize::try_from(n).map_err(|_| CARTERO_INVALID_ARGUMENT);
        let engine = Engine::new(EngineConfig {
            max_users: size(c.max_users)?,
            max_pending_per_user: size(c.max_pending_per_user)?,
            max_pending_total: size(c.max_pending_total)?,
            delivery_timeout: Duration::from_millis(u64::from(c.delivery_timeout_ms)),
            record_events: true,
            record_changes: false,
        });
        let wire = WireSettings {
            codes: if c.raw_codes { CodeEncoding::Raw } else { CodeEncoding::Ascii },
            push_names: if c.underscored_push_names { PushNames::Underscored } else { PushNames::Spaced },
        };
        *o = boxed(cartero_engine {
            engine,
            wire,
            epoch: Instant::now(),
            holds: std::collections::HashMap::new(),
            next_hold: 0,
        });
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cartero_engine_free(engine: *mut cartero_engine) {
    free(engine)
}

/// Answers the request ready in `decoder` (which is then empty), from a client at `peer_ip`
/// (text, IPv4 or IPv6). `*reply_out` gets the reply's bytes; `*hold_out` a hold to pass to
/// `cartero_engine_release` once the reply is written, so the pushes it causes follow it.
#[no_mangle]
pub extern "C" fn cartero_engine_handle_request(
    engine: *mut cartero_engine,
    decoder: *mut cartero_request_decoder,
    peer_ip: *const c_char,
    reply_out: *mut *mut cartero_bytes,
    hold_out: *mut u64,
) -> cartero_result {
    guard(|| {
        let e = arg_mut(engine)?;
        let d = arg_mut(decoder)?;
        let peer = std::str::from_utf8(cstr(peer_ip)?).map_err(|_| CARTERO_INVALID_ARGUMENT)?;
        let peer: IpAddr = peer.parse().map_err(|_| CARTERO_INVALID_ARGUMENT)?;
        let (reply_out, hold_out) = (out(reply_out)?, out(hold_out)?);
        let request = d.ready.take().ok_or(CARTERO_NO_REQUEST)?;
        let (reply, hold) = e.engine.handle_request_held(peer, &request);
        e.next_hold += 1;
        e.holds.insert(e.next_hold, hold);
        let mut bytes = BytesMut::new();
        reply.encode(e.wire.codes, &mut bytes);
        give_bytes(bytes.to_vec(), reply_out);
        *hold_out = e.next_hold;
        Ok(())
    })
}

/// Lets the pushes caused by a request go, once its reply is written (or failed).
#[no_mangle]
pub extern "C" fn cartero_engine_release(engine: *mut cartero_engine, hold: u64) -> cartero_result {
    guard(|| {
        let e = arg_mut(engine)?;
        let hold = e.holds.remove(&hold).ok_or(CARTERO_INVALID_ARGUMENT)?;
        e.engine.release(hold);
        Ok(())
    })
}

/// One push to make: connect to its address, write its bytes, shut down the sending side,
/// read until the listener closes, then report with `cartero_engine_delivery_result`.
pub struct cartero_delivery {
    id: u64,
    ip: CString,
    port: u16,
    bytes: Vec<u8>,
    deadline_ms: u64,
}

/// The next push to make: `CARTERO_OK` with `*delivery_out` set, or `CARTERO_DONE`.
#[no_mangle]
pub extern "C" fn cartero_engine_poll_delivery(
    engine: *mut cartero_engine,
    now_ms: u64,
    delivery_out: *mut *mut cartero_delivery,
) -> cartero_result {
    guard(|| {
        let e = arg_mut(engine)?;
        let o = out(delivery_out)?;
        let now = e.at(now_ms)?;
        loop {
            let Some(Delivery { id, addr, push, deadline, .. }) = e.engine.poll_delivery(now) else {
                return Err(CARTERO_DONE);
            };
            match push.to_bytes(e.wire.push_names) {
                Ok(bytes) => {
                    let ip = CString::new(addr.ip().to_string()).map_err(|_| CARTERO_PANIC)?;
                    *o = boxed(cartero_delivery {
                        id: id.0,
                        ip,
                        port: addr.port(),
                        bytes: bytes.to_vec(),
                        deadline_ms: e.ms(deadline),
                    });
                    return Ok(());
                }
                // Cannot happen for what the engine stores; fail it rather than hand it out.
                Err(_) => {
                    let _ = e.engine.handle_delivery_result(id, DeliveryOutcome::Failed);
                }
            }
        }
    })
}

#[no_mangle]
pub extern "C" fn cartero_delivery_id(delivery: *const cartero_delivery) -> u64 {
    arg(delivery).map_or(0, |d| d.id)
}

/// The listener's IP as text, NUL-terminated; valid until the delivery is freed.
#[no_mangle]
pub extern "C" fn cartero_delivery_ip(delivery: *const cartero_delivery) -> *const c_char {
    arg(delivery).map_or(std::ptr::null(), |d| d.ip.as_ptr())
}

#[no_mangle]
pub extern "C" fn cartero_delivery_port(delivery: *const cartero_delivery) -> u16 {
    arg(delivery).map_or(0, |d| d.port)
}

/// The bytes to write; valid until the delivery is freed.
#[no_mangle]
pub extern "C" fn cartero_delivery_data(delivery: *const cartero_delivery) -> *const u8 {
    arg(delivery).map_or(std::ptr::null(), |d| d.bytes.as_ptr())
}

#[no_mangle]
pub extern "C" fn cartero_delivery_len(delivery: *const cartero_delivery) -> usize {
    arg(delivery).map_or(0, |d| d.bytes.len())
}

/// When the delivery must be over, on the caller's `now_ms` clock.
#[no_mangle]
pub extern "C" fn cartero_delivery_deadline_ms(delivery: *const cartero_delivery) -> u64 {
    arg(delivery).map_or(0, |d| d.deadline_ms)
}

#[no_mangle]
pub extern "C" fn cartero_delivery_free(delivery: *mut cartero_delivery) {
    free(delivery)
}

/// Reports how delivery `id` ended: `delivered` true if the bytes were written and the
/// listener closed cleanly. `CARTERO_UNKNOWN_DELIVERY` if it had already timed out.
#[no_mangle]
pub extern "C" fn cartero_engine_delivery_result(
    engine: *mut cartero_engine,
    id: u64,
    delivered: bool,
) -> cartero_result {
    guard(|| {
        let e = arg_mut(engine)?;
        let outcome = if delivered { DeliveryOutcome::Delivered } else { DeliveryOutcome::Failed };
        e.engine.handle_delivery_result(DeliveryId(id), outcome).map_err(|err| match err {
            EngineError::UnknownDelivery(_) => CARTERO_UNKNOWN_DELIVERY,
            EngineError::InconsistentChange(_) => CARTERO_INVALID_ARGUMENT,
        })
    })
}

/// The earliest deadline of a delivery in flight (`CARTERO_DONE` if none is in flight):
/// call `cartero_engine_handle_timeout` then.
#[no_mangle]
pub extern "C" fn cartero_engine_poll_timeout(
    engine: *const cartero_engine,
    deadline_ms_out: *mut u64,
) -> cartero_result {
    guard(|| {
        let e = arg(engine)?;
        let o = out(deadline_ms_out)?;
        let deadline = e.engine.poll_timeout().ok_or(CARTERO_DONE)?;
        *o = e.ms(deadline);
        Ok(())
    })
}

/// Fails every delivery whose deadline is at or before `now_ms`; `*expired_out` (may be
/// NULL) gets how many.
#[no_mangle]
pub extern "C" fn cartero_engine_handle_timeout(
    engine: *mut cartero_engine,
    now_ms: u64,
    expired_out: *mut usize,
) -> cartero_result {
    guard(|| {
        let e = arg_mut(engine)?;
        let now = e.at(now_ms)?;
        let expired = e.engine.handle_timeout(now);
        if let Ok(o) = out(expired_out) {
            *o = expired;
        }
        Ok(())
    })
}

/// The next console line of SPEC 5 (with its "s> " prompt, without a newline):
/// `CARTERO_OK` with `*line_out` set, or `CARTERO_DONE`.
#[no_mangle]
pub extern "C" fn cartero_engine_poll_event(
    engine: *mut cartero_engine,
    line_out: *mut *mut cartero_bytes,
) -> cartero_result {
    guard(|| {
        let e = arg_mut(engine)?;
        let o = out(line_out)?;
        let event = e.engine.poll_event().ok_or(CARTERO_DONE)?;
        give_bytes(format!("s> {event}").into_bytes(), o);
        Ok(())
    })
}
