//! `GET /v1/accounts/{account_id}`, `GET /v1/accounts/{account_id}/invoices` (from the state
//! the processor writes; newest period first, paginated as Stripe's lists are: `limit`,
//! `starting_after`, `has_more`) and `GET /v1/accounts/{account_id}/usage` (the usage function's
//! per-period, per-model totals), and `POST /v1/accounts/{account_id}/portal` (a Stripe
//! customer portal session for the account's customer). IAM-authorised at the gateway; this code
//! trusts the route.

use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use serde_json::{Value, json};
use shared::catalog::Catalog;
use shared::http::{idempotency_key, json_body};
use shared::ids::AccountId;
use shared::store::topup::TopupStore;
use shared::store::usage::{ModelTotals, UsageStore};
use shared::store::{AccountView, BillingStore, InvoiceView};
use shared::stripe::portal::{PortalApi, PortalError};
use shared::usage::topup::TopupSettings;
use tracing::{error, info, warn};

pub struct ApiHandler<S, U, P, T> {
    store: S,
    usage: U,
    portal: P,
    topup: T,
    catalog: Catalog,
}

impl<S: BillingStore, U: UsageStore, P: PortalApi, T: TopupStore> ApiHandler<S, U, P, T> {
    pub fn new(store: S, usage: U, portal: P, topup: T, catalog: Catalog) -> Self {
        Self {
            store,
            usage,
            portal,
            topup,
            catalog,
        }
    }

