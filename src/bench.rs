//! Measuring helpers shared by every protocol's benchmark.

/// The resident memory of process `pid`, in bytes (Linux: `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("cannot read memory use: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmRSS in /proc status".to_string())
}

/// The `p` quantile (0.0 to 1.0) of latencies in microseconds, sorted ascending, in
/// milliseconds; 0 when there are none.
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted_us[i]) / 1000.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(super::percentile_ms(&v, 0.5), 51.0);
        assert_eq!(super::percentile_ms(&v, 0.99), 99.0);
        assert_eq!(super::percentile_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn own_rss() {
        assert!(super::rss_bytes(std::process::id()).unwrap() > 0);
    }
}
