//! Integration tests of the stores: one contract suite run against Postgres and SQLite
//! (`store_contract_tests!`), plus the checks only one backend can make (Postgres RLS,
//! SQLite pragmas and single writer). One test binary (STYLE: far less link time).
//!
//! Postgres tests need the local server of `scripts/services`; the binary makes one fresh
//! database per run and each test uses its own random tenants.

mod contract;
mod pg_only;
mod sqlite_only;
mod support;

/// Runs every contract case against one backend: `store_contract_tests!(postgres)`
/// expands to a module `postgres` with one `#[tokio::test]` per case.
macro_rules! store_contract_tests {
    ($backend:ident) => {
        store_contract_tests!(@cases $backend;
            intake_stores_once_and_rejects_duplicate_message_id,
            next_mailbox_entry_returns_oldest_due_entry_and_skips_later_ones,
            commit_of_new_credential_makes_all_its_rows_visible,
            get_credential_round_trips_every_field,
            commit_with_stale_version_conflicts_and_changes_nothing,
            failed_commit_rolls_back_every_write_of_the_step,
            commit_with_old_fence_is_fenced_after_partition_is_taken,
            schedule_drive_keeps_one_open_entry_and_brings_it_forward,
            pin_and_vendor_ref_round_trip_and_are_encrypted_at_rest,
            mark_published_removes_row_from_unpublished,
            mark_publish_failed_defers_the_row,
            devices_for_rooms_returns_only_own_devices_of_asked_rooms,
            tenant_b_cannot_see_or_touch_tenant_a_data,
        );
    };
    (@cases $backend:ident; $($case:ident),+ $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $case() -> anyhow::Result<()> {
                    let backend = crate::support::Backend::$backend().await?;
                    crate::contract::$case(&backend).await
                }
            )+
        }
    };
}

store_contract_tests!(postgres);
store_contract_tests!(sqlite);
