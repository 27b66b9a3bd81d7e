//! godwit-types: the data model every Godwit process shares — ids, machine config and state, events,
//! API request/response bodies, the records published to the state layer and the wire types between
//! the API and host agents.
//!
//! Serde only: this crate performs no I/O and depends on no other godwit crate. Field names follow the
//! Fly Machines API where the concept is the same, so Fly-shaped bodies deserialize unchanged.

pub mod api;
pub mod duration;
pub mod ids;
pub mod machine;
pub mod record;
pub mod signal;

pub use ids::{MachineId, ParseIdError, validate_app_name};
pub use machine::{
    CheckResult, CheckStatus, Concurrency, EventRequest, ExitEvent, GuestConfig, ImageRef,
    InitConfig, Machine, MachineCheck, MachineConfig, MachineEvent, MachineService, MachineState,
    RestartConfig, RestartPolicy, ServiceCheck, StopConfig,
};
pub use record::{
    ACME_BUCKET, AcmeChallengeKind, AcmeChallengeRecord, CERTS_BUCKET, CertRecord, HostRecord,
    MachineRecord, SealedKey,
};

/// Milliseconds since the Unix epoch, the timestamp unit of machine events.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
