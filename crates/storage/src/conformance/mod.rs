//! The behaviour every backend must show, one `pub async fn` per behaviour, each taking a
//! fresh `&Store`. `conformance_tests!` expands the list into one `#[tokio::test]` per
//! function, so a backend's test file is one line:
//!
//! ```text
//! picloud_storage::conformance_tests!(picloud_storage::testing::sqlite_store);
//! ```
//!
//! The setup path names an `async fn() -> testing::TestDb`. Timestamps written by the
//! suite are whole milliseconds, the precision both backends are promised to keep.
mod blobs;
mod cron;
mod dead_letters;
mod group_commit;
mod idempotency;
mod kv;
mod limits;
mod nodes;
mod outbox;
mod realtime;
mod settings;
mod tokens;
pub use blobs::*;
pub use cron::*;
pub use dead_letters::*;
pub use group_commit::*;
pub use idempotency::*;
pub use kv::*;
pub use limits::*;
pub use nodes::*;
pub use outbox::*;
pub use realtime::*;
pub use settings::*;
pub use tokens::*;

use chrono::{DateTime, Duration, TimeZone, Utc};
use shared::store::HttpMethod;
use shared::store::{InvocationFilter, NewTrigger, TriggerSpec};
use shared::{
    AppName, InvocationId, InvocationRecord, InvocationStatus, LogLevel, LogLine, RoutePath,
    ScriptName, Store, StoreError,
};

