//! A tiny run of `cartero chat bench`: every part runs and prints its rows (no numbers are
//! asserted: speed is measured by the benchmark, not by tests).

mod common;

use std::time::Duration;

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
    // Its fixed settling pauses alone take seconds; on a loaded machine, more.
    .finish_within(Duration::from_secs(120));
    assert_eq!(code, 0, "{lines:#?}\n{stderr}");
    let rows = |label: &str| lines.iter().filter(|l| l.starts_with(label)).count();
    assert_eq!(rows("cartero chat serve"), 3, "{lines:#?}"); // two runs and the memory row
    assert_eq!(rows("baseline relay"), 3, "{lines:#?}"); // two runs and the memory row

    // Each run row ends "... arrive-p50 arrive-p99 lost RSS KiB": nothing lost, and the
    // kernel's arrival stamps were read (a latency of 0.00 would mean none came).
    for row in lines.iter().filter(|l| l.contains(" bcast/s ") || l.contains(" max (window ")) {
        let words: Vec<&str> = row.split_whitespace().collect();
        let [.., arrive_p50, arrive_p99, lost, _rss, _kib] = words[..] else { panic!("short row {row:?}") };
        assert_eq!(lost, "0", "{row}");
        for ms in [arrive_p50, arrive_p99] {
            assert!(ms.parse::<f64>().is_ok_and(|ms| ms > 0.0), "{row}");
        }
    }
    // The kernel floor: one row for one thread, and one for every core if there are more.
    assert!((1..=2).contains(&rows("write floor")), "{lines:#?}");
    let has_ngircd = rows("ngircd") > 0;
    assert!(has_ngircd || stderr.contains("ngircd is not installed"), "{lines:#?}\n{stderr}");
    // scripts/test.sh installs ngircd, so in CI its rows must be there.
    assert!(has_ngircd || std::env::var_os("CI").is_none(), "ngircd rows missing in CI: {stderr}");
}
