//! The ordering guard. Stripe delivers events late, twice and out of order; each stored object
//! remembers the `created` (Unix seconds) of the event that last wrote it, and only a newer
//! event may overwrite it.
//!
//! Ties: two different events about one object created in the same second cannot be ordered
//! from their payloads. The rule is to ask Stripe: the processor fetches the object and writes
//! its current state, versioned at that second. Whichever of the two events is processed
//! second then finds its version equal and does the same, so both orders end in Stripe's state.

use super::subscription::SubscriptionStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Newer than what is stored (or nothing is stored): write it.
    Apply,
    /// Older, or a stale attempt to revive an ended subscription: record the event, change nothing.
    Stale,
    /// Same second as what is stored: fetch the object from Stripe and write that.
    Tie,
    /// A credit grant that finds its payment already (partly) refunded: grant it net of the
    /// refunded share (`credits::grant_after_refund`), with the running refunded amount seen.
    RefundedBeforeGrant { amount_refunded: u64 },
    /// Linking a customer that has events parked for want of an account: link it, apply them,
    /// then this event.
    ParkedEvents,
}

/// The general rule for an object whose stored state was written at `stored`.
pub fn judge(stored: Option<i64>, incoming: i64) -> Verdict {
    match stored {
        None => Verdict::Apply,
        Some(s) if incoming > s => Verdict::Apply,
        Some(s) if incoming == s => Verdict::Tie,
        Some(_) => Verdict::Stale,
    }
}

/// A subscription as the account stores it, or as an event describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionVersion<'a> {
    pub id: &'a str,
    pub status: SubscriptionStatus,
    pub version: i64,
}

/// Whether `incoming` may become the account's current subscription, replacing `stored`.
///
/// The account keeps one current subscription (the usage path reads its plan and period from
/// the account item alone). Besides it, every subscription that ended is remembered
/// (`ended_before`): an ended subscription never becomes current again, whatever arrives late.
///
/// - The same subscription: newer wins; once ended it stays ended.
/// - Another subscription's ending leaves the current one alone (its end is still remembered).
/// - Another live subscription replaces an ended current one; replaces a live one that grants no
///   plan (incomplete, unpaid, paused) when it grants one itself; and otherwise (both grant a plan,
///   or neither does) replaces it only when newer. A live subscription that grants no plan never
///   replaces one that does: an abandoned upgrade (`incomplete`, 3-D Secure not completed) must
///   not drop a paying account to free. In the same second, the greater id wins, so two
///   subscriptions created together end in the same state in either order.
pub fn judge_subscription(
    stored: Option<SubscriptionVersion<'_>>,
    incoming: SubscriptionVersion<'_>,
    ended_before: bool,
) -> Verdict {
    if ended_before && !incoming.status.is_terminal() {
        return Verdict::Stale;
    }
    let Some(stored) = stored else {
        return Verdict::Apply;
    };
    if stored.id == incoming.id {
        if stored.status.is_terminal() && !incoming.status.is_terminal() {
            return Verdict::Stale;
        }
        return judge(Some(stored.version), incoming.version);
    }
    if incoming.status.is_terminal() {
        return Verdict::Stale;
    }
    if stored.status.is_terminal() {
        return Verdict::Apply;
    }
    let newer = incoming.version > stored.version
        || (incoming.version == stored.version && incoming.id > stored.id);
    match (incoming.status.grants_plan(), stored.status.grants_plan()) {
        (true, false) => Verdict::Apply,
        (false, true) => Verdict::Stale,
        _ if newer => Verdict::Apply,
        _ => Verdict::Stale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscriptionStatus::*;

    #[test]
    fn newer_wins_older_loses_same_second_ties() {
        assert_eq!(judge(None, 5), Verdict::Apply);
        assert_eq!(judge(Some(4), 5), Verdict::Apply);
        assert_eq!(judge(Some(5), 5), Verdict::Tie);
        assert_eq!(judge(Some(6), 5), Verdict::Stale);
    }

    fn v(id: &str, status: SubscriptionStatus, version: i64) -> SubscriptionVersion<'_> {
        SubscriptionVersion {
            id,
            status,
            version,
        }
    }

    #[test]
    fn an_ended_subscription_stays_ended() {
        let j = |stored, incoming| judge_subscription(Some(stored), incoming, false);
        assert_eq!(j(v("a", Canceled, 10), v("a", Active, 99)), Verdict::Stale);
        assert_eq!(
            j(v("a", IncompleteExpired, 10), v("a", Active, 99)),
            Verdict::Stale
        );
        assert_eq!(
            j(v("a", Canceled, 10), v("a", Canceled, 11)),
            Verdict::Apply
        );
        assert_eq!(j(v("a", Active, 10), v("a", Canceled, 11)), Verdict::Apply);
        assert_eq!(j(v("a", Active, 10), v("a", Canceled, 9)), Verdict::Stale);
        assert_eq!(j(v("a", Active, 10), v("a", PastDue, 10)), Verdict::Tie);
    }

    #[test]
    fn an_ended_subscription_never_returns_through_another_one() {
        // a ended (remembered); b is current and ended too; a late `active` of a stays out.
        assert_eq!(
            judge_subscription(Some(v("b", Canceled, 300)), v("a", Active, 50), true),
            Verdict::Stale
        );
        assert_eq!(
            judge_subscription(None, v("a", Active, 50), true),
            Verdict::Stale
        );
        // Its ending may still be recorded again.
        assert_eq!(
            judge_subscription(Some(v("a", Canceled, 60)), v("a", Canceled, 61), true),
            Verdict::Apply
        );
    }

    #[test]
    fn subscribing_again_after_an_ended_subscription_works() {
        let j = |stored, incoming| judge_subscription(Some(stored), incoming, false);
        // b was created before a's deletion was processed: b still becomes the subscription.
        assert_eq!(j(v("a", Canceled, 11), v("b", Active, 10)), Verdict::Apply);
        // The deletion of an old subscription does not end the current one.
        assert_eq!(j(v("b", Active, 10), v("a", Canceled, 11)), Verdict::Stale);
        assert_eq!(
            judge_subscription(None, v("b", Trialing, 2), false),
            Verdict::Apply
        );
    }

    #[test]
    fn a_subscription_without_a_plan_never_displaces_one_with_a_plan() {
        let j = |stored, incoming| judge_subscription(Some(stored), incoming, false);
        assert_eq!(
            j(v("a", Active, 10), v("b", Incomplete, 20)),
            Verdict::Stale
        );
        assert_eq!(j(v("a", PastDue, 10), v("b", Unpaid, 20)), Verdict::Stale);
        // ... but one with a plan displaces one without, whatever the order.
        assert_eq!(
            j(v("b", Incomplete, 20), v("a", Active, 10)),
            Verdict::Apply
        );
        // Both with a plan (an upgrade): the newer wins; in the same second, the greater id.
        assert_eq!(j(v("a", Active, 10), v("b", Active, 20)), Verdict::Apply);
        assert_eq!(j(v("b", Active, 20), v("a", Active, 10)), Verdict::Stale);
        assert_eq!(j(v("a", Active, 10), v("b", Active, 10)), Verdict::Apply);
        assert_eq!(j(v("b", Active, 10), v("a", Active, 10)), Verdict::Stale);
    }
}