/// Expand the suite into `#[tokio::test]`s that each get a store from `$setup`.
#[macro_export]
macro_rules! conformance_tests {
    ($setup:path) => {
        $crate::conformance_tests!(@each $setup;
            apps_can_be_created_fetched_listed_and_deleted,
            creating_an_app_twice_is_a_conflict,
            a_missing_app_is_not_found_on_get_and_delete,
            deleting_an_app_removes_its_scripts_triggers_and_invocations,
            deploying_three_times_gives_versions_one_two_three_and_the_last_is_active,
            versions_are_listed_newest_first_with_their_size_and_the_active_flag,
            rollback_moves_the_active_version,
            rolling_back_to_a_missing_version_or_script_is_not_found,
            version_numbers_are_not_reused_after_a_rollback,
            deleting_a_script_removes_its_versions_and_its_triggers,
            deploying_to_a_missing_app_is_not_found,
            triggers_can_be_created_listed_and_deleted,
            a_duplicate_route_in_one_app_is_a_conflict_but_not_across_apps,
            a_trigger_for_a_missing_script_or_app_is_not_found,
            invocations_are_listed_newest_first_with_every_filter,
            invocations_page_through_the_before_cursor_without_gaps_or_repeats,
            invocations_made_before_a_cutoff_are_purged_oldest_first_in_bounded_steps,
            records_for_a_deleted_app_are_skipped_without_error,
            dropped_records_are_counted_per_app_and_go_with_the_app,
            one_app_never_sees_another_apps_scripts_triggers_or_invocations,
            a_record_with_logs_error_and_http_status_round_trips_exactly,
            tokens_can_be_created_found_listed_counted_and_deleted,
            a_duplicate_token_hash_is_a_conflict,
            tokens_keep_their_role_and_app_scope,
            a_deleted_app_leaves_every_token_scope_that_named_it,
            the_last_admin_token_cannot_be_deleted_but_other_tokens_can,
            two_admins_deleting_each_other_at_once_always_leave_one,
            sessions_act_as_their_token_until_they_expire_end_or_the_token_goes,
            ping_answers_and_the_backend_names_itself,
            concurrent_deploys_of_one_script_get_distinct_consecutive_versions,
            publish_fans_out_to_every_subscriber_and_to_nobody_without_one,
            send_goes_to_the_consumer_or_waits_parked_until_the_queue_trigger_exists,
            an_idempotency_key_sends_once_per_queue,
            a_delayed_send_is_not_claimable_before_its_time,
            a_claim_leases_rows_until_the_lease_expires_and_counts_the_unfinished_run,
            an_expired_claim_is_taken_over_before_rows_that_waited_behind_it,
            a_row_that_does_not_decode_becomes_a_dead_letter_and_the_others_run,
            a_done_commit_deletes_the_row_applies_emits_and_records_the_attempt,
            a_retry_bumps_the_attempt_and_the_due_time,
            a_retry_due_now_is_claimed_again_as_the_next_attempt,
            a_released_event_comes_back_with_the_same_attempt,
            dead_writes_a_dead_letter_and_fans_out_but_a_dead_dead_letter_event_does_not,
            a_commit_with_a_lost_lease_skips_only_that_event,
            a_batch_whose_stale_claims_rows_were_taken_again_commits_only_the_live_claims_events,
            a_stale_claim_cannot_finish_retry_release_or_dead_letter_a_row_claimed_again,
            an_event_whose_writes_fail_is_retried_alone_and_the_batch_commits,
            a_batch_of_hot_key_increments_and_sets_applies_every_events_writes_once,
            a_thousand_rows_claimed_by_four_concurrent_claimers_go_out_once,
            next_due_at_is_none_for_an_empty_outbox_and_the_oldest_row_otherwise,
            next_due_at_is_the_sooner_of_the_first_free_row_and_the_first_lease_end,
            inserted_wakes_after_a_commit_that_inserted_rows,
            invoke_async_and_email_become_rows_with_five_attempts,
            applying_effects_to_a_missing_app_is_not_found,
            a_runs_effects_never_reach_an_app_deleted_and_created_again_under_its_name,
            a_group_of_sync_runs_commits_each_run_once_and_a_failing_run_fails_alone,
            a_group_of_keyed_runs_stores_each_answer_and_a_run_without_its_key_fails_alone,
            a_group_of_sets_of_many_keys_in_two_apps_stores_each_with_its_expiry,
            deleting_an_app_removes_its_outbox_rows_and_dead_letters,
            fire_cron_fires_once_per_slot_and_refuses_an_older_or_equal_slot,
            two_schedulers_firing_one_slot_at_once_fire_it_once,
            fire_cron_on_a_missing_or_non_cron_trigger_fires_nothing,
            every_trigger_kind_round_trips_through_list_and_list_all,
            dead_letters_list_newest_first_page_by_id_and_are_fetched_by_id,
            replay_puts_the_event_back_with_its_triggers_attempts_and_removes_the_letter,
            a_replay_without_its_trigger_gets_five_attempts_and_wakes_the_outbox,
            dead_letters_are_deleted_purged_per_app_and_by_age,
            queue_samples_count_each_apps_outbox_and_dead_letters_per_minute_and_are_pruned,
            kv_entries_can_be_set_read_listed_by_prefix_and_deleted,
            kv_lists_page_with_the_after_cursor_without_gaps_or_repeats,
            kv_entries_past_their_ttl_are_invisible_and_overwritten_by_set,
            kv_increments_start_at_zero_and_twenty_concurrent_applies_all_count,
            kv_incrementing_a_non_integer_is_a_conflict_and_commits_nothing,
            kv_an_increment_past_the_64_bit_range_is_a_conflict_and_keeps_the_value,
            kv_one_app_never_sees_or_lists_another_apps_keys_even_with_crafted_names,
            kv_writes_for_a_missing_app_are_not_found,
            kv_blocking_reads_see_the_last_commit_honour_expiry_and_stay_in_their_app,
            kv_blocking_reads_fail_once_the_store_is_closed,
            objects_round_trip_and_a_missing_object_is_not_found,
            blob_put_overwrite_and_delete_free_exactly_the_old_objects,
            blobs_list_by_prefix_with_paging_and_empty_blobs_are_valid,
            blob_names_of_one_app_are_invisible_to_another,
            config_values_can_be_set_listed_overwritten_and_deleted,
            secrets_round_trip_by_name_and_only_their_names_are_listed,
            settings_and_mail_for_a_missing_app_are_not_found,
            the_mailbox_lists_an_apps_messages_newest_first,
            deleting_an_app_removes_its_kv_blobs_config_secrets_and_mail,
            limits_of_an_app_and_its_scripts_are_stored_exactly_and_listed_per_app,
            nodes_register_heartbeat_with_their_load_and_deregister,
            a_node_is_down_after_missing_three_of_its_heartbeats_and_forgotten_much_later,
            setting_limits_replaces_them_and_setting_none_removes_them,
            limits_for_a_missing_app_or_script_are_not_found,
            limits_stay_across_deploys_and_go_with_their_script_or_app,
            http_idempotency_a_key_runs_once_and_its_answer_is_stored_with_the_effects,
            http_idempotency_only_the_holder_answers_or_releases_and_a_released_key_runs_again,
            http_idempotency_expired_keys_are_taken_over_and_purged_by_later_claims,
            http_idempotency_keys_are_per_route_and_go_with_their_trigger,
            http_idempotency_twenty_concurrent_claims_of_one_key_run_once,
            an_idempotent_trigger_keeps_its_ttl_and_other_triggers_have_none,
            realtime_topics_are_exposed_once_listed_by_name_and_unexposed,
            realtime_only_exposed_topics_enter_the_buffer_with_ids_from_one_in_order,
            realtime_ids_of_concurrent_commits_are_distinct_consecutive_and_replayed_in_order,
            realtime_a_commit_tells_the_bus_its_apps_newest_id,
            realtime_prune_keeps_each_apps_newest_events_and_drops_old_ones,
            realtime_one_apps_buffer_topics_key_and_origins_are_its_own,
            realtime_the_key_is_made_once_kept_sealed_and_rotated,
            realtime_cors_origins_are_replaced_whole,
        );
    };
    (@each $setup:path; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let db = $setup().await;
                $crate::conformance::$name(&db.store).await;
                db.close().await;
            }
        )+
    };
}

