//! The command patterns of an ACL's allowlist: an absolute path (`/usr/bin/uptime`) or a glob on
//! one (`/opt/app/bin/*`), where `*` stands for any run of characters and `?` for one character,
//! both within a single path segment (neither ever matches a `/`). Owns what a pattern may look
//! like and whether a path matches it, on the text alone: it never resolves a symbolic link or
//! looks at a file, so `/usr/bin/*` matches `/usr/bin/sh` whatever `sh` is.

/// Characters a pattern may not hold: other globs' syntax (so no pattern means something else
/// than it seems), separators of the ACL's text form, and anything invisible.
fn forbidden(c: char) -> bool {
    matches!(c, '[' | ']' | '{' | '}' | '\\' | ',' | '=') || c.is_whitespace() || c.is_control()
}

/// Whether `pattern` may stand in an allowlist: absolute, each segment non-empty and neither `.`
/// nor `..`, no trailing `/`, and no character of another glob syntax.
pub fn is_command_pattern(pattern: &str) -> bool {
    let Some(rest) = pattern.strip_prefix('/') else { return false };
    !rest.is_empty()
        && !pattern.chars().any(forbidden)
        && rest.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Whether the absolute `path` matches `pattern`: the same number of segments, each matching
/// its pattern segment.
pub fn matches(pattern: &str, path: &str) -> bool {
    let (mut pattern_parts, mut path_parts) = (pattern.split('/'), path.split('/'));
    loop {
        match (pattern_parts.next(), path_parts.next()) {
            (None, None) => return true,
            (Some(p), Some(s)) if segment_matches(p, s) => {}
            _ => return false,
        }
    }
}

/// One segment against its pattern, `*` and `?` as wildcards: the usual greedy match that backs
/// up to the last `*` on a mismatch (linear in practice, no recursion).
fn segment_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0usize, 0usize);
    // Where the last `*` was in the pattern, and where in the text it began to match.
    let mut star: Option<(usize, usize)> = None;
    while let Some(&tc) = t.get(ti) {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == tc => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).unwrap_or_default().iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_absolute_plain_and_of_one_glob_syntax() {
        for good in ["/usr/bin/uptime", "/opt/app/bin/*", "/usr/bin/python3.?", "/srv/*/bin/run-*"] {
            assert!(is_command_pattern(good), "{good}");
        }
        for bad in [
            "uptime",
            "*",
            "bin/ls",
            "/",
            "/usr/bin/",
            "/usr//bin/ls",
            "/usr/bin/../sbin/x",
            "/usr/./bin/ls",
            "/usr/bin/[ab]",
            "/usr/bin/{a,b}",
            "/usr/bin/a\\*",
            "/usr/bin/a b",
            "/usr/bin/a=b",
        ] {
            assert!(!is_command_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn a_literal_path_matches_itself_only() {
        assert!(matches("/usr/bin/uptime", "/usr/bin/uptime"));
        assert!(!matches("/usr/bin/uptime", "/usr/bin/uptimes"));
        assert!(!matches("/usr/bin/uptime", "/usr/local/bin/uptime"));
        assert!(!matches("/usr/bin/uptime", "/bin/uptime"));
    }

    #[test]
    fn wildcards_stay_within_one_segment() {
        assert!(matches("/opt/app/bin/*", "/opt/app/bin/deploy"));
        assert!(!matches("/opt/app/bin/*", "/opt/app/bin/sub/deploy"));
        assert!(!matches("/opt/app/bin/*", "/opt/app/bin"));
        assert!(!matches("/opt/*", "/opt/app/bin/deploy"));
        assert!(matches("/srv/*/bin/run-*", "/srv/web/bin/run-now"));
        assert!(!matches("/srv/*/bin/run-*", "/srv/web/sbin/run-now"));
        assert!(matches("/usr/bin/python3.?", "/usr/bin/python3.9"));
        assert!(!matches("/usr/bin/python3.?", "/usr/bin/python3.11"));
        assert!(!matches("/usr/bin/?", "/usr/bin/"));
    }

    #[test]
    fn stars_back_up_as_far_as_they_must() {
        assert!(segment_matches("a*b*c", "axxbyyc"));
        assert!(segment_matches("a*b*c", "abbbc"));
        assert!(segment_matches("*ab", "aaab"));
        assert!(!segment_matches("a*b*c", "axxbyy"));
        assert!(segment_matches("**", ""));
        assert!(segment_matches("*?", "x"));
        assert!(!segment_matches("*?", ""));
        assert!(segment_matches("système-*", "système-ü"), "characters, not bytes");
    }
}
