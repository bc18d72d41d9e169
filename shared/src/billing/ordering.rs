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

/// The account keeps one subscription. For the same subscription, newer wins and an ended one
/// never comes back (Stripe cannot reactivate a canceled subscription). Across subscriptions
/// (a customer who cancels and subscribes again): a live subscription replaces an ended one
/// whatever the timestamps, and the ending of a subscription that is not the account's current
/// one changes nothing.
pub fn judge_subscription(
    stored: Option<SubscriptionVersion<'_>>,
    incoming: SubscriptionVersion<'_>,
) -> Verdict {
    let Some(stored) = stored else {
        return Verdict::Apply;
    };
    let ended = stored.status.is_terminal();
    if stored.id == incoming.id {
        if ended && !incoming.status.is_terminal() {
            return Verdict::Stale;
        }
        return judge(Some(stored.version), incoming.version);
    }
    match (ended, incoming.status.is_terminal()) {
        (true, false) => Verdict::Apply,
        (true, true) if incoming.version > stored.version => Verdict::Apply,
        (false, false) if incoming.version > stored.version => Verdict::Apply,
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
        let j = |stored, incoming| judge_subscription(Some(stored), incoming);
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
    fn subscribing_again_after_an_ended_subscription_works() {
        let j = |stored, incoming| judge_subscription(Some(stored), incoming);
        // b was created before a's deletion was processed: b still becomes the subscription.
        assert_eq!(j(v("a", Canceled, 11), v("b", Active, 10)), Verdict::Apply);
        // The deletion of an old subscription does not end the current one.
        assert_eq!(j(v("b", Active, 10), v("a", Canceled, 11)), Verdict::Stale);
        assert_eq!(
            judge_subscription(None, v("b", Trialing, 2)),
            Verdict::Apply
        );
    }
}