fn app(name: &str) -> AppName {
    AppName::parse(name).expect("a valid app name")
}

fn script(name: &str) -> ScriptName {
    ScriptName::parse(name).expect("a valid script name")
}

fn http(app_name: &str, script_name: &str, method: HttpMethod, path: &str) -> NewTrigger {
    NewTrigger {
        app: app(app_name),
        script: script(script_name),
        spec: TriggerSpec::Http {
            method,
            path: RoutePath::parse(path).expect("a valid route"),
        },
        max_attempts: 3,
    }
}

/// A whole-millisecond instant `minutes` after a fixed base.
fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
        .single()
        .expect("a valid date")
        + Duration::milliseconds(123)
        + Duration::minutes(minutes)
}

/// A plain successful record that started at `at(minute)`, with an id of that time, so
/// that id order and time order agree.
fn record(app_name: &str, script_name: &str, minute: i64) -> InvocationRecord {
    let started_at = at(minute);
    let ms = u64::try_from(started_at.timestamp_millis()).expect("after 1970");
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, (ms % 1000) as u32 * 1_000_000);
    InvocationRecord {
        id: InvocationId(uuid::Uuid::new_v7(ts)),
        app: app(app_name),
        script: script(script_name),
        version: Some(1),
        trigger: "http".into(),
        status: InvocationStatus::Ok,
        started_at,
        duration_ms: 7,
        http_status: Some(200),
        summary: format!("GET /{script_name}"),
        logs: Vec::new(),
        error: None,
        request_id: None,
        attempt: None,
        trace_id: None,
    }
}

fn ids(records: &[InvocationRecord]) -> Vec<InvocationId> {
    records.iter().map(|r| r.id).collect()
}

fn filter(limit: u32) -> InvocationFilter {
    InvocationFilter {
        limit,
        ..InvocationFilter::default()
    }
}

async fn setup_app_with_script(store: &Store, app_name: &str, script_name: &str) {
    store.apps.create(&app(app_name)).await.expect("create app");
    store
        .scripts
        .deploy(&app(app_name), &script(script_name), "\"hi\"")
        .await
        .expect("deploy");
}

pub async fn apps_can_be_created_fetched_listed_and_deleted(store: &Store) {
    let created = store.apps.create(&app("shop")).await.expect("create");
    assert_eq!(created.name, app("shop"));
    store.apps.create(&app("blog")).await.expect("create");
    assert_eq!(store.apps.get(&app("shop")).await.expect("get"), created);
    let names: Vec<_> = store
        .apps
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, [app("blog"), app("shop")]);
    store.apps.delete(&app("shop")).await.expect("delete");
    let left = store.apps.list().await.expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, app("blog"));
}

pub async fn creating_an_app_twice_is_a_conflict(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create");
    let err = store
        .apps
        .create(&app("shop"))
        .await
        .expect_err("duplicate");
    assert!(matches!(err, StoreError::Conflict("app")), "{err:?}");
    assert_eq!(store.apps.list().await.expect("list").len(), 1);
}

pub async fn a_missing_app_is_not_found_on_get_and_delete(store: &Store) {
    let err = store.apps.get(&app("ghost")).await.expect_err("get");
    assert!(matches!(err, StoreError::NotFound("app")), "{err:?}");
    let err = store.apps.delete(&app("ghost")).await.expect_err("delete");
    assert!(matches!(err, StoreError::NotFound("app")), "{err:?}");
}

