//! A small migration runner: the SQL files under `migrations/<backend>/`, embedded in the
//! binary, applied in order once each and recorded in `_lockstep_migrations`.

/// One migration.
pub struct Migration {
    /// Ordinal.
    pub version: i64,
    /// Name.
    pub name: &'static str,
    /// SQL.
    pub sql: &'static str,
}

/// Postgres migrations.
pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "i9_master_keys_policies",
        sql: include_str!("../migrations/postgres/0002_i9_master_keys_policies.sql"),
    },
    Migration {
        version: 3,
        name: "resume_parked",
        sql: include_str!("../migrations/postgres/0003_resume_parked.sql"),
    },
    Migration {
        version: 4,
        name: "deactivated_users",
        sql: include_str!("../migrations/postgres/0004_deactivated_users.sql"),
    },
    Migration {
        version: 5,
        name: "vendor_rate_limits",
        sql: include_str!("../migrations/postgres/0005_vendor_rate_limits.sql"),
    },
    Migration {
        version: 6,
        name: "device_registry",
        sql: include_str!("../migrations/postgres/0006_device_registry.sql"),
    },
    Migration {
        version: 7,
        name: "vendor_credentials",
        sql: include_str!("../migrations/postgres/0007_vendor_credentials.sql"),
    },
    Migration {
        version: 8,
        name: "audit_chain",
        sql: include_str!("../migrations/postgres/0008_audit_chain.sql"),
    },
    Migration {
        version: 9,
        name: "audit_roots",
        sql: include_str!("../migrations/postgres/0009_audit_roots.sql"),
    },
    Migration {
        version: 10,
        name: "webhooks_attempts",
        sql: include_str!("../migrations/postgres/0010_webhooks_attempts.sql"),
    },
    Migration {
        version: 11,
        name: "offline_issuance",
        sql: include_str!("../migrations/postgres/0011_offline_issuance.sql"),
    },
    Migration {
        version: 12,
        name: "stale_key_window",
        sql: include_str!("../migrations/postgres/0012_stale_key_window.sql"),
    },
    Migration {
        version: 13,
        name: "desk_relay",
        sql: include_str!("../migrations/postgres/0013_desk_relay.sql"),
    },
    Migration {
        version: 14,
        name: "audit_linker_retention",
        sql: include_str!("../migrations/postgres/0014_audit_linker_retention.sql"),
    },
    Migration {
        version: 15,
        name: "offline_rotation",
        sql: include_str!("../migrations/postgres/0015_offline_rotation.sql"),
    },
    Migration {
        version: 16,
        name: "device_area",
        sql: include_str!("../migrations/postgres/0016_device_area.sql"),
    },
    Migration {
        version: 17,
        name: "device_lifecycle",
        sql: include_str!("../migrations/postgres/0017_device_lifecycle.sql"),
    },
    Migration {
        version: 18,
        name: "deactivated_properties",
        sql: include_str!("../migrations/postgres/0018_deactivated_properties.sql"),
    },
    Migration {
        version: 19,
        name: "plan_indexes",
        sql: include_str!("../migrations/postgres/0019_plan_indexes.sql"),
    },
    Migration {
        version: 20,
        name: "room_link_live",
        sql: include_str!("../migrations/postgres/0020_room_link_live.sql"),
    },
];

/// SQLite migrations.
pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "i9_master_keys_policies",
        sql: include_str!("../migrations/sqlite/0002_i9_master_keys_policies.sql"),
    },
    Migration {
        version: 3,
        name: "resume_parked",
        sql: include_str!("../migrations/sqlite/0003_resume_parked.sql"),
    },
    Migration {
        version: 4,
        name: "deactivated_users",
        sql: include_str!("../migrations/sqlite/0004_deactivated_users.sql"),
    },
    Migration {
        version: 5,
        name: "vendor_rate_limits",
        sql: include_str!("../migrations/sqlite/0005_vendor_rate_limits.sql"),
    },
    Migration {
        version: 6,
        name: "device_registry",
        sql: include_str!("../migrations/sqlite/0006_device_registry.sql"),
    },
    Migration {
        version: 7,
        name: "vendor_credentials",
        sql: include_str!("../migrations/sqlite/0007_vendor_credentials.sql"),
    },
    Migration {
        version: 8,
        name: "audit_chain",
        sql: include_str!("../migrations/sqlite/0008_audit_chain.sql"),
    },
    Migration {
        version: 9,
        name: "audit_roots",
        sql: include_str!("../migrations/sqlite/0009_audit_roots.sql"),
    },
    Migration {
        version: 10,
        name: "webhooks_attempts",
        sql: include_str!("../migrations/sqlite/0010_webhooks_attempts.sql"),
    },
    Migration {
        version: 11,
        name: "offline_issuance",
        sql: include_str!("../migrations/sqlite/0011_offline_issuance.sql"),
    },
    Migration {
        version: 12,
        name: "stale_key_window",
        sql: include_str!("../migrations/sqlite/0012_stale_key_window.sql"),
    },
    Migration {
        version: 13,
        name: "desk_relay",
        sql: include_str!("../migrations/sqlite/0013_desk_relay.sql"),
    },
    Migration {
        version: 14,
        name: "audit_linker_retention",
        sql: include_str!("../migrations/sqlite/0014_audit_linker_retention.sql"),
    },
    Migration {
        version: 15,
        name: "offline_rotation",
        sql: include_str!("../migrations/sqlite/0015_offline_rotation.sql"),
    },
    Migration {
        version: 16,
        name: "device_area",
        sql: include_str!("../migrations/sqlite/0016_device_area.sql"),
    },
    Migration {
        version: 17,
        name: "device_lifecycle",
        sql: include_str!("../migrations/sqlite/0017_device_lifecycle.sql"),
    },
    Migration {
        version: 18,
        name: "deactivated_properties",
        sql: include_str!("../migrations/sqlite/0018_deactivated_properties.sql"),
    },
    Migration {
        version: 19,
        name: "plan_indexes",
        sql: include_str!("../migrations/sqlite/0019_plan_indexes.sql"),
    },
    Migration {
        version: 20,
        name: "room_link_live",
        sql: include_str!("../migrations/sqlite/0020_room_link_live.sql"),
    },
];