    pub fn topup(&self) -> &T {
        &self.topup
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn portal(&self) -> &P {
        &self.portal
    }

    pub async fn handle(&self, request: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        let route = request.route_key.as_deref().unwrap_or_default();
        let Some(raw_id) = request.path_parameters.get("account_id") else {
            return respond(
                404,
                json!({ "error": { "code": "not_found", "message": "no such route" } }),
            );
        };
        let account = match AccountId::parse(raw_id) {
            Ok(a) => a,
            Err(e) => {
                return respond(
                    400,
                    json!({ "error": { "code": "invalid_account_id", "message": e.to_string() } }),
                );
            }
        };
        let result = match route {
            "GET /v1/accounts/{account_id}" => self
                .store
                .account(&account)
                .await
                .map(|view| self.account_json(&account, view)),
            "GET /v1/accounts/{account_id}/invoices" => {
                let page = match PageRequest::from_query(request) {
                    Ok(p) => p,
                    Err(e) => {
                        return respond(
                            400,
                            json!({ "error": { "code": "invalid_request", "message": e } }),
                        );
                    }
                };
                match self.store.invoices(&account).await {
                    Ok(invoices) => match page.of(&invoices, |i| i.record.invoice_id.as_str()) {
                        Ok((data, has_more)) => Ok(json!({
                            "object": "list",
                            "data": data.iter().map(invoice_json).collect::<Vec<_>>(),
                            "has_more": has_more,
                        })),
                        Err(e) => {
                            return respond(
                                400,
                                json!({ "error": { "code": "invalid_request", "message": e } }),
                            );
                        }
                    },
                    Err(e) => Err(e),
                }
            }
            "GET /v1/accounts/{account_id}/usage" => self
                .usage
                .totals(&account)
                .await
                .map(|totals| usage_json(&account, &totals)),
            "POST /v1/accounts/{account_id}/portal" => {
                return self.portal_session(&account, request).await;
            }
            "PUT /v1/accounts/{account_id}/auto-topup" => {
                return self.configure_topup(&account, request).await;
            }
            _ => {
                return respond(
                    404,
                    json!({ "error": { "code": "not_found", "message": "no such route" } }),
                );
            }
        };
        match result {
            Ok(body) => respond(200, body),
            Err(e) => {
                error!(account_id = %account, error = %e, "reading the billing table failed");
                respond(
                    503,
                    json!({ "error": { "code": "unavailable", "message": "try again" } }),
                )
            }
        }
    }

    /// A portal session for the account's Stripe customer, returning to the app's `return_url`.
    async fn portal_session(
        &self,
        account: &AccountId,
        request: &ApiGatewayV2httpRequest,
    ) -> ApiGatewayV2httpResponse {
        let invalid = |code: &str, message: String| {
            respond(
                400,
                json!({ "error": { "code": code, "message": message } }),
            )
        };
        let body = match json_body(request) {
            Ok(b) => b,
            Err(e) => return invalid("invalid_body", e),
        };
        let return_url = match body.get("return_url").and_then(Value::as_str) {
            None => return invalid("invalid_return_url", "return_url is required".into()),
            Some(url) => match check_url("return_url", url) {
                Ok(()) => url.to_owned(),
                Err(e) => return invalid("invalid_return_url", e),
            },
        };
        // The account first: an app's own key is scoped to the account it names.
        let key = match idempotency_key(request, "portal", &[account.as_str(), &return_url]) {
            Ok(k) => k,
            Err(e) => return invalid("invalid_idempotency_key", e),
        };
        let customer = match self.store.account(account).await {
            Ok(view) => view.and_then(|v| v.customer_id),
            Err(e) => {
                error!(account_id = %account, error = %e, "reading the billing table failed");
                return respond(
                    503,
                    json!({ "error": { "code": "unavailable", "message": "try again" } }),
                );
            }
        };
        let Some(customer) = customer else {
            return respond(
                404,
                json!({ "error": { "code": "no_customer", "message": "the account has no Stripe customer yet: it has never checked out" } }),
            );
        };
        match self
            .portal
            .portal_session(&customer, &return_url, &key)
            .await
        {
            Ok(url) => {
                info!(account_id = %account, "portal session opened");
                respond(200, json!({ "url": url }))
            }
            Err(PortalError::Retryable(why)) => {
                warn!(account_id = %account, %why, "Stripe did not open a portal session");
                respond(
                    503,
                    json!({ "error": { "code": "stripe_unavailable", "message": "Stripe did not answer; try again" } }),
                )
            }
            Err(PortalError::Rejected(why)) => {
                error!(account_id = %account, %why, "Stripe refused a portal session");
                respond(
                    502,
                    json!({ "error": { "code": "stripe_refused", "message": why } }),
                )
            }
        }
    }

    /// `{"threshold":N,"credit_pack":"...","monthly_cap":N}` turns auto top-up on (again: a
    /// card that declined before is tried again), `{"enabled":false}` turns it off.
    async fn configure_topup(
        &self,
        account: &AccountId,
        request: &ApiGatewayV2httpRequest,
    ) -> ApiGatewayV2httpResponse {
        let settings = match json_body(request)
            .and_then(|body| topup_settings(&body, &self.catalog).map_err(|e| e.to_string()))
        {
            Ok(settings) => settings,
            Err(message) => {
                let code = if message.contains("credit pack") {
                    "unknown_credit_pack"
                } else {
                    "invalid_auto_topup"
                };
                return respond(
                    400,
                    json!({ "error": { "code": code, "message": message } }),
                );
            }
        };
        if let Err(e) = self.topup.configure(account, settings.as_ref()).await {
            error!(account_id = %account, error = %e, "writing auto top-up failed");
            return respond(
                503,
                json!({ "error": { "code": "unavailable", "message": "try again" } }),
            );
        }
        info!(account_id = %account, enabled = settings.is_some(), "auto top-up configured");
        let topup = shared::usage::topup::AutoTopup {
            settings,
            ..Default::default()
        };
        respond(
            200,
            json!({ "object": "auto_topup", "account_id": account.as_str(),
                    "auto_topup": topup_json(&topup, &self.catalog.currency) }),
        )
    }

    /// An account the backend has never seen is on the free plan.
    fn account_json(&self, account: &AccountId, view: Option<AccountView>) -> Value {
        let free = self.catalog.free_plan();
        let view = view.unwrap_or_else(|| AccountView {
            account_id: account.as_str().to_owned(),
            plan: free.id.as_str().to_owned(),
            ..AccountView::default()
        });
        let included = view
            .included_units
            .or_else(|| self.catalog.plan(&view.plan).map(|p| p.included_units))
            .unwrap_or(free.included_units);
        json!({
            "object": "account",
            "account_id": view.account_id,
            "plan": view.plan,
            "included_units": included,
            "credits": view.credits,
            "downgraded": view.downgraded,
            "suspended": view.suspended,
            "customer_id": view.customer_id,
            "billing_email": view.email,
            "billing_name": view.name,
            "auto_topup": topup_json(&view.auto_topup, &self.catalog.currency),
            "subscription": view.subscription.map(|s| json!({
                "id": s.subscription_id,
                "status": s.status,
                "plan": s.plan,
                "current_period_start": s.period_start,
                "current_period_end": s.period_end,
                "cancel_at_period_end": s.cancel_at_period_end,
            })),
        })
    }
}

/// Why a top-up setting is refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopupSettingsError {
    #[error("unknown field `{0}`")]
    UnknownField(String),
    #[error("`{0}` must be a whole number from {1} to 10^12")]
    Number(&'static str, u64),
    #[error("`credit_pack` is required")]
    MissingPack,
    #[error("credit pack `{0}` is not in the catalog")]
    UnknownPack(String),
    #[error("`monthly_cap` ({cap}) must allow at least one `{pack}` ({amount})")]
    CapBelowPack { cap: u64, pack: String, amount: u64 },
    #[error("`enabled` must be true or false")]
    Enabled,
}

/// The most a top-up setting may say: far beyond any real balance or budget.
const MAX_SETTING: u64 = 1_000_000_000_000;

/// The settings a `PUT .../auto-topup` body asks for; `None` for `{"enabled": false}`.
pub fn topup_settings(
    fields: &serde_json::Map<String, Value>,
    catalog: &Catalog,
) -> Result<Option<TopupSettings>, TopupSettingsError> {
    if let Some(unknown) = fields
        .keys()
        .find(|k| !["enabled", "threshold", "credit_pack", "monthly_cap"].contains(&k.as_str()))
    {
        return Err(TopupSettingsError::UnknownField(
            unknown.chars().take(40).collect(),
        ));
    }
    match fields.get("enabled") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Ok(None),
        Some(_) => return Err(TopupSettingsError::Enabled),
    }
    let number = |name: &'static str, min: u64| {
        fields
            .get(name)
            .and_then(Value::as_u64)
            .filter(|n| (min..=MAX_SETTING).contains(n))
            .ok_or(TopupSettingsError::Number(name, min))
    };
    let threshold = number("threshold", 1)?;
    let pack_id = fields
        .get("credit_pack")
        .and_then(Value::as_str)
        .ok_or(TopupSettingsError::MissingPack)?;
    let pack = catalog
        .credit_pack(pack_id)
        .ok_or_else(|| TopupSettingsError::UnknownPack(pack_id.chars().take(64).collect()))?;
    let cap = number("monthly_cap", 1)?;
    if cap < pack.amount {
        return Err(TopupSettingsError::CapBelowPack {
            cap,
            pack: pack.id.clone(),
            amount: pack.amount,
        });
    }
    Ok(Some(TopupSettings {
        threshold,
        pack: pack.id.clone(),
        amount: pack.amount,
        credits: pack.credits,
        monthly_cap: cap,
    }))
}