pub async fn deleting_an_app_removes_its_scripts_triggers_and_invocations(store: &Store) {
    setup_app_with_script(store, "shop", "hello").await;
    store
        .triggers
        .create(http("shop", "hello", HttpMethod::Get, "/hello"))
        .await
        .expect("trigger");
    let rec = record("shop", "hello", 0);
    store
        .invocations
        .record(std::slice::from_ref(&rec))
        .await
        .expect("record");

    store.apps.delete(&app("shop")).await.expect("delete app");

    assert!(
        store
            .scripts
            .list(&app("shop"))
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        store
            .triggers
            .list_all()
            .await
            .expect("list_all")
            .is_empty()
    );
    assert!(
        store
            .invocations
            .get(&app("shop"), rec.id)
            .await
            .expect("get")
            .is_none()
    );
    // A new app of the same name starts empty: nothing was left behind.
    setup_app_with_script(store, "shop", "other").await;
    let scripts = store.scripts.list(&app("shop")).await.expect("list");
    assert_eq!(scripts.len(), 1);
    assert_eq!(scripts[0].name, script("other"));
    assert!(
        store
            .scripts
            .version(&app("shop"), &script("hello"), 1)
            .await
            .expect("version")
            .is_none()
    );
    let listed = store
        .invocations
        .list(&app("shop"), &filter(10))
        .await
        .expect("list");
    assert!(listed.is_empty());
}

pub async fn deploying_three_times_gives_versions_one_two_three_and_the_last_is_active(
    store: &Store,
) {
    store.apps.create(&app("shop")).await.expect("create");
    let (a, s) = (app("shop"), script("hello"));
    for (n, source) in [(1, "1"), (2, "2"), (3, "3")] {
        let v = store.scripts.deploy(&a, &s, source).await.expect("deploy");
        assert_eq!(v.version, n);
        assert_eq!(v.source, source);
        let active = store
            .scripts
            .active(&a, &s)
            .await
            .expect("active")
            .expect("some");
        assert_eq!(active, v);
    }
    let info = store.scripts.get(&a, &s).await.expect("get").expect("some");
    assert_eq!((info.active_version, info.latest_version), (3, 3));
    assert!(info.updated_at >= info.created_at);
    let v2 = store
        .scripts
        .version(&a, &s, 2)
        .await
        .expect("version")
        .expect("some");
    assert_eq!(v2.source, "2");
    assert!(
        store
            .scripts
            .version(&a, &s, 4)
            .await
            .expect("version")
            .is_none()
    );
    assert!(
        store
            .scripts
            .get(&a, &script("nope"))
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        store
            .scripts
            .active(&a, &script("nope"))
            .await
            .expect("active")
            .is_none()
    );
}

pub async fn versions_are_listed_newest_first_with_their_size_and_the_active_flag(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create");
    let (a, s) = (app("shop"), script("hello"));
    store.scripts.deploy(&a, &s, "ab").await.expect("deploy");
    store.scripts.deploy(&a, &s, "é").await.expect("deploy");
    store.scripts.rollback(&a, &s, 1).await.expect("rollback");
    let versions = store.scripts.versions(&a, &s).await.expect("versions");
    let shape: Vec<_> = versions
        .iter()
        .map(|v| (v.version, v.active, v.size))
        .collect();
    // `size` is in bytes: "é" is two bytes in UTF-8.
    assert_eq!(shape, [(2, false, 2), (1, true, 2)]);
    let err = store
        .scripts
        .versions(&a, &script("nope"))
        .await
        .expect_err("missing");
    assert!(matches!(err, StoreError::NotFound("script")), "{err:?}");
}

pub async fn rollback_moves_the_active_version(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create");
    let (a, s) = (app("shop"), script("hello"));
    for source in ["1", "2", "3"] {
        store.scripts.deploy(&a, &s, source).await.expect("deploy");
    }
    let back = store.scripts.rollback(&a, &s, 1).await.expect("rollback");
    assert_eq!((back.version, back.source.as_str()), (1, "1"));
    let active = store
        .scripts
        .active(&a, &s)
        .await
        .expect("active")
        .expect("some");
    assert_eq!(active.version, 1);
    let info = store.scripts.get(&a, &s).await.expect("get").expect("some");
    assert_eq!((info.active_version, info.latest_version), (1, 3));
    store
        .scripts
        .rollback(&a, &s, 3)
        .await
        .expect("forward again");
    let active = store
        .scripts
        .active(&a, &s)
        .await
        .expect("active")
        .expect("some");
    assert_eq!(active.version, 3);
}

