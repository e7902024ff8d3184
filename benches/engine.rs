//! Engine throughput: one full cycle is SEND -> message delivery -> its outcome ->
//! acknowledgement -> its outcome, among 10,000 registered, connected users.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use bytes::Bytes;
use cartero::engine::{DeliveryOutcome, Engine, EngineConfig};
use cartero::Request;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

const USERS: usize = 10_000;

fn engine(record_events: bool) -> (Engine, Vec<Bytes>) {
    let mut engine = Engine::new(EngineConfig { record_events, ..EngineConfig::default() });
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let aliases: Vec<Bytes> = (0..USERS).map(|i| Bytes::from(format!("user{i}"))).collect();
    for alias in &aliases {
        engine.handle_request(
            peer,
            &Request::Register {
                full_name: alias.clone(),
                alias: alias.clone(),
                birth_date: Some(Bytes::from_static(b"01/02/2003")),
            },
        );
        engine.handle_request(peer, &Request::Connect { alias: alias.clone(), port: Bytes::from_static(b"40000") });
    }
    while engine.poll_event().is_some() {}
    (engine, aliases)
}

fn bench(c: &mut Criterion) {
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let body = Bytes::from_static(b"hola, this is a typical chat message of about sixty bytes!!");
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    for record_events in [false, true] {
        let name = if record_events { "send_deliver_ack_cycle_with_console" } else { "send_deliver_ack_cycle" };
        let (mut engine, aliases) = engine(record_events);
        // Requests are built once, as a driver's decoder would hand them over.
        let requests: Vec<Request> = (0..USERS)
            .map(|i| Request::Send {
                sender: aliases[i].clone(),
                recipient: aliases[(i * 7 + 1) % USERS].clone(),
                body: body.clone(),
            })
            .collect();
        let now = Instant::now();
        let mut i = 0;
        g.bench_function(name, |bench| {
            bench.iter(|| {
                let reply = engine.handle_request(peer, &requests[i % USERS]);
                i += 1;
                let message = engine.poll_delivery(now).unwrap();
                engine.handle_delivery_result(message.id, DeliveryOutcome::Delivered).unwrap();
                let ack = engine.poll_delivery(now).unwrap();
                engine.handle_delivery_result(ack.id, DeliveryOutcome::Delivered).unwrap();
                while let Some(e) = engine.poll_event() {
                    black_box(e);
                }
                black_box(reply)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
