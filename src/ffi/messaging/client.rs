//! C ABI of the blocking client and listener. Each operation returns `CARTERO_OK` when the
//! server answered, with the server's result code in `*code_out` (0 is success; see SPEC 2
//! for the others), or the reason there was no answer.

use std::ffi::{c_char, CString};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::ffi::cartero_result::{self, *};
use crate::ffi::{arg, boxed, cartero_bytes, cstr, free, give_bytes, guard, opt_cstr, out};
use crate::messaging::client::blocking::{Client, Listener};
use crate::messaging::client::ClientError;
use crate::messaging::codec::CodecError;
use crate::messaging::files::{self, AnswerForm, GetFileError, Offers};
use crate::messaging::wire::{ConnectedUsersReply, Push, Reply, SendReply, UsersReply};

/// A blocking client of one server.
pub struct cartero_client {
    client: Client,
}

/// A client of the server at `host` (name or address) and `port`; each request may take
/// `timeout_ms` milliseconds (0: the default, 5 s).
#[no_mangle]
pub extern "C" fn cartero_client_new(
    host: *const c_char,
    port: u16,
    timeout_ms: u32,
    client_out: *mut *mut cartero_client,
) -> cartero_result {
    guard(|| {
        let host = std::str::from_utf8(cstr(host)?).map_err(|_| CARTERO_INVALID_ARGUMENT)?;
        let o = out(client_out)?;
        let mut client = Client::new(host, port);
        if timeout_ms > 0 {
            client = client.with_timeout(Duration::from_millis(u64::from(timeout_ms)));
        }
        *o = boxed(cartero_client { client });
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cartero_client_free(client: *mut cartero_client) {
    free(client)
}

fn client_error(e: &ClientError) -> cartero_result {
    match e {
        ClientError::Connect { .. } => CARTERO_CONNECT_FAILED,
        ClientError::Timeout { .. } => CARTERO_TIMEOUT,
        ClientError::Io(_) => CARTERO_IO_ERROR,
        ClientError::Protocol(_) | ClientError::NoReply | ClientError::Mismatch(_) => CARTERO_PROTOCOL_ERROR,
        ClientError::Invalid(CodecError::ContainsNul { .. }) => CARTERO_FIELD_CONTAINS_NUL,
        ClientError::Invalid(_) => CARTERO_FIELD_TOO_LONG,
    }
}

fn code_of(reply: Result<Reply, ClientError>, code_out: &mut u8) -> Result<Reply, cartero_result> {
    let reply = reply.map_err(|e| client_error(&e))?;
    *code_out = reply.code();
    Ok(reply)
}

/// REGISTER. `birth_date` "DD/MM/YYYY"; NULL sends seed 000's one-field form (the alias only,
/// and `full_name` is ignored).
#[no_mangle]
pub extern "C" fn cartero_client_register(
    client: *const cartero_client,
    full_name: *const c_char,
    alias: *const c_char,
    birth_date: *const c_char,
    code_out: *mut u8,
) -> cartero_result {
    guard(|| {
        let c = arg(client)?;
        let alias = cstr(alias)?;
        let code_out = out(code_out)?;
        let reply = match opt_cstr(birth_date) {
            Some(date) => c.client.register(cstr(full_name)?, alias, date),
            None => c.client.register_alias(alias),
        };
        code_of(reply.map(Reply::Register), code_out).map(drop)
    })
}

#[no_mangle]
pub extern "C" fn cartero_client_unregister(
    client: *const cartero_client,
    alias: *const c_char,
    code_out: *mut u8,
) -> cartero_result {
    guard(|| {
        let (c, alias, code_out) = (arg(client)?, cstr(alias)?, out(code_out)?);
        code_of(c.client.unregister(alias).map(Reply::Unregister), code_out).map(drop)
    })
}

/// CONNECT, telling the server that this user's listener is on `port` (of this machine's
/// address as the server sees it).
#[no_mangle]
pub extern "C" fn cartero_client_connect(
    client: *const cartero_client,
    alias: *const c_char,
    port: u16,
    code_out: *mut u8,
) -> cartero_result {
    guard(|| {
        let (c, alias, code_out) = (arg(client)?, cstr(alias)?, out(code_out)?);
        code_of(c.client.connect(alias, port).map(Reply::Connect), code_out).map(drop)
    })
}

#[no_mangle]
pub extern "C" fn cartero_client_disconnect(
    client: *const cartero_client,
    alias: *const c_char,
    code_out: *mut u8,
) -> cartero_result {
    guard(|| {
        let (c, alias, code_out) = (arg(client)?, cstr(alias)?, out(code_out)?);
        code_of(c.client.disconnect(alias).map(Reply::Disconnect), code_out).map(drop)
    })
}

/// SEND. On code 0, `*id_out` gets the message's id (left alone otherwise).
#[no_mangle]
pub extern "C" fn cartero_client_send(
    client: *const cartero_client,
    sender: *const c_char,
    recipient: *const c_char,
    body: *const c_char,
    code_out: *mut u8,
    id_out: *mut u32,
) -> cartero_result {
    guard(|| {
        let c = arg(client)?;
        let (sender, recipient, body) = (cstr(sender)?, cstr(recipient)?, cstr(body)?);
        let (code_out, id_out) = (out(code_out)?, out(id_out)?);
        let reply = code_of(c.client.send(sender, recipient, body).map(Reply::Send), code_out)?;
        if let Reply::Send(SendReply::Ok { id }) = reply {
            *id_out = id;
        }
        Ok(())
    })
}

/// CONNECTEDUSERS, with the requester's `alias` or, if NULL, without it. On code 0,
/// `*users_out` gets the aliases, each followed by a NUL, in connection order, and
/// `*count_out` how many; both are left alone otherwise.
#[no_mangle]
pub extern "C" fn cartero_client_connected_users(
    client: *const cartero_client,
    alias: *const c_char,
    code_out: *mut u8,
    users_out: *mut *mut cartero_bytes,
    count_out: *mut usize,
) -> cartero_result {
    guard(|| {
        let c = arg(client)?;
        let (code_out, users_out, count_out) = (out(code_out)?, out(users_out)?, out(count_out)?);
        let reply = code_of(c.client.connected_users(opt_cstr(alias)).map(Reply::ConnectedUsers), code_out)?;
        if let Reply::ConnectedUsers(ConnectedUsersReply::Ok { users }) = reply {
            let mut joined = Vec::new();
            for user in &users {
                joined.extend_from_slice(user);
                joined.push(0);
            }
            *count_out = users.len();
            give_bytes(joined, users_out);
        }
        Ok(())
    })
}

/// SENDATTACH (SPEC 8): a message and the name of a file. On code 0, `*id_out` gets the
/// message's id (left alone otherwise). Offer the file on the sender's listener with
/// `cartero_listener_offer` so that the recipient can fetch it.
#[no_mangle]
pub extern "C" fn cartero_client_send_attach(
    client: *const cartero_client,
    sender: *const c_char,
    recipient: *const c_char,
    body: *const c_char,
    file: *const c_char,
    code_out: *mut u8,
    id_out: *mut u32,
) -> cartero_result {
    guard(|| {
        let c = arg(client)?;
        let (sender, recipient, body, file) = (cstr(sender)?, cstr(recipient)?, cstr(body)?, cstr(file)?);
        let (code_out, id_out) = (out(code_out)?, out(id_out)?);
        let reply = code_of(c.client.send_attach(sender, recipient, body, file).map(Reply::SendAttach), code_out)?;
        if let Reply::SendAttach(SendReply::Ok { id }) = reply {
            *id_out = id;
        }
        Ok(())
    })
}

/// USERS (SPEC 8), with the requester's `alias` or, if NULL, without it. On code 0,
/// `*users_out` gets three NUL-terminated strings per user, in connection order: the name,
/// the IP as text and the port as decimal text; `*count_out` gets how many users. Both are
/// left alone otherwise.
#[no_mangle]
pub extern "C" fn cartero_client_users(
    client: *const cartero_client,
    alias: *const c_char,
    code_out: *mut u8,
    users_out: *mut *mut cartero_bytes,
    count_out: *mut usize,
) -> cartero_result {
    guard(|| {
        let c = arg(client)?;
        let (code_out, users_out, count_out) = (out(code_out)?, out(users_out)?, out(count_out)?);
        let reply = code_of(c.client.users(opt_cstr(alias)).map(Reply::Users), code_out)?;
        if let Reply::Users(UsersReply::Ok { users }) = reply {
            let mut joined = Vec::new();
            for user in &users {
                joined.extend_from_slice(&user.name);
                joined.push(0);
                joined.extend_from_slice(format!("{}\0{}\0", user.ip, user.port).as_bytes());
            }
            *count_out = users.len();
            give_bytes(joined, users_out);
        }
        Ok(())
    })
}

/// GETFILE (SPEC 8): asks the listener at `ip`:`port` for its user's file `remote`, on
/// behalf of `requester`, and writes it to `local` through a temporary file beside it.
/// `form`: 0 auto, 1 sized (`OK`, size, bytes), 2 a zero byte then the bytes, 3 raw bytes.
/// `CARTERO_OK` when the whole file is in place; otherwise no file is left and the result
/// says why (`CARTERO_REFUSED`, `CARTERO_TRUNCATED`, `CARTERO_CONNECT_FAILED`...).
#[no_mangle]
pub extern "C" fn cartero_get_file(
    ip: *const c_char,
    port: u16,
    requester: *const c_char,
    remote: *const c_char,
    local: *const c_char,
    form: u32,
) -> cartero_result {
    guard(|| {
        let ip = std::str::from_utf8(cstr(ip)?).map_err(|_| CARTERO_INVALID_ARGUMENT)?;
        let ip: IpAddr = ip.parse().map_err(|_| CARTERO_INVALID_ARGUMENT)?;
        let (requester, remote) = (cstr(requester)?, cstr(remote)?);
        let local = std::str::from_utf8(cstr(local)?).map_err(|_| CARTERO_INVALID_ARGUMENT)?;
        let form = match form {
            0 => AnswerForm::Auto,
            1 => AnswerForm::Sized,
            2 => AnswerForm::ZeroByte,
            3 => AnswerForm::Raw,
            _ => return Err(CARTERO_INVALID_ARGUMENT),
        };
        match files::get_file(SocketAddr::new(ip, port), requester, remote, Path::new(local), form) {
            Ok(_) => Ok(()),
            Err(e) => Err(match e {
                GetFileError::Connect { .. } => CARTERO_CONNECT_FAILED,
                GetFileError::Refused => CARTERO_REFUSED,
                GetFileError::Truncated { .. } => CARTERO_TRUNCATED,
                GetFileError::Empty | GetFileError::BadAnswer(_) => CARTERO_PROTOCOL_ERROR,
                GetFileError::Timeout(_) => CARTERO_TIMEOUT,
                GetFileError::Io(_) => CARTERO_IO_ERROR,
                GetFileError::Local { .. } => CARTERO_LOCAL_FILE,
                GetFileError::Invalid(_) => CARTERO_FIELD_TOO_LONG,
            }),
        }
    })
}

/// A user's listening socket on a free port: a thread receives the server's pushes, and
/// answers GET FILE for the files offered with `cartero_listener_offer`.
pub struct cartero_listener {
    listener: Listener,
    offers: Offers,
}

/// Listens on a free port of `ip` ("0.0.0.0" to be reachable from other machines).
#[no_mangle]
pub extern "C" fn cartero_listener_new(ip: *const c_char, listener_out: *mut *mut cartero_listener) -> cartero_result {
    guard(|| {
        let ip = std::str::from_utf8(cstr(ip)?).map_err(|_| CARTERO_INVALID_ARGUMENT)?;
        let ip: IpAddr = ip.parse().map_err(|_| CARTERO_INVALID_ARGUMENT)?;
        let o = out(listener_out)?;
        let offers = Offers::new();
        let listener = Listener::bind_offering(ip, offers.clone()).map_err(|_| CARTERO_IO_ERROR)?;
        *o = boxed(cartero_listener { listener, offers });
        Ok(())
    })
}

/// Lets the listener serve GET FILE for `file` (SPEC 8): call it after a SENDATTACH of that
/// file got code 0. No other file is ever served. `CARTERO_INVALID_ARGUMENT` if the name is
/// empty, not UTF-8, or the table is full.
#[no_mangle]
pub extern "C" fn cartero_listener_offer(listener: *const cartero_listener, file: *const c_char) -> cartero_result {
    guard(|| {
        let l = arg(listener)?;
        if l.offers.offer(cstr(file)?) {
            Ok(())
        } else {
            Err(CARTERO_INVALID_ARGUMENT)
        }
    })
}

/// The port the listener got (0 for NULL).
#[no_mangle]
pub extern "C" fn cartero_listener_port(listener: *const cartero_listener) -> u16 {
    arg(listener).map_or(0, |l| l.listener.port())
}

/// Stops the listener and releases its port.
#[no_mangle]
pub extern "C" fn cartero_listener_free(listener: *mut cartero_listener) {
    free(listener)
}

/// A push received by a listener: a message or an acknowledgement.
pub struct cartero_push {
    is_ack: bool,
    id: u32,
    sender: CString,
    body: CString,
    /// The attached file's name of a SENDATTACH message or its acknowledgement (SPEC 8);
    /// empty otherwise.
    file: CString,
}

/// Waits up to `timeout_ms` for the next push: `CARTERO_OK` with `*push_out` set,
/// `CARTERO_TIMEOUT`, or `CARTERO_CLOSED`.
#[no_mangle]
pub extern "C" fn cartero_listener_next(
    listener: *const cartero_listener,
    timeout_ms: u32,
    push_out: *mut *mut cartero_push,
) -> cartero_result {
    guard(|| {
        let l = arg(listener)?;
        let o = out(push_out)?;
        let push = l.listener.recv_timeout(Duration::from_millis(u64::from(timeout_ms))).map_err(|closed| {
            if closed {
                CARTERO_CLOSED
            } else {
                CARTERO_TIMEOUT
            }
        })?;
        // Fields never hold a NUL, so these conversions cannot fail.
        let text = |b: &[u8]| CString::new(b.to_vec()).map_err(|_| CARTERO_PROTOCOL_ERROR);
        let none = CString::default;
        *o = boxed(match push {
            Push::Ack { id } => cartero_push { is_ack: true, id, sender: none(), body: none(), file: none() },
            Push::Message { sender, id, body } => {
                cartero_push { is_ack: false, id, sender: text(&sender)?, body: text(&body)?, file: none() }
            }
            Push::AttachAck { id, file } => {
                cartero_push { is_ack: true, id, sender: none(), body: none(), file: text(&file)? }
            }
            Push::AttachMessage { sender, id, body, file } => {
                cartero_push { is_ack: false, id, sender: text(&sender)?, body: text(&body)?, file: text(&file)? }
            }
        });
        Ok(())
    })
}

/// True for an acknowledgement ("SEND MESS ACK" or "SEND MESS ATTACH ACK"), false for a
/// message.
#[no_mangle]
pub extern "C" fn cartero_push_is_ack(push: *const cartero_push) -> bool {
    arg(push).is_ok_and(|p| p.is_ack)
}

#[no_mangle]
pub extern "C" fn cartero_push_id(push: *const cartero_push) -> u32 {
    arg(push).map_or(0, |p| p.id)
}

/// The sender's alias ("" for an acknowledgement); valid until the push is freed.
#[no_mangle]
pub extern "C" fn cartero_push_sender(push: *const cartero_push) -> *const c_char {
    arg(push).map_or(std::ptr::null(), |p| p.sender.as_ptr())
}

/// The message's text ("" for an acknowledgement); valid until the push is freed.
#[no_mangle]
pub extern "C" fn cartero_push_body(push: *const cartero_push) -> *const c_char {
    arg(push).map_or(std::ptr::null(), |p| p.body.as_ptr())
}

/// The attached file's name of a SENDATTACH message or of its acknowledgement ("" for a
/// plain message or acknowledgement); valid until the push is freed.
#[no_mangle]
pub extern "C" fn cartero_push_file(push: *const cartero_push) -> *const c_char {
    arg(push).map_or(std::ptr::null(), |p| p.file.as_ptr())
}

#[no_mangle]
pub extern "C" fn cartero_push_free(push: *mut cartero_push) {
    free(push)
}
