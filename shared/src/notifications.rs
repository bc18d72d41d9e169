//! Notifications as they leave the outbox: the event every one becomes, and the email written
//! for the ones a person should read (pure, no I/O).
//!
//! The usage function (and later dunning) writes an entry to the outbox with a stable id, a
//! name from [`NAMES`] and its facts as JSON; the notifier turns each entry into an EventBridge
//! event (`source` = [`EVENT_SOURCE`], `detail-type` = the name) and, for the names in
//! [`NAMES`], an email to the account's billing address.

use serde_json::{Map, Value, json};

use crate::ids::{AccountId, IdError};

/// The `source` of every event the notifier puts on the bus.
pub const EVENT_SOURCE: &str = "billing";

/// The notifications the brief names; each is meant for a person as well as for the bus.
pub const NAMES: [&str; 8] = [
    "credits.low",
    "credits.topup_failed",
    "usage.threshold",
    "usage.blocked",
    "payment.failed",
    "account.downgraded",
    "account.suspended",
    "account.reactivated",
];

/// A notification's stable id (`credits.low:acct_1:req_9`): what makes delivering it twice
/// recognisable downstream. 1 to 512 printable characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NotificationId(String);

impl NotificationId {
    pub fn parse(value: &str) -> Result<Self, IdError> {
        const KIND: &str = "notification id";
        if value.is_empty() {
            return Err(IdError::Empty { kind: KIND });
        }
        // DynamoDB keys take 1 KiB for the partition key; `OUTBOX#` and the id fit well inside.
        if value.len() > 512 {
            return Err(IdError::TooLong {
                kind: KIND,
                len: value.len(),
            });
        }
        if value.chars().any(char::is_control) {
            return Err(IdError::Unprintable { kind: KIND });
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NotificationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an outbox entry is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Written, not yet (wholly) delivered.
    Pending,
    /// Set by an operator to deliver a parked entry again (the stream picks the change up).
    Retry,
    Delivered,
}

impl DeliveryStatus {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "pending" => Some(Self::Pending),
            "retry" => Some(Self::Retry),
            "delivered" => Some(Self::Delivered),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Retry => "retry",
            Self::Delivered => "delivered",
        }
    }
}

/// An outbox entry as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub id: NotificationId,
    pub name: String,
    pub account: AccountId,
    /// The notification's facts (amounts, period, links), as its writer recorded them.
    pub detail: Map<String, Value>,
    pub status: DeliveryStatus,
    /// The bus has it: a retry after a failed email does not put the event twice.
    pub event_sent: bool,
}

/// Why an entry cannot be delivered however often it is tried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("the outbox entry has no {0}")]
    Missing(&'static str),
    #[error("the outbox entry's {field} is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl OutboxEntry {
    /// Builds an entry from its stored attributes, refusing one that could not be delivered.
    pub fn from_parts(
        id: &str,
        name: Option<&str>,
        account: Option<&str>,
        detail: Option<&str>,
        status: Option<&str>,
        event_sent: bool,
    ) -> Result<Self, EntryError> {
        let invalid = |field, reason: String| EntryError::Invalid { field, reason };
        let id = NotificationId::parse(id).map_err(|e| invalid("id", e.to_string()))?;
        let name = name.ok_or(EntryError::Missing("name"))?;
        if name.is_empty()
            || name.len() > 128
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
        {
            return Err(invalid(
                "name",
                format!("{name:?} is not a notification name"),
            ));
        }
        let account = AccountId::parse(account.ok_or(EntryError::Missing("account_id"))?)
            .map_err(|e| invalid("account_id", e.to_string()))?;
        let detail = match serde_json::from_str::<Value>(detail.unwrap_or("{}")) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(invalid("detail", "not a JSON object".into())),
            Err(e) => return Err(invalid("detail", e.to_string())),
        };
        let status = match status {
            None => DeliveryStatus::Pending,
            Some(s) => DeliveryStatus::parse(s)
                .ok_or_else(|| invalid("status", format!("{s:?} is not a delivery status")))?,
        };
        Ok(Self {
            id,
            name: name.to_owned(),
            account,
            detail,
            status,
            event_sent,
        })
    }

    /// The event's `detail`: the stable id, the name and account, then the entry's facts.
    pub fn event_detail(&self) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), json!(self.id.as_str()));
        out.insert("name".into(), json!(self.name));
        out.insert("account_id".into(), json!(self.account.as_str()));
        for (k, v) in &self.detail {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(out)
    }

    /// Whether a person should get this one by email as well.
    pub fn for_a_person(&self) -> bool {
        NAMES.contains(&self.name.as_str())
    }
}

/// Links an email can point to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// The app's billing page (plans, credit packs, the Stripe portal behind it).
    pub billing_page: Option<String>,
}