pub async fn rolling_back_to_a_missing_version_or_script_is_not_found(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create");
    let (a, s) = (app("shop"), script("hello"));
    store.scripts.deploy(&a, &s, "1").await.expect("deploy");
    let err = store
        .scripts
        .rollback(&a, &s, 9)
        .await
        .expect_err("missing version");
    assert!(matches!(err, StoreError::NotFound("version")), "{err:?}");
    let err = store
        .scripts
        .rollback(&a, &script("nope"), 1)
        .await
        .expect_err("missing script");
    assert!(matches!(err, StoreError::NotFound("script")), "{err:?}");
    let active = store
        .scripts
        .active(&a, &s)
        .await
        .expect("active")
        .expect("some");
    assert_eq!(active.version, 1);
}

pub async fn version_numbers_are_not_reused_after_a_rollback(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create");
    let (a, s) = (app("shop"), script("hello"));
    store.scripts.deploy(&a, &s, "1").await.expect("deploy");
    store.scripts.deploy(&a, &s, "2").await.expect("deploy");
    store.scripts.rollback(&a, &s, 1).await.expect("rollback");
    let next = store.scripts.deploy(&a, &s, "3").await.expect("deploy");
    assert_eq!(next.version, 3);
    let v2 = store
        .scripts
        .version(&a, &s, 2)
        .await
        .expect("version")
        .expect("kept");
    assert_eq!(v2.source, "2");
    let info = store.scripts.get(&a, &s).await.expect("get").expect("some");
    assert_eq!((info.active_version, info.latest_version), (3, 3));
}

pub async fn deleting_a_script_removes_its_versions_and_its_triggers(store: &Store) {
    setup_app_with_script(store, "shop", "hello").await;
    setup_app_with_script_only(store, "shop", "keep").await;
    let (a, s) = (app("shop"), script("hello"));
    store.scripts.deploy(&a, &s, "2").await.expect("deploy");
    store
        .triggers
        .create(http("shop", "hello", HttpMethod::Get, "/hello"))
        .await
        .expect("trigger");
    let kept = store
        .triggers
        .create(http("shop", "keep", HttpMethod::Get, "/keep"))
        .await
        .expect("trigger");

    store.scripts.delete(&a, &s).await.expect("delete");

    assert!(store.scripts.get(&a, &s).await.expect("get").is_none());
    assert!(
        store
            .scripts
            .version(&a, &s, 1)
            .await
            .expect("version")
            .is_none()
    );
    assert_eq!(store.triggers.list(&a).await.expect("list"), [kept]);
    let err = store.scripts.delete(&a, &s).await.expect_err("twice");
    assert!(matches!(err, StoreError::NotFound("script")), "{err:?}");
    // Deploying the name again starts a new history at version 1.
    let again = store.scripts.deploy(&a, &s, "new").await.expect("deploy");
    assert_eq!(again.version, 1);
}

async fn setup_app_with_script_only(store: &Store, app_name: &str, script_name: &str) {
    store
        .scripts
        .deploy(&app(app_name), &script(script_name), "\"hi\"")
        .await
        .expect("deploy");
}

pub async fn deploying_to_a_missing_app_is_not_found(store: &Store) {
    let err = store
        .scripts
        .deploy(&app("ghost"), &script("hello"), "1")
        .await
        .expect_err("missing app");
    assert!(matches!(err, StoreError::NotFound("app")), "{err:?}");
    assert!(
        store
            .scripts
            .list(&app("ghost"))
            .await
            .expect("list")
            .is_empty()
    );
}

pub async fn triggers_can_be_created_listed_and_deleted(store: &Store) {
    setup_app_with_script(store, "shop", "hello").await;
    setup_app_with_script(store, "blog", "post").await;
    let a = app("shop");
    let first = store
        .triggers
        .create(http("shop", "hello", HttpMethod::Get, "/users/:id"))
        .await
        .expect("create");
    assert_eq!(first.spec.kind(), "http");
    assert_eq!(first.max_attempts, 3);
    let second = store
        .triggers
        .create(http("shop", "hello", HttpMethod::Post, "/users/:id"))
        .await
        .expect("same path, other method");
    let other = store
        .triggers
        .create(http("blog", "post", HttpMethod::Any, "/"))
        .await
        .expect("create");

    assert_eq!(
        store.triggers.list(&a).await.expect("list"),
        [first.clone(), second.clone()]
    );
    let all = store.triggers.list_all().await.expect("list_all");
    assert_eq!(all.len(), 3);
    assert!(all.contains(&other) && all.contains(&first) && all.contains(&second));

    store.triggers.delete(&a, first.id).await.expect("delete");
    assert_eq!(store.triggers.list(&a).await.expect("list"), [second]);
    let err = store
        .triggers
        .delete(&a, first.id)
        .await
        .expect_err("twice");
    assert!(matches!(err, StoreError::NotFound("trigger")), "{err:?}");
    // Another app's trigger cannot be deleted through this app.
    let err = store
        .triggers
        .delete(&a, other.id)
        .await
        .expect_err("foreign");
    assert!(matches!(err, StoreError::NotFound("trigger")), "{err:?}");
}

