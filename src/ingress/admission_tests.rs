//! The budgets of `admission.rs`, without a server.

use super::*;

fn gauge() -> IntGauge {
    IntGauge::new("g", "g").unwrap()
}

#[test]
fn a_body_within_its_allowance_needs_no_budget_even_when_the_budget_is_full() {
    let budget = ByteBudget::new(100, gauge());
    let mut attacker = budget.empty();
    assert!(
        attacker.cover(ALLOWANCE_BYTES + 100),
        "the budget's 100 bytes beyond it"
    );
    let mut genuine = budget.empty();
    assert!(genuine.cover(2 * 1024), "a 2 KiB body");
    assert!(
        genuine.cover(ALLOWANCE_BYTES),
        "a body the size of the allowance"
    );
    assert!(
        !genuine.cover(ALLOWANCE_BYTES + 1),
        "one byte beyond, and the budget is full"
    );
    drop(attacker);
    assert!(genuine.cover(ALLOWANCE_BYTES + 1));
}

#[test]
fn covers_a_growing_body_by_reserving_only_what_is_new_beyond_the_allowance() {
    let in_use = gauge();
    let budget = ByteBudget::new(10, in_use.clone());
    let mut body = budget.empty();
    assert!(body.cover(ALLOWANCE_BYTES + 4));
    assert!(body.cover(ALLOWANCE_BYTES + 4), "nothing new");
    assert!(body.cover(ALLOWANCE_BYTES + 10));
    assert_eq!(in_use.get(), 10);
    assert!(!body.cover(ALLOWANCE_BYTES + 11));
    drop(body);
    assert_eq!(in_use.get(), 0);
    assert_eq!(budget.available.load(Ordering::Acquire), 10);
}

#[test]
fn refuses_at_once_and_counts_what_is_reserved() {
    let in_use = gauge();
    let budget = ByteBudget::new(10, in_use.clone());
    let mut a = budget.empty();
    assert!(a.try_grow(8));
    assert_eq!(in_use.get(), 8);
    let mut b = budget.empty();
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
