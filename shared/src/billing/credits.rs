//! Credit packs: granted once per payment; refunds take back the refunded share of what is
//! left of the refunded pack, and never anything else.
//!
//! The rules, for any order of grants and refunds:
//! - A grant adds the pack's credits once per payment.
//! - A refund's target is the refunded share of its pack, `credits × refunded / paid` (rounded
//!   down), from Stripe's running refunded total on the charge, so duplicates and reordering
//!   compute the same target.
//! - A refund takes only what is left of its own pack. Credits are spent oldest pack first, so
//!   the unspent balance belongs to the newest packs (`unspent_of`). What the pack no longer has
//!   (already spent) is written off once, never taken from another pack later: a customer who
//!   buys a second pack does not pay for the first one's refund with it.
//! - A refund processed before its grant (another message group, a dead-lettered grant) is
//!   remembered; the grant then adds only the unrefunded share (`grant_after_refund`).
//! - The balance never goes below zero.

/// The refunded share of a pack's credits for a running refunded total.
pub fn refunded_share(credits: u64, amount_paid: u64, amount_refunded: u64) -> u64 {
    if amount_paid == 0 {
        return 0;
    }
    let refunded = amount_refunded.min(amount_paid);
    // u128: credits × amount cannot overflow; the quotient is at most `credits`.
    (u128::from(credits) * u128::from(refunded) / u128::from(amount_paid)) as u64
}

/// A grant that meets an earlier refund of its payment: (credits to add, share to record as
/// already clawed back).
pub fn grant_after_refund(credits: u64, amount_paid: u64, amount_refunded: u64) -> (u64, u64) {
    let share = refunded_share(credits, amount_paid, amount_refunded);
    (credits - share, share)
}

/// One pack on the account's ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant<'a> {
    pub id: &'a str,
    pub granted_at: i64,
    pub credits: u64,
    /// The share already accounted for by refunds (taken or written off).
    pub clawed_back: u64,
}

/// How much of `balance` belongs to grant `id`: packs are spent oldest first, so walking them
/// newest first, each holds up to what refunds left of it.
pub fn unspent_of(grants: &[Grant<'_>], id: &str, balance: u64) -> u64 {
    let mut newest_first: Vec<&Grant<'_>> = grants.iter().collect();
    newest_first.sort_by(|a, b| (b.granted_at, b.id).cmp(&(a.granted_at, a.id)));
    let mut left = balance;
    for g in newest_first {
        let held = left.min(g.credits.saturating_sub(g.clawed_back));
        if g.id == id {
            return held;
        }
        left -= held;
    }
    0
}

/// What one refund does to its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clawback {
    /// Credits to take from the balance now.
    pub take: u64,
    /// The pack's new clawed-back total (the refunded share, never less than before).
    pub clawed_back: u64,
    /// Owed but already spent: not taken, and never taken later.
    pub written_off: u64,
}

