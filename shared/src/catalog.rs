//! The billing catalog (`catalog.toml` at the repository root): plans, credit packs and the
//! per-model rate card. Embedded in every binary and validated strictly at cold start, so a bad
//! edit fails a deploy's first invocation loudly instead of mis-billing quietly.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Deserialize;

/// The reviewed catalog, as built into this binary.
pub const EMBEDDED_CATALOG: &str = include_str!("../../catalog.toml");

/// The plan of an account without a subscription.
pub const FREE_PLAN: &str = "free";

const MAX_ID_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog.toml does not parse: {0}")]
    Syntax(String),
    #[error("catalog {entry}: `{field}` must not be negative")]
    Negative { entry: String, field: &'static str },
    #[error(
        "catalog {entry}: the id must be 1 to {MAX_ID_LEN} characters of a-z, 0-9, `_` and `-`"
    )]
    InvalidId { entry: String },
    #[error("catalog {entry}: the id is used twice")]
    DuplicateId { entry: String },
    #[error("catalog {entry}: Stripe price `{price_id}` is already used by {first}")]
    DuplicatePrice {
        entry: String,
        price_id: String,
        first: String,
    },
    #[error("catalog {entry}: `{price_id}` is not a Stripe price id (price_...)")]
    InvalidPriceId { entry: String, price_id: String },
    #[error("catalog: there must be a plan `free` with no Stripe prices and no overage")]
    FreePlan,
    #[error("catalog: `currency` must be a three-letter lower-case ISO code")]
    Currency,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlanId(String);

impl PlanId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub id: PlanId,
    pub name: String,
    /// Units included in each billing period.
    pub included_units: u64,
    /// Whether usage beyond the allowance and credits is billed as overage (else it is uncovered).
    pub overage: bool,
    pub price_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditPack {
    pub id: String,
    pub name: String,
    pub price_id: String,
    /// What the pack costs, in the catalog currency's minor unit.
    pub amount: u64,
    /// Units it grants.
    pub credits: u64,
}

/// Units per token. Cached input tokens cost the input weight and reasoning tokens the output
/// weight unless the card names their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelRate {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub reasoning: u64,
}

/// Metadata keys a deal's Stripe price carries to name its catalog plan and allowance.
pub const DEAL_PLAN_KEY: &str = "plan";
pub const DEAL_INCLUDED_UNITS_KEY: &str = "included_units";

/// The largest allowance a deal may name: far beyond any real deal, and far from overflow
/// when usage is added to it.
const MAX_DEAL_UNITS: u64 = 1_000_000_000_000_000;

/// A subscription item's price, as the catalog judges it: its id and the deal metadata it
/// carries (`plan`, `included_units`), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PricedItem<'a> {
    pub price_id: &'a str,
    pub plan: Option<&'a str>,
    pub included_units: Option<&'a str>,
}

/// What a subscription's prices entitle it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed<'a> {
    pub plan: &'a Plan,
    pub included_units: u64,
    /// A price's metadata set the terms (a negotiated deal, not the catalog's plan as listed).
    pub deal: bool,
}

/// A subscription whose prices name no consistent plan: it is refused with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DealError {
    #[error("price `{0}` names a plan in its metadata but no `included_units`")]
    MissingAllowance(String),
    #[error("price `{0}` has `included_units` in its metadata but names no `plan`")]
    MissingPlan(String),
    #[error("price `{price}` names plan `{plan}`, which is not in the catalog")]
    UnknownPlan { price: String, plan: String },
    #[error("price `{0}` names the free plan, which is never billed")]
    FreePlan(String),
    #[error(
        "price `{price}` has `included_units` = `{value}`, which is not a whole number of units (0 to 10^15)"
    )]
    InvalidAllowance { price: String, value: String },
    #[error("the subscription's prices disagree: {0}")]
    Conflict(String),
}

