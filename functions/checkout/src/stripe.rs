//! The checkout function's port to Stripe: create a customer for an account, and a Checkout
//! Session, through async-stripe's typed requests. Only what is used is read from the answers
//! (the ids and the session's URL): async-stripe's strict models of a whole customer and a
//! whole session would take the function past 5 MB, for two fields. A fake for in-process tests.
//!
//! Each call carries an `Idempotency-Key` derived by the caller from the request. A 429 or 409
//! (the key in use by a concurrent twin) is retried under the same key, so a retried request
//! gets the first answer; after a 5xx, which Stripe stores under its key, the retry takes a key
//! of its own (a second open session is harmless: only a completed one charges).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use shared::ids::AccountId;
use shared::stripe::api::RealStripe;
use shared::stripe::keyed::{KeyedError, send_keyed};
use stripe::StripeRequest;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionInvoiceCreation,
    CreateCheckoutSessionInvoiceCreationInvoiceData, CreateCheckoutSessionLineItems,
    CreateCheckoutSessionPaymentIntentData, CreateCheckoutSessionSubscriptionData,
};
use stripe_client_core::RequestBuilder;
use stripe_core::customer::CreateCustomer;

/// The metadata key naming the account, on every object the processor reads it from.
pub const ACCOUNT_KEY: &str = "account_id";
/// The metadata key naming the credit pack a payment buys.
pub const CREDIT_PACK_KEY: &str = "credit_pack";
/// The metadata key naming the plan a subscription checkout is for (for people reading Stripe).
pub const PLAN_KEY: &str = "plan";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutError {
    /// 429, 409, 5xx, a timeout: the same request may succeed later.
    #[error("Stripe did not answer; try again: {0}")]
    Retryable(String),
    /// Stripe refused the request itself (an unknown price, a deleted customer).
    #[error("Stripe refused the request: {0}")]
    Rejected(String),
}

/// What the customer buys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purchase {
    /// A subscription: the plan's base price (quantity 1) and its metered prices (no quantity:
    /// Stripe bills them from the meter).
    Plan {
        plan_id: String,
        base_price: String,
        metered_prices: Vec<String>,
    },
    /// A one-off payment for a credit pack, with an invoice.
    CreditPack { pack_id: String, price_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    pub account: AccountId,
    pub customer_id: String,
    pub purchase: Purchase,
    pub success_url: String,
    pub cancel_url: String,
}

impl SessionRequest {
    /// The metadata the processor needs, the same on the session, the subscription or the
    /// payment, and the invoice: the account, and what was bought.
    pub fn metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::from([(ACCOUNT_KEY.to_owned(), self.account.as_str().to_owned())]);
        match &self.purchase {
            Purchase::Plan { plan_id, .. } => {
                m.insert(PLAN_KEY.to_owned(), plan_id.clone());
            }
            Purchase::CreditPack { pack_id, .. } => {
                m.insert(CREDIT_PACK_KEY.to_owned(), pack_id.clone());
            }
        }
        m
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub url: String,
}