pub async fn a_duplicate_route_in_one_app_is_a_conflict_but_not_across_apps(store: &Store) {
    setup_app_with_script(store, "shop", "hello").await;
    setup_app_with_script_only(store, "shop", "other").await;
    setup_app_with_script(store, "blog", "hello").await;
    store
        .triggers
        .create(http("shop", "hello", HttpMethod::Get, "/hello"))
        .await
        .expect("create");
    let err = store
        .triggers
        .create(http("shop", "other", HttpMethod::Get, "/hello"))
        .await
        .expect_err("duplicate route");
    assert!(matches!(err, StoreError::Conflict("trigger")), "{err:?}");
    store
        .triggers
        .create(http("blog", "hello", HttpMethod::Get, "/hello"))
        .await
        .expect("same route in another app");
    assert_eq!(
        store.triggers.list(&app("shop")).await.expect("list").len(),
        1
    );
}

pub async fn a_trigger_for_a_missing_script_or_app_is_not_found(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create");
    let err = store
        .triggers
        .create(http("shop", "nope", HttpMethod::Get, "/x"))
        .await
        .expect_err("missing script");
    assert!(matches!(err, StoreError::NotFound("script")), "{err:?}");
    let err = store
        .triggers
        .create(http("ghost", "nope", HttpMethod::Get, "/x"))
        .await
        .expect_err("missing app");
    assert!(matches!(err, StoreError::NotFound("app")), "{err:?}");
    assert!(
        store
            .triggers
            .list_all()
            .await
            .expect("list_all")
            .is_empty()
    );
}

pub async fn invocations_are_listed_newest_first_with_every_filter(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create");
    let statuses = [
        InvocationStatus::Ok,
        InvocationStatus::Error,
        InvocationStatus::Ok,
        InvocationStatus::Timeout,
        InvocationStatus::Error,
        InvocationStatus::Ok,
    ];
    let records: Vec<InvocationRecord> = statuses
        .iter()
        .enumerate()
        .map(|(i, status)| {
            let minute = i64::try_from(i).expect("small");
            let name = if i % 2 == 0 { "a" } else { "b" };
            // Runs 0 and 3 were HTTP requests, the others cron and queue events.
            let trigger = ["http", "cron", "queue"][i % 3];
            InvocationRecord {
                status: *status,
                trigger: trigger.into(),
                ..record("shop", name, minute)
            }
        })
        .collect();
    // Written out of order, in two batches: the order comes from the ids.
    store
        .invocations
        .record(&records[3..])
        .await
        .expect("record");
    store
        .invocations
        .record(&records[..3])
        .await
        .expect("record");
    let newest_first = |pick: &dyn Fn(usize) -> bool| -> Vec<InvocationId> {
        (0..records.len())
            .rev()
            .filter(|i| pick(*i))
            .map(|i| records[i].id)
            .collect()
    };
    let a = app("shop");
    let list = |f: InvocationFilter| {
        let a = a.clone();
        async move { store.invocations.list(&a, &f).await.expect("list") }
    };

    let all = list(filter(100)).await;
    assert_eq!(all, records.iter().rev().cloned().collect::<Vec<_>>());
    let by_script = list(InvocationFilter {
        script: Some(script("a")),
        ..filter(100)
    })
    .await;
    assert_eq!(ids(&by_script), newest_first(&|i| i % 2 == 0));
    let by_status = list(InvocationFilter {
        status: Some(InvocationStatus::Error),
        ..filter(100)
    })
    .await;
    assert_eq!(ids(&by_status), newest_first(&|i| i == 1 || i == 4));
    let by_trigger = |kind: &str, script_name: Option<&str>| {
        list(InvocationFilter {
            trigger: Some(kind.into()),
            script: script_name.map(script),
            ..filter(100)
        })
    };
    assert_eq!(
        ids(&by_trigger("http", None).await),
        newest_first(&|i| i % 3 == 0)
    );
    assert_eq!(
        ids(&by_trigger("cron", None).await),
        newest_first(&|i| i % 3 == 1)
    );
    // With a script, through the script's own statement: run 1 is b's only cron run.
    assert_eq!(
        ids(&by_trigger("cron", Some("b")).await),
        newest_first(&|i| i == 1)
    );
    assert!(by_trigger("topic", None).await.is_empty());
    let since = list(InvocationFilter {
        since: Some(at(2)),
        ..filter(100)
    })
    .await;
    assert_eq!(ids(&since), newest_first(&|i| i >= 2));
    let until = list(InvocationFilter {
        until: Some(at(4)),
        ..filter(100)
    })
    .await;
    assert_eq!(ids(&until), newest_first(&|i| i < 4));
    let window = list(InvocationFilter {
        since: Some(at(1)),
        until: Some(at(5)),
        script: Some(script("b")),
        status: Some(InvocationStatus::Error),
        ..filter(100)
    })
    .await;
    assert_eq!(ids(&window), newest_first(&|i| i == 1));
    let limited = list(filter(2)).await;
    assert_eq!(ids(&limited), newest_first(&|i| i >= 4));
    let before = list(InvocationFilter {
        before: Some(records[3].id),
        ..filter(100)
    })
    .await;
    assert_eq!(ids(&before), newest_first(&|i| i < 3));
    let got = store.invocations.get(&a, records[2].id).await.expect("get");
    assert_eq!(got, Some(records[2].clone()));
}

