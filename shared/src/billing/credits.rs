//! Credit packs: granted once per payment; refunds claw back the refunded share.

/// Credits to take back after a refund.
///
/// `amount_refunded` is Stripe's running total on the charge, so a repeated or reordered
/// `charge.refunded` computes the same target: the refunded share of the pack
/// (`credits × refunded / paid`, rounded down), of which `already_clawed_back` was taken before.
/// Only unspent credits can be taken: the result is capped by `balance`, so a balance never goes
/// below zero. Returns (credits to take now, new clawed-back total to record).
pub fn clawback(
    credits: u64,
    amount_paid: u64,
    amount_refunded: u64,
    already_clawed_back: u64,
    balance: u64,
) -> (u64, u64) {
    if amount_paid == 0 {
        return (0, already_clawed_back);
    }
    let refunded = amount_refunded.min(amount_paid);
    // u128: credits × amount cannot overflow.
    let target = (u128::from(credits) * u128::from(refunded) / u128::from(amount_paid)) as u64;
    let owed = target.saturating_sub(already_clawed_back);
    let take = owed.min(balance);
    (take, already_clawed_back + take)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn full_and_partial_refunds() {
        assert_eq!(
            clawback(1_000_000, 1000, 1000, 0, 1_000_000),
            (1_000_000, 1_000_000)
        );
        assert_eq!(
            clawback(1_000_000, 1000, 250, 0, 1_000_000),
            (250_000, 250_000)
        );
        // A second partial refund: the running total is 500, a quarter was already taken.
        assert_eq!(
            clawback(1_000_000, 1000, 500, 250_000, 750_000),
            (250_000, 500_000)
        );
        // Spent credits cannot be taken back: the balance caps it.
        assert_eq!(
            clawback(1_000_000, 1000, 1000, 0, 300_000),
            (300_000, 300_000)
        );
        assert_eq!(clawback(1_000_000, 0, 0, 0, 5), (0, 0));
    }

    proptest! {
        /// Replaying any sequence of running refund totals (duplicated, reordered) never takes
        /// more than the refunded share, never more than the balance, and never goes negative.
        #[test]
        fn replays_never_overshoot(
            credits in 0u64..10_000_000_000,
            paid in 1u64..1_000_000,
            totals in proptest::collection::vec(0u64..1_200_000, 1..12),
            spent in 0u64..10_000_000_000,
        ) {
            let mut balance = credits.saturating_sub(spent);
            let mut clawed = 0u64;
            for total in &totals {
                let (take, new_total) = clawback(credits, paid, *total, clawed, balance);
                prop_assert!(take <= balance);
                balance -= take;
                clawed = new_total;
            }
            let max_total = totals.iter().copied().max().unwrap_or(0).min(paid);
            let share = (u128::from(credits) * u128::from(max_total) / u128::from(paid)) as u64;
            prop_assert!(clawed <= share);
        }
    }
}
