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
    #[error("catalog {entry}: price `{lookup_key}` is already used by {first}")]
    DuplicatePrice {
        entry: String,
        lookup_key: String,
        first: String,
    },
    #[error(
        "catalog {entry}: `{lookup_key}` is not a price lookup key (1 to {MAX_ID_LEN} characters of a-z, 0-9, `_` and `-`)"
    )]
    InvalidLookupKey { entry: String, lookup_key: String },
    #[error("catalog {entry}: price `{lookup_key}` has no [prices.{lookup_key}] definition")]
    UndefinedPrice { entry: String, lookup_key: String },
    #[error("catalog: price `{0}` is defined but no plan or credit pack uses it")]
    UnusedPrice(String),
    #[error("catalog price `{lookup_key}`: {reason}")]
    InvalidPrice { lookup_key: String, reason: String },
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
    /// The Stripe prices checkout sells, by lookup key: the base (licensed) price first.
    pub prices: Vec<String>,
    /// Prices no longer sold that subscriptions may still be on: recognised, never sold.
    pub retired_prices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditPack {
    pub id: String,
    pub name: String,
    /// The Stripe price checkout sells it at, by lookup key.
    pub price: String,
    /// Earlier prices of the pack: recognised, never sold.
    pub retired_prices: Vec<String>,
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

/// How a Stripe price bills, as the catalog defines it (`[prices.<lookup_key>]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceDefinition {
    pub lookup_key: String,
    pub kind: PriceKind,
    /// Per unit (or per `divide_by` units), in the currency's minor unit; None on tiers.
    pub unit_amount: Option<u64>,
    pub divide_by: Option<u64>,
    /// `volume` or `graduated`, with its tiers; None per unit.
    pub tiers_mode: Option<String>,
    pub tiers: Vec<PriceTier>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceKind {
    /// A recurring monthly fee.
    Licensed,
    /// Billed monthly in arrears from the overage meter.
    Metered,
    /// A one-off purchase.
    OneTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTier {
    /// The tier's last unit; None for the last tier (`inf`).
    pub up_to: Option<u64>,
    /// Minor units per unit, as Stripe's decimal string (`"0.02"`).
    pub unit_amount_decimal: String,
}

/// A price as Stripe has it, for the daily check that Stripe and the catalog agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripePriceFacts {
    pub id: String,
    pub lookup_key: String,
    pub active: bool,
    pub currency: String,
    /// None for a recurring price whose usage type is neither licensed nor metered.
    pub kind: Option<PriceKind>,
    pub unit_amount: Option<u64>,
    pub divide_by: Option<u64>,
    pub tiers_mode: Option<String>,
    /// The meter a metered price bills from.
    pub meter: Option<String>,
}

/// Where Stripe and the catalog disagree in a way that would lose money quietly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogMismatch {
    #[error("price `{0}` is sold by the catalog but Stripe has no price with that lookup key")]
    Missing(String),
    #[error("price `{0}` ({1}) is sold by the catalog but inactive in Stripe: checkout fails")]
    Inactive(String, String),
    #[error("price `{key}` ({id}) bills {stripe} in Stripe, the catalog says {catalog}")]
    Differs {
        key: String,
        id: String,
        stripe: String,
        catalog: String,
    },
    #[error(
        "price `{key}` ({id}) bills from meter {meter:?}, not the overage meter {expected}: the reported overage is never invoiced"
    )]
    WrongMeter {
        key: String,
        id: String,
        meter: Option<String>,
        expected: String,
    },
}

