//! Schema versions of the SQLite store. `PRAGMA user_version` holds how many of
//! [`MIGRATIONS`] have been applied; opening a store applies the rest in one
//! transaction. Append new migrations; never edit a released one.

/// Each entry moves the schema one version up.
pub const MIGRATIONS: &[&str] = &[
    // 1: endpoints, reservations, users, tokens, audit events.
    "CREATE TABLE endpoints (
        id TEXT PRIMARY KEY,
        url TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL,
        traffic_policy TEXT NOT NULL,
        idle_timeout_secs INTEGER NOT NULL,
        reserved_addr_id TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE reserved_addrs (
        id TEXT PRIMARY KEY,
        ip TEXT NOT NULL,
        port_start INTEGER NOT NULL,
        port_end INTEGER NOT NULL,
        description TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL,
        active INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        description TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        acl TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER,
        revoked_at INTEGER
    );
    CREATE INDEX tokens_by_user ON tokens(user_id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX events_by_kind ON events(kind, id);
    CREATE INDEX events_by_time ON events(at);",
    // 2: connection limits on API-made endpoints.
    "ALTER TABLE endpoints ADD COLUMN max_connections INTEGER;
    ALTER TABLE endpoints ADD COLUMN max_connections_per_ip INTEGER;",
    // 3: owners of internal URLs (users from edge.yml have no row in `users`, so no
    // foreign key; deleting an API user deletes its rows in the same transaction).
    "CREATE TABLE url_owners (
        url TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        source TEXT NOT NULL,
        assigned_at INTEGER NOT NULL
    );
    CREATE INDEX url_owners_by_user ON url_owners(user_id);",
    // 4: security events (revocations, ownership, bind refusals) are pruned apart from
    // routine ones, so a flood of routine events cannot push them out.
    "ALTER TABLE events ADD COLUMN security INTEGER NOT NULL DEFAULT 0;
    UPDATE events SET security = 1 WHERE kind LIKE 'internal\\_url.%' ESCAPE '\\'
        OR kind LIKE 'authtoken.%' OR kind LIKE 'service\\_user.%' ESCAPE '\\'
        OR kind = 'endpoint.bind_refused';
    CREATE INDEX events_by_class ON events(security, id);",
    // 5: TLS the edge terminates for an API-made endpoint (file paths).
    "ALTER TABLE endpoints ADD COLUMN terminate_tls_cert TEXT;
    ALTER TABLE endpoints ADD COLUMN terminate_tls_key TEXT;",
    // 6: how long an HTTP endpoint's upstream may take to start its response.
    "ALTER TABLE endpoints ADD COLUMN response_timeout_secs INTEGER;",
];