pub async fn invocations_made_before_a_cutoff_are_purged_oldest_first_in_bounded_steps(
    store: &Store,
) {
    let purge = |minute: i64, limit: u32| async move {
        let purged = store.invocations.purge_before(at(minute), limit);
        purged.await.expect("purge")
    };
    let oldest = || async { store.invocations.oldest().await.expect("oldest") };
    assert_eq!(oldest().await, None);
    assert_eq!(purge(100, 10).await, 0);
    store.apps.create(&app("shop")).await.expect("create");
    store.apps.create(&app("blog")).await.expect("create");
    let records: Vec<InvocationRecord> = (0..6)
        .map(|m| record(if m % 2 == 0 { "shop" } else { "blog" }, "hello", m))
        .collect();
    store.invocations.record(&records).await.expect("record");
    assert_eq!(oldest().await, Some(at(0)));

    // Before minute 4: records 0..4, two per call, across both apps, oldest first.
    assert_eq!(purge(4, 2).await, 2);
    assert_eq!(oldest().await, Some(at(2)));
    assert_eq!(purge(4, 2).await, 2);
    assert_eq!(purge(4, 2).await, 0);
    assert_eq!(oldest().await, Some(at(4)));
    let left = |name: &'static str| async move {
        let list = store.invocations.list(&app(name), &filter(100)).await;
        ids(&list.expect("list"))
    };
    assert_eq!(left("shop").await, vec![records[4].id]);
    assert_eq!(left("blog").await, vec![records[5].id]);
}

pub async fn invocations_page_through_the_before_cursor_without_gaps_or_repeats(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create");
    let records: Vec<InvocationRecord> = (0..7).map(|m| record("shop", "hello", m)).collect();
    store.invocations.record(&records).await.expect("record");
    let mut seen = Vec::new();
    let mut before = None;
    let mut pages = 0;
    loop {
        let page = store
            .invocations
            .list(
                &app("shop"),
                &InvocationFilter {
                    before,
                    ..filter(3)
                },
            )
            .await
            .expect("page");
        pages += 1;
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        seen.extend(ids(&page));
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 4); // 3 + 3 + 1, then an empty page
    let expected: Vec<_> = records.iter().rev().map(|r| r.id).collect();
    assert_eq!(seen, expected);
}

pub async fn dropped_records_are_counted_per_app_and_go_with_the_app(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create");
    store.apps.create(&app("blog")).await.expect("create");
    let dropped = async |name: &str| {
        store
            .invocations
            .dropped(&app(name))
            .await
            .expect("dropped")
    };
    assert_eq!(dropped("shop").await, 0);
    store
        .invocations
        .count_dropped(&[(app("shop"), 3), (app("blog"), 1), (app("none"), 5)])
        .await
        .expect("count; a missing app is skipped");
    store
        .invocations
        .count_dropped(&[(app("shop"), 4)])
        .await
        .expect("count");
    assert_eq!(dropped("shop").await, 7);
    assert_eq!(dropped("blog").await, 1);
    assert_eq!(dropped("none").await, 0);
    store.apps.delete(&app("shop")).await.expect("delete");
    store.apps.create(&app("shop")).await.expect("create again");
    assert_eq!(
        dropped("shop").await,
        0,
        "a new app with the name starts at 0"
    );
}

