//! `POST /v1/accounts/{account_id}/checkout`: a Stripe Checkout Session for a plan
//! (`{"plan": ...}`: subscription mode, the plan's base price and its metered overage price) or
//! a credit pack (`{"credit_pack": ...}`: payment mode, with an invoice), returning to the app's
//! `success_url` / `cancel_url`. Answers `{"url", "session_id"}`.
//!
//! The account's Stripe customer is reused, or created with the account id in its metadata.
//! Every object the processor reads carries the metadata it needs (the account, and the plan or
//! pack): the session, the subscription or the payment, and the pack's invoice. Stripe calls
//! carry idempotency keys derived from the request, so a retried request makes one customer and
//! one session. IAM-authorised at the gateway; this code trusts the route.

use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use serde_json::{Value, json};
use shared::billing::SubscriptionStatus;
use shared::catalog::Catalog;
use shared::http::{check_link, hash, idempotency_key, json_body};
use shared::ids::AccountId;
use shared::store::BillingStore;
use tracing::{error, info, warn};

use crate::stripe::{CheckoutApi, CheckoutError, Purchase, SessionRequest};

pub const ROUTE: &str = "POST /v1/accounts/{account_id}/checkout";
const FIELDS: [&str; 5] = ["plan", "credit_pack", "success_url", "cancel_url", "email"];

pub struct CheckoutHandler<S, C> {
    store: S,
    stripe: C,
    catalog: Catalog,
}

