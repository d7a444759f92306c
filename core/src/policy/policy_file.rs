//! The file an agent writes for its effective policy: TOML made by the `toml` crate's serializer,
//! so every key and value is quoted and escaped as TOML requires (a value holding quotes, a
//! newline or `]` reads back as it was), under one comment line saying what the file is. Owns the
//! format and reading it back; it never decides what a policy holds (the merge does) and never
//! touches a file (the driver writes it).
//!
//! ```toml
//! # cohort: the effective security policy of this agent (...)
//! agent = "web-01"
//! digest = "<64 hex digits>"
//!
//! [params]
//! "firewall.default" = "deny"
//!
//! [sources."firewall.default"]
//! policy = "fw"
//! version = 3
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::merge::EffectivePolicy;

/// The comment the file starts with.
const HEADER: &str = "# cohort: the effective security policy of this agent, rewritten whole at each \
                      change. [params] holds every parameter; [sources] the policy and version each \
                      came from.\n";

/// The effective policy as an agent's file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFile {
    /// The agent it was written for.
    pub agent: String,
    /// The effective policy's digest, hex: what the agent reports as applied.
    pub digest: String,
    /// Every parameter, by key.
    pub params: BTreeMap<String, String>,
    /// For each parameter, the policy and version it came from.
    pub sources: BTreeMap<String, Source>,
}

/// Where one parameter came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub policy: String,
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    /// TOML cannot hold the policy (a version past 2^63 - 1, its largest integer).
    #[error("the effective policy cannot be written as TOML: {0}")]
    Render(#[from] toml::ser::Error),
    #[error("not a policy file an agent writes: {0}")]
    Parse(#[from] toml::de::Error),
}

impl PolicyFile {
    /// The file for `policy`, applied by `agent`.
    pub fn of(policy: &EffectivePolicy, agent: &str) -> PolicyFile {
        let sources = policy
            .sources
            .iter()
            .map(|(key, (id, version))| (key.clone(), Source { policy: id.clone(), version: *version }))
            .collect();
        PolicyFile {
            agent: agent.to_owned(),
            digest: hex::encode(policy.digest),
            params: policy.params.clone(),
            sources,
        }
    }

    /// The file's text.
    pub fn render(&self) -> Result<String, PolicyFileError> {
        Ok(format!("{HEADER}{}", toml::to_string(self)?))
    }

    /// Reads a file's text back.
    pub fn parse(text: &str) -> Result<PolicyFile, PolicyFileError> {
        Ok(toml::from_str(text)?)
    }

    /// The digest it names, if it is 64 hex digits.
    pub fn digest_bytes(&self) -> Option<[u8; 32]> {
        hex::decode(&self.digest).ok()?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::document::{Platform, Policy, PolicyTarget, Scope};
    use crate::policy::merge::effective;
    use proptest::prelude::*;

    fn effective_of(params: &[(&str, &str)], version: u64) -> EffectivePolicy {
        let policy = Policy {
            id: "fw \"main\" ]".into(),
            version,
            author: "master".into(),
            scope: Scope::Global,
            target: PolicyTarget::default(),
            params: params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            retired: false,
        };
        effective([&policy], &Platform::new("linux", "12", "web"), "local-00")
    }

    fn round_trip(policy: &EffectivePolicy, agent: &str) {
        let text = PolicyFile::of(policy, agent).render().expect("renders");
        let back: PolicyFile = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back.params, policy.params, "{text}");
        assert_eq!(back.agent, agent);
        assert_eq!(back.digest_bytes(), Some(policy.digest));
        let sources: BTreeMap<String, (String, u64)> =
            back.sources.into_iter().map(|(k, s)| (k, (s.policy, s.version))).collect();
        assert_eq!(sources, policy.sources);
    }

    #[test]
    fn hostile_keys_and_values_read_back_as_they_were() {
        let hostile = [
            ("firewall.default", "deny"),
            ("quote", "say \"hi\" and 'bye'"),
            ("bracket]", "]]\n[params]\nfirewall.default = \"allow\""),
            ("back\\slash", "C:\\temp\\"),
            ("newline", "a\nb\r\nc"),
            ("tab", "a\tb"),
            ("comment", "# not a comment"),
            ("triple", "'''\"\"\""),
            ("unicode ✓", "ünïcödé \u{7f} \u{200b}"),
            ("", "an empty key"),
            ("empty", ""),
        ];
        let policy = effective_of(&hostile, 3);
        round_trip(&policy, "agent \"00\"\n[params]");
        // Whatever a value holds, there is exactly one `[params]` table and one value per key.
        let text = PolicyFile::of(&policy, "a").render().expect("renders");
        let table: toml::Table = toml::from_str(&text).expect("parses");
        assert_eq!(table["params"].as_table().map(toml::Table::len), Some(hostile.len()));
        assert_eq!(table["params"]["firewall.default"].as_str(), Some("deny"));
        assert!(text.starts_with("# cohort: "), "{text}");
    }

    #[test]
    fn an_empty_policy_is_a_file_with_no_parameters() {
        let policy = effective_of(&[], 1);
        round_trip(&policy, "agent-00");
    }

    #[test]
    fn a_version_toml_cannot_hold_is_an_error_not_a_wrong_file() {
        let policy = effective_of(&[("k", "v")], u64::MAX);
        let err = PolicyFile::of(&policy, "agent-00").render().expect_err("past i64");
        assert!(err.to_string().contains("cannot be written as TOML"), "{err}");
    }

    proptest! {
        #[test]
        fn any_text_reads_back(
            params in prop::collection::btree_map(".{0,24}", ".{0,48}", 0..8),
            agent in ".{0,16}",
        ) {
            let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            round_trip(&effective_of(&params, 7), &agent);
        }
    }
}
