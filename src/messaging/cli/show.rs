//! How the command-line tools show protocol values to people.

use crate::messaging::wire::{ConnectedUsersReply, Escaped, Reply, SendReply, UsersReply};
use crate::messaging::Push;

/// A reply as its code and payload: `0`, `0, id 7`, `0, 2 users: ana, bob`.
pub fn reply(reply: &Reply) -> String {
    match reply {
        Reply::Send(SendReply::Ok { id }) | Reply::SendAttach(SendReply::Ok { id }) => format!("0, id {id}"),
        Reply::Users(UsersReply::Ok { users }) => {
            let entries: Vec<String> = users
                .iter()
                .map(|u| format!("{} :: {} :: {}", String::from_utf8_lossy(&u.name), u.ip, u.port))
                .collect();
            format!("0, {} users: {}", entries.len(), entries.join(", "))
        }
        Reply::ConnectedUsers(ConnectedUsersReply::Ok { users }) => {
            let names: Vec<String> = users.iter().map(|u| String::from_utf8_lossy(u).into_owned()).collect();
            format!("0, {} users: {}", names.len(), names.join(", "))
        }
        other => other.code().to_string(),
    }
}

/// A push's fields after its name: `"ana" 1 "hola"`, or the id of an acknowledgement.
pub fn push_fields(push: &Push) -> String {
    match push {
        Push::Message { sender, id, body } => format!("{} {id} {}", Escaped(sender), Escaped(body)),
        Push::Ack { id } => id.to_string(),
        Push::AttachMessage { sender, id, body, file } => {
            format!("{} {id} {} {}", Escaped(sender), Escaped(body), Escaped(file))
        }
        Push::AttachAck { id, file } => format!("{id} {}", Escaped(file)),
    }
}