/// Digits only: Stripe metadata is text, and a sign, a decimal point or an exponent in an
/// allowance is a typo to refuse, not a number to round.
fn parse_units(text: &str) -> Option<u64> {
    let digits = text.trim();
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|u| *u <= MAX_DEAL_UNITS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceUse<'a> {
    Plan(&'a Plan),
    CreditPack(&'a CreditPack),
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pub currency: String,
    plans: Vec<Plan>,
    packs: Vec<CreditPack>,
    default_rate: ModelRate,
    rates: BTreeMap<String, ModelRate>,
    /// Names the rate card's content, stored with every usage record: a record keeps the price
    /// it was recorded at, and a changed card is visible as a new version.
    rate_card_version: String,
    /// Stripe price id → (is a plan, index).
    prices: HashMap<String, (bool, usize)>,
}

// --- the file's shape: unknown fields are errors, numbers are read signed to name negatives ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    currency: String,
    plans: Vec<RawPlan>,
    #[serde(default)]
    credit_packs: Vec<RawPack>,
    rate_card: RawRateCard,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    id: String,
    name: String,
    included_units: i64,
    overage: bool,
    price_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPack {
    id: String,
    name: String,
    price_id: String,
    amount: i64,
    credits: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateCard {
    default: RawRate,
    #[serde(default)]
    models: BTreeMap<String, RawRate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    input: i64,
    output: i64,
    cached_input: Option<i64>,
    reasoning: Option<i64>,
}

fn non_negative(entry: &str, field: &'static str, value: i64) -> Result<u64, CatalogError> {
    u64::try_from(value).map_err(|_| CatalogError::Negative {
        entry: entry.to_owned(),
        field,
    })
}

fn valid_id(entry: &str, id: &str) -> Result<(), CatalogError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CatalogError::InvalidId {
            entry: entry.to_owned(),
        })
    }
}

impl RawRate {
    fn validate(&self, entry: &str) -> Result<ModelRate, CatalogError> {
        let input = non_negative(entry, "input", self.input)?;
        let output = non_negative(entry, "output", self.output)?;
        Ok(ModelRate {
            input,
            output,
            cached_input: match self.cached_input {
                Some(w) => non_negative(entry, "cached_input", w)?,
                None => input,
            },
            reasoning: match self.reasoning {
                Some(w) => non_negative(entry, "reasoning", w)?,
                None => output,
            },
        })
    }
}

