//! The budgets of `admission.rs`, without a server.

use super::*;

fn gauge() -> IntGauge {
    IntGauge::new("g", "g").unwrap()
}

#[tokio::test]
async fn a_small_reservation_is_not_stuck_behind_a_large_one_waiting() {
    let budget = ByteBudget::new(100, gauge());
    let mut held = budget.empty();
    assert!(held.grow(90, WhenShort::Refuse).await);
    let mut large = budget.empty();
    let large_wait = tokio::spawn({
        async move {
            large.grow(50, WhenShort::Wait).await;
            large
        }
    });
    tokio::task::yield_now().await;
    let mut small = budget.empty();
    assert!(
        small.grow(10, WhenShort::Wait).await,
        "room for 10 was there"
    );
    drop(held);
    let large = tokio::time::timeout(Duration::from_secs(5), large_wait)
        .await
        .expect("the large one gets room once freed")
        .unwrap();
    assert_eq!(large.bytes, 50);
}

#[tokio::test]
async fn refuses_at_once_when_told_to_and_counts_what_is_reserved() {
    let in_use = gauge();
    let budget = ByteBudget::new(10, in_use.clone());
    let mut a = budget.empty();
    assert!(a.grow(8, WhenShort::Refuse).await);
    assert_eq!(in_use.get(), 8);
    let mut b = budget.empty();
    assert!(!b.grow(3, WhenShort::Refuse).await);
    assert!(!b.try_grow(3));
    assert!(b.try_grow(2));
    drop(a);
    drop(b);
    assert_eq!(in_use.get(), 0);
    assert_eq!(budget.available.load(Ordering::Acquire), 10);
}

fn admission(max_in_flight: usize, bytes: usize) -> Admission {
    Admission::new(
        Limits {
            max_unverified_body_bytes: 100,
            max_in_flight,
            max_in_flight_body_bytes: bytes,
            body_timeout: Duration::from_secs(1),
        },
        Gauges {
            unverified_bytes: gauge(),
            in_flight_bytes: gauge(),
            in_flight: gauge(),
        },
    )
}

#[tokio::test]
async fn a_verified_request_needs_a_slot_and_room_for_its_body_and_gives_back_its_unverified_bytes()
{
    let a = admission(1, 10);
    let mut unverified = a.unverified();
    assert!(unverified.try_grow(100));
    let slot = a.verified(10, unverified).expect("a slot");
    assert!(
        a.unverified().try_grow(100),
        "unverified bytes were given back"
    );
    assert!(matches!(
        a.verified(1, a.unverified()),
        Err(IngressError::Overloaded)
    ));
    drop(slot);
    assert!(matches!(
        a.verified(11, a.unverified()),
        Err(IngressError::Overloaded)
    ));
    assert!(a.verified(10, a.unverified()).is_ok());
}

#[tokio::test]
async fn drain_waits_for_every_active_request() {
    let a = Arc::new(admission(1, 10));
    let active = a.enter();
    let soon = Instant::now() + Duration::from_millis(50);
    assert!(!a.drain(soon).await, "one was still active");
    let waiter = tokio::spawn({
        let a = Arc::clone(&a);
        async move { a.drain(Instant::now() + Duration::from_secs(5)).await }
    });
    tokio::task::yield_now().await;
    drop(active);
    assert!(waiter.await.unwrap());
}
