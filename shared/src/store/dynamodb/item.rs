//! DynamoDB items and expressions: attribute values, keys, and the operations each aggregate
//! builds for a transaction, merged per item before they are sent.

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};

use crate::billing::SubscriptionStatus;
use crate::ids::{AccountId, StripeEventId};
use crate::store::WriteMode;

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

pub(super) fn get_n<T: std::str::FromStr>(item: &Item, k: &str) -> Option<T> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

pub(super) fn get_bool(item: &Item, k: &str) -> Option<bool> {
    item.get(k).and_then(|v| v.as_bool().ok()).copied()
}

// --- keys ------------------------------------------------------------------------------------

pub(super) fn key(pk: String, sk: &str) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

pub(super) fn account_pk(a: &AccountId) -> String {
    format!("ACCOUNT#{a}")
}

/// The one item `make stripe-setup` writes: the ids its Stripe account gave the catalog's prices
/// (`prices`, a map of lookup key to price id), its meter, endpoint and portal configuration.
pub(super) fn stripe_setup_key() -> Item {
    key("STRIPE#SETUP".to_owned(), "STRIPE#SETUP")
}

pub(super) fn account_key(a: &AccountId) -> Item {
    key(account_pk(a), "ACCOUNT")
}

pub(super) fn marker_key(e: &StripeEventId) -> Item {
    key(format!("EVENT#{e}"), "EVENT")
}

pub(super) fn link_key(customer_id: &str) -> Item {
    key(format!("CUSTOMER#{customer_id}"), "CUSTOMER")
}

pub(super) fn invoice_key(a: &AccountId, invoice_id: &str) -> Item {
    key(account_pk(a), &format!("INVOICE#{invoice_id}"))
}

pub(super) fn grant_key(a: &AccountId, grant_id: &str) -> Item {
    key(account_pk(a), &format!("CREDIT#{grant_id}"))
}

pub(super) fn parked_key(customer_id: &str, event_id: &str) -> Item {
    key(
        format!("CUSTOMER#{customer_id}"),
        &format!("PENDING#{event_id}"),
    )
}

pub(super) fn ended_key(a: &AccountId, subscription_id: &str) -> Item {
    key(account_pk(a), &format!("ENDED#{subscription_id}"))
}

/// `<` for newer-only writes, `<=` when breaking a tie with Stripe's current object.
pub(super) fn cmp(mode: WriteMode) -> &'static str {
    match mode {
        WriteMode::Newer => "<",
        WriteMode::TieBreak => "<=",
    }
}

// --- expressions -----------------------------------------------------------------------------

/// An update expression built clause by clause, with its names and values. Names are always
/// `#attr` for `attr`; values are `:name` placeholders.
#[derive(Debug, Default, Clone)]
pub(super) struct Expr {
    pub set: Vec<String>,
    pub remove: Vec<String>,
    pub add: Vec<String>,
    pub delete: Vec<String>,
    pub names: HashMap<String, String>,
    pub values: Item,
}

impl Expr {
    pub fn name(&mut self, attr: &str) -> &mut Self {
        self.names.insert(format!("#{attr}"), attr.to_owned());
        self
    }

    pub fn set(&mut self, attr: &str, value: AttributeValue) -> &mut Self {
        self.name(attr);
        self.values.insert(format!(":{attr}"), value);
        self.set.push(format!("#{attr} = :{attr}"));
        self
    }

    /// Sets `attr` unless it already has a value.
    pub fn set_if_absent(&mut self, attr: &str, value: AttributeValue) -> &mut Self {
        self.name(attr);
        self.values.insert(format!(":{attr}"), value);
        self.set
            .push(format!("#{attr} = if_not_exists(#{attr}, :{attr})"));
        self
    }

    pub fn set_opt(&mut self, attr: &str, value: Option<AttributeValue>) -> &mut Self {
        match value {
            Some(v) => self.set(attr, v),
            None => self.remove(attr),
        }
    }

    pub fn remove(&mut self, attr: &str) -> &mut Self {
        self.name(attr);
        self.remove.push(format!("#{attr}"));
        self
    }

    pub fn add(&mut self, attr: &str, value: AttributeValue) -> &mut Self {
        self.name(attr);
        self.values.insert(format!(":{attr}"), value);
        self.add.push(format!("#{attr} :{attr}"));
        self
    }

    /// Removes elements from a set attribute.
    pub fn delete(&mut self, attr: &str, value: AttributeValue) -> &mut Self {
        self.name(attr);
        self.values.insert(format!(":{attr}"), value);
        self.delete.push(format!("#{attr} :{attr}"));
        self
    }

    pub fn value(&mut self, placeholder: &str, value: AttributeValue) -> &mut Self {
        self.values.insert(placeholder.to_owned(), value);
        self
    }

