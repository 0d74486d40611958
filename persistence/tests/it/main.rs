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
            i9_refuses_an_overlapping_stay_of_another_reservation,
            i9_allows_same_stay_adjacent_stay_master_and_terminal_windows,
            i9_room_links_follow_rooms_and_window_of_the_credential,
            i9_racing_stores_admit_exactly_one_overlapping_credential,
            master_keys_insert_revoke_and_one_active_per_scope_kind,
            policy_upsert_round_trips_keeps_id_and_enforces_k1_k2,
            credentials_of_property_filters_states_and_routes_to_subjects,
            door_backlog_counts_unconfirmed_removals_and_issues,
            user_deactivation_is_recorded_once_per_tenant,
            rate_slots_are_spaced_held_and_kept_per_tenant_account,
            d1_a_vendor_device_ref_registers_once_per_property_and_vendor,
            device_health_round_trips_and_registration_writes_its_event_once,
            vendor_credentials_record_pointers_and_detect_rotation,
            audit_rows_form_one_gap_free_hash_chain_per_property,
            attempts_are_append_only_and_unique_per_vendor_event,
            key_rotation_reencrypts_every_secret_column,
            offline_certificates_round_trip_and_stay_in_their_tenant,
        );
    };
    (@cases $backend:ident; $($case:ident),+ $(,)?) => {
        mod $backend {
            $(
                // Two worker threads: racing cases really run side by side.
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