impl Catalog {
    /// Every way the Stripe prices found by the catalog's lookup keys differ from what the
    /// catalog sells: a missing or inactive price, another amount, type, currency, unit or tier
    /// mode (a pack's amount among them), or a metered price on another meter than the one the
    /// reporter sends to. Retired prices are not judged: nothing sells them.
    pub fn check_stripe(
        &self,
        stripe: &[StripePriceFacts],
        overage_meter: &str,
    ) -> Vec<CatalogMismatch> {
        let mut out = Vec::new();
        for def in self.definitions.values() {
            let key = &def.lookup_key;
            if !self.is_sold(key) {
                continue;
            }
            let Some(p) = stripe.iter().find(|p| &p.lookup_key == key) else {
                out.push(CatalogMismatch::Missing(key.clone()));
                continue;
            };
            if !p.active {
                out.push(CatalogMismatch::Inactive(key.clone(), p.id.clone()));
            }
            let mut differs = |what: &str, stripe: String, catalog: String| {
                if stripe != catalog {
                    out.push(CatalogMismatch::Differs {
                        key: key.clone(),
                        id: p.id.clone(),
                        stripe: format!("{what} {stripe}"),
                        catalog: format!("{what} {catalog}"),
                    });
                }
            };
            differs(
                "type",
                format!("{:?}", p.kind),
                format!("{:?}", Some(def.kind)),
            );
            differs("currency", p.currency.clone(), self.currency.clone());
            differs(
                "unit_amount",
                format!("{:?}", p.unit_amount),
                format!("{:?}", def.unit_amount),
            );
            differs(
                "divide_by",
                format!("{:?}", p.divide_by),
                format!("{:?}", def.divide_by),
            );
            differs(
                "tiers_mode",
                format!("{:?}", p.tiers_mode),
                format!("{:?}", def.tiers_mode),
            );
            if def.kind == PriceKind::Metered && p.meter.as_deref() != Some(overage_meter) {
                out.push(CatalogMismatch::WrongMeter {
                    key: key.clone(),
                    id: p.id.clone(),
                    meter: p.meter.clone(),
                    expected: overage_meter.to_owned(),
                });
            }
        }
        out
    }

    /// The lookup keys of every price the catalog sells, for the check's Stripe reads.
    pub fn sold_lookup_keys(&self) -> Vec<String> {
        self.definitions
            .keys()
            .filter(|k| self.is_sold(k))
            .cloned()
            .collect()
    }
}

/// A subscription item's price, as the catalog judges it: its id, its lookup key and the deal
/// metadata it carries (`plan`, `included_units`), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PricedItem<'a> {
    /// For messages: the Stripe price id.
    pub price_id: &'a str,
    /// What the catalog knows it by.
    pub lookup_key: Option<&'a str>,
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
    /// Price lookup key → (is a plan, index).
    prices: HashMap<String, (bool, usize)>,
    definitions: BTreeMap<String, PriceDefinition>,
}

// --- the file's shape: unknown fields are errors, numbers are read signed to name negatives ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    currency: String,
    plans: Vec<RawPlan>,
    #[serde(default)]
    credit_packs: Vec<RawPack>,
    #[serde(default)]
    prices: BTreeMap<String, RawPrice>,
    rate_card: RawRateCard,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    #[serde(rename = "type")]
    kind: String,
    unit_amount: Option<i64>,
    divide_by: Option<i64>,
    tiers_mode: Option<String>,
    tiers: Option<Vec<RawTier>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    up_to: RawUpTo,
    unit_amount_decimal: String,
}