    fn update_expression(&self) -> String {
        let mut parts = Vec::new();
        if !self.set.is_empty() {
            parts.push(format!("SET {}", self.set.join(", ")));
        }
        if !self.remove.is_empty() {
            parts.push(format!("REMOVE {}", self.remove.join(", ")));
        }
        if !self.add.is_empty() {
            parts.push(format!("ADD {}", self.add.join(", ")));
        }
        if !self.delete.is_empty() {
            parts.push(format!("DELETE {}", self.delete.join(", ")));
        }
        parts.join(" ")
    }
}

/// Appends `suffix` to every `:placeholder` in an expression (expressions are ASCII).
fn suffix_placeholders(text: &str, suffix: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == ':' {
            while let Some(&next) = chars.peek() {
                if next.is_ascii_alphanumeric() || next == '_' {
                    out.push(next);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push_str(suffix);
        }
    }
    out
}

// --- operations --------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub(super) enum Action {
    /// Put the key and these attributes.
    Put(Item),
    /// Apply the expression's clauses.
    Update,
    /// Only the condition.
    Check,
    /// Delete the item.
    Delete,
}

/// How to read an operation's failed condition, from the item's old image.
#[derive(Debug, Clone)]
pub(super) enum Judge {
    /// Only a concurrent change can fail it: retry.
    Retry,
    /// Failing means the event changes nothing (a subscription that ended stays ended).
    Stale,
    /// A versioned object: its stored `attr` against the event's `created`.
    Version(&'static str),
    /// The account's current subscription slot, against this incoming subscription.
    Subscription {
        id: String,
        status: SubscriptionStatus,
    },
    /// A credit grant: granted before (stale), or its refund came first.
    Grant,
    /// A refund remembered before its grant: an equal or older total changes nothing; a grant
    /// that landed meanwhile means retry (the clawback path then applies).
    PendingRefund,
    /// A customer link that finds events parked under the customer.
    Parked,
}

/// One item's part of a transaction, built by an aggregate module for one write.
#[derive(Debug, Clone)]
pub(super) struct Op {
    pub key: Item,
    pub action: Action,
    pub expr: Expr,
    pub condition: Option<String>,
    pub judge: Judge,
}

impl Op {
    pub fn update(key: Item, expr: Expr, condition: Option<String>, judge: Judge) -> Self {
        Self {
            key,
            action: Action::Update,
            expr,
            condition,
            judge,
        }
    }

    pub fn check(key: Item, expr: Expr, condition: String, judge: Judge) -> Self {
        Self {
            key,
            action: Action::Check,
            expr,
            condition: Some(condition),
            judge,
        }
    }

    pub fn delete(key: Item) -> Self {
        Self {
            key,
            action: Action::Delete,
            expr: Expr::default(),
            condition: None,
            judge: Judge::Retry,
        }
    }