fn topup_json(t: &shared::usage::topup::AutoTopup, currency: &str) -> Value {
    let Some(s) = &t.settings else {
        return json!({ "enabled": false });
    };
    json!({
        "enabled": true,
        "threshold": s.threshold,
        "credit_pack": s.pack,
        "credits": s.credits,
        "amount": s.amount,
        "currency": currency,
        "monthly_cap": s.monthly_cap,
        // A card that declined pauses it until the card on file changes.
        "paused_by_decline": t.declined_card.is_some() && t.declined_card == t.card,
        "in_flight": t.in_flight.is_some(),
    })
}

/// A URL Stripe will send the customer to (`shared::http::check_link`).
fn check_url(field: &str, url: &str) -> Result<(), String> {
    shared::http::check_link(url).map_err(|why| format!("{field} {why}"))
}

/// A page of a list, as Stripe's list endpoints take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// 1 to 100 (default 10).
    pub limit: usize,
    /// The id of the last item of the previous page.
    pub starting_after: Option<String>,
}

impl PageRequest {
    pub fn from_query(request: &ApiGatewayV2httpRequest) -> Result<Self, String> {
        let q = &request.query_string_parameters;
        let limit = match q.first("limit") {
            None => 10,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => {
                    return Err(format!(
                        "limit must be a whole number from 1 to 100, not {raw:?}"
                    ));
                }
            },
        };
        let starting_after = q.first("starting_after").map(str::to_owned);
        if starting_after
            .as_ref()
            .is_some_and(|s| s.is_empty() || s.len() > 255)
        {
            return Err("starting_after must be the id of an item of the previous page".into());
        }
        Ok(Self {
            limit,
            starting_after,
        })
    }

    /// The page of `items` (in list order) after `starting_after`, and whether more follow.
    pub fn of<'a, T>(
        &self,
        items: &'a [T],
        id: impl Fn(&T) -> &str,
    ) -> Result<(&'a [T], bool), String> {
        let from = match &self.starting_after {
            None => 0,
            Some(after) => match items.iter().position(|i| id(i) == after) {
                Some(at) => at + 1,
                None => {
                    return Err(format!(
                        "starting_after names no item of this list: {after:?}"
                    ));
                }
            },
        };
        let to = (from + self.limit).min(items.len());
        Ok((&items[from..to], to < items.len()))
    }
}

