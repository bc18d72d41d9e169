//! What a Stripe event changes, decided without I/O. The processor resolves the account, then
//! hands these writes to the store, which applies them with the processed-event marker in one
//! transaction, each guarded by the ordering rules.

use crate::billing::subscription::{SubscriptionState, SubscriptionStatus};
use crate::catalog::{Catalog, DEAL_INCLUDED_UNITS_KEY, DEAL_PLAN_KEY, DealError, PricedItem};
use crate::ids::AccountId;
use crate::stripe::objects::{
    CheckoutSession, EventData, Invoice, InvoiceEvent, PaymentIntent, StripeEvent, Subscription,
};

/// Metadata key the checkout flow sets on sessions, subscriptions and customers.
pub const ACCOUNT_METADATA_KEY: &str = "account_id";
/// Metadata key naming the credit pack a payment-mode checkout session sells.
pub const CREDIT_PACK_METADATA_KEY: &str = "credit_pack";
/// Metadata key naming the auto top-up claim an off-session payment pays.
pub const TOPUP_SEQ_METADATA_KEY: &str = "topup_seq";

/// Where the event says its account is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountRef {
    /// Named by the event itself (client reference or metadata): no lookup needed.
    Known(AccountId),
    /// Only the Stripe customer is named: the customer → account link is read.
    Customer(String),
    /// Neither: the event cannot be tied to an account.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRecord {
    pub invoice_id: String,
    pub number: Option<String>,
    pub status: String,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub amount_remaining: i64,
    pub currency: String,
    pub hosted_invoice_url: Option<String>,
    pub invoice_pdf: Option<String>,
    pub period_start: i64,
    pub period_end: i64,
    pub subscription_id: Option<String>,
}

/// What an invoice event does to the invoice's dunning case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DunningChange {
    None,
    /// A payment attempt failed: open the case, or update its count and next retry.
    Failed {
        attempt_count: u32,
        next_payment_attempt: Option<i64>,
    },
    /// Paid, voided or written off: the case (if any) is over.
    Closed {
        reason: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Remember which account a Stripe customer belongs to (idempotent).
    LinkCustomer { customer_id: String },
    /// The account names its Stripe customer (and the email given at checkout) as soon as an
    /// event links them, without waiting for a `customer.*` event. Never overwrites what is
    /// known: the versioned `CustomerProfile` stays authoritative.
    AccountCustomer {
        customer_id: String,
        email: Option<String>,
    },
    /// Billing contact, for notifications. Versioned by event time.
    CustomerProfile {
        customer_id: String,
        email: Option<String>,
        name: Option<String>,
        deleted: bool,
        /// The customer's default card: dunning retries with it when it is not the one the
        /// subscription is charged to.
        card: Option<String>,
    },
    /// The account's subscription, plan and period. Versioned; an ended one never comes back.
    Subscription(SubscriptionState),
    /// Remember that a subscription ended, so that no late event makes it current again, even
    /// when it is not the account's current subscription.
    SubscriptionEnded { subscription_id: String },
    /// An invoice the app can list, with its dunning case. Versioned per invoice, so a stale
    /// `payment_failed` can never reopen a case that a newer `paid` closed.
    Invoice(InvoiceRecord, DunningChange),
    /// Grant a paid credit pack, once per payment (ledger entry and balance together).
    /// `refunded_before`: the running refunded total a refund processed before this grant
    /// recorded (the grant then adds only the unrefunded share).
    GrantCredits {
        grant_id: String,
        pack_id: String,
        credits: u64,
        amount_paid: u64,
        refunded_before: Option<u64>,
    },
    /// The auto top-up claim `seq` is paid: it is no longer in flight (with its grant).
    EndTopupClaim { seq: u64 },
    /// Take back the refunded share of what is left of the refunded pack (see `credits`); a
    /// refund without its grant yet is remembered for the grant.
    ClawBack {
        grant_id: String,
        amount_refunded: u64,
    },
}

