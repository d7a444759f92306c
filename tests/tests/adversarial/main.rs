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
//! | replayed agent report (the policy tier's heartbeat) | `adversarial::policy::a_replayed_agent_report_is_refused_and_the_newer_one_kept` |
//! | replayed sync from a local | `adversarial::policy::a_replayed_sync_is_refused_and_adds_no_history` |
//! | replayed operator change to a policy server | `adversarial::policy::a_replayed_change_from_the_operator_is_refused_and_a_later_edit_stands` |
//! | rollback to an older policy version | `adversarial::policy::an_older_policy_version_offered_again_is_refused_and_the_newer_kept` |
//! | forged or unsigned policy, unknown signer, oversized report | `policy_fleet::bad_input_is_refused_counted_and_never_stored` |
//! | a policy message on another peer's channel (swapped key) | `policy_fleet::a_message_on_a_channel_whose_peer_is_not_its_sender_is_refused` |
//! | replayed cookie (kept after logout) | `adversarial::web::a_cookie_replayed_after_logout_is_refused_logged_and_runs_nothing` |
//! | altered or foreign cookie | `sim_web::an_altered_cookie_goes_back_to_the_login_form_and_runs_nothing` |

mod member;
mod policy;
mod web;
