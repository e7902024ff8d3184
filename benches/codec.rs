//! Codec throughput: decoding and encoding streams of typical requests.

use bytes::{Bytes, BytesMut};
use cartero::wire::RequestDecoder;
use cartero::{Codec, Request};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use tokio_util::codec::Decoder;

/// 1,000 requests of the mix a class produces: mostly SENDs with chat-sized bodies.
fn typical_requests() -> Vec<Request> {
    let b = |s: String| Bytes::from(s);
    (0..1000)
        .map(|i| match i % 10 {
            0 => Request::Register {
                full_name: b(format!("Student Number {i}")),
                alias: b(format!("user{i}")),
                birth_date: Some(b("01/02/2003".into())),
            },
            1 => Request::Connect { alias: b(format!("user{i}")), port: b("45123".into()) },
            2 => Request::ConnectedUsers { alias: Some(b(format!("user{i}"))) },
            _ => Request::Send {
                sender: b(format!("user{i}")),
                recipient: b(format!("user{}", i + 1)),
                body: b(format!("hola, {i}: this is a typical chat message of about sixty bytes")),
            },
        })
        .collect()
}

fn encoded(requests: &[Request]) -> BytesMut {
    let mut stream = BytesMut::new();
    for r in requests {
        r.encode(&mut stream).unwrap();
    }
    stream
}

fn bench(c: &mut Criterion) {
    let requests = typical_requests();
    let stream = encoded(&requests);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(stream.len() as u64));

    g.bench_function("decode_fields", |bench| {
        bench.iter_batched_ref(
            || stream.clone(),
            |buf| {
                let mut codec = Codec::new(255);
                let mut n = 0;
                while let Some(f) = codec.decode(buf).unwrap() {
                    n += f.len();
                }
                black_box(n)
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("decode_requests", |bench| {
        bench.iter_batched_ref(
            || stream.clone(),
            |buf| {
                let mut dec = RequestDecoder::new();
                let mut n = 0;
                while let Some(r) = dec.decode(buf).unwrap() {
                    black_box(&r);
                    n += 1;
                }
                assert_eq!(n, 1000);
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("encode_requests", |bench| {
        let mut out = BytesMut::with_capacity(stream.len());
        bench.iter(|| {
            out.clear();
            for r in &requests {
                r.encode(&mut out).unwrap();
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