/// A tier's end: a number of units, or "inf" for the last tier.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawUpTo {
    Units(i64),
    Word(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    id: String,
    name: String,
    included_units: i64,
    overage: bool,
    prices: Vec<String>,
    #[serde(default)]
    retired_prices: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPack {
    id: String,
    name: String,
    price: String,
    #[serde(default)]
    retired_prices: Vec<String>,
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

impl RawPrice {
    fn validate(self, lookup_key: String) -> Result<PriceDefinition, CatalogError> {
        let invalid = |reason: &str| CatalogError::InvalidPrice {
            lookup_key: lookup_key.clone(),
            reason: reason.to_owned(),
        };
        let entry = format!("price `{lookup_key}`");
        let kind = match self.kind.as_str() {
            "licensed" => PriceKind::Licensed,
            "metered" => PriceKind::Metered,
            "one_time" => PriceKind::OneTime,
            _ => return Err(invalid("`type` must be licensed, metered or one_time")),
        };
        let unit_amount = self
            .unit_amount
            .map(|a| non_negative(&entry, "unit_amount", a))
            .transpose()?;
        let divide_by = self
            .divide_by
            .map(|d| non_negative(&entry, "divide_by", d))
            .transpose()?;
        if divide_by == Some(0) {
            return Err(invalid("`divide_by` must be at least 1"));
        }
        let tiers = match (&self.tiers_mode, self.tiers) {
            (None, None) => Vec::new(),
            (Some(mode), Some(tiers)) if mode == "volume" || mode == "graduated" => {
                if kind != PriceKind::Metered || unit_amount.is_some() || divide_by.is_some() {
                    return Err(invalid(
                        "tiers are for metered prices, without unit_amount or divide_by",
                    ));
                }
                let mut out = Vec::with_capacity(tiers.len());
                for (i, t) in tiers.iter().enumerate() {
                    let up_to = match &t.up_to {
                        RawUpTo::Word(s) if s == "inf" && i + 1 == tiers.len() => None,
                        RawUpTo::Units(n) if *n > 0 && i + 1 < tiers.len() => Some(*n as u64),
                        _ => {
                            return Err(invalid(
                                "each tier's `up_to` is a positive whole number, the last one \"inf\"",
                            ));
                        }
                    };
                    let ok = !t.unit_amount_decimal.is_empty()
                        && t.unit_amount_decimal.bytes().filter(|b| *b == b'.').count() <= 1
                        && t.unit_amount_decimal
                            .bytes()
                            .all(|b| b.is_ascii_digit() || b == b'.');
                    if !ok {
                        return Err(invalid(
                            "a tier's `unit_amount_decimal` is a decimal number",
                        ));
                    }
                    out.push(PriceTier {
                        up_to,
                        unit_amount_decimal: t.unit_amount_decimal.clone(),
                    });
                }
                if out.is_empty() {
                    return Err(invalid("tiers need at least one tier"));
                }
                out
            }
            _ => {
                return Err(invalid(
                    "`tiers_mode` (volume or graduated) goes with `tiers`",
                ));
            }
        };
        if tiers.is_empty() && unit_amount.is_none() {
            return Err(invalid(
                "a price needs `unit_amount` (or tiers, if metered)",
            ));
        }
        if divide_by.is_some() && kind != PriceKind::Metered {
            return Err(invalid("`divide_by` is for metered prices"));
        }
        Ok(PriceDefinition {
            lookup_key,
            kind,
            unit_amount,
            divide_by,
            tiers_mode: self.tiers_mode,
            tiers,
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

        let definitions = raw
            .prices
            .into_iter()
            .map(|(key, p)| Ok((key.clone(), p.validate(key)?)))
            .collect::<Result<BTreeMap<_, _>, CatalogError>>()?;
        let mut prices: HashMap<String, (bool, usize)> = HashMap::new();
        let mut owners: HashMap<String, String> = HashMap::new();
        let mut claim = |entry: &str, key: &str, target: (bool, usize)| {
            if valid_id(entry, key).is_err() {
                return Err(CatalogError::InvalidLookupKey {
                    entry: entry.to_owned(),
                    lookup_key: key.to_owned(),
                });
            }
            if !definitions.contains_key(key) {
                return Err(CatalogError::UndefinedPrice {
                    entry: entry.to_owned(),
                    lookup_key: key.to_owned(),
                });
            }
            if let Some(first) = owners.get(key) {
                return Err(CatalogError::DuplicatePrice {
                    entry: entry.to_owned(),
                    lookup_key: key.to_owned(),
                    first: first.clone(),
                });
            }
            owners.insert(key.to_owned(), entry.to_owned());
            prices.insert(key.to_owned(), target);
            Ok(())
        };
        let invalid = |key: &str, reason: String| CatalogError::InvalidPrice {
            lookup_key: key.to_owned(),
            reason,
        };

        let mut plans = Vec::with_capacity(raw.plans.len());
        for (i, p) in raw.plans.into_iter().enumerate() {
            let entry = format!("plan `{}`", p.id);
            valid_id(&entry, &p.id)?;
            if plans.iter().any(|q: &Plan| q.id.0 == p.id) {
                return Err(CatalogError::DuplicateId { entry });
            }
            for price in p.prices.iter().chain(&p.retired_prices) {
                claim(&entry, price, (true, i))?;
            }
            // What checkout sells must be a subscription Stripe accepts and bills as the plan
            // says: one licensed base price, then metered prices, and overage only with one.
            let kinds: Vec<PriceKind> = p.prices.iter().map(|k| definitions[k].kind).collect();
            if let Some(first) = p.prices.first()
                && kinds[0] != PriceKind::Licensed
            {
                return Err(invalid(
                    first,
                    format!("the {entry}'s first price must be licensed"),
                ));
            }
            if let Some((k, _)) = p
                .prices
                .iter()
                .zip(&kinds)
                .skip(1)
                .find(|(_, k)| **k != PriceKind::Metered)
            {
                return Err(invalid(
                    k,
                    format!("the {entry}'s prices after the first must be metered"),
                ));
            }
            if let Some(k) = p
                .prices
                .iter()
                .chain(&p.retired_prices)
                .find(|k| definitions[*k].kind == PriceKind::OneTime)
            {
                return Err(invalid(
                    k,
                    format!("a one-time price cannot be the {entry}'s"),
                ));
            }
            if p.overage != kinds.contains(&PriceKind::Metered) && !p.prices.is_empty() {
                return Err(invalid(
                    &p.prices[0],
                    format!("the {entry} bills overage exactly when it has a metered price"),
                ));
            }
            plans.push(Plan {
                included_units: non_negative(&entry, "included_units", p.included_units)?,
                id: PlanId(p.id),
                name: p.name,
                overage: p.overage,
                prices: p.prices,
                retired_prices: p.retired_prices,
            });
        }
        match plans.iter().find(|p| p.id.0 == FREE_PLAN) {
            Some(free)
                if free.prices.is_empty() && free.retired_prices.is_empty() && !free.overage => {}
            _ => return Err(CatalogError::FreePlan),
        }

        let mut packs = Vec::with_capacity(raw.credit_packs.len());
        for (i, p) in raw.credit_packs.into_iter().enumerate() {
            let entry = format!("credit pack `{}`", p.id);
            valid_id(&entry, &p.id)?;
            if packs.iter().any(|q: &CreditPack| q.id == p.id) {
                return Err(CatalogError::DuplicateId { entry });
            }
            for price in std::iter::once(&p.price).chain(&p.retired_prices) {
                claim(&entry, price, (false, i))?;
            }
            let amount = non_negative(&entry, "amount", p.amount)?;
            let def = &definitions[&p.price];
            // Checkout charges the price; the processor grants for the amount: they must agree.
            if def.kind != PriceKind::OneTime || def.unit_amount != Some(amount) {
                return Err(invalid(
                    &p.price,
                    format!(
                        "the {entry} costs {amount}, so its price must be one_time at unit_amount = {amount}"
                    ),
                ));
            }
            packs.push(CreditPack {
                amount,
                credits: non_negative(&entry, "credits", p.credits)?,
                id: p.id,
                name: p.name,
                price: p.price,
                retired_prices: p.retired_prices,
            });
        }
        if let Some(unused) = definitions.keys().find(|k| !prices.contains_key(*k)) {
            return Err(CatalogError::UnusedPrice(unused.clone()));
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
            definitions,
        })
    }

    /// Every price the catalog defines, sold or retired, by lookup key.
    pub fn price_definitions(&self) -> impl Iterator<Item = &PriceDefinition> {
        self.definitions.values()
    }

    /// Whether a price is still sold (else it is retired).
    pub fn is_sold(&self, lookup_key: &str) -> bool {
        self.plans
            .iter()
            .any(|p| p.prices.iter().any(|k| k == lookup_key))
            || self.packs.iter().any(|p| p.price == lookup_key)
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

    /// What a price (by lookup key, sold or retired) is for, if the catalog knows it.
    pub fn price(&self, lookup_key: &str) -> Option<PriceUse<'_>> {
        self.prices.get(lookup_key).map(|&(is_plan, i)| {
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
            let catalog_plan = match item.lookup_key.and_then(|k| self.price(k)) {
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

    /// Whether the rate card lists `model` (else it is priced at the default rate).
    pub fn lists_model(&self, model: &str) -> bool {
        self.rates.contains_key(model)
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
        assert_eq!(plan_of(&["pro_monthly"]), Some("pro"));
        assert_eq!(
            plan_of(&["price_unknown", "enterprise_overage_volume"]),
            Some("enterprise")
        );
        assert_eq!(plan_of(&["price_unknown"]), None);
        assert!(
            matches!(c.price("credits_1m"), Some(PriceUse::CreditPack(p)) if p.credits == 1_000_000)
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

    /// A price found by its lookup key (ids are Stripe's business; here they match the key).
    fn listed(key: &str) -> PricedItem<'_> {
        PricedItem {
            price_id: key,
            lookup_key: Some(key),
            plan: None,
            included_units: None,
        }
    }

    fn deal<'a>(key: &'a str, plan: &'a str, units: &'a str) -> PricedItem<'a> {
        PricedItem {
            price_id: key,
            lookup_key: Some(key),
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
                listed("enterprise_monthly"),
                deal("price_acme_tiered", "enterprise", "0"),
            ])
            .unwrap()
            .unwrap();
        assert_eq!((s.plan.id.as_str(), s.included_units), ("enterprise", 0));
        // The catalog's own prices keep the catalog's allowance.
        let s = c
            .plan_for_items([listed("pro_monthly"), listed("pro_overage")])
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
                &[listed("pro_monthly"), deal("price_x", "enterprise", "5")],
                "the subscription's prices disagree: `pro_monthly` names pro but `price_x` names enterprise",
            ),
            (
                &[
                    deal("price_x", "enterprise", "5"),
                    deal("price_y", "enterprise", "6"),
                ],
                "`price_x` includes 5 units but `price_y` includes 6",
            ),
            (
                &[deal("pro_monthly", "enterprise", "5")],
                "`pro_monthly` is the catalog's pro price but its metadata says enterprise",
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
                listed("enterprise_monthly"),
                listed("enterprise_overage_volume"),
                listed("pro_monthly"),
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
    fn duplicate_prices_name_both_entries() {
        let err =
            with(|c| c.replace("price = \"credits_10m\"", "price = \"pro_monthly\"")).unwrap_err();
        assert_eq!(
            err,
            CatalogError::DuplicatePrice {
                entry: "credit pack `credits_large`".into(),
                lookup_key: "pro_monthly".into(),
                first: "plan `pro`".into(),
            }
        );
    }

    #[test]
    fn a_retired_price_is_recognised_and_never_sold() {
        let c = with(|c| {
            c.replace(
                "prices = [\"pro_monthly\", \"pro_overage\"]",
                "prices = [\"pro_monthly\", \"pro_overage\"]\nretired_prices = [\"pro_overage_2025\"]",
            ) + "\n[prices.pro_overage_2025]\ntype = \"metered\"\nunit_amount = 300\ndivide_by = 1_000\n"
        })
        .unwrap();
        let s = c
            .plan_for_items([listed("pro_monthly"), listed("pro_overage_2025")])
            .unwrap()
            .unwrap();
        assert_eq!(s.plan.id.as_str(), "pro");
        assert!(!c.is_sold("pro_overage_2025") && c.is_sold("pro_overage"));
        assert_eq!(
            c.plan("pro").unwrap().prices,
            ["pro_monthly", "pro_overage"]
        );
    }

    #[test]
    fn every_price_is_defined_once_used_and_shaped_for_what_sells_it() {
        let err = with(|c| c.replace("[prices.credits_10m]", "[prices.credits_ten]")).unwrap_err();
        assert_eq!(
            err,
            CatalogError::UndefinedPrice {
                entry: "credit pack `credits_large`".into(),
                lookup_key: "credits_10m".into()
            }
        );
        let err = with(|c| format!("{c}\n[prices.spare]\ntype = \"one_time\"\nunit_amount = 5\n"))
            .unwrap_err();
        assert_eq!(err, CatalogError::UnusedPrice("spare".into()));
        // A pack's price charges what the pack grants for.
        let err = with(|c| c.replace("unit_amount = 9_000", "unit_amount = 9_900")).unwrap_err();
        assert!(err.to_string().contains("unit_amount = 9000"), "{err}");
        // The base price first, then metered ones.
        let err = with(|c| {
            c.replace(
                "prices = [\"pro_monthly\", \"pro_overage\"]",
                "prices = [\"pro_overage\", \"pro_monthly\"]",
            )
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("first price must be licensed"),
            "{err}"
        );
        let err =
            with(|c| c.replace("tiers_mode = \"volume\"", "tiers_mode = \"stairs\"")).unwrap_err();
        assert!(err.to_string().contains("tiers_mode"), "{err}");
        let err = with(|c| c.replace("{ up_to = \"inf\",", "{ up_to = 20_000_000,")).unwrap_err();
        assert!(err.to_string().contains("\"inf\""), "{err}");
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
        let err = with(|c| c.replace("\namount = 9_000", "\namount = -9_000")).unwrap_err();
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
        let err = with(|c| c.replace("\"pro_overage\"", "\"Pro Overage\"")).unwrap_err();
        assert!(
            matches!(err, CatalogError::InvalidLookupKey { .. }),
            "{err}"
        );
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

    fn as_stripe_has_it(c: &Catalog, meter: &str) -> Vec<StripePriceFacts> {
        c.price_definitions()
            .map(|d| StripePriceFacts {
                id: format!("price_{}", d.lookup_key),
                lookup_key: d.lookup_key.clone(),
                active: true,
                currency: "usd".into(),
                kind: Some(d.kind),
                unit_amount: d.unit_amount,
                divide_by: d.divide_by,
                tiers_mode: d.tiers_mode.clone(),
                meter: (d.kind == PriceKind::Metered).then(|| meter.to_owned()),
            })
            .collect()
    }

    #[test]
    fn stripe_agreeing_with_the_catalog_has_no_mismatch() {
        let c = Catalog::embedded().unwrap();
        assert_eq!(
            c.check_stripe(&as_stripe_has_it(&c, "mtr_1"), "mtr_1"),
            vec![]
        );
        assert_eq!(c.sold_lookup_keys().len(), 6);
    }

    #[test]
    fn each_difference_that_would_lose_money_is_named() {
        let c = Catalog::embedded().unwrap();
        let mut stripe = as_stripe_has_it(&c, "mtr_1");
        let at = |s: &mut Vec<StripePriceFacts>, key: &str| {
            s.iter().position(|p| p.lookup_key == key).unwrap()
        };
        let i = at(&mut stripe, "credits_10m");
        stripe[i].unit_amount = Some(8_000); // a pack sold below what it grants for
        let i = at(&mut stripe, "pro_overage");
        stripe[i].meter = Some("mtr_old".into()); // overage reported to a meter nothing bills
        let i = at(&mut stripe, "pro_monthly");
        stripe[i].active = false;
        let i = at(&mut stripe, "enterprise_monthly");
        stripe.remove(i);
        let found = c.check_stripe(&stripe, "mtr_1");
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(found.len(), 4, "{text:?}");
        assert!(
            text.iter()
                .any(|t| t.contains("`credits_10m`") && t.contains("unit_amount Some(8000)")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("`pro_overage`") && t.contains("mtr_old")),
            "{text:?}"
        );
        assert!(found.contains(&CatalogMismatch::Inactive(
            "pro_monthly".into(),
            "price_pro_monthly".into()
        )));
        assert!(found.contains(&CatalogMismatch::Missing("enterprise_monthly".into())));
    }
}