/// A refusal: its status, code and message.
type Refusal = (u16, &'static str, String);

fn bad(code: &'static str, message: impl Into<String>) -> Refusal {
    (400, code, message.into())
}

/// The request, checked.
struct Order {
    purchase: Purchase,
    /// The plan or pack id, for logs and the key.
    item: String,
    success_url: String,
    cancel_url: String,
    email: Option<String>,
}

impl<S: BillingStore, C: CheckoutApi> CheckoutHandler<S, C> {
    pub fn new(store: S, stripe: C, catalog: Catalog) -> Self {
        Self {
            store,
            stripe,
            catalog,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn stripe(&self) -> &C {
        &self.stripe
    }

    pub async fn handle(&self, request: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        match self.checkout(request).await {
            Ok(body) => shared::http::json_response(200, &body),
            Err((status, code, message)) => shared::http::json_response(
                status,
                &json!({ "error": { "code": code, "message": message } }),
            ),
        }
    }

    async fn checkout(&self, request: &ApiGatewayV2httpRequest) -> Result<Value, Refusal> {
        if request.route_key.as_deref() != Some(ROUTE) {
            return Err((404, "not_found", "no such route".into()));
        }
        let raw = request.path_parameters.get("account_id").ok_or((
            404,
            "not_found",
            "no such route".to_owned(),
        ))?;
        let account =
            AccountId::parse(raw).map_err(|e| bad("invalid_account_id", e.to_string()))?;
        let mut order = self.order(request)?;
        self.resolve_prices(&mut order.purchase).await?;
        let key = idempotency_key(
            request,
            "checkout",
            &[
                account.as_str(),
                &order.item,
                &order.success_url,
                &order.cancel_url,
            ],
        )
        .map_err(|e| bad("invalid_idempotency_key", e))?;

        let view = self.store.account(&account).await.map_err(|e| {
            error!(account_id = %account, error = %e, "reading the billing table failed");
            (503, "unavailable", "try again".to_owned())
        })?;
        if let (Purchase::Plan { plan_id, .. }, Some(sub)) = (
            &order.purchase,
            view.as_ref().and_then(|v| v.subscription.as_ref()),
        ) && SubscriptionStatus::parse(&sub.status).is_some_and(SubscriptionStatus::grants_plan)
        {
            return Err(if &sub.plan == plan_id {
                (
                    409,
                    "already_on_plan",
                    format!("account {account} is already subscribed to {plan_id}"),
                )
            } else {
                (
                    409,
                    "already_subscribed",
                    format!(
                        "account {account} is subscribed to {}: change plans in the customer portal",
                        sub.plan
                    ),
                )
            });
        }

        let customer_id = match view.and_then(|v| v.customer_id) {
            Some(c) => c,
            None => {
                // One customer per account however often the first checkout is retried (the key
                // names the account and the email given).
                let key = format!(
                    "customer:{}",
                    hash(&[account.as_str(), order.email.as_deref().unwrap_or_default()])
                );
                self.stripe
                    .create_customer(&account, order.email.as_deref(), &key)
                    .await
                    .map_err(|e| stripe_refusal(&account, "creating the customer", e))?
            }
        };
        let session = self
            .stripe
            .create_session(
                &SessionRequest {
                    account: account.clone(),
                    customer_id,
                    purchase: order.purchase,
                    success_url: order.success_url,
                    cancel_url: order.cancel_url,
                },
                &key,
            )
            .await
            .map_err(|e| stripe_refusal(&account, "creating the session", e))?;
        info!(account_id = %account, session_id = %session.id, item = %order.item, "checkout session opened");
        Ok(json!({ "url": session.url, "session_id": session.id }))
    }

    /// The catalog names prices by lookup key; Stripe's checkout takes ids, which
    /// `make stripe-setup` recorded for this stack's Stripe account.
    async fn resolve_prices(&self, purchase: &mut Purchase) -> Result<(), Refusal> {
        let ids = self.store.stripe_prices().await.map_err(|e| {
            error!(error = %e, "reading the Stripe setup failed");
            (503, "unavailable", "try again".to_owned())
        })?;
        let not_set_up = |key: &str| {
            error!(
                lookup_key = key,
                "no Stripe price is recorded for a catalog price: run make stripe-setup"
            );
            (
                503,
                "stripe_not_set_up",
                format!(
                    "Stripe has no price for `{key}` in this stack: run `make stripe-setup` (README, Deploy)"
                ),
            )
        };
        let resolve = |key: &mut String| -> Result<(), Refusal> {
            let id = ids
                .as_ref()
                .and_then(|ids| ids.get(key.as_str()))
                .ok_or_else(|| not_set_up(key))?;
            *key = id.clone();
            Ok(())
        };
        match purchase {
            Purchase::Plan {
                base_price,
                metered_prices,
                ..
            } => {
                resolve(base_price)?;
                metered_prices.iter_mut().try_for_each(resolve)
            }
            Purchase::CreditPack { price_id, .. } => resolve(price_id),
        }
    }

    fn order(&self, request: &ApiGatewayV2httpRequest) -> Result<Order, Refusal> {
        let body = json_body(request).map_err(|e| bad("invalid_body", e))?;
        if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(bad(
                "invalid_request",
                format!(
                    "unknown field {unknown:?}; expected plan or credit_pack, success_url, cancel_url, email"
                ),
            ));
        }
        let text = |field: &'static str| -> Result<Option<String>, Refusal> {
            match body.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(bad("invalid_request", format!("{field} must be a string"))),
            }
        };
        let purchase = match (text("plan")?, text("credit_pack")?) {
            (Some(plan), None) => {
                let p = self.catalog.plan(&plan).ok_or_else(|| {
                    bad("unknown_plan", format!("there is no plan named {plan:?}"))
                })?;
                // By the catalog's convention: the base fee first, then metered prices.
                let Some((base, metered)) = p.prices.split_first() else {
                    return Err(bad(
                        "plan_not_for_sale",
                        format!(
                            "the {plan} plan has no price: every account has it without checkout"
                        ),
                    ));
                };
                Purchase::Plan {
                    plan_id: p.id.as_str().to_owned(),
                    base_price: base.clone(),
                    metered_prices: metered.to_vec(),
                }
            }
            (None, Some(pack)) => {
                let p = self.catalog.credit_pack(&pack).ok_or_else(|| {
                    bad(
                        "unknown_credit_pack",
                        format!("there is no credit pack named {pack:?}"),
                    )
                })?;
                Purchase::CreditPack {
                    pack_id: p.id.clone(),
                    price_id: p.price.clone(),
                }
            }
            _ => {
                return Err(bad(
                    "invalid_request",
                    "give exactly one of plan and credit_pack",
                ));
            }
        };
        let url = |field: &'static str, code: &'static str| -> Result<String, Refusal> {
            let value = text(field)?.ok_or_else(|| bad(code, format!("{field} is required")))?;
            check_link(&value).map_err(|why| bad(code, format!("{field} {why}")))?;
            Ok(value)
        };
        let success_url = url("success_url", "invalid_success_url")?;
        let cancel_url = url("cancel_url", "invalid_cancel_url")?;
        let email = text("email")?;
        if let Some(e) = &email
            && (e.len() > 254
                || e.chars().any(|c| c.is_whitespace() || c.is_control())
                || e.split('@').count() != 2
                || e.starts_with('@')
                || e.ends_with('@'))
        {
            return Err(bad("invalid_email", "email is not an email address"));
        }
        let item = match &purchase {
            Purchase::Plan { plan_id, .. } => plan_id.clone(),
            Purchase::CreditPack { pack_id, .. } => pack_id.clone(),
        };
        Ok(Order {
            purchase,
            item,
            success_url,
            cancel_url,
            email,
        })
    }
}

fn stripe_refusal(account: &AccountId, what: &str, e: CheckoutError) -> Refusal {
    match e {
        CheckoutError::Retryable(why) => {
            warn!(account_id = %account, %why, "Stripe did not answer {what}");
            (
                503,
                "stripe_unavailable",
                "Stripe did not answer; try again".into(),
            )
        }
        CheckoutError::Rejected(why) => {
            error!(account_id = %account, %why, "Stripe refused {what}");
            (502, "stripe_refused", why)
        }
    }
}