impl Write {
    /// Facts that hold even when the event is otherwise older than the stored state: they are
    /// written with the marker of a stale event (a subscription's end, a customer's account).
    pub fn holds_when_stale(&self) -> bool {
        matches!(
            self,
            Write::LinkCustomer { .. }
                | Write::AccountCustomer { .. }
                | Write::SubscriptionEnded { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effects {
    pub account: AccountRef,
    pub writes: Vec<Write>,
}

/// An event that can never be applied as it is: retrying will not help, so it is dead-lettered
/// with this reason for an operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no catalog plan uses any of the subscription's prices ({0})")]
    UnknownPrices(String),
    #[error(transparent)]
    Deal(#[from] DealError),
    #[error("unknown subscription status `{0}`")]
    UnknownStatus(String),
    #[error("the subscription has no billing period")]
    NoPeriod,
    #[error("credit pack `{0}` is not in the catalog")]
    UnknownCreditPack(String),
    #[error("the payment's `topup_seq` metadata `{0}` is not a top-up number")]
    InvalidTopup(String),
    #[error("the account id in the event is invalid: {0}")]
    InvalidAccount(String),
    #[error("credit pack `{pack}` costs {expected}, but the payment was {paid}: not granted")]
    PaymentMismatch {
        pack: String,
        expected: String,
        paid: String,
    },
}

fn account_from(
    metadata_value: Option<&str>,
    customer: Option<&str>,
) -> Result<AccountRef, PlanError> {
    match (metadata_value, customer) {
        (Some(a), _) => AccountId::parse(a)
            .map(AccountRef::Known)
            .map_err(|e| PlanError::InvalidAccount(e.to_string())),
        (None, Some(c)) => Ok(AccountRef::Customer(c.to_owned())),
        (None, None) => Ok(AccountRef::Unknown),
    }
}

/// Decides the writes for `event`.
pub fn plan_effects(event: &StripeEvent, catalog: &Catalog) -> Result<Effects, PlanError> {
    let (account, writes) = match &event.data {
        EventData::CheckoutCompleted(s) | EventData::CheckoutAsyncPaymentSucceeded(s) => {
            checkout(s, catalog)?
        }
        EventData::SubscriptionCreated(s) | EventData::SubscriptionUpdated(s) => {
            subscription(s, None, catalog)?
        }
        EventData::SubscriptionDeleted(s) => {
            subscription(s, Some(SubscriptionStatus::Canceled), catalog)?
        }
        EventData::Invoice(kind, i) => invoice(*kind, i)?,
        EventData::CustomerCreated(c)
        | EventData::CustomerUpdated(c)
        | EventData::CustomerDeleted(c) => {
            let deleted =
                matches!(event.data, EventData::CustomerDeleted(_)) || c.deleted == Some(true);
            let account = account_from(
                c.metadata
                    .as_ref()
                    .and_then(|m| m.get(ACCOUNT_METADATA_KEY))
                    .map(String::as_str),
                Some(&c.id),
            )?;
            let mut writes = Vec::new();
            if matches!(account, AccountRef::Known(_)) {
                writes.push(Write::LinkCustomer {
                    customer_id: c.id.clone(),
                });
            }
            writes.push(Write::CustomerProfile {
                customer_id: c.id.clone(),
                email: c.email.clone().filter(|_| !deleted),
                name: c.name.clone().filter(|_| !deleted),
                deleted,
                card: c.default_payment_method().map(str::to_owned),
            });
            (account, writes)
        }
        EventData::ChargeRefunded(c) => {
            let account = account_from(
                c.metadata
                    .as_ref()
                    .and_then(|m| m.get(ACCOUNT_METADATA_KEY))
                    .map(String::as_str),
                c.customer_id(),
            )?;
            let writes = match c.payment_intent_id() {
                Some(pi) => vec![Write::ClawBack {
                    grant_id: pi.to_owned(),
                    amount_refunded: u64::try_from(c.amount_refunded).unwrap_or(0),
                }],
                None => Vec::new(),
            };
            (account, writes)
        }
        EventData::PaymentIntentSucceeded(p) => topup_payment(p, catalog)?,
        EventData::Unhandled => (AccountRef::Unknown, Vec::new()),
    };
    Ok(Effects { account, writes })
}

fn checkout(s: &CheckoutSession, catalog: &Catalog) -> Result<(AccountRef, Vec<Write>), PlanError> {
    let account = account_from(
        s.client_reference_id
            .as_deref()
            .or(s.metadata(ACCOUNT_METADATA_KEY)),
        s.customer_id(),
    )?;
    let mut writes = Vec::new();
    if let Some(customer) = s.customer_id() {
        writes.push(Write::LinkCustomer {
            customer_id: customer.to_owned(),
        });
        if matches!(account, AccountRef::Known(_)) {
            writes.push(Write::AccountCustomer {
                customer_id: customer.to_owned(),
                email: s.customer_details.as_ref().and_then(|d| d.email.clone()),
            });
        }
    }
    // Asynchronous payment methods complete the session unpaid; their credits come with
    // `checkout.session.async_payment_succeeded`.
    if s.mode == "payment"
        && s.payment_status == "paid"
        && let Some(pack_id) = s.metadata(CREDIT_PACK_METADATA_KEY)
    {
        // The payment intent is what a refund names; a paid session always has one.
        let grant_id = s.payment_intent_id().unwrap_or(&s.id);
        writes.push(grant_pack(
            catalog,
            pack_id,
            grant_id,
            s.amount_total,
            s.currency.as_deref(),
        )?);
    }
    Ok((account, writes))
}

/// The grant of a paid credit pack, once its payment is checked against the pack's price.
fn grant_pack(
    catalog: &Catalog,
    pack_id: &str,
    grant_id: &str,
    amount: Option<i64>,
    currency: Option<&str>,
) -> Result<Write, PlanError> {
    let pack = catalog
        .credit_pack(pack_id)
        .ok_or_else(|| PlanError::UnknownCreditPack(pack_id.to_owned()))?;
    let amount_paid = check_payment(&pack.id, pack.amount, &catalog.currency, amount, currency)?;
    Ok(Write::GrantCredits {
        grant_id: grant_id.to_owned(),
        pack_id: pack.id.clone(),
        credits: pack.credits,
        amount_paid,
        refunded_before: None,
    })
}

/// An auto top-up's payment grants its pack, like a Checkout purchase, and ends its claim.
/// Other payments (Checkout's own) are granted from their session's event: nothing here.
fn topup_payment(
    p: &PaymentIntent,
    catalog: &Catalog,
) -> Result<(AccountRef, Vec<Write>), PlanError> {
    let account = account_from(p.metadata(ACCOUNT_METADATA_KEY), p.customer_id())?;
    let Some(seq) = p.metadata(TOPUP_SEQ_METADATA_KEY) else {
        return Ok((account, Vec::new()));
    };
    let seq = seq
        .parse::<u64>()
        .map_err(|_| PlanError::InvalidTopup(seq.chars().take(40).collect()))?;
    let pack_id = p.metadata(CREDIT_PACK_METADATA_KEY).unwrap_or_default();
    let grant = grant_pack(
        catalog,
        pack_id,
        &p.id,
        Some(p.amount_received),
        Some(&p.currency),
    )?;
    Ok((account, vec![grant, Write::EndTopupClaim { seq }]))
}

fn subscription(
    s: &Subscription,
    forced_status: Option<SubscriptionStatus>,
    catalog: &Catalog,
) -> Result<(AccountRef, Vec<Write>), PlanError> {
    let account = account_from(
        s.metadata
            .as_ref()
            .and_then(|m| m.get(ACCOUNT_METADATA_KEY))
            .map(String::as_str),
        Some(s.customer.id()),
    )?;
    let status = match forced_status {
        Some(st) => st,
        None => SubscriptionStatus::parse(&s.status)
            .ok_or_else(|| PlanError::UnknownStatus(s.status.clone()))?,
    };
    let subscribed = catalog
        .plan_for_items(s.prices().map(|p| PricedItem {
            price_id: &p.id,
            lookup_key: p.lookup_key.as_deref(),
            plan: p.metadata(DEAL_PLAN_KEY),
            included_units: p.metadata(DEAL_INCLUDED_UNITS_KEY),
        }))?
        .ok_or_else(|| PlanError::UnknownPrices(s.price_ids().collect::<Vec<_>>().join(", ")))?;
    let plan = subscribed.plan;
    let (period_start, period_end) = s.current_period().ok_or(PlanError::NoPeriod)?;
    // A deal's allowance applies while the subscription grants its plan, from this event on:
    // usage already recorded keeps the buckets it was recorded in.
    let (effective, included_units) = if status.grants_plan() {
        (plan, subscribed.included_units)
    } else {
        let free = catalog.free_plan();
        (free, free.included_units)
    };
    let mut writes = Vec::new();
    if matches!(account, AccountRef::Known(_)) {
        writes.push(Write::LinkCustomer {
            customer_id: s.customer.id().to_owned(),
        });
        writes.push(Write::AccountCustomer {
            customer_id: s.customer.id().to_owned(),
            email: None,
        });
    }
    if status.is_terminal() {
        writes.push(Write::SubscriptionEnded {
            subscription_id: s.id.clone(),
        });
    }
    writes.push(Write::Subscription(SubscriptionState {
        subscription_id: s.id.clone(),
        status,
        plan: plan.id.clone(),
        period_start,
        period_end,
        cancel_at_period_end: s.cancel_at_period_end,
        effective_plan: effective.id.clone(),
        included_units,
        card: s.default_payment_method().map(str::to_owned),
    }));
    Ok((account, writes))
}

fn invoice(kind: InvoiceEvent, i: &Invoice) -> Result<(AccountRef, Vec<Write>), PlanError> {
    let account = account_from(
        i.subscription_metadata(ACCOUNT_METADATA_KEY),
        i.customer_id(),
    )?;
    let dunning = dunning_for(kind, i);
    let record = InvoiceRecord {
        invoice_id: i.id.clone(),
        number: i.number.clone(),
        status: i.status.clone().unwrap_or_else(|| "draft".to_owned()),
        amount_due: i.amount_due,
        amount_paid: i.amount_paid,
        amount_remaining: i.amount_remaining,
        currency: i.currency.clone(),
        hosted_invoice_url: i.hosted_invoice_url.clone(),
        invoice_pdf: i.invoice_pdf.clone(),
        period_start: i.period_start,
        period_end: i.period_end,
        subscription_id: i.subscription_id().map(str::to_owned),
    };
    Ok((account, vec![Write::Invoice(record, dunning)]))
}

/// What the invoice's own state means for its dunning case. Decided from the object, not from
/// the event's type, so that a same-second tie settled with the invoice fetched from Stripe
/// ends the same way in either order (a fetched `uncollectible` invoice closes the case even
/// when the event that lost the tie was a `payment_failed`). The type only fills in a failed
/// attempt that Stripe has not counted yet on the object.
pub fn dunning_for(kind: InvoiceEvent, i: &Invoice) -> DunningChange {
    match i.status.as_deref() {
        Some("paid") => DunningChange::Closed { reason: "paid" },
        Some("void") => DunningChange::Closed { reason: "voided" },
        Some("uncollectible") => DunningChange::Closed {
            reason: "uncollectible",
        },
        Some("open") if i.attempt_count > 0 || kind == InvoiceEvent::PaymentFailed => {
            DunningChange::Failed {
                attempt_count: i.attempt_count.max(1),
                next_payment_attempt: i.next_payment_attempt,
            }
        }
        _ => DunningChange::None,
    }
}

/// A credit pack is granted only for its full price in the catalog's currency: metadata alone
/// (which any session creator sets) is not proof of payment. Pack checkouts allow no discounts,
/// so the amount must match exactly; a mismatch is dead-lettered for an operator to review.
pub fn check_payment(
    pack_id: &str,
    price: u64,
    currency: &str,
    amount_total: Option<i64>,
    paid_currency: Option<&str>,
) -> Result<u64, PlanError> {
    let amount = amount_total.and_then(|a| u64::try_from(a).ok());
    match (amount, paid_currency) {
        (Some(a), Some(c)) if a == price && c.eq_ignore_ascii_case(currency) => Ok(a),
        _ => Err(PlanError::PaymentMismatch {
            pack: pack_id.to_owned(),
            expected: format!("{price} {currency}"),
            paid: format!(
                "{} {}",
                amount_total.map_or_else(|| "no amount".to_owned(), |a| a.to_string()),
                paid_currency.unwrap_or("no currency")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_is_paid_only_by_its_price_in_the_catalog_currency() {
        assert_eq!(
            check_payment("p", 1000, "usd", Some(1000), Some("usd")),
            Ok(1000)
        );
        assert_eq!(
            check_payment("p", 1000, "usd", Some(1000), Some("USD")),
            Ok(1000)
        );
        for (amount, currency) in [
            (Some(1), Some("usd")),
            (Some(1001), Some("usd")),
            (Some(1000), Some("eur")),
            (None, Some("usd")),
            (Some(1000), None),
            (Some(-1000), Some("usd")),
        ] {
            let err = check_payment("p", 1000, "usd", amount, currency).unwrap_err();
            assert!(
                err.to_string().contains("credit pack `p` costs 1000 usd"),
                "{err}"
            );
        }
    }
}
