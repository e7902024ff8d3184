//! A tiny run of `cartero chat bench`: every part runs and prints its rows (no numbers are
//! asserted: speed is measured by the benchmark, not by tests).

mod common;

use common::Proc;

#[test]
fn a_tiny_bench_prints_every_row() {
    let (code, lines, stderr) = Proc::start(&[
        "chat",
        "bench",
        "--users",
        "12",
        "--senders",
        "3",
        "--rate",
        "40",
        "--duration",
        "200ms",
        "--window",
        "8",
        "--idle",
        "20",
    ])
    .finish();
    assert_eq!(code, 0, "{lines:#?}\n{stderr}");
    let rows = |label: &str| lines.iter().filter(|l| l.starts_with(label)).count();
    assert_eq!(rows("cartero chat serve"), 3, "{lines:#?}"); // two runs and the memory row
    assert_eq!(rows("baseline relay"), 2, "{lines:#?}");
    let has_ngircd = rows("ngircd") > 0;
    assert!(has_ngircd || stderr.contains("ngircd is not installed"), "{lines:#?}\n{stderr}");
}
