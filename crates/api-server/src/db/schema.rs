//! The tables, as diesel sees them; the same on SQLite and PostgreSQL
//! (`migrations/sqlite`, `migrations/postgres`).

diesel::table! {
    teams (id) {
        id -> BigInt,
        name -> Text,
        phone_number -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> BigInt,
        team_id -> BigInt,
        email -> Text,
        name -> Text,
        password_hash -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    sessions (id) {
        id -> BigInt,
        user_id -> BigInt,
        token_hash -> Text,
        expires_at -> Timestamp,
        created_at -> Timestamp,
    }
}

diesel::table! {
    contacts (id) {
        id -> BigInt,
        team_id -> BigInt,
        name -> Text,
        phone -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        unread_count -> BigInt,
    }
}

diesel::table! {
    messages (id) {
        id -> BigInt,
        team_id -> BigInt,
        contact_id -> BigInt,
        direction -> Text,
        body -> Text,
        media -> Text,
        status -> Text,
        error_code -> Nullable<Text>,
        twilio_sid -> Nullable<Text>,
        sent_by -> Nullable<BigInt>,
        read_at -> Nullable<Timestamp>,
        read_by -> Nullable<BigInt>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    notes (id) {
        id -> BigInt,
        team_id -> BigInt,
        contact_id -> BigInt,
        author_id -> Nullable<BigInt>,
        body -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    outbox (id) {
        id -> BigInt,
        team_id -> BigInt,
        contact_id -> Nullable<BigInt>,
        event -> Text,
        channels -> Text,
        data -> Text,
        socket_id -> Nullable<Text>,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        created_at -> Timestamp,
    }
}

diesel::table! {
    idempotency_keys (id) {
        id -> BigInt,
        user_id -> BigInt,
        key -> Text,
        message_id -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    realtime_apps (id) {
        id -> BigInt,
        app_id -> Text,
        app_key -> Text,
        app_secret -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    early_statuses (twilio_sid) {
        twilio_sid -> Text,
        status -> Text,
        error_code -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    sms_outbox (message_id) {
        message_id -> BigInt,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        locked_until -> Nullable<Timestamp>,
        lock_token -> Nullable<Text>,
        sent_unknown -> Bool,
        first_attempt_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    login_failures (key_digest) {
        key_digest -> Text,
        failures -> Integer,
        last_failure_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::joinable!(users -> teams (team_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(contacts -> teams (team_id));
diesel::joinable!(messages -> contacts (contact_id));
diesel::joinable!(notes -> contacts (contact_id));
diesel::joinable!(sms_outbox -> messages (message_id));

diesel::allow_tables_to_appear_in_same_query!(
    teams,
    users,
    sessions,
    contacts,
    messages,
    notes,
    outbox,
    idempotency_keys,
    realtime_apps,
    early_statuses,
    sms_outbox,
    login_failures,
);
