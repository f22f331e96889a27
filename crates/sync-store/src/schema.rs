//! The Diesel schema, one for both backends (see `migrations/`).

diesel::table! {
    google_credentials (user_id) {
        user_id -> Text,
        refresh_token_ciphertext -> Binary,
        access_token_ciphertext -> Nullable<Binary>,
        access_token_expires_at -> Nullable<Timestamp>,
        needs_reauth -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        key_id -> Nullable<Text>,
    }
}

diesel::table! {
    calendar_sync_state (id) {
        id -> Text,
        user_id -> Text,
        google_calendar_id -> Text,
        webhook_channel_id -> Nullable<Text>,
        webhook_resource_id -> Nullable<Text>,
        webhook_expires_at -> Nullable<Timestamp>,
        webhook_channel_token -> Nullable<Text>,
        push_mode -> Text,
        channel_next_attempt_at -> Nullable<Timestamp>,
        channel_failure_count -> Integer,
        channel_last_error -> Nullable<Text>,
        channel_lease_owner -> Nullable<Text>,
        channel_lease_expires_at -> Nullable<Timestamp>,
        sync_state -> Text,
        sync_token -> Nullable<Text>,
        full_sync_complete -> Bool,
        sync_generation -> BigInt,
        sync_claimed_request_at -> Nullable<Timestamp>,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
        claim_epoch -> BigInt,
        next_attempt_at -> Nullable<Timestamp>,
        failure_count -> Integer,
        last_error -> Nullable<Text>,
        last_sync_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        failure_fingerprint -> Nullable<Text>,
        failure_repeats -> Integer,
        retry_stopped_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    watch_channels (channel_id) {
        channel_id -> Text,
        calendar_id -> Nullable<Text>,
        user_id -> Text,
        google_calendar_id -> Text,
        token -> Text,
        resource_id -> Nullable<Text>,
        expires_at -> Nullable<Timestamp>,
        state -> Text,
        stop_after -> Nullable<Timestamp>,
        stop_attempts -> Integer,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    calendar_events (calendar_id, event_id) {
        calendar_id -> Text,
        event_id -> Text,
        status -> Text,
        summary -> Nullable<Text>,
        updated -> Nullable<Timestamp>,
        etag -> Nullable<Text>,
        raw_json -> Text,
        sync_generation -> BigInt,
        mirrored_at -> Timestamp,
    }
}

diesel::table! {
    sync_requests (calendar_id) {
        calendar_id -> Text,
        first_requested_at -> Nullable<Timestamp>,
        last_requested_at -> Nullable<Timestamp>,
        request_count -> BigInt,
        channel_id -> Nullable<Text>,
        last_message_number -> Nullable<BigInt>,
    }
}

diesel::table! {
    chronos_instances (instance_id) {
        instance_id -> Text,
        lock_key -> BigInt,
        started_at -> Timestamp,
    }
}

diesel::table! {
    change_log (position) {
        position -> BigInt,
        calendar_id -> Text,
        user_id -> Text,
        kind -> Text,
        event_id -> Nullable<Text>,
        event_json -> Nullable<Text>,
        at -> Timestamp,
        last_position -> BigInt,
        entries -> Nullable<Text>,
    }
}

diesel::table! {
    change_feed_state (id) {
        id -> Integer,
        pruned_through -> BigInt,
    }
}

diesel::joinable!(sync_requests -> calendar_sync_state (calendar_id));
diesel::joinable!(calendar_events -> calendar_sync_state (calendar_id));
diesel::joinable!(watch_channels -> calendar_sync_state (calendar_id));

diesel::allow_tables_to_appear_in_same_query!(
    google_credentials,
    calendar_sync_state,
    watch_channels,
    calendar_events,
    sync_requests,
    chronos_instances,
    change_log,
    change_feed_state,
);
