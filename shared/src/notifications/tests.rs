use super::*;

fn entry(name: &str, detail: &str) -> OutboxEntry {
    OutboxEntry::from_parts(
        &format!("{name}:acct_1:req_1"),
        Some(name),
        Some("acct_1"),
        Some(detail),
        Some("pending"),
        false,
    )
    .unwrap()
}

#[test]
fn numbers_and_money_read_as_people_read_them() {
    assert_eq!(grouped(0), "0");
    assert_eq!(grouped(999), "999");
    assert_eq!(grouped(1_000), "1,000");
    assert_eq!(grouped(1_234_567), "1,234,567");
    assert_eq!(money(1999, "usd"), "USD 19.99");
    assert_eq!(money(5, "eur"), "EUR 0.05");
    assert_eq!(money(-250, "usd"), "-USD 2.50");
    assert_eq!(money(1500, "jpy"), "JPY 1,500");
}

#[test]
fn credits_low_email_names_the_amounts_the_action_and_the_links() {
    let e = entry(
        "credits.low",
        r#"{"account_id":"acct_1","credits":1500,"last_topup":10000}"#,
    );
    let links = Links {
        billing_page: Some("https://app.example.com/billing".into()),
    };
    let mail = email_for(&e, &links).unwrap();
    assert_eq!(mail.subject, "Your prepaid credits are running low");
    assert!(mail.text.contains("1,500 credits left"), "{}", mail.text);
    assert!(mail.text.contains("10,000 credits"), "{}", mail.text);
    assert!(mail.text.contains("Buy a credit pack"));
    assert!(
        mail.text
            .contains("Your billing page: https://app.example.com/billing")
    );
    assert!(mail.text.contains("Reference: credits.low:acct_1:req_1"));
    assert!(
        mail.html
            .contains("<a href=\"https://app.example.com/billing\">")
    );
    assert!(mail.html.contains("1,500 credits left"));
}

#[test]
fn every_named_notification_has_an_email_and_others_do_not() {
    for name in NAMES {
        let e = entry(name, "{}");
        assert!(e.for_a_person());
        let mail = email_for(&e, &Links::default()).unwrap();
        assert!(
            !mail.subject.is_empty() && mail.text.contains("acct_1"),
            "{name}"
        );
        assert!(
            !mail.text.contains("Your billing page"),
            "no link without one configured"
        );
    }
    let other = entry("invoice.synced", "{}");
    assert!(!other.for_a_person());
    assert_eq!(email_for(&other, &Links::default()), None);
}

#[test]
fn values_from_the_detail_are_escaped_and_unsafe_links_left_out() {
    let e = entry(
        "usage.blocked",
        r#"{"plan":"<script>x</script>","uncovered_units":3,"portal_url":"javascript:alert(1)","hosted_invoice_url":"https://pay.stripe.com/i/1\" onclick=\"x"}"#,
    );
    let mail = email_for(&e, &Links::default()).unwrap();
    assert!(!mail.html.contains("<script>"));
    assert!(mail.html.contains("&lt;script&gt;"));
    assert!(!mail.text.contains("javascript:"));
    assert!(!mail.html.contains("onclick"));
}

#[test]
fn payment_failed_shows_the_amount_and_the_invoice_link() {
    let e = entry(
        "payment.failed",
        r#"{"amount_due":4900,"currency":"usd","hosted_invoice_url":"https://invoice.stripe.com/i/acct/abc"}"#,
    );
    let mail = email_for(&e, &Links::default()).unwrap();
    assert!(mail.text.contains("USD 49.00"));
    assert!(
        mail.text
            .contains("Pay the invoice: https://invoice.stripe.com/i/acct/abc")
    );
}

#[test]
fn the_event_detail_leads_with_the_stable_id_which_the_facts_cannot_override() {
    let e = entry("credits.low", r#"{"id":"forged","credits":5}"#);
    let d = e.event_detail();
    assert_eq!(d["id"], "credits.low:acct_1:req_1");
    assert_eq!(d["name"], "credits.low");
    assert_eq!(d["account_id"], "acct_1");
    assert_eq!(d["credits"], 5);
}

#[test]
fn entries_that_could_never_be_delivered_are_refused_with_the_reason() {
    let bad =
        |name: Option<&str>, account: Option<&str>, detail: Option<&str>, status: Option<&str>| {
            OutboxEntry::from_parts("x:1", name, account, detail, status, false).unwrap_err()
        };
    assert_eq!(
        bad(None, Some("a"), None, None),
        EntryError::Missing("name")
    );
    assert_eq!(
        bad(Some("credits.low"), None, None, None),
        EntryError::Missing("account_id")
    );
    assert!(matches!(
        bad(Some("a b"), Some("a"), None, None),
        EntryError::Invalid { field: "name", .. }
    ));
    assert!(matches!(
        bad(Some("n"), Some("a#b"), None, None),
        EntryError::Invalid {
            field: "account_id",
            ..
        }
    ));
    assert!(matches!(
        bad(Some("n"), Some("a"), Some("not json"), None),
        EntryError::Invalid {
            field: "detail",
            ..
        }
    ));
    assert!(matches!(
        bad(Some("n"), Some("a"), Some("[1]"), None),
        EntryError::Invalid {
            field: "detail",
            ..
        }
    ));
    assert!(matches!(
        bad(Some("n"), Some("a"), None, Some("sent")),
        EntryError::Invalid {
            field: "status",
            ..
        }
    ));
    assert!(NotificationId::parse("").is_err());
    assert!(NotificationId::parse(&"x".repeat(513)).is_err());
    assert!(NotificationId::parse("a\nb").is_err());
}
