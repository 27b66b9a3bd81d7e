//! Reading a machines row.

use std::net::Ipv4Addr;

use rusqlite::Row;

use super::{DbError, MachineRow};

/// A machines row before JSON and enum columns are parsed.
pub(super) struct RawMachine {
    id: String,
    app: String,
    org: String,
    name: String,
    region: String,
    config: String,
    secrets: String,
    version: u64,
    instance_id: String,
    state: String,
    private_ip: String,
    host_ip: String,
    image: Option<String>,
    restart_count: u32,
    restart_window_ms: u64,
    cordoned: bool,
    metadata: String,
    lease: Option<String>,
    created_at: u64,
    updated_at: u64,
}

impl RawMachine {
    pub(super) fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get("id")?,
            app: r.get("app")?,
            org: r.get("org")?,
            name: r.get("name")?,
            region: r.get("region")?,
            config: r.get("config")?,
            secrets: r.get("secrets")?,
            version: r.get("version")?,
            instance_id: r.get("instance_id")?,
            state: r.get("state")?,
            private_ip: r.get("private_ip")?,
            host_ip: r.get("host_ip")?,
            image: r.get("image")?,
            restart_count: r.get("restart_count")?,
            restart_window_ms: r.get("restart_window_ms")?,
            cordoned: r.get("cordoned")?,
            metadata: r.get("metadata")?,
            lease: r.get("lease")?,
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
        })
    }

    pub(super) fn parse(self) -> Result<MachineRow, DbError> {
        let ip = |s: &str| -> Result<Ipv4Addr, DbError> {
            s.parse().map_err(|_| DbError::Corrupt(format!("ip {s:?}")))
        };
        Ok(MachineRow {
            config: serde_json::from_str(&self.config)?,
            secrets: serde_json::from_str(&self.secrets)?,
            state: self.state.parse().map_err(DbError::Corrupt)?,
            private_ip: ip(&self.private_ip)?,
            host_ip: ip(&self.host_ip)?,
            image: self
                .image
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
            metadata: serde_json::from_str(&self.metadata)?,
            lease: self
                .lease
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
            id: self.id,
            app: self.app,
            org: self.org,
            name: self.name,
            region: self.region,
            version: self.version,
            instance_id: self.instance_id,
            restart_count: self.restart_count,
            restart_window_ms: self.restart_window_ms,
            cordoned: self.cordoned,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}
