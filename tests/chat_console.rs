//! `cartero chat connect` over a pipe against `cartero chat serve`: SPEC-chat 6's lines.

mod common;

use common::chat::serve_open;
use common::Proc;

fn console(port: u16, name: Option<&str>) -> Proc {
    let port = port.to_string();
    let mut args = vec!["chat", "connect", "-s", "127.0.0.1", "-p", &port];
    if let Some(name) = name {
        args.extend(["-n", name]);
    }
    Proc::start(&args)
}

#[test]
fn two_consoles_chat_through_the_server() {
    let (_server, port) = serve_open(&[]);
    let mut ana = console(port, Some("ana"));
    ana.expect(&["Conectado exitosamente", "Usuarios conectados: ana"]);
    // The name read from the first line of input when -n is missing.
    let mut bob = console(port, None);
    bob.type_line("bob");
    bob.expect(&["Conectado exitosamente", "Usuarios conectados: ana, bob"]);
    ana.expect(&["Usuarios conectados: ana, bob"]);

    bob.type_line("@ana hola ana | qué tal");
    ana.expect(&["Mensaje de bob: hola ana | qué tal"]);
    bob.type_line("@nadie hola");
    bob.expect(&["Error 404: Usuario no encontrado"]);
    ana.type_line("hola a todos");
    ana.expect(&["Broadcast de ana: hola a todos"]);
    bob.expect(&["Broadcast de ana: hola a todos"]);
    ana.type_line("/users");
    ana.expect(&["Usuarios conectados: ana, bob"]);

    // A taken name given with -n: the console says so and ends with a failure.
    let taken = console(port, Some("ana"));
    let (code, lines, _) = taken.finish();
    assert_eq!((code, lines), (1, vec!["Conexión fallida".to_string()]));

    // End of input leaves like /logout.
    let (code, rest, stderr) = bob.finish();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(rest, vec!["Desconectado del servidor".to_string()]);
    ana.expect(&["Usuarios conectados: ana"]);
    ana.type_line("/logout");
    ana.expect(&["Desconectado del servidor"]);
    let (code, rest, _) = ana.finish();
    assert_eq!((code, rest.len()), (0, 0));
}

#[test]
fn rooms_and_history_in_the_console() {
    let (_server, port) = serve_open(&[]);
    let mut ana = console(port, Some("ana"));
    ana.expect(&["Conectado exitosamente", "Usuarios conectados: ana"]);
    let mut bob = console(port, Some("bob"));
    bob.expect(&["Conectado exitosamente", "Usuarios conectados: ana, bob"]);
    ana.expect(&["Usuarios conectados: ana, bob"]);

    ana.type_line("/join #sala");
    ana.expect(&["[#sala] Miembros: ana"]);
    bob.type_line("/join #sala");
    ana.expect(&["[#sala] Miembros: ana, bob"]);
    bob.expect(&["[#sala] Miembros: ana, bob"]);
    bob.type_line("#sala hola | sala");
    ana.expect(&["[#sala] bob: hola | sala"]);
    bob.expect(&["[#sala] bob: hola | sala"]);
    ana.type_line("#otra nadie");
    ana.expect(&["Error 403: No eres miembro de la sala"]);
    ana.type_line("/join sala");
    ana.expect(&["Error 400: Nombre de sala no válido"]);
    ana.type_line("/rooms");
    ana.expect(&["Salas: #sala"]);
    ana.type_line("/history #sala 20");
    let line = ana.line();
    let (head, tail) = line.split_once('[').unwrap_or_else(|| panic!("{line}"));
    assert_eq!(head, "Historial de #sala ");
    assert!(
        tail.ends_with("Z] bob: hola | sala") && tail.len() == "2026-11-29T16:00:00Z] bob: hola | sala".len(),
        "{line}"
    );
    ana.expect(&["Fin del historial de #sala"]);
    ana.type_line("/history #sala 0");
    ana.expect(&["Fin del historial de #sala"]);
    bob.type_line("/part");
    bob.expect(&["[#sala] bob salió de la sala"]);
    ana.expect(&["[#sala] bob salió de la sala"]);
    ana.type_line("/logout");
    ana.expect(&["Desconectado del servidor"]);
}

#[test]
fn a_console_without_a_server_says_so() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let c = console(port, Some("ana"));
    let (code, lines, stderr) = c.finish();
    assert_eq!(code, 1);
    assert_eq!(lines, vec!["Conexión fallida".to_string()]);
    assert!(stderr.contains("cannot connect"), "{stderr}");
}
