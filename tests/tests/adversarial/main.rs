//! The adversarial suite: each test one attack on a running cohort, showing that it fails safe
//! and leaves a trace. Every case asserts three things: the refusal, the log line, count or
//! audit record that tells the operator about it, and that nothing the attack aimed at changed.
//!
//! Some attacks are tested where the rule they break lives; this table names each case of the
//! hardening issue and the test that shows it.
//!
//! | attack | test |
//! |---|---|
//! | replayed heartbeat (member Status) | `member_rules::rule2_…` (stale-sequence, counted in `cohort status`) |
//! | replayed fetch | `adversarial::member::a_replayed_fetch_is_not_answered_twice` |
//! | replayed change request | `adversarial::member::a_replayed_change_request_applies_once_before_and_after_it_installs` |
//! | rollback to an older configuration | `adversarial::member::an_older_block_offered_again_is_refused_and_the_newer_one_kept` |
//! | removed member still talking | `adversarial::member::a_removed_member_is_cut_off_and_cannot_open_a_channel_again` |
//! | forged heartbeat, block | `member_rules::rule2_…`, `member_rules::rule4_…` |
//! | swapped key under a member's name | `member_rules::rule2_…` (no channel), `core::member::config` (`a_member_listed_under_the_wrong_id_is_refused`) |

mod member;