    pub fn put(
        key: Item,
        attrs: Item,
        expr: Expr,
        condition: Option<String>,
        judge: Judge,
    ) -> Self {
        Self {
            key,
            action: Action::Put(attrs),
            expr,
            condition,
            judge,
        }
    }
}

/// One transaction item: the operations of one or more writes on one DynamoDB item (DynamoDB
/// refuses two operations on one item in a transaction), and which write each came from.
#[derive(Debug)]
pub(super) struct Merged {
    pub key: Item,
    pub action: Action,
    pub expr: Expr,
    pub conditions: Vec<String>,
    /// (index of the write, how to judge its condition), in order.
    pub parts: Vec<(Option<usize>, Judge)>,
}

fn key_id(key: &Item) -> (String, String) {
    (
        get_s(key, "pk").unwrap_or_default(),
        get_s(key, "sk").unwrap_or_default(),
    )
}

/// Groups operations by item, merging the clauses, names, values and conditions of those that
/// share one; each keeps its own value placeholders (suffixed) so merged writes cannot collide.
pub(super) fn merge(ops: Vec<(Option<usize>, Op)>) -> anyhow::Result<Vec<Merged>> {
    let mut out: Vec<Merged> = Vec::new();
    let mut by_key: HashMap<(String, String), usize> = HashMap::new();
    for (n_op, (index, op)) in ops.into_iter().enumerate() {
        let id = key_id(&op.key);
        let Some(&at) = by_key.get(&id) else {
            by_key.insert(id, out.len());
            out.push(Merged {
                key: op.key,
                action: op.action,
                expr: op.expr,
                conditions: op.condition.into_iter().collect(),
                parts: vec![(index, op.judge)],
            });
            continue;
        };
        let target = &mut out[at];
        let suffix = format!("_{n_op}");
        let action = match (&target.action, &op.action) {
            (Action::Put(_) | Action::Delete, _) | (_, Action::Put(_) | Action::Delete) => {
                anyhow::bail!(
                    "two operations on item {:?}, one of them a put or delete",
                    key_id(&target.key)
                )
            }
            (Action::Update, _) | (_, Action::Update) => Action::Update,
            (Action::Check, Action::Check) => Action::Check,
        };
        target.action = action;
        let e = &op.expr;
        target
            .expr
            .set
            .extend(e.set.iter().map(|c| suffix_placeholders(c, &suffix)));
        target
            .expr
            .remove
            .extend(e.remove.iter().map(|c| suffix_placeholders(c, &suffix)));
        target
            .expr
            .add
            .extend(e.add.iter().map(|c| suffix_placeholders(c, &suffix)));
        target
            .expr
            .delete
            .extend(e.delete.iter().map(|c| suffix_placeholders(c, &suffix)));
        for (k, v) in &e.names {
            target.expr.names.insert(k.clone(), v.clone());
        }
        for (k, v) in &e.values {
            target.expr.values.insert(format!("{k}{suffix}"), v.clone());
        }
        if let Some(c) = &op.condition {
            target.conditions.push(suffix_placeholders(c, &suffix));
        }
        target.parts.push((index, op.judge));
    }
    Ok(out)
}

impl Merged {
    pub fn into_transact_item(self, table: &str) -> anyhow::Result<TransactWriteItem> {
        let condition = match self.conditions.len() {
            0 => None,
            1 => self.conditions.into_iter().next(),
            _ => Some(
                self.conditions
                    .iter()
                    .map(|c| format!("({c})"))
                    .collect::<Vec<_>>()
                    .join(" AND "),
            ),
        };
        // Names and values used only in the update or only in the condition are both declared.
        let names = (!self.expr.names.is_empty()).then(|| self.expr.names.clone());
        let values = (!self.expr.values.is_empty()).then(|| self.expr.values.clone());
        let on_fail = ReturnValuesOnConditionCheckFailure::AllOld;
        Ok(match self.action {
            Action::Put(attrs) => {
                let mut item = self.key;
                item.extend(attrs);
                let put = Put::builder()
                    .table_name(table)
                    .set_item(Some(item))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .return_values_on_condition_check_failure(on_fail)
                    .build()
                    .context("building a put")?;
                TransactWriteItem::builder().put(put).build()
            }
            Action::Update => {
                let update = Update::builder()
                    .table_name(table)
                    .set_key(Some(self.key))
                    .update_expression(self.expr.update_expression())
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .return_values_on_condition_check_failure(on_fail)
                    .build()
                    .context("building an update")?;
                TransactWriteItem::builder().update(update).build()
            }
            Action::Delete => {
                let delete = Delete::builder()
                    .table_name(table)
                    .set_key(Some(self.key))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build()
                    .context("building a delete")?;
                TransactWriteItem::builder().delete(delete).build()
            }
            Action::Check => {
                let check = ConditionCheck::builder()
                    .table_name(table)
                    .set_key(Some(self.key))
                    .condition_expression(condition.context("a check without a condition")?)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .return_values_on_condition_check_failure(on_fail)
                    .build()
                    .context("building a condition check")?;
                TransactWriteItem::builder().condition_check(check).build()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_get_the_suffix_and_names_do_not() {
        assert_eq!(
            suffix_placeholders("#credits = #credits - :take AND #v < :v_1", "_2"),
            "#credits = #credits - :take_2 AND #v < :v_1_2"
        );
    }

    #[test]
    fn operations_on_one_item_merge_into_one() {
        let a = AccountId::parse("acct_1").unwrap();
        let mut grant = Expr::default();
        grant.add("credits", n(5));
        let mut link = Expr::default();
        link.set_if_absent("customer_id", s("cus_1"));
        let mut versioned = Expr::default();
        versioned.set("credits_note", s("x")).value(":v", n(3));
        let merged = merge(vec![
            (
                Some(0),
                Op::update(account_key(&a), grant, None, Judge::Retry),
            ),
            (
                Some(1),
                Op::update(account_key(&a), link, None, Judge::Retry),
            ),
            (
                Some(2),
                Op::update(
                    account_key(&a),
                    versioned,
                    Some("#v < :v".into()),
                    Judge::Version("v"),
                ),
            ),
            (
                None,
                Op::update(grant_key(&a, "pi_1"), Expr::default(), None, Judge::Retry),
            ),
        ])
        .unwrap();
        assert_eq!(merged.len(), 2);
        let m = &merged[0];
        assert_eq!(m.parts.len(), 3);
        assert_eq!(
            m.expr.update_expression(),
            "SET #customer_id = if_not_exists(#customer_id, :customer_id_1), #credits_note = :credits_note_2 ADD #credits :credits"
        );
        assert_eq!(m.conditions, ["#v < :v_2"]);
        assert!(m.expr.values.contains_key(":v_2") && m.expr.values.contains_key(":credits"));
    }
}
