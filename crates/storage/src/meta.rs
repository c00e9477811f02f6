//! The `server_meta` rows both backends keep (migration 0004): facts a server checks when
//! it starts, not app data.
//!
//! - `secrets_key_fingerprint`: checked at connect, so a missing or replaced key file is an
//!   error at start (`crypto::KeyMismatch`) while secrets exist, instead of every secret
//!   turning unreadable while the API still lists it;
//! - `bootstrap_token_hash`: the admin token last installed from `PICLOUD_ADMIN_TOKEN`,
//!   revoked when that value changes (`TokenRepository::install_bootstrap`).
use shared::StoreError;
use shared::store::Bootstrap;
use sqlx::Pool;

use crate::crypto::SecretBox;
use crate::error::db;
use crate::sql::{Cols, Db, sql};

/// The row holding `crypto::key_fingerprint` of the key that sealed the secrets.
const KEY_FINGERPRINT: &str = "secrets_key_fingerprint";
/// The row holding the hash of the bootstrap admin token.
const BOOTSTRAP_TOKEN: &str = "bootstrap_token_hash";

/// The statements on `server_meta`, with their arguments in placeholder order.
pub(crate) trait MetaSql: Db {
    /// (key) -> value, locked until the commit.
    const GET: &'static str;
    /// (key, value): insert or replace.
    const SET: &'static str;
    /// (fingerprint) -> address, heartbeat_at, heartbeat_ms of the registered nodes whose
    /// secrets key has another fingerprint.
    const OTHER_KEYS: &'static str;
    /// () -> app, name, nonce, ciphertext of any one stored secret.
    const ONE_SECRET: &'static str;
    /// (secret_hash)
    const DELETE_TOKEN: &'static str;
    /// (id, name, secret_hash, created_at): an admin token, unless the hash is there.
    const INSERT_TOKEN: &'static str;
}

async fn get<DB: MetaSql>(
    conn: &mut DB::Connection,
    key: &'static str,
) -> Result<Option<String>, StoreError> {
    let row = sql::<DB>(DB::GET)
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(db)?;
    row.map(|row| row.string("value")).transpose()
}

