//! Integration tests of the stores: one contract suite run against Postgres and SQLite
//! (`store_contract_tests!`), plus the checks only one backend can make (Postgres RLS,
//! SQLite pragmas and single writer). One test binary (STYLE: far less link time).
//!
//! Postgres tests need the local server of `scripts/services`; the binary makes one fresh
//! database per run and each test uses its own random tenants.

mod contract;
mod pg_only;
mod plans;
mod sqlite_only;
mod support;
mod tidy;

/// Runs every contract case against one backend: `store_contract_tests!(postgres)`
/// expands to a module `postgres` with a module per table group and one `#[tokio::test]`
/// per case (`postgres::mailbox::resume_parked_brings_…`).
macro_rules! store_contract_tests {
    ($backend:ident) => {
        store_contract_tests!(@cases $backend;
            inbox {
                intake_stores_once_and_rejects_duplicate_message_id,
                insert_inbox_is_true_once_per_tenant_message_and_consumer,
                intake_batch_dedupes_each_message_in_one_transaction,
                insert_inbox_batch_records_each_new_message_once_in_order,
                intake_batch_longer_than_one_statement_keeps_order_and_dedupe,
            },
            mailbox {
                next_mailbox_entry_returns_oldest_due_entry_and_skips_later_ones,
                schedule_drive_keeps_one_open_entry_and_brings_it_forward,
                enqueued_entries_come_out_when_due_events_before_drives,
                retry_and_complete_touch_only_open_entries_and_outcomes_follow,
                timer_scans_see_due_subjects_properties_and_depth_across_tenants,
                due_subjects_list_removals_first_and_mark_them,
                resume_parked_brings_a_vendors_drives_forward_removals_first,
                undecided_removals_count_due_open_removal_messages_at_the_adapters_properties,
                subject_partition_is_the_newest_entrys_open_or_done,
                enqueue_events_store_a_batch_in_its_order,
            },
            credentials {
                get_credential_round_trips_every_field,
                credentials_of_property_filters_states_and_routes_to_subjects,
                i9_refuses_an_overlapping_stay_of_another_reservation,
                i9_allows_same_stay_adjacent_stay_master_and_terminal_windows,
                i9_room_links_follow_rooms_and_window_of_the_credential,
                i9_racing_stores_admit_exactly_one_overlapping_credential,
                credential_writes_are_read_in_their_tx_and_seen_by_others_after_commit,
                list_credentials_filters_pages_and_finds_what_opens_a_door,
            },
            door_truth {
                pin_and_vendor_ref_round_trip_and_are_encrypted_at_rest,
                door_backlog_counts_unconfirmed_removals_and_issues,
                door_truth_keeps_the_stale_key_window_and_reads_by_credential_and_device,
                pending_removals_count_absent_pending_rows_of_the_adapters_asked,
            },
            saga {
                saga_state_is_put_replaced_and_loaded_per_tenant,
            },
            outbox {
                mark_published_removes_row_from_unpublished,
                mark_publish_failed_defers_the_row,
                appended_rows_are_handed_out_in_due_order_under_their_tenant,
                unroutable_rows_are_listed_by_topic_and_released_oldest_first,
                claimed_rows_go_to_one_publisher_until_their_lease_ends,
            },
            audit {
                audit_rows_form_one_gap_free_hash_chain_per_property,
                appended_audit_rows_wait_unlinked_until_the_linker_links_them_in_order,
                racing_linkers_link_every_row_once_without_gaps,
                pruning_deletes_old_sealed_stretches_and_keeps_the_chain_verifiable_from_its_anchor,
            },
            retention {
                retention_deletes_rows_past_their_window_and_the_audit_still_verifies,
                prune_expired_deletes_bounded_batches_oldest_first,
            },
            devices {
                devices_for_rooms_returns_only_own_devices_of_asked_rooms,
                area_devices_are_the_live_doors_with_an_area_of_the_property,
                d1_a_vendor_device_ref_registers_once_per_property_and_vendor,
                device_health_round_trips_and_registration_writes_its_event_once,
                registry_writes_are_read_back_and_stay_in_their_tenant,
                devices_page_take_thresholds_and_retire_once,
            },
            policies {
                policy_upsert_round_trips_keeps_id_and_enforces_k1_k2,
                policy_is_upserted_and_read_in_one_tx,
            },
            master_keys {
                master_keys_insert_revoke_and_one_active_per_scope_kind,
                master_keys_are_written_and_read_in_one_tx,
            },
            users {
                user_deactivation_is_recorded_once_per_tenant,
                user_deactivation_is_written_and_read_in_one_tx,
                property_deactivation_is_recorded_once_per_tenant_and_property,
            },
            vendor_accounts {
                rate_slots_are_spaced_held_and_kept_per_tenant_account,
                vendor_credentials_record_pointers_and_detect_rotation,
                vendor_account_rows_are_written_and_read_in_one_tx,
            },
            attempts {
                attempts_are_append_only_and_unique_per_vendor_event,
                attempts_and_webhooks_are_appended_and_found_by_their_vendor_ids,
            },
            offline {
                offline_certificates_round_trip_and_stay_in_their_tenant,
                offline_certificates_are_saved_read_and_counted_by_expiry,
                a_renewed_certificate_names_the_one_it_renews,
            },
            offline_signatures {
                a_certificate_signature_is_stored_beside_it,
            },
            encoder_sessions {
                encoder_sessions_open_close_once_and_stay_in_their_tenant,
                open_sessions_are_scanned_by_node_across_tenants,
            },
            encode_jobs {
                an_encode_job_is_stored_once_and_keeps_its_holders_and_card,
                the_card_ledger_lists_replaces_cancels_and_restores,
            },
            provisional {
                a_provisional_verdict_is_final_and_keeps_its_handoff,
                o2_a_revoked_certificate_flags_its_valid_items_once,
            },
            rotation {
                key_rotation_reencrypts_every_secret_column,
                reencrypt_moves_a_tenants_rows_in_batches_and_no_other_tenants,
            },
            partitions {
                commit_with_old_fence_is_fenced_after_partition_is_taken,
                taking_a_partition_moves_its_fence_and_begin_checks_it,
            },
            transactions {
                uncommitted_writes_are_private_and_rollback_or_drop_discards_them,
                ping_answers_until_the_store_is_closed,
                a_step_names_its_tables_and_runs_in_one_tx_in_a_spawned_task,
            },
            unit_of_work {
                commit_of_new_credential_makes_all_its_rows_visible,
                commit_with_stale_version_conflicts_and_changes_nothing,
                failed_commit_rolls_back_every_write_of_the_step,
                tenant_b_cannot_see_or_touch_tenant_a_data,
            },
        );
    };
    (@cases $backend:ident; $($table:ident { $($case:ident),+ $(,)? }),+ $(,)?) => {
        mod $backend {
            $(
                mod $table {
                    $(
                        // Two worker threads: racing cases really run side by side.
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $case() -> anyhow::Result<()> {
                            let backend = crate::support::Backend::$backend().await?;
                            crate::contract::$table::$case(&backend).await
                        }
                    )+
                }
            )+
        }
    };
}

store_contract_tests!(postgres);
store_contract_tests!(sqlite);