fn invoice_json(i: &InvoiceView) -> Value {
    let r = &i.record;
    json!({
        "id": r.invoice_id,
        "number": r.number,
        "status": r.status,
        "amount_due": r.amount_due,
        "amount_paid": r.amount_paid,
        "amount_remaining": r.amount_remaining,
        "currency": r.currency,
        "hosted_invoice_url": r.hosted_invoice_url,
        "invoice_pdf": r.invoice_pdf,
        "period_start": r.period_start,
        "period_end": r.period_end,
        "subscription_id": r.subscription_id,
        "dunning": i.dunning.as_ref().map(|d| json!({
            "status": d.status,
            "failures": d.failures,
            "first_failed_at": d.first_failed_at,
            "next_payment_attempt": d.next_payment_attempt,
        })),
    })
}

fn covered_json(c: &shared::usage::ledger::Covered) -> Value {
    json!({ "included": c.included, "credits": c.credits, "overage": c.overage, "uncovered": c.uncovered })
}

fn tokens_json(t: &shared::usage::request::Tokens) -> Value {
    json!({ "input": t.input, "output": t.output, "cached_input": t.cached_input, "reasoning": t.reasoning })
}

/// Periods newest first; in each, every model's units and which bucket paid how many, and the
/// period's totals.
fn usage_json(account: &AccountId, totals: &[ModelTotals]) -> Value {
    let mut periods: Vec<Value> = Vec::new();
    for group in totals.chunk_by(|a, b| a.period.start == b.period.start) {
        let mut sum = ModelTotals {
            period: group[0].period,
            ..ModelTotals::default()
        };
        for m in group {
            sum.add(m.requests, m.units, m.covered, m.tokens);
        }
        let entry = |m: &ModelTotals| {
            json!({
                "requests": m.requests,
                "units": m.units,
                "covered": covered_json(&m.covered),
                "tokens": tokens_json(&m.tokens),
            })
        };
        let models: Vec<Value> = group
            .iter()
            .map(|m| {
                let mut v = entry(m);
                v["model"] = json!(m.model);
                v
            })
            .collect();
        periods.push(json!({
            "period_start": sum.period.start,
            "period_end": sum.period.end,
            "totals": entry(&sum),
            "models": models,
        }));
    }
    json!({ "object": "usage", "account_id": account.as_str(), "periods": periods })
}

fn respond(status: u16, body: serde_json::Value) -> ApiGatewayV2httpResponse {
    shared::http::json_response(status, &body)
}
