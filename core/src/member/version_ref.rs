//! A configuration version as an operator types it: `v6@33d39f34`, the short form `cohort status`
//! prints (the author given by a prefix of its node id), or the full `6@<32 hex digits>` form.
//! Owns parsing that text and resolving a short author against the node ids that could have
//! authored it. It never guesses: a prefix that matches no author, or more than one, is an error.

use crate::identity::NodeId;

use super::config::Version;

/// The fewest hex digits of an author's id accepted: the 8 that `status` prints.
pub const MIN_AUTHOR_PREFIX: usize = 8;
const FULL_AUTHOR: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionRefError {
    #[error(
        "`{0}` is not a version; expected COUNTER@AUTHOR, e.g. `v6@33d39f34` as `cohort status` prints it"
    )]
    NoAuthor(String),
    #[error("`{0}` is not a version counter (a whole number, optionally after `v`)")]
    BadCounter(String),
    #[error(
        "`{0}` is not an author id: give {MIN_AUTHOR_PREFIX} to {FULL_AUTHOR} hex digits of the node id that authored the version"
    )]
    BadAuthor(String),
    #[error("no member's node id starts with `{0}`; check the version against `cohort status`")]
    UnknownAuthor(String),
    #[error(
        "more than one member's node id starts with `{0}`; give more digits (`cohort status --json` prints them all)"
    )]
    AmbiguousAuthor(String),
}

/// A parsed version whose author may still be a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRef {
    pub counter: u64,
    /// Lower-case hex, between [`MIN_AUTHOR_PREFIX`] and 32 digits.
    author_prefix: String,
}

impl std::str::FromStr for VersionRef {
    type Err = VersionRefError;

    fn from_str(text: &str) -> Result<VersionRef, VersionRefError> {
        let (counter, author) =
            text.split_once('@').ok_or_else(|| VersionRefError::NoAuthor(text.to_owned()))?;
        let digits = counter.strip_prefix('v').unwrap_or(counter);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VersionRefError::BadCounter(counter.to_owned()));
        }
        let counter = digits.parse().map_err(|_| VersionRefError::BadCounter(counter.to_owned()))?;
        let author_ok = (MIN_AUTHOR_PREFIX..=FULL_AUTHOR).contains(&author.len())
            && author.bytes().all(|b| b.is_ascii_hexdigit());
        if !author_ok {
            return Err(VersionRefError::BadAuthor(author.to_owned()));
        }
        Ok(VersionRef { counter, author_prefix: author.to_ascii_lowercase() })
    }
}

impl VersionRef {
    /// The version, when the author was given in full.
    pub fn full(&self) -> Option<Version> {
        if self.author_prefix.len() != FULL_AUTHOR {
            return None;
        }
        let mut id = [0u8; 16];
        hex::decode_to_slice(&self.author_prefix, &mut id).ok()?;
        Some(Version { counter: self.counter, author: NodeId(id) })
    }

    /// The version whose author is the one id in `authors` the prefix names.
    pub fn resolve<I>(&self, authors: I) -> Result<Version, VersionRefError>
    where
        I: IntoIterator<Item = NodeId>,
    {
        if let Some(version) = self.full() {
            return Ok(version);
        }
        let mut found: Option<NodeId> = None;
        for id in authors {
            if !id.to_hex().starts_with(&self.author_prefix) || found == Some(id) {
                continue;
            }
            if found.is_some() {
                return Err(VersionRefError::AmbiguousAuthor(self.author_prefix.clone()));
            }
            found = Some(id);
        }
        let author = found.ok_or_else(|| VersionRefError::UnknownAuthor(self.author_prefix.clone()))?;
        Ok(Version { counter: self.counter, author })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(first: u8) -> NodeId {
        let mut bytes = [0x11u8; 16];
        bytes[0] = first;
        NodeId(bytes)
    }

    #[test]
    fn the_short_form_status_prints_resolves_against_the_members() {
        let version = Version { counter: 6, author: id(0x33) };
        let short: VersionRef = version.to_string().parse().expect("parses");
        assert_eq!(short.full(), None);
        assert_eq!(short.resolve([id(0x20), id(0x33)]), Ok(version));
        let full: VersionRef = version.to_full_string().parse().expect("parses");
        assert_eq!(full.resolve([]), Ok(version));
    }

    #[test]
    fn an_unknown_or_ambiguous_prefix_is_an_error_not_a_guess() {
        let short: VersionRef = "v6@33111111".parse().expect("parses");
        assert_eq!(short.resolve([id(0x20)]), Err(VersionRefError::UnknownAuthor("33111111".into())));
        let mut twin = [0x11u8; 16];
        twin[0] = 0x33;
        twin[15] = 0x99;
        assert_eq!(
            short.resolve([id(0x33), NodeId(twin)]),
            Err(VersionRefError::AmbiguousAuthor("33111111".into()))
        );
    }

    #[test]
    fn malformed_text_names_what_is_wrong() {
        for (text, want) in [
            ("v6", VersionRefError::NoAuthor("v6".into())),
            ("vx@33111111", VersionRefError::BadCounter("vx".into())),
            ("-1@33111111", VersionRefError::BadCounter("-1".into())),
            ("6@33", VersionRefError::BadAuthor("33".into())),
            ("6@3311111g", VersionRefError::BadAuthor("3311111g".into())),
        ] {
            assert_eq!(text.parse::<VersionRef>(), Err(want), "{text}");
        }
    }
}
