//! SPEC section 5, `Idempotency-Key`: the key's reservation in the database, which holds across
//! every process serving a tenant.

use nurture_core::engine::IDEMPOTENCY_LEASE;
use nurture_core::store::{KeyState, SavedResponse};

use super::*;

fn answer(hash: &[u8]) -> SavedResponse {
    SavedResponse {
        request_hash: hash.to_vec(),
        status: 201,
        body: br#"{"id":"x"}"#.to_vec(),
    }
}

behaviour_test!(
    a_key_is_reserved_while_its_request_runs_then_replays_its_answer,
    |h| async move {
        let (a, b) = (b"request a".as_slice(), b"request b".as_slice());
        let e = &h.engine;
        assert_eq!(
            e.reserve_idempotency_key(h.p, "k", a).await.unwrap(),
            KeyState::Reserved
        );
        for hash in [a, b] {
            assert_eq!(
                e.reserve_idempotency_key(h.p, "k", hash).await.unwrap(),
                KeyState::InFlight {
                    request_hash: a.to_vec()
                },
                "a retry meets the running request"
            );
        }
        e.save_response(h.p, "k", &answer(a)).await.unwrap();
        assert_eq!(
            e.reserve_idempotency_key(h.p, "k", a).await.unwrap(),
            KeyState::Saved(answer(a))
        );
        assert_eq!(
            e.reserve_idempotency_key(h.p, "k", b).await.unwrap(),
            KeyState::Saved(answer(a)),
            "a different request learns whose answer the key holds"
        );
        let other = h.other_tenant().await;
        assert_eq!(
            e.reserve_idempotency_key(other, "k", b).await.unwrap(),
            KeyState::Reserved,
            "keys are per tenant"
        );
    }
);

behaviour_test!(
    a_released_key_runs_again_and_an_expired_one_passes_to_its_retry,
    |h| async move {
        let (a, b) = (b"request a".as_slice(), b"request b".as_slice());
        let e = &h.engine;
        // A server error releases the key: the retry runs.
        assert_eq!(
            e.reserve_idempotency_key(h.p, "failed", a).await.unwrap(),
            KeyState::Reserved
        );
        e.release_idempotency_key(h.p, "failed").await.unwrap();
        assert_eq!(
            e.reserve_idempotency_key(h.p, "failed", b).await.unwrap(),
            KeyState::Reserved
        );

        // A process that died holding a key: its lease runs out, then the same request may
        // take it over (once); a different one still may not.
        assert_eq!(
            e.reserve_idempotency_key(h.p, "died", a).await.unwrap(),
            KeyState::Reserved
        );
        h.clock
            .set(h.now() + IDEMPOTENCY_LEASE - jiff::SignedDuration::from_secs(1));
        assert!(matches!(
            e.reserve_idempotency_key(h.p, "died", a).await.unwrap(),
            KeyState::InFlight { .. }
        ));
        h.clock.set(h.now() + jiff::SignedDuration::from_secs(1));
        assert!(matches!(
            e.reserve_idempotency_key(h.p, "died", b).await.unwrap(),
            KeyState::InFlight { .. }
        ));
        assert_eq!(
            e.reserve_idempotency_key(h.p, "died", a).await.unwrap(),
            KeyState::Reserved
        );
        assert!(
            matches!(
                e.reserve_idempotency_key(h.p, "died", a).await.unwrap(),
                KeyState::InFlight { .. }
            ),
            "the takeover holds a fresh lease"
        );
        e.save_response(h.p, "died", &answer(a)).await.unwrap();
        assert_eq!(
            e.reserve_idempotency_key(h.p, "died", a).await.unwrap(),
            KeyState::Saved(answer(a))
        );
    }
);