impl Catalog {
    /// The catalog built into this binary.
    pub fn embedded() -> Result<Self, CatalogError> {
        Self::parse(EMBEDDED_CATALOG)
    }

    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let raw: RawCatalog =
            toml::from_str(text).map_err(|e| CatalogError::Syntax(e.to_string()))?;
        if raw.currency.len() != 3 || !raw.currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(CatalogError::Currency);
        }

        let mut prices: HashMap<String, (bool, usize)> = HashMap::new();
        let mut owners: HashMap<String, String> = HashMap::new();
        let mut claim = |entry: &str, price_id: &str, target: (bool, usize)| {
            if !price_id.starts_with("price_") || price_id.len() > 128 {
                return Err(CatalogError::InvalidPriceId {
                    entry: entry.to_owned(),
                    price_id: price_id.to_owned(),
                });
            }
            if let Some(first) = owners.get(price_id) {
                return Err(CatalogError::DuplicatePrice {
                    entry: entry.to_owned(),
                    price_id: price_id.to_owned(),
                    first: first.clone(),
                });
            }
            owners.insert(price_id.to_owned(), entry.to_owned());
            prices.insert(price_id.to_owned(), target);
            Ok(())
        };

        let mut plans = Vec::with_capacity(raw.plans.len());
        for (i, p) in raw.plans.into_iter().enumerate() {
            let entry = format!("plan `{}`", p.id);
            valid_id(&entry, &p.id)?;
            if plans.iter().any(|q: &Plan| q.id.0 == p.id) {
                return Err(CatalogError::DuplicateId { entry });
            }
            for price in &p.price_ids {
                claim(&entry, price, (true, i))?;
            }
            plans.push(Plan {
                included_units: non_negative(&entry, "included_units", p.included_units)?,
                id: PlanId(p.id),
                name: p.name,
                overage: p.overage,
                price_ids: p.price_ids,
            });
        }
        match plans.iter().find(|p| p.id.0 == FREE_PLAN) {
            Some(free) if free.price_ids.is_empty() && !free.overage => {}
            _ => return Err(CatalogError::FreePlan),
        }

        let mut packs = Vec::with_capacity(raw.credit_packs.len());
        for (i, p) in raw.credit_packs.into_iter().enumerate() {
            let entry = format!("credit pack `{}`", p.id);
            valid_id(&entry, &p.id)?;
            if packs.iter().any(|q: &CreditPack| q.id == p.id) {
                return Err(CatalogError::DuplicateId { entry });
            }
            claim(&entry, &p.price_id, (false, i))?;
            packs.push(CreditPack {
                amount: non_negative(&entry, "amount", p.amount)?,
                credits: non_negative(&entry, "credits", p.credits)?,
                id: p.id,
                name: p.name,
                price_id: p.price_id,
            });
        }

        let default_rate = raw.rate_card.default.validate("rate card default")?;
        let rates = raw
            .rate_card
            .models
            .iter()
            .map(|(model, rate)| {
                Ok((
                    model.clone(),
                    rate.validate(&format!("rate card model `{model}`"))?,
                ))
            })
            .collect::<Result<_, CatalogError>>()?;
        let rate_card_version = rate_card_version(&default_rate, &rates);

        Ok(Self {
            currency: raw.currency,
            plans,
            packs,
            default_rate,
            rates,
            rate_card_version,
            prices,
        })
    }

    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    pub fn credit_packs(&self) -> &[CreditPack] {
        &self.packs
    }

    pub fn free_plan(&self) -> &Plan {
        // `parse` refuses a catalog without it.
        self.plans
            .iter()
            .find(|p| p.id.0 == FREE_PLAN)
            .unwrap_or(&self.plans[0])
    }

    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.id.0 == id)
    }

    pub fn credit_pack(&self, id: &str) -> Option<&CreditPack> {
        self.packs.iter().find(|p| p.id == id)
    }

    /// What a Stripe price id is for, if the catalog knows it.
    pub fn price(&self, price_id: &str) -> Option<PriceUse<'_>> {
        self.prices.get(price_id).map(|&(is_plan, i)| {
            if is_plan {
                PriceUse::Plan(&self.plans[i])
            } else {
                PriceUse::CreditPack(&self.packs[i])
            }
        })
    }

    /// The plan and allowance a subscription's prices name, or `None` when none names one.
    ///
    /// A catalog price names its plan. A price created for one deal (an enterprise customer's
    /// tiered price, made in Stripe without a catalog change) names its plan in its metadata,
    /// `plan` = a catalog plan other than free and `included_units` = the deal's allowance; it
    /// then overrides the catalog plan's allowance. Every price that names something must
    /// agree with the others, or the subscription is refused with the reason: billing on a
    /// guess between two plans would be wrong one way or the other.
    pub fn plan_for_items<'a>(
        &'a self,
        items: impl IntoIterator<Item = PricedItem<'a>>,
    ) -> Result<Option<Subscribed<'a>>, DealError> {
        // (price id, plan, allowance from a deal's metadata)
        let mut named: Vec<(&str, &Plan, Option<u64>)> = Vec::new();
        for item in items {
            let catalog_plan = match self.price(item.price_id) {
                Some(PriceUse::Plan(plan)) => Some(plan),
                _ => None,
            };
            let deal = match (item.plan, item.included_units) {
                (None, None) => None,
                (Some(_), None) => {
                    return Err(DealError::MissingAllowance(item.price_id.to_owned()));
                }
                (None, Some(_)) => return Err(DealError::MissingPlan(item.price_id.to_owned())),
                (Some(plan_id), Some(units)) => {
                    let plan = self.plan(plan_id).ok_or_else(|| DealError::UnknownPlan {
                        price: item.price_id.to_owned(),
                        plan: plan_id.to_owned(),
                    })?;
                    if plan.id.as_str() == FREE_PLAN {
                        return Err(DealError::FreePlan(item.price_id.to_owned()));
                    }
                    let units = parse_units(units).ok_or_else(|| DealError::InvalidAllowance {
                        price: item.price_id.to_owned(),
                        value: units.chars().take(40).collect(),
                    })?;
                    Some((plan, units))
                }
            };
            match (catalog_plan, deal) {
                (Some(c), Some((d, _))) if c.id != d.id => {
                    return Err(DealError::Conflict(format!(
                        "`{}` is the catalog's {} price but its metadata says {}",
                        item.price_id, c.id, d.id
                    )));
                }
                (_, Some((plan, units))) => named.push((item.price_id, plan, Some(units))),
                (Some(plan), None) => named.push((item.price_id, plan, None)),
                (None, None) => {}
            }
        }
        let Some(&(_, plan, _)) = named.first() else {
            return Ok(None);
        };
        if let Some((price, other, _)) = named.iter().find(|(_, p, _)| p.id != plan.id) {
            return Err(DealError::Conflict(format!(
                "`{}` names {} but `{price}` names {}",
                named[0].0, plan.id, other.id
            )));
        }
        let mut deal_units = named
            .iter()
            .filter_map(|(price, _, u)| u.map(|u| (price, u)));
        let included_units = match deal_units.next() {
            None => plan.included_units,
            Some((first, units)) => {
                if let Some((price, other)) = deal_units.find(|(_, u)| *u != units) {
                    return Err(DealError::Conflict(format!(
                        "`{first}` includes {units} units but `{price}` includes {other}"
                    )));
                }
                units
            }
        };
        Ok(Some(Subscribed {
            plan,
            included_units,
            deal: named.iter().any(|(_, _, u)| u.is_some()),
        }))
    }

    /// Units per token for `model` (the default rate for a model the card does not list).
    pub fn rate(&self, model: &str) -> ModelRate {
        self.rates.get(model).copied().unwrap_or(self.default_rate)
    }

    /// `rc_` and 16 hex digits of a hash of the resolved rate card: the same weights give the
    /// same version whatever the file's formatting or comments.
    pub fn rate_card_version(&self) -> &str {
        &self.rate_card_version
    }
}