/// The clawback for a running refunded total, given what the pack had clawed back before and
/// what of the balance is still the pack's own (`unspent_of`).
pub fn clawback(
    credits: u64,
    amount_paid: u64,
    amount_refunded: u64,
    clawed_back_before: u64,
    unspent: u64,
) -> Clawback {
    let share = refunded_share(credits, amount_paid, amount_refunded).max(clawed_back_before);
    let owed = share - clawed_back_before;
    let take = owed.min(unspent);
    Clawback {
        take,
        clawed_back: share,
        written_off: owed - take,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn g(id: &str, granted_at: i64, credits: u64, clawed_back: u64) -> Grant<'_> {
        Grant {
            id,
            granted_at,
            credits,
            clawed_back,
        }
    }

    #[test]
    fn full_and_partial_refunds() {
        let c = |refunded, before, unspent| clawback(1_000_000, 1000, refunded, before, unspent);
        assert_eq!(
            c(1000, 0, 1_000_000),
            Clawback {
                take: 1_000_000,
                clawed_back: 1_000_000,
                written_off: 0
            }
        );
        assert_eq!(
            c(250, 0, 1_000_000),
            Clawback {
                take: 250_000,
                clawed_back: 250_000,
                written_off: 0
            }
        );
        // A second partial refund: the running total is 500, a quarter was already taken.
        assert_eq!(
            c(500, 250_000, 750_000),
            Clawback {
                take: 250_000,
                clawed_back: 500_000,
                written_off: 0
            }
        );
        // Spent credits cannot be taken back: what is owed beyond them is written off, once.
        assert_eq!(
            c(1000, 0, 300_000),
            Clawback {
                take: 300_000,
                clawed_back: 1_000_000,
                written_off: 700_000
            }
        );
        // A repeated or older refund event changes nothing.
        assert_eq!(
            c(500, 1_000_000, 0),
            Clawback {
                take: 0,
                clawed_back: 1_000_000,
                written_off: 0
            }
        );
        assert_eq!(clawback(1_000_000, 0, 0, 0, 5).take, 0);
    }

    #[test]
    fn a_refund_never_takes_another_packs_credits() {
        // A (1M) bought first and fully spent; B (1M) bought after: the balance is B's.
        let grants = [g("pi_A", 10, 1_000_000, 0), g("pi_B", 20, 1_000_000, 0)];
        assert_eq!(unspent_of(&grants, "pi_A", 1_000_000), 0);
        assert_eq!(unspent_of(&grants, "pi_B", 1_000_000), 1_000_000);
        let refund_a = clawback(
            1_000_000,
            1000,
            1000,
            0,
            unspent_of(&grants, "pi_A", 1_000_000),
        );
        assert_eq!(
            refund_a,
            Clawback {
                take: 0,
                clawed_back: 1_000_000,
                written_off: 1_000_000
            }
        );
        // Half of A left: the balance of 1.5M holds B whole and half of A.
        assert_eq!(unspent_of(&grants, "pi_A", 1_500_000), 500_000);
    }

    #[test]
    fn a_grant_after_its_refund_adds_only_the_unrefunded_share() {
        assert_eq!(grant_after_refund(1_000_000, 1000, 400), (600_000, 400_000));
        assert_eq!(grant_after_refund(1_000_000, 1000, 1000), (0, 1_000_000));
        assert_eq!(grant_after_refund(1_000_000, 1000, 5000), (0, 1_000_000));
        assert_eq!(grant_after_refund(1_000_000, 0, 0), (1_000_000, 0));
    }

    proptest! {
        /// Replaying any sequence of running refund totals (duplicated, reordered) takes exactly
        /// the refunded share of the largest total, capped by what the pack had unspent, and
        /// writes off exactly the rest: never more, never less, never below zero.
        #[test]
        fn replays_take_exactly_the_refunded_share_of_what_is_left(
            credits in 0u64..10_000_000_000,
            paid in 1u64..1_000_000,
            totals in proptest::collection::vec(0u64..1_200_000, 1..12),
            spent in 0u64..10_000_000_000,
        ) {
            let mut unspent = credits.saturating_sub(spent);
            let start = unspent;
            let (mut clawed, mut taken, mut written_off) = (0u64, 0u64, 0u64);
            for total in &totals {
                let c = clawback(credits, paid, *total, clawed, unspent);
                prop_assert!(c.take <= unspent);
                prop_assert!(c.clawed_back >= clawed);
                unspent -= c.take;
                taken += c.take;
                written_off += c.written_off;
                clawed = c.clawed_back;
            }
            let max_total = totals.iter().copied().max().unwrap_or(0);
            let share = refunded_share(credits, paid, max_total);
            prop_assert_eq!(clawed, share);
            prop_assert_eq!(taken + written_off, share);
            // Taken greedily as soon as owed: exactly min(share, what was unspent).
            prop_assert_eq!(taken, share.min(start));
        }
    }
}
