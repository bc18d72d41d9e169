//! Auto top-up: when usage takes an account's credits below its threshold, one off-session
//! payment for a credit pack is claimed, in the same write as the usage that caused it.
//!
//! The rules, for any interleaving of uses, payments and settings:
//! - **Only usage claims.** A use that credits paid for, or that went beyond them, and leaves
//!   fewer credits than the threshold, claims a top-up. Nothing else does: an account that
//!   makes no calls is never charged, and turning top-up on below the threshold charges
//!   nothing until the next use.
//! - **Never two in flight.** A claim takes the next sequence number and stays in flight until
//!   its payment's credits are granted or it is declined; no claim is made meanwhile.
//! - **Never past the monthly cap.** The claimed amounts of a calendar month (UTC) never exceed
//!   the cap. A declined attempt still counts: the cap bounds what can be attempted, so a card
//!   that declines and comes back cannot lead to more than the cap in a month.
//! - **Disarmed by a decline until the card changes.** A top-up needs the customer and a card;
//!   after a decline, no claim is made while the card to charge is the one that declined.
//!
//! The store writes a claim with the usage record and the ledger in one conditional commit, so
//! racing uses serialise on the account and only one of them can claim.

use super::period::calendar_month;

/// What the customer asked for (`PUT /v1/accounts/{id}/auto-topup`), with the pack's price
/// and credits as the catalog had them then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopupSettings {
    /// Top up when a use leaves fewer credits than this.
    pub threshold: u64,
    pub pack: String,
    /// The pack's price, in the catalog currency's minor unit.
    pub amount: u64,
    pub credits: u64,
    /// The most claimed in one calendar month, in the same unit as `amount`.
    pub monthly_cap: u64,
}

/// The account's auto top-up, as the usage decision reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoTopup {
    /// `None`: off.
    pub settings: Option<TopupSettings>,
    /// The last sequence number claimed (0: none yet).
    pub seq: u64,
    /// The claim whose payment is not settled yet.
    pub in_flight: Option<u64>,
    /// Start of the calendar month `spent` counts, and what was claimed in it.
    pub month: i64,
    pub spent: u64,
    /// The card that declined the last attempt: no claim while it is the card to charge.
    pub declined_card: Option<String>,
    /// The Stripe customer, and the card a top-up charges (the customer's default, else the
    /// subscription's): without both there is nothing to charge.
    pub customer: Option<String>,
    pub card: Option<String>,
}

/// A claimed top-up: what the payment is for and who pays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopupClaim {
    pub seq: u64,
    pub pack: String,
    pub amount: u64,
    pub credits: u64,
    pub customer: String,
    pub card: String,
    pub claimed_at: i64,
}

/// Why a use claimed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoClaim {
    Off,
    NotCredits,
    AboveThreshold,
    InFlight,
    NoCard,
    Declined,
    Cap,
}