async fn set<DB: MetaSql>(
    conn: &mut DB::Connection,
    key: &'static str,
    value: &str,
) -> Result<(), StoreError> {
    sql::<DB>(DB::SET)
        .bind(key)
        .bind(value)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

/// Refuse a key that cannot open the stored secrets, or that differs from the key of a
/// running node of the cluster; record the key's fingerprint.
///
/// The fingerprint decides when one is recorded; a database from before fingerprints
/// tries its key on one stored secret instead. With no secrets stored, any key is fine
/// and becomes the recorded one, unless a node that is up (`nodes`, heartbeat within
/// `MISSED_HEARTBEATS_DOWN` of its intervals) registered with another: then secrets the
/// two seal would be garbage to each other, so the newcomer is refused before it records
/// anything.
///
/// # Errors
/// `KeyMismatch` (as a backend error) when a stored secret rules the key out;
/// `ClusterKeyMismatch` when a running node uses another key.
pub(crate) async fn check_secret_key<DB: MetaSql>(
    pool: &Pool<DB>,
    secrets: &SecretBox,
    fingerprint: &str,
) -> Result<(), StoreError> {
    let mut tx = DB::begin_write(pool).await?;
    let recorded = get::<DB>(&mut tx, KEY_FINGERPRINT).await?;
    let others = sql::<DB>(DB::OTHER_KEYS)
        .bind(fingerprint)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
    let now = crate::now();
    for row in &others {
        let beat = row.ts("heartbeat_at")?;
        let interval = std::time::Duration::from_millis(row.count("heartbeat_ms")?);
        let down_after = interval.saturating_mul(shared::store::MISSED_HEARTBEATS_DOWN);
        let down_after = chrono::TimeDelta::from_std(down_after).unwrap_or(chrono::TimeDelta::MAX);
        if beat
            .checked_add_signed(down_after)
            .is_none_or(|up_until| up_until >= now)
        {
            return Err(StoreError::backend(crate::crypto::ClusterKeyMismatch {
                address: row.string("address")?,
            }));
        }
    }
    if recorded.as_deref() == Some(fingerprint) {
        return Ok(());
    }
    let sample = sql::<DB>(DB::ONE_SECRET)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    check_key(recorded.as_deref(), sample.as_ref(), secrets)?;
    set::<DB>(&mut tx, KEY_FINGERPRINT, fingerprint).await?;
    tx.commit().await.map_err(db)
}

/// The key check's rule, once the recorded fingerprint differs from the key's: with no
/// secret stored any key is fine; with one, only a database from before fingerprints
/// (`recorded` is `None`) may prove the key by opening it.
fn check_key(
    recorded: Option<&str>,
    sample: Option<&impl Cols>,
    secrets: &SecretBox,
) -> Result<(), StoreError> {
    let Some(row) = sample else { return Ok(()) };
    let opens = recorded.is_none() && {
        let (app, name) = (row.text("app")?, row.text("name")?);
        let (nonce, ciphertext) = (row.bytes("nonce")?, row.bytes("ciphertext")?);
        shared::AppName::parse(app)
            .is_ok_and(|app| secrets.open(&app, name, &nonce, &ciphertext).is_ok())
    };
    if opens {
        Ok(())
    } else {
        Err(StoreError::backend(crate::crypto::KeyMismatch))
    }
}

/// See `TokenRepository::install_bootstrap`.
pub(crate) async fn install_bootstrap<DB: MetaSql>(
    pool: &Pool<DB>,
    name: &str,
    secret_hash: &str,
) -> Result<Bootstrap, StoreError> {
    let mut tx = DB::begin_write(pool).await?;
    let previous = get::<DB>(&mut tx, BOOTSTRAP_TOKEN).await?;
    if previous.as_deref() == Some(secret_hash) {
        return Ok(Bootstrap::Unchanged);
    }
    let revoked = match &previous {
        Some(old) => {
            sql::<DB>(DB::DELETE_TOKEN)
                .bind(old)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                > 0
        }
        None => false,
    };
    sql::<DB>(DB::INSERT_TOKEN)
        .bind(shared::TokenId::new().0)
        .bind(name)
        .bind(secret_hash)
        .bind(crate::now())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    set::<DB>(&mut tx, BOOTSTRAP_TOKEN, secret_hash).await?;
    tx.commit().await.map_err(db)?;
    Ok(Bootstrap::Installed { revoked })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use shared::store::NodeInfo;

    use crate::crypto::{self, ClusterKeyMismatch};
    use crate::testing::TestUrl;
    use crate::{StoreOptions, connect_with};

    fn options(dir: &std::path::Path, key: [u8; crypto::KEY_LEN]) -> StoreOptions {
        StoreOptions {
            blob_dir: dir.join("blobs"),
            s3: None,
            secret_key: key,
        }
    }

    #[tokio::test]
    async fn a_key_other_than_a_running_nodes_is_refused_until_that_node_is_down_on_sqlite() {
        let db = TestUrl::sqlite();
        a_key_other_than_a_running_nodes_is_refused_until_that_node_is_down(&db.url).await;
        db.close().await;
    }

    #[tokio::test]
    async fn a_key_other_than_a_running_nodes_is_refused_until_that_node_is_down_on_postgres() {
        let db = TestUrl::postgres().await;
        a_key_other_than_a_running_nodes_is_refused_until_that_node_is_down(&db.url).await;
        db.close().await;
    }

    /// With no secrets stored, only the nodes that are up tell a wrong key: the newcomer
    /// is refused while one runs with another key, and nothing of it is recorded.
    async fn a_key_other_than_a_running_nodes_is_refused_until_that_node_is_down(url: &str) {
        let dir = tempfile::tempdir().expect("dir");
        let (ours, theirs) = (crypto::random_key(), crypto::random_key());
        let store = connect_with(url, options(dir.path(), ours))
            .await
            .expect("connect");
        let node = |beat: chrono::DateTime<Utc>| NodeInfo {
            id: "node-a".into(),
            role: "all".into(),
            address: "http://127.0.0.1:9".into(),
            version: "1".into(),
            key_fingerprint: crypto::key_fingerprint(&ours),
            started_at: beat,
            heartbeat_at: beat,
            heartbeat_interval: Duration::from_secs(5),
            in_flight: 0,
            queue_depth: 0,
            realtime_streams: 0,
        };
        let now = Utc::now();
        let forget = now - chrono::Duration::days(2);
        store
            .nodes
            .register(&node(now), forget)
            .await
            .expect("register");

        let refused = connect_with(url, options(dir.path(), theirs))
            .await
            .err()
            .expect("another key is refused while node-a runs");
        let mismatch = std::error::Error::source(&refused)
            .and_then(|s| s.downcast_ref::<ClusterKeyMismatch>())
            .expect("a cluster key mismatch");
        assert_eq!(mismatch.address, "http://127.0.0.1:9");
        let same = connect_with(url, options(dir.path(), ours))
            .await
            .expect("the cluster's key is fine");
        same.health.close().await;

        // Silent for three of its intervals: down, and no longer a reason to refuse.
        let long_ago = now - chrono::Duration::seconds(60);
        store
            .nodes
            .register(&node(long_ago), forget)
            .await
            .expect("register");
        let other = connect_with(url, options(dir.path(), theirs))
            .await
            .expect("no node that is up has another key");
        other.health.close().await;
        store.health.close().await;
    }
}