pub async fn records_for_a_deleted_app_are_skipped_without_error(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create");
    store.apps.create(&app("gone")).await.expect("create");
    store.apps.delete(&app("gone")).await.expect("delete");
    let kept = record("shop", "hello", 0);
    let dropped = record("gone", "hello", 1);
    store
        .invocations
        .record(&[dropped.clone(), kept.clone()])
        .await
        .expect("a batch with a deleted app still commits");
    assert_eq!(
        store
            .invocations
            .list(&app("shop"), &filter(10))
            .await
            .expect("list"),
        [kept]
    );
    assert!(
        store
            .invocations
            .get(&app("gone"), dropped.id)
            .await
            .expect("get")
            .is_none()
    );
    store
        .invocations
        .record(&[])
        .await
        .expect("an empty batch is fine");
}

pub async fn one_app_never_sees_another_apps_scripts_triggers_or_invocations(store: &Store) {
    setup_app_with_script(store, "shop", "hello").await;
    setup_app_with_script(store, "blog", "post").await;
    store
        .triggers
        .create(http("blog", "post", HttpMethod::Get, "/post"))
        .await
        .expect("trigger");
    let theirs = record("blog", "post", 0);
    store
        .invocations
        .record(std::slice::from_ref(&theirs))
        .await
        .expect("record");
    let shop = app("shop");

    let scripts = store.scripts.list(&shop).await.expect("list");
    assert_eq!(
        scripts.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        [script("hello")]
    );
    assert!(
        store
            .scripts
            .get(&shop, &script("post"))
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        store
            .scripts
            .active(&shop, &script("post"))
            .await
            .expect("active")
            .is_none()
    );
    assert!(store.triggers.list(&shop).await.expect("list").is_empty());
    assert!(
        store
            .invocations
            .list(&shop, &filter(10))
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        store
            .invocations
            .get(&shop, theirs.id)
            .await
            .expect("get")
            .is_none()
    );
    let err = store
        .scripts
        .delete(&shop, &script("post"))
        .await
        .expect_err("foreign");
    assert!(matches!(err, StoreError::NotFound("script")), "{err:?}");
    assert!(
        store
            .scripts
            .get(&app("blog"), &script("post"))
            .await
            .expect("get")
            .is_some()
    );
}

pub async fn a_record_with_logs_error_and_http_status_round_trips_exactly(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create");
    let rec = InvocationRecord {
        version: None,
        status: InvocationStatus::Error,
        duration_ms: 1234,
        http_status: Some(500),
        summary: "POST /users/42".into(),
        logs: vec![
            LogLine {
                at: at(0),
                level: LogLevel::Print,
                message: "hello \"world\" ✓".into(),
            },
            LogLine {
                at: at(1),
                level: LogLevel::Error,
                message: "line\nbreak".into(),
            },
        ],
        error: Some("line 3, column 7: boom".into()),
        request_id: Some("req-1".into()),
        attempt: Some(3),
        ..record("shop", "hello", 0)
    };
    let plain = InvocationRecord {
        version: Some(2),
        http_status: None,
        ..record("shop", "hello", 1)
    };
    store
        .invocations
        .record(&[rec.clone(), plain.clone()])
        .await
        .expect("record");
    let got = store
        .invocations
        .get(&app("shop"), rec.id)
        .await
        .expect("get");
    assert_eq!(got, Some(rec));
    let got = store
        .invocations
        .get(&app("shop"), plain.id)
        .await
        .expect("get");
    assert_eq!(got, Some(plain));
}

pub async fn ping_answers_and_the_backend_names_itself(store: &Store) {
    store.health.ping().await.expect("ping");
    assert!(matches!(store.health.backend(), "sqlite" | "postgres"));
}

pub async fn concurrent_deploys_of_one_script_get_distinct_consecutive_versions(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create");
    let deploys: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .scripts
                    .deploy(&app("shop"), &script("hello"), &i.to_string())
                    .await
                    .expect("deploy")
                    .version
            })
        })
        .collect();
    let mut versions = Vec::new();
    for deploy in deploys {
        versions.push(deploy.await.expect("task"));
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<i64>>());
    let info = store
        .scripts
        .get(&app("shop"), &script("hello"))
        .await
        .expect("get")
        .expect("some");
    assert_eq!((info.active_version, info.latest_version), (8, 8));
}
