//! Per-member settings (source 000, claims 19-20): besides the shared settings, a configuration
//! may hold a section per member whose values are sealed, one by one, to that member's key by
//! the operator who sets them. Any author carries a section from version to version without being
//! able to read it, and a member can open its own section only. Owns sealing and opening those
//! values and the context they are bound to. It never decides who may set them (a signed change
//! does) and never opens a value for anyone but its recipient.

use std::collections::BTreeMap;

use crate::identity::{NodeKeys, PublicIdentity};
use crate::rng::SeededRng;
use crate::seal::{self, SealError, SealedBox};

/// What a sealed value is bound to: the cluster, the member it is for and the key it is stored
/// under, so an author cannot move it to another member, key or cluster. It is not bound to a
/// version: sections outlive the version that set them.
fn value_info(cluster_id: &str, member: &PublicIdentity, key: &str) -> Vec<u8> {
    let mut info = b"cohort member setting v1\0".to_vec();
    info.extend_from_slice(cluster_id.as_bytes());
    info.push(0);
    info.extend_from_slice(&member.key_digest().0);
    info.extend_from_slice(key.as_bytes());
    info
}

/// Seals `value` of `key` so only `member` opens it, in `cluster_id`.
pub fn seal_value(
    cluster_id: &str,
    member: &PublicIdentity,
    key: &str,
    value: &str,
    rng: &mut SeededRng,
) -> Result<SealedBox, SealError> {
    seal::seal(member, &value_info(cluster_id, member, key), b"", value.as_bytes(), rng)
}

/// A member's own section, opened: the values it could read, and the keys of any it could not
/// (sealed to another key, or altered), which are left out of every answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenedSection {
    pub values: BTreeMap<String, String>,
    pub unreadable: Vec<String>,
}

/// Opens every value of `section` with `keys`.
pub fn open_section(
    cluster_id: &str,
    keys: &NodeKeys,
    section: &BTreeMap<String, SealedBox>,
) -> OpenedSection {
    let me = keys.public();
    let mut opened = OpenedSection::default();
    for (key, sealed) in section {
        let value = seal::open(keys, &value_info(cluster_id, &me, key), b"", sealed)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        match value {
            Some(value) => {
                opened.values.insert(key.clone(), value);
            }
            None => opened.unreadable.push(key.clone()),
        }
    }
    opened
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::block::{Author, ConfigBlock, TrustedAuthors, verify_and_open};
    use crate::member::config::{Change, ClusterConfig, MemberInfo, OperatorInfo, Version};
    use crate::rng::seeded;

    #[test]
    fn a_member_cannot_open_another_members_section_from_the_block_it_holds() {
        let mut rng = seeded(11);
        let operator = NodeKeys::generate(&mut rng);
        let m1 = NodeKeys::generate(&mut rng);
        let m2 = NodeKeys::generate(&mut rng);
        let op = OperatorInfo { name: "ops".into(), identity: operator.public() };
        let info = |name: &str, k: &NodeKeys| MemberInfo {
            name: name.into(),
            identity: k.public(),
            address: format!("{name}:1"),
        };
        let config = ClusterConfig {
            cluster_id: "c1".into(),
            version: Version { counter: 1, author: op.id() },
            members: [info("m1", &m1), info("m2", &m2)]
                .into_iter()
                .map(|m| (m.identity.node_id(), m))
                .collect(),
            operators: [(op.id(), op.clone())].into_iter().collect(),
            settings: [("shared".to_owned(), "everyone".to_owned())].into_iter().collect(),
            sections: BTreeMap::new(),
            applied_requests: Vec::new(),
        };
        let secret = seal_value("c1", &m2.public(), "db.password", "m2-only", &mut rng).expect("seals");
        let v2 = Version { counter: 2, author: op.id() };
        let change =
            Change::SetFor { member: m2.public().node_id(), key: "db.password".into(), value: secret };
        let config = config.with_changes(&[change], v2).expect("applies");
        let block =
            ConfigBlock::seal(&config, Author::Operator(operator.public().signing), &operator, &mut rng)
                .expect("seals");
        let trusted = TrustedAuthors {
            members: [&m1, &m2].iter().map(|k| (k.node_id(), k.public())).collect(),
            operators: [(op.id(), op.signing())].into_iter().collect(),
        };

        // m1 opens the block: it sees the shared settings and m2's section only as sealed bytes.
        let at_m1 = verify_and_open("c1", &block, &m1, &trusted).expect("m1 opens its entry");
        let m2_section = at_m1.sections.get(&m2.public().node_id()).expect("m2's section travels");
        let sealed = m2_section.get("db.password").expect("the value travels sealed");
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"m2-only"), "the value is not in clear");
        // Opened with m1's key, as if it were m1's own, nothing reads.
        let tried = open_section("c1", &m1, m2_section);
        assert!(tried.values.is_empty());
        assert_eq!(tried.unreadable, vec!["db.password".to_owned()]);

        // m2 opens its own.
        let at_m2 = verify_and_open("c1", &block, &m2, &trusted).expect("m2 opens its entry");
        let own = open_section("c1", &m2, &at_m2.sections[&m2.public().node_id()]);
        assert_eq!(own.values.get("db.password").map(String::as_str), Some("m2-only"));
    }

    #[test]
    fn a_value_moved_to_another_key_or_member_does_not_open() {
        let mut rng = seeded(12);
        let m2 = NodeKeys::generate(&mut rng);
        let sealed = seal_value("c1", &m2.public(), "a", "value", &mut rng).expect("seals");
        let moved: BTreeMap<String, SealedBox> = [("b".to_owned(), sealed.clone())].into_iter().collect();
        assert_eq!(open_section("c1", &m2, &moved).unreadable, vec!["b".to_owned()]);
        let other_cluster: BTreeMap<String, SealedBox> = [("a".to_owned(), sealed)].into_iter().collect();
        assert_eq!(open_section("c2", &m2, &other_cluster).unreadable, vec!["a".to_owned()]);
    }
}
