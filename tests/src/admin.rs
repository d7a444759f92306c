//! Reading an operator's exchange with a member in tests: the change it asks for, and what it
//! was told. Panics name what came instead, so a failing test says what the member answered.

use cohort_core::admin::AdminResponse;
use cohort_core::member::{Change, Version};

/// One shared setting set to a value.
pub fn set(key: &str, value: &str) -> Vec<Change> {
    vec![Change::Set { key: key.into(), value: value.into() }]
}

/// The version the operator was told its change was accepted as.
pub fn accepted(answer: AdminResponse) -> Version {
    match answer {
        AdminResponse::ChangeAccepted { version } => version,
        other => panic!("the change was not accepted: {other:?}"),
    }
}

/// Why the operator was told its change was rejected.
pub fn rejected(answer: AdminResponse) -> String {
    match answer {
        AdminResponse::ChangeRejected { reason } => reason,
        other => panic!("the change was not rejected: {other:?}"),
    }
}