/// An email, ready to send: the same message as plain text and HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// `1234567` as `1,234,567`: units and credits are whole numbers, shown as people read them.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An amount in minor units with its currency (`1999`, `usd` → `USD 19.99`). Zero-decimal
/// currencies (JPY, KRW, …) are shown without a fraction.
pub fn money(minor: i64, currency: &str) -> String {
    const ZERO_DECIMAL: [&str; 16] = [
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
        "xaf", "xof", "xpf",
    ];
    let code = currency.to_ascii_uppercase();
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if ZERO_DECIMAL.contains(&currency.to_ascii_lowercase().as_str()) {
        format!("{sign}{code} {}", grouped(abs))
    } else {
        format!("{sign}{code} {}.{:02}", grouped(abs / 100), abs % 100)
    }
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn num(detail: &Map<String, Value>, key: &str) -> Option<u64> {
    detail.get(key)?.as_u64()
}

fn text(detail: &Map<String, Value>, key: &str) -> Option<String> {
    Some(detail.get(key)?.as_str()?.to_owned())
}

/// A link goes into an email only if it is one to hand a customer (`crate::http::check_link`):
/// a value from Stripe or configuration never becomes a script link.
fn safe_url(url: &str) -> bool {
    crate::http::check_link(url).is_ok()
}

/// The email for an entry meant for a person; `None` for any other.
pub fn email_for(entry: &OutboxEntry, links: &Links) -> Option<Email> {
    let d = &entry.detail;
    let account = entry.account.as_str();
    let (subject, lines, action): (String, Vec<String>, &str) = match entry.name.as_str() {
        "credits.low" => {
            let credits = num(d, "credits").unwrap_or(0);
            let last = num(d, "last_topup").unwrap_or(0);
            (
                "Your prepaid credits are running low".into(),
                vec![
                    format!(
                        "Account {account} has {} credits left, below 20% of your last top-up of {} credits.",
                        grouped(credits),
                        grouped(last)
                    ),
                    "When credits and your plan's allowance run out, usage beyond them is billed as overage where your plan allows it, and stops where it does not.".into(),
                ],
                "Buy a credit pack to keep going without interruption.",
            )
        }
        "credits.topup_failed" => {
            let amount = match (d.get("amount").and_then(Value::as_i64), text(d, "currency")) {
                (Some(a), Some(c)) => money(a, &c),
                _ => "the credit pack".into(),
            };
            (
                "Your automatic credit top-up did not go through".into(),
                vec![
                    format!(
                        "We could not charge {amount} for account {account}'s automatic top-up: the card was declined."
                    ),
                    "Automatic top-up is paused until the card on file changes.".into(),
                ],
                "Update your card, or buy a credit pack now.",
            )
        }
        "usage.threshold" => {
            let percent = num(d, "percent").unwrap_or(0);
            let included = num(d, "included_units").unwrap_or(0);
            (
                format!("You have used {percent}% of this period's included units"),
                vec![format!(
                    "Account {account} has used {percent}% of the {} units its plan includes this billing period.",
                    grouped(included)
                )],
                "Check your usage, or move to a larger plan if you expect to need more.",
            )
        }
        "usage.blocked" => {
            let plan = text(d, "plan").unwrap_or_else(|| "your plan".into());
            let uncovered = num(d, "uncovered_units").unwrap_or(0);
            (
                "Usage is paused on your account".into(),
                vec![
                    format!(
                        "Account {account} on {plan} has used its included units and its prepaid credits, so new requests are not allowed."
                    ),
                    format!(
                        "{} units used since then are not yet covered.",
                        grouped(uncovered)
                    ),
                ],
                "Buy a credit pack or upgrade your plan to resume.",
            )
        }
        "payment.failed" => {
            let amount = match (
                d.get("amount_due").and_then(Value::as_i64),
                text(d, "currency"),
            ) {
                (Some(a), Some(c)) => money(a, &c),
                _ => "your invoice".into(),
            };
            (
                "Your payment did not go through".into(),
                vec![format!(
                    "We could not collect {amount} for account {account}. We will retry, but your plan will be downgraded if it stays unpaid."
                )],
                "Pay the invoice or update your card.",
            )
        }
        "account.downgraded" => (
            "Your plan was moved to the free tier".into(),
            vec![format!(
                "Account {account} was moved to the free tier because an invoice stayed unpaid. Your prepaid credits are kept."
            )],
            "Pay the open invoice to return to your plan.",
        ),
        "account.suspended" => (
            "Your account is suspended".into(),
            vec![format!(
                "Account {account} is suspended because an invoice has been unpaid for 14 days: new requests are not allowed."
            )],
            "Pay the open invoice to lift the suspension at once.",
        ),
        "account.reactivated" => (
            "Your account is active again".into(),
            vec![format!(
                "Thank you: the payment for account {account} arrived and the account is active again."
            )],
            "Nothing to do.",
        ),
        _ => return None,
    };

    let mut link_lines: Vec<(String, String)> = Vec::new();
    for (key, label) in [
        ("hosted_invoice_url", "Pay the invoice"),
        ("portal_url", "Update your card"),
    ] {
        if let Some(url) = text(d, key).filter(|u| safe_url(u)) {
            link_lines.push((label.into(), url));
        }
    }
    if let Some(url) = links.billing_page.as_deref().filter(|u| safe_url(u)) {
        link_lines.push(("Your billing page".into(), url.to_owned()));
    }

    let mut body_text = String::new();
    for line in &lines {
        body_text.push_str(line);
        body_text.push_str("\n\n");
    }
    body_text.push_str(action);
    body_text.push('\n');
    for (label, url) in &link_lines {
        body_text.push_str(&format!("\n{label}: {url}"));
    }
    body_text.push_str(&format!("\n\nReference: {}\n", entry.id));

    let mut html = String::from("<!doctype html><html><body>");
    for line in &lines {
        html.push_str(&format!("<p>{}</p>", html_escape(line)));
    }
    html.push_str(&format!("<p><strong>{}</strong></p>", html_escape(action)));
    if !link_lines.is_empty() {
        html.push_str("<ul>");
        for (label, url) in &link_lines {
            html.push_str(&format!(
                "<li><a href=\"{}\">{}</a></li>",
                html_escape(url),
                html_escape(label)
            ));
        }
        html.push_str("</ul>");
    }
    html.push_str(&format!(
        "<p style=\"color:#666\">Reference: {}</p></body></html>",
        html_escape(entry.id.as_str())
    ));
    Some(Email {
        subject,
        text: body_text,
        html,
    })
}

#[cfg(test)]
mod tests;