impl AutoTopup {
    /// Claims a top-up for a use that `took_credits` (paid by credits, or beyond them) and left
    /// `credits_after`, at `now`. On a claim the state moves on (sequence, in flight, spend).
    pub fn claim(
        &mut self,
        credits_after: u64,
        took_credits: bool,
        now: i64,
    ) -> Result<TopupClaim, NoClaim> {
        let settings = self.settings.as_ref().ok_or(NoClaim::Off)?;
        if !took_credits {
            return Err(NoClaim::NotCredits);
        }
        if credits_after >= settings.threshold {
            return Err(NoClaim::AboveThreshold);
        }
        if self.in_flight.is_some() {
            return Err(NoClaim::InFlight);
        }
        let (Some(customer), Some(card)) = (&self.customer, &self.card) else {
            return Err(NoClaim::NoCard);
        };
        if self.declined_card.as_ref() == Some(card) {
            return Err(NoClaim::Declined);
        }
        // A clock a little behind (another instance, at a month's turn) counts against the
        // newer month already started, never reopening an older one's cap.
        let (month, spent) = match calendar_month(now).start {
            m if m > self.month => (m, 0),
            _ => (self.month, self.spent),
        };
        let spent_after = spent
            .checked_add(settings.amount)
            .filter(|s| *s <= settings.monthly_cap)
            .ok_or(NoClaim::Cap)?;
        let claim = TopupClaim {
            seq: self.seq + 1,
            pack: settings.pack.clone(),
            amount: settings.amount,
            credits: settings.credits,
            customer: customer.clone(),
            card: card.clone(),
            claimed_at: now,
        };
        self.seq = claim.seq;
        self.in_flight = Some(claim.seq);
        self.month = month;
        self.spent = spent_after;
        Ok(claim)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const JAN_31: i64 = 1_769_817_600; // 2026-01-31T00:00:00Z
    const FEB_1: i64 = 1_769_904_000; // 2026-02-01T00:00:00Z

    fn armed(cap: u64) -> AutoTopup {
        AutoTopup {
            settings: Some(TopupSettings {
                threshold: 1_000,
                pack: "credits_small".into(),
                amount: 1_000,
                credits: 1_000_000,
                monthly_cap: cap,
            }),
            customer: Some("cus_1".into()),
            card: Some("pm_1".into()),
            ..AutoTopup::default()
        }
    }

    #[test]
    fn a_use_below_the_threshold_claims_one_top_up_until_it_settles() {
        let mut t = armed(10_000);
        assert_eq!(t.claim(1_000, true, JAN_31), Err(NoClaim::AboveThreshold));
        assert_eq!(t.claim(999, false, JAN_31), Err(NoClaim::NotCredits));
        let c = t.claim(999, true, JAN_31).unwrap();
        assert_eq!((c.seq, c.amount, c.card.as_str()), (1, 1_000, "pm_1"));
        assert_eq!(t.claim(10, true, JAN_31), Err(NoClaim::InFlight));
        t.in_flight = None;
        assert_eq!(t.claim(10, true, JAN_31).unwrap().seq, 2);
    }

    #[test]
    fn no_claim_without_settings_a_customer_or_a_card() {
        let mut off = AutoTopup::default();
        assert_eq!(off.claim(0, true, JAN_31), Err(NoClaim::Off));
        let mut no_card = AutoTopup {
            card: None,
            ..armed(10_000)
        };
        assert_eq!(no_card.claim(0, true, JAN_31), Err(NoClaim::NoCard));
    }

    #[test]
    fn a_declined_card_disarms_until_the_card_changes() {
        let mut t = AutoTopup {
            declined_card: Some("pm_1".into()),
            ..armed(10_000)
        };
        assert_eq!(t.claim(0, true, JAN_31), Err(NoClaim::Declined));
        t.card = Some("pm_2".into());
        assert_eq!(t.claim(0, true, JAN_31).unwrap().card, "pm_2");
    }

    #[test]
    fn the_monthly_cap_holds_within_a_month_and_renews_with_the_next() {
        let mut t = armed(2_500);
        for _ in 0..2 {
            t.claim(0, true, JAN_31).unwrap();
            t.in_flight = None;
        }
        assert_eq!(t.claim(0, true, JAN_31 + 86_399), Err(NoClaim::Cap));
        assert_eq!((t.spent, t.seq), (2_000, 2));
        let c = t.claim(0, true, FEB_1).unwrap();
        assert_eq!((c.seq, t.month, t.spent), (3, FEB_1, 1_000));
    }

    proptest! {
        /// For any sequence of uses, settlements, card changes and months (the clock may even
        /// step back): at most one claim
        /// is in flight, each month's claims stay within the cap, sequence numbers only grow,
        /// and only a use that took credits below the threshold ever claims.
        #[test]
        fn claims_never_overlap_or_pass_the_cap(
            steps in proptest::collection::vec((0u8..4, 0u64..2_000, any::<bool>(), 0i64..3), 1..80),
            cap in 0u64..6_000,
        ) {
            let mut t = armed(cap);
            let mut by_month = std::collections::BTreeMap::<i64, u64>::new();
            let mut last_seq = 0;
            for (kind, credits, took, month) in steps {
                let now = JAN_31 + month * 31 * 86_400;
                match kind {
                    0 | 1 => {
                        let was_in_flight = t.in_flight.is_some();
                        if let Ok(c) = t.claim(credits, took, now) {
                            prop_assert!(!was_in_flight && took && credits < 1_000);
                            prop_assert!(c.seq == last_seq + 1);
                            last_seq = c.seq;
                            // Counted against the month the state says it is in: the
                            // calendar month of `now`, or a later one already started.
                            let m = t.month;
                            prop_assert!(m >= calendar_month(now).start);
                            *by_month.entry(m).or_default() += c.amount;
                            prop_assert!(by_month[&m] <= cap);
                        }
                    }
                    2 => t.in_flight = None,
                    _ => {
                        t.declined_card = t.card.clone();
                        t.in_flight = None;
                        if took {
                            t.card = Some(format!("pm_{credits}"));
                        }
                    }
                }
            }
        }
    }
}
