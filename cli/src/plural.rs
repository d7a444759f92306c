//! Counts in words for people: "1 host", "2 hosts". English nouns only, the ones cohort prints.

/// A number of things, whichever integer type counted them.
pub struct Count(u64);

impl From<u64> for Count {
    fn from(n: u64) -> Count {
        Count(n)
    }
}

impl From<usize> for Count {
    fn from(n: usize) -> Count {
        Count(u64::try_from(n).unwrap_or(u64::MAX))
    }
}

/// `n` and `noun`, with the noun's plural unless `n` is 1.
pub fn plural(n: impl Into<Count>, noun: &str) -> String {
    let Count(n) = n.into();
    if n == 1 {
        return format!("1 {noun}");
    }
    let plural = match noun {
        "entry" => "entries".to_owned(),
        "policy" => "policies".to_owned(),
        other if other.ends_with('s') || other.ends_with("sh") || other.ends_with("ch") => {
            format!("{other}es")
        }
        other => format!("{other}s"),
    };
    format!("{n} {plural}")
}

#[cfg(test)]
mod tests {
    use super::plural;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(plural(1u64, "host"), "1 host");
        assert_eq!(plural(0u64, "host"), "0 hosts");
        assert_eq!(plural(2u64, "change"), "2 changes");
        assert_eq!(plural(3u64, "entry"), "3 entries");
        assert_eq!(plural(2u64, "process"), "2 processes");
        assert_eq!(plural(2u64, "sync"), "2 syncs");
        assert_eq!(plural(1usize, "agent"), "1 agent");
    }
}