fn rate_card_version(default: &ModelRate, rates: &BTreeMap<String, ModelRate>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut line = |name: &str, r: &ModelRate| {
        h.update(format!(
            "{name}\0{}\0{}\0{}\0{}\n",
            r.input, r.output, r.cached_input, r.reasoning
        ));
    };
    line("", default);
    for (model, rate) in rates {
        line(model, rate);
    }
    format!("rc_{}", hex::encode(&h.finalize()[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_catalog_is_valid() {
        let c = Catalog::embedded().unwrap();
        assert_eq!(c.free_plan().id.as_str(), "free");
        let plan_of = |prices: &[&'static str]| {
            c.plan_for_items(prices.iter().map(|p| listed(p)))
                .unwrap()
                .map(|s| s.plan.id.as_str())
        };
        assert_eq!(plan_of(&["price_pro_monthly"]), Some("pro"));
        assert_eq!(
            plan_of(&["price_unknown", "price_enterprise_overage_volume"]),
            Some("enterprise")
        );
        assert_eq!(plan_of(&["price_unknown"]), None);
        assert!(
            matches!(c.price("price_credits_1m"), Some(PriceUse::CreditPack(p)) if p.credits == 1_000_000)
        );
        assert_eq!(
            c.rate("gpt-4o"),
            ModelRate {
                input: 2,
                output: 8,
                cached_input: 1,
                reasoning: 8
            }
        );
        assert_eq!(
            c.rate("some-new-model"),
            ModelRate {
                input: 1,
                output: 1,
                cached_input: 1,
                reasoning: 1
            }
        );
    }

    fn listed(price_id: &str) -> PricedItem<'_> {
        PricedItem {
            price_id,
            plan: None,
            included_units: None,
        }
    }

    fn deal<'a>(price_id: &'a str, plan: &'a str, units: &'a str) -> PricedItem<'a> {
        PricedItem {
            price_id,
            plan: Some(plan),
            included_units: Some(units),
        }
    }

    #[test]
    fn a_deal_price_is_its_plan_with_its_allowance() {
        let c = Catalog::embedded().unwrap();
        // A custom tiered price alone, as sales create it for one customer.
        let s = c
            .plan_for_items([deal("price_acme_tiered", "enterprise", "80000000")])
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.plan.id.as_str(), s.included_units, s.deal),
            ("enterprise", 80_000_000, true)
        );
        // Beside the catalog's base price of the same plan, the deal's allowance applies.
        let s = c
            .plan_for_items([
                listed("price_enterprise_monthly"),
                deal("price_acme_tiered", "enterprise", "0"),
            ])
            .unwrap()
            .unwrap();
        assert_eq!((s.plan.id.as_str(), s.included_units), ("enterprise", 0));
        // The catalog's own prices keep the catalog's allowance.
        let s = c
            .plan_for_items([listed("price_pro_monthly"), listed("price_pro_overage")])
            .unwrap()
            .unwrap();
        assert_eq!((s.included_units, s.deal), (5_000_000, false));
    }

    #[test]
    fn an_inconsistent_deal_price_is_refused_with_its_reason() {
        let c = Catalog::embedded().unwrap();
        let refused = |items: &[PricedItem<'_>]| {
            c.plan_for_items(items.iter().copied())
                .unwrap_err()
                .to_string()
        };
        let cases: [(&[PricedItem<'_>], &str); 10] = [
            (
                &[PricedItem {
                    included_units: None,
                    ..deal("price_x", "enterprise", "")
                }],
                "price `price_x` names a plan in its metadata but no `included_units`",
            ),
            (
                &[PricedItem {
                    plan: None,
                    ..deal("price_x", "", "5")
                }],
                "price `price_x` has `included_units` in its metadata but names no `plan`",
            ),
            (
                &[deal("price_x", "platinum", "5")],
                "price `price_x` names plan `platinum`, which is not in the catalog",
            ),
            (
                &[deal("price_x", "free", "5")],
                "price `price_x` names the free plan",
            ),
            (
                &[deal("price_x", "enterprise", "-5")],
                "`included_units` = `-5`, which is not a whole number",
            ),
            (
                &[deal("price_x", "enterprise", "1.5e6")],
                "`included_units` = `1.5e6`",
            ),
            (
                &[deal("price_x", "enterprise", "99999999999999999999")],
                "`included_units` = `99999999999999999999`",
            ),
            (
                &[
                    listed("price_pro_monthly"),
                    deal("price_x", "enterprise", "5"),
                ],
                "the subscription's prices disagree: `price_pro_monthly` names pro but `price_x` names enterprise",
            ),
            (
                &[
                    deal("price_x", "enterprise", "5"),
                    deal("price_y", "enterprise", "6"),
                ],
                "`price_x` includes 5 units but `price_y` includes 6",
            ),
            (
                &[deal("price_pro_monthly", "enterprise", "5")],
                "`price_pro_monthly` is the catalog's pro price but its metadata says enterprise",
            ),
        ];
        for (items, reason) in cases {
            let got = refused(items);
            assert!(got.contains(reason), "{got:?} should contain {reason:?}");
        }
    }

    proptest::proptest! {
        /// The order in which Stripe lists a subscription's items never changes what it is:
        /// the same plan and allowance, or a refusal, for any permutation.
        #[test]
        fn a_subscriptions_terms_do_not_depend_on_the_order_of_its_items(
            picks in proptest::collection::vec(0usize..6, 1..5),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let c = Catalog::embedded().unwrap();
            let pool = [
                listed("price_enterprise_monthly"),
                listed("price_enterprise_overage_volume"),
                listed("price_pro_monthly"),
                deal("price_a", "enterprise", "7000"),
                deal("price_b", "enterprise", "9000"),
                listed("price_unknown"),
            ];
            let items: Vec<PricedItem<'_>> = picks.iter().map(|&i| pool[i]).collect();
            let mut shuffled = items.clone();
            // A deterministic shuffle from the seed (Fisher-Yates with an LCG).
            let mut state = seed;
            for i in (1..shuffled.len()).rev() {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                shuffled.swap(i, (state >> 33) as usize % (i + 1));
            }
            let terms = |items: &[PricedItem<'_>]| {
                c.plan_for_items(items.iter().copied())
                    .map(|s| s.map(|s| (s.plan.id.clone(), s.included_units, s.deal)))
                    .map_err(|_| ())
            };
            proptest::prop_assert_eq!(terms(&items), terms(&shuffled));
        }
    }

    #[test]
    fn the_rate_card_version_follows_the_weights_only() {
        let c = Catalog::embedded().unwrap();
        assert!(c.rate_card_version().starts_with("rc_") && c.rate_card_version().len() == 19);
        let reformatted = with(|c| c.replace("input = 2\n", "input = 2 # dearer\n")).unwrap();
        assert_eq!(reformatted.rate_card_version(), c.rate_card_version());
        let repriced = with(|c| c.replace("input = 2\n", "input = 3\n")).unwrap();
        assert_ne!(repriced.rate_card_version(), c.rate_card_version());
    }

    fn with(edit: impl Fn(&str) -> String) -> Result<Catalog, CatalogError> {
        Catalog::parse(&edit(EMBEDDED_CATALOG))
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let err =
            with(|c| c.replace("overage = true", "overage = true\ndiscount = 5")).unwrap_err();
        assert!(err.to_string().contains("discount"), "{err}");
        let err = with(|c| c.replace("currency = \"usd\"", "currency = \"usd\"\ncolour = \"red\""))
            .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn duplicate_price_ids_name_both_entries() {
        let err = with(|c| {
            c.replace(
                "price_id = \"price_credits_10m\"",
                "price_id = \"price_pro_monthly\"",
            )
        })
        .unwrap_err();
        assert_eq!(
            err,
            CatalogError::DuplicatePrice {
                entry: "credit pack `credits_large`".into(),
                price_id: "price_pro_monthly".into(),
                first: "plan `pro`".into(),
            }
        );
    }

    #[test]
    fn negative_numbers_name_the_entry_and_field() {
        let err =
            with(|c| c.replace("included_units = 5_000_000", "included_units = -1")).unwrap_err();
        assert_eq!(
            err,
            CatalogError::Negative {
                entry: "plan `pro`".into(),
                field: "included_units"
            }
        );
        let err = with(|c| c.replace("amount = 9_000", "amount = -9_000")).unwrap_err();
        assert_eq!(
            err,
            CatalogError::Negative {
                entry: "credit pack `credits_large`".into(),
                field: "amount"
            }
        );
        let err = with(|c| c.replace("input = 3", "input = -3")).unwrap_err();
        assert_eq!(
            err,
            CatalogError::Negative {
                entry: "rate card model `claude-sonnet`".into(),
                field: "input"
            }
        );
    }

    #[test]
    fn other_mistakes_are_named() {
        let err = with(|c| c.replace("id = \"enterprise\"", "id = \"pro\"")).unwrap_err();
        assert_eq!(
            err,
            CatalogError::DuplicateId {
                entry: "plan `pro`".into()
            }
        );
        let err = with(|c| c.replace("id = \"free\"", "id = \"basic\"")).unwrap_err();
        assert_eq!(err, CatalogError::FreePlan);
        let err = with(|c| c.replace("\"price_pro_overage\"", "\"prod_pro_overage\"")).unwrap_err();
        assert!(matches!(err, CatalogError::InvalidPriceId { .. }), "{err}");
        let err =
            with(|c| c.replace("id = \"credits_small\"", "id = \"Credits Small\"")).unwrap_err();
        assert!(matches!(err, CatalogError::InvalidId { .. }), "{err}");
        assert!(matches!(
            with(|c| c.replace("currency = \"usd\"", "currency = \"US$\"")),
            Err(CatalogError::Currency)
        ));
        assert!(matches!(
            Catalog::parse("not toml ["),
            Err(CatalogError::Syntax(_))
        ));
    }
}
