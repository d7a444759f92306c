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
//! | replayed audit record | `adversarial::exec::an_audit_record_submitted_again_is_not_appended_twice_and_is_logged`, `core::exec::audit` (`a_record_older_than_every_one_remembered_is_refused_as_too_old`) |
//! | forged audit record (another host's name) | `exec_security::an_audit_record_not_signed_by_the_host_it_names_is_refused_and_counted` |
//! | replayed authenticator | `exec_security::a_replayed_authenticator_is_refused_and_audited` |
//! | replayed ticket (for another host, expired, not sealed by the KDC) | `exec_security::a_ticket_for_another_host_is_refused_and_audited`, `…an_expired_ticket…`, `…a_ticket_not_sealed_by_the_kdc…` |
//! | forged credential, or one used from another client key | `exec_security::the_gateway_refuses_to_act_without_a_valid_credential` |
//! | removed exec host still asked to run | `exec_directory::a_daemon_whose_configuration_no_longer_lists_its_host_refuses_and_audits_it` |
//! | swapped key under a host's name | `core::exec::kdc` (`a_host_listed_under_a_new_key_gets_tickets_only_it_can_open`), `core::exec::audit` (`records_are_checked_against_the_signers_current_keys`) |
//! | injection through an environment variable | `exec_security::a_variable_the_acl_does_not_list_or_the_authenticator_does_not_cover_is_refused_by_the_host` |
//! | injection through `%h` or a host name | `exec_security::percent_h_becomes_each_hosts_name`, `core::exec::nodeset` (`bad_sets_are_errors_not_panics_or_huge_allocations`), `io-mio::child` (`argv_is_not_interpreted_by_a_shell`) |
//! | path traversal in copy destinations | `exec_copy::a_path_outside_the_copy_prefixes_is_refused_everywhere_and_placed_nowhere` |
//! | oversized message | `channel::an_oversized_length_prefix_is_rejected_before_allocating`, `cli/tests/node_hostile.rs` (4 GiB prefix), `policy_fleet::bad_input_is_refused_counted_and_never_stored` |
//! | half-open flood, slow handshake | `cli/tests/node_hostile.rs::hostile_clients_are_dropped_and_the_node_goes_on_serving` |
//! | slow web client | `cli/tests/web_slow_clients.rs` |
//! | slow client on a channel (a byte a second, after the handshake) | `core::node::conns` (`a_peer_sending_a_byte_a_second_is_closed_when_its_frame_is_not_whole_in_time`, and `a_long_message_arriving_steadily_is_never_cut_for_slowness`) |

mod exec;
mod member;
mod policy;
mod web;