pub trait CheckoutApi {
    /// A Stripe customer for the account (its id in the metadata); its id.
    fn create_customer(
        &self,
        account: &AccountId,
        email: Option<&str>,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<String, CheckoutError>> + Send;

    fn create_session(
        &self,
        request: &SessionRequest,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<Session, CheckoutError>> + Send;
}

/// The whole call, retries included, inside the function's timeout.
const BUDGET: Duration = Duration::from_secs(8);

/// Stripe through async-stripe.
#[derive(Debug, Clone)]
pub struct RealCheckout {
    stripe: RealStripe,
}

impl RealCheckout {
    pub fn new(stripe: RealStripe) -> Self {
        Self { stripe }
    }

    /// Sends `build()` under the caller's key (`shared::stripe::keyed`: a new key after a 5xx,
    /// which is harmless here: a second open session charges nothing), its answer as JSON.
    async fn send<R, T>(
        &self,
        idempotency_key: &str,
        build: impl Fn() -> R,
        read: impl Fn(LeanAnswer) -> Result<T, CheckoutError>,
    ) -> Result<T, CheckoutError>
    where
        R: StripeRequest,
    {
        match send_keyed(self.stripe.client(), BUDGET, idempotency_key, || {
            Lean(build())
        })
        .await
        {
            Ok(answer) => read(LeanAnswer(answer)),
            Err(KeyedError::Retryable(why)) => Err(CheckoutError::Retryable(why)),
            Err(refused) => Err(CheckoutError::Rejected(refused.describe())),
        }
    }
}

impl CheckoutApi for RealCheckout {
    async fn create_customer(
        &self,
        account: &AccountId,
        email: Option<&str>,
        idempotency_key: &str,
    ) -> Result<String, CheckoutError> {
        let metadata = HashMap::from([(ACCOUNT_KEY.to_owned(), account.as_str().to_owned())]);
        self.send(
            idempotency_key,
            || {
                let request = CreateCustomer::new().metadata(metadata.clone());
                match email {
                    Some(email) => request.email(email),
                    None => request,
                }
            },
            |customer| customer.text("id"),
        )
        .await
    }

    async fn create_session(
        &self,
        request: &SessionRequest,
        idempotency_key: &str,
    ) -> Result<Session, CheckoutError> {
        let metadata = request.metadata();
        self.send(
            idempotency_key,
            || {
                let session = CreateCheckoutSession::new()
                    .customer(request.customer_id.as_str())
                    .client_reference_id(request.account.as_str())
                    .success_url(request.success_url.as_str())
                    .cancel_url(request.cancel_url.as_str())
                    .metadata(metadata.clone());
                match &request.purchase {
                    Purchase::Plan {
                        base_price,
                        metered_prices,
                        ..
                    } => {
                        let mut items = vec![line_item(base_price, Some(1))];
                        items.extend(metered_prices.iter().map(|p| line_item(p, None)));
                        let mut data = CreateCheckoutSessionSubscriptionData::new();
                        data.metadata = Some(metadata.clone());
                        session
                            .mode(stripe_checkout::CheckoutSessionMode::Subscription)
                            .line_items(items)
                            .subscription_data(data)
                    }
                    Purchase::CreditPack { price_id, .. } => {
                        let mut payment = CreateCheckoutSessionPaymentIntentData::new();
                        payment.metadata = Some(metadata.clone());
                        let mut invoice_data =
                            CreateCheckoutSessionInvoiceCreationInvoiceData::new();
                        invoice_data.metadata = Some(metadata.clone());
                        let mut invoice = CreateCheckoutSessionInvoiceCreation::new(true);
                        invoice.invoice_data = Some(invoice_data);
                        session
                            .mode(stripe_checkout::CheckoutSessionMode::Payment)
                            .line_items(vec![line_item(price_id, Some(1))])
                            .payment_intent_data(payment)
                            .invoice_creation(invoice)
                    }
                }
            },
            |session| {
                Ok(Session {
                    id: session.text("id")?,
                    url: session.text("url")?,
                })
            },
        )
        .await
    }
}

/// A typed request whose answer is kept as JSON, and whose form is sent in one order.
struct Lean<R>(R);

impl<R: StripeRequest> StripeRequest for Lean<R> {
    type Output = miniserde::json::Value;

    fn build(&self) -> RequestBuilder {
        let mut request = self.0.build();
        request.body = request.body.map(|b| canonical_form(&b));
        request
    }
}

/// The form's fields ordered by name (stable, so repeated names keep their order). async-stripe
/// encodes metadata in its hash map's order, which differs from one process to the next: a
/// retry from another Lambda instance must send the same body under the same idempotency key.
/// Every field is named by its full path (`metadata[plan]`, `line_items[1][price]`), so the
/// order carries no meaning.
pub fn canonical_form(body: &str) -> String {
    let mut fields: Vec<&str> = body.split('&').filter(|f| !f.is_empty()).collect();
    fields.sort_by_key(|f| f.split('=').next().unwrap_or_default());
    fields.join("&")
}

/// Stripe's answer, as JSON.
pub struct LeanAnswer(miniserde::json::Value);

impl LeanAnswer {
    /// A string field of the object; without it, the answer is not the object asked for.
    fn text(&self, field: &str) -> Result<String, CheckoutError> {
        match &self.0 {
            miniserde::json::Value::Object(o) => match o.get(field) {
                Some(miniserde::json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(CheckoutError::Rejected(format!(
                    "Stripe's answer has no {field}"
                ))),
            },
            _ => Err(CheckoutError::Rejected(
                "Stripe's answer is not an object".into(),
            )),
        }
    }
}

fn line_item(price: &str, quantity: Option<u64>) -> CreateCheckoutSessionLineItems {
    let mut item = CreateCheckoutSessionLineItems::new();
    item.price = Some(price.to_owned());
    item.quantity = quantity;
    item
}

/// Stripe in memory: one object per idempotency key (a key seen before answers as the first
/// time), every call recorded.
#[derive(Debug, Default)]
pub struct FakeCheckout {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    customers: Vec<(String, AccountId, Option<String>)>,
    sessions: Vec<(String, SessionRequest)>,
    calls: usize,
    fail_next: Option<CheckoutError>,
}

impl FakeCheckout {
    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn fail_next(&self, error: CheckoutError) {
        self.lock().fail_next = Some(error);
    }

    /// Sessions Stripe created (one per distinct key), as requested.
    pub fn sessions(&self) -> Vec<SessionRequest> {
        self.lock()
            .sessions
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Customers Stripe created (one per distinct key): (account, email).
    pub fn customers(&self) -> Vec<(AccountId, Option<String>)> {
        self.lock()
            .customers
            .iter()
            .map(|(_, a, e)| (a.clone(), e.clone()))
            .collect()
    }

    pub fn calls(&self) -> usize {
        self.lock().calls
    }
}

impl CheckoutApi for FakeCheckout {
    async fn create_customer(
        &self,
        account: &AccountId,
        email: Option<&str>,
        idempotency_key: &str,
    ) -> Result<String, CheckoutError> {
        let mut s = self.lock();
        s.calls += 1;
        if let Some(e) = s.fail_next.take() {
            return Err(e);
        }
        let at = match s.customers.iter().position(|(k, ..)| k == idempotency_key) {
            Some(at) => at,
            None => {
                s.customers.push((
                    idempotency_key.to_owned(),
                    account.clone(),
                    email.map(str::to_owned),
                ));
                s.customers.len() - 1
            }
        };
        Ok(format!("cus_fake{at}"))
    }

    async fn create_session(
        &self,
        request: &SessionRequest,
        idempotency_key: &str,
    ) -> Result<Session, CheckoutError> {
        let mut s = self.lock();
        s.calls += 1;
        if let Some(e) = s.fail_next.take() {
            return Err(e);
        }
        let at = match s.sessions.iter().position(|(k, _)| k == idempotency_key) {
            Some(at) => at,
            None => {
                s.sessions
                    .push((idempotency_key.to_owned(), request.clone()));
                s.sessions.len() - 1
            }
        };
        Ok(Session {
            id: format!("cs_test_fake{at}"),
            url: format!("https://checkout.stripe.com/c/pay/cs_test_fake{at}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(account: &str) -> SessionRequest {
        SessionRequest {
            account: AccountId::parse(account).unwrap(),
            customer_id: "cus_1".into(),
            purchase: Purchase::CreditPack {
                pack_id: "credits_small".into(),
                price_id: "price_credits_1m".into(),
            },
            success_url: "https://app.example.com/ok".into(),
            cancel_url: "https://app.example.com/no".into(),
        }
    }

    #[test]
    fn the_same_request_is_the_same_form_whatever_the_hash_order() {
        let bodies: std::collections::BTreeSet<String> = (0..32)
            .map(|_| {
                let r = session("acct_1");
                let metadata = r.metadata();
                let mut payment = CreateCheckoutSessionPaymentIntentData::new();
                payment.metadata = Some(metadata.clone());
                let typed = CreateCheckoutSession::new()
                    .metadata(metadata)
                    .payment_intent_data(payment);
                Lean(typed).build().body.unwrap_or_default()
            })
            .collect();
        assert_eq!(bodies.len(), 1, "{bodies:?}");
        let body = bodies.into_iter().next().unwrap();
        assert!(
            body.contains("metadata[account_id]=acct_1")
                || body.contains("metadata%5Baccount_id%5D=acct_1"),
            "{body}"
        );
    }

    #[test]
    fn fields_are_ordered_by_name_and_repeated_names_keep_their_order() {
        assert_eq!(canonical_form("b=2&a[]=x&c=3&a[]=y"), "a[]=x&a[]=y&b=2&c=3");
        assert_eq!(canonical_form(""), "");
    }
}
