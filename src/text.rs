//! Wording shared by every protocol's messages to people.

/// `n` and the noun, singular for one: `count(1, "request")` is "1 request", `count(2,
/// "request")` is "2 requests". For nouns whose plural adds an "s".
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    count_as(n, noun, &format!("{noun}s"))
}

/// `n` and the singular `one` or the plural `many`: `count_as(3, "push", "pushes")`.
pub fn count_as(n: impl Into<u64>, one: &str, many: &str) -> String {
    match n.into() {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{count, count_as};

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(count(0u32, "user"), "0 users");
        assert_eq!(count(1u32, "user"), "1 user");
        assert_eq!(count(2u64, "pending message"), "2 pending messages");
        assert_eq!(count_as(1u8, "push", "pushes"), "1 push");
        assert_eq!(count_as(3u8, "push", "pushes"), "3 pushes");
    }
}
