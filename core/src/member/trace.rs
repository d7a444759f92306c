//! How member inputs and outputs read in a trace: one line each, versions and node ids short,
//! bytes as digests. It never prints a configuration's secrets (there are none in settings by
//! contract, but entries are shown only as digests anyway).

use super::io::{LookupAnswer, MemberInput, MemberOutput};
use super::messages::MemberMessage;
use crate::trace::{TraceEvent, short};

fn short_id(id: &crate::NodeId) -> String {
    id.to_hex()[..8].to_owned()
}

fn describe_message(message: &MemberMessage) -> String {
    match message {
        MemberMessage::Status(s) => {
            let b = &s.body;
            let staged = b.staged.map_or_else(|| "-".to_owned(), |v| v.to_string());
            format!(
                "Status from={} active={} staged={} seq={:#x}",
                short_id(&b.sender),
                b.active,
                staged,
                b.seq
            )
        }
        MemberMessage::Fetch(f) => format!("Fetch {} by {}", f.body.version, short_id(&f.body.requester)),
        MemberMessage::FetchReply { block } => {
            format!(
                "FetchReply {} body={} entries={}",
                block.version(),
                short(&block.body),
                block.entries.len()
            )
        }
        MemberMessage::FetchRefused { version } => format!("FetchRefused {version}"),
        MemberMessage::NotInVersion { header } => format!("NotInVersion {}", header.body.version),
    }
}

impl TraceEvent for MemberInput {
    fn describe(&self) -> String {
        match self {
            MemberInput::Received { bytes, .. } => match MemberMessage::from_wire(bytes) {
                Ok(m) => format!("Received {}", describe_message(&m)),
                Err(e) => format!("Received {} undecodable: {e}", short(bytes)),
            },
            MemberInput::Persisted(t) => format!("Persisted #{}", t.0),
            MemberInput::Timeout => "Timeout".to_owned(),
            MemberInput::Change { request_id, request } => {
                format!(
                    "Change #{request_id} base={} changes={}",
                    request.body.base,
                    request.body.changes.len()
                )
            }
            MemberInput::Lookup { request_id, key } => format!("Lookup #{request_id} {key:?}"),
        }
    }
}

impl TraceEvent for MemberOutput {
    fn describe(&self) -> String {
        match self {
            MemberOutput::Send { to, message, .. } => {
                format!("Send to={} {}", short_id(to), describe_message(message))
            }
            MemberOutput::Persist { token, record } => {
                let staged =
                    record.staged.as_ref().map_or_else(|| "-".to_owned(), |s| s.version().to_string());
                format!(
                    "Persist #{} epoch={} active={} staged={staged}",
                    token.0,
                    record.boot_epoch,
                    record.active.version()
                )
            }
            MemberOutput::Staged { version, source: None } => format!("Staged {version}"),
            MemberOutput::Staged { version, source: Some(from) } => {
                format!("Staged {version} from {}", short_id(from))
            }
            MemberOutput::Heard { from, active, staged } => {
                let staged = staged.map_or_else(|| "-".to_owned(), |v| v.to_string());
                format!("Heard {} active={active} staged={staged}", short_id(from))
            }
            MemberOutput::Removed { version } => format!("Removed in {version}"),
            MemberOutput::Installed { version, config_hash } => {
                format!("Installed {version} config={}", hex::encode(&config_hash[..4]))
            }
            MemberOutput::Dropped { reason } => format!("Dropped {}: {reason}", reason.kind()),
            MemberOutput::ChangeAccepted { request_id, version } => {
                format!("ChangeAccepted #{request_id} {version}")
            }
            MemberOutput::ChangeRejected { request_id, error } => {
                format!("ChangeRejected #{request_id}: {error}")
            }
            MemberOutput::LookupAnswer { request_id, answer } => match answer {
                LookupAnswer::Value { version, key, value } => {
                    format!("LookupAnswer #{request_id} {key}={value:?} from {version}")
                }
                LookupAnswer::Settings { version, settings } => {
                    format!("LookupAnswer #{request_id} {} settings from {version}", settings.len())
                }
                LookupAnswer::Declined { retry_after } => {
                    format!("LookupAnswer #{request_id} declined, retry after {retry_after:?}")
                }
            },
        }
    }
}
