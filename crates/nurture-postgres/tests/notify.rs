//! Wake-ups between processes (issue #4): `announce_due` on one store reaches `listen_due` on
//! another store of the same database, the listener survives a lost connection, and it stops
//! when its store is dropped. Every wait here awaits an event with a generous bound; nothing
//! sleeps for a fixed time.

use std::sync::Arc;
use std::time::Duration;

use nurture_core::store::Store;
use nurture_postgres::testing::TestDatabase;
use sqlx::{Connection, PgConnection};
use tokio::sync::Notify;

/// Long enough for a loaded CI machine; the events come in milliseconds.
const EVENT: Duration = Duration::from_secs(20);

async fn woken(wake: &Notify, what: &str) {
    tokio::time::timeout(EVENT, wake.notified())
        .await
        .unwrap_or_else(|_| panic!("no wake-up within {EVENT:?}: {what}"));
}

/// Backend pids of this database's sessions whose last statement was a LISTEN.
async fn listening(conn: &mut PgConnection) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN %' AND pid <> pg_backend_pid()",
    )
    .fetch_all(conn)
    .await
    .expect("pg_stat_activity")
}

/// Polls (every 50 ms, at most [`EVENT`]) until `ok` holds for the listening sessions.
async fn until_listening(conn: &mut PgConnection, ok: impl Fn(&[i32]) -> bool) -> Vec<i32> {
    let deadline = tokio::time::Instant::now() + EVENT;
    loop {
        let pids = listening(conn).await;
        if ok(&pids) {
            return pids;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "listening sessions never became as expected: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_announcement_on_one_store_wakes_the_listener_of_another() {
    let db = TestDatabase::create().await.expect("test database");
    let listener = db.store().await.expect("store");
    let announcer = db.store().await.expect("store");
    let wake = Arc::new(Notify::new());
    listener
        .listen_due(wake.clone())
        .await
        .expect("listen_due returns once it listens");
    announcer.announce_due().await.expect("announce");
    woken(&wake, "announce_due from the other store").await;
    // And again: one wake-up per announcement, not a one-off.
    announcer.announce_due().await.expect("announce");
    woken(&wake, "a second announce_due").await;
}

#[tokio::test]
async fn the_listener_reconnects_after_losing_its_connection_and_stops_with_its_store() {
    let db = TestDatabase::create().await.expect("test database");
    let listener = db.store().await.expect("store");
    let announcer = db.store().await.expect("store");
    let mut admin = PgConnection::connect_with(&db.options())
        .await
        .expect("admin connection");
    let wake = Arc::new(Notify::new());
    listener.listen_due(wake.clone()).await.expect("listen");
    let before = until_listening(&mut admin, |p| p.len() == 1).await;

    // The server ends the listening session, as a restart or a network cut would.
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(before[0])
        .fetch_one(&mut admin)
        .await
        .expect("terminate");
    assert!(ended);
    // The listener reconnects and wakes once, since announcements may have been missed.
    woken(&wake, "the wake-up after reconnecting").await;
    let after = until_listening(&mut admin, |p| p.len() == 1).await;
    assert_ne!(before, after, "a new session listens");

    announcer.announce_due().await.expect("announce");
    woken(&wake, "announce_due after the reconnection").await;

    drop(listener);
    until_listening(&mut admin, |p| p.is_empty()).await;
}
