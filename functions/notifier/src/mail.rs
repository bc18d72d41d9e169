//! Email through SES v2: one message, plain text and HTML, to the account's billing address.

use std::future::Future;
use std::sync::Mutex;

use anyhow::anyhow;
use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
use shared::notifications::Email;

pub trait Mailer {
    fn send(&self, to: &str, email: &Email) -> impl Future<Output = anyhow::Result<()>> + Send;
}

pub struct RealMailer {
    client: aws_sdk_sesv2::Client,
    from: String,
}

impl RealMailer {
    pub fn new(client: aws_sdk_sesv2::Client, from: impl Into<String>) -> Self {
        Self {
            client,
            from: from.into(),
        }
    }
}

fn utf8(data: &str) -> anyhow::Result<Content> {
    Ok(Content::builder().data(data).charset("UTF-8").build()?)
}

impl Mailer for RealMailer {
    async fn send(&self, to: &str, email: &Email) -> anyhow::Result<()> {
        let message = Message::builder()
            .subject(utf8(&email.subject)?)
            .body(
                Body::builder()
                    .text(utf8(&email.text)?)
                    .html(utf8(&email.html)?)
                    .build(),
            )
            .build();
        self.client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(to).build())
            .content(EmailContent::builder().simple(message).build())
            .send()
            .await
            // SES's messages can quote the addresses (a sandbox refusal names them): only the
            // error's code goes on, into logs and the entry's `last_error`.
            .map_err(|e| anyhow!("SES did not send the email: {}", ses_error_code(&e)))?;
        Ok(())
    }
}

fn ses_error_code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> String {
    match e {
        SdkError::ServiceError(s) => s.err().code().unwrap_or("unknown service error").to_owned(),
        SdkError::TimeoutError(_) => "timeout".into(),
        SdkError::DispatchFailure(_) => "dispatch failure".into(),
        SdkError::ResponseError(_) => "unreadable response".into(),
        SdkError::ConstructionFailure(_) => "request not built".into(),
        _ => "unknown".into(),
    }
}

/// Records what it is given; fails the next `fail_next` sends first.
#[derive(Debug, Default)]
pub struct FakeMailer {
    pub sent: Mutex<Vec<(String, Email)>>,
    pub fail_next: Mutex<u32>,
}

impl FakeMailer {
    pub fn sent(&self) -> Vec<(String, Email)> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Mailer for FakeMailer {
    async fn send(&self, to: &str, email: &Email) -> anyhow::Result<()> {
        {
            let mut fail = self.fail_next.lock().unwrap_or_else(|e| e.into_inner());
            if *fail > 0 {
                *fail -= 1;
                return Err(anyhow!("the mail service is unavailable"));
            }
        }
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((to.to_owned(), email.clone()));
        Ok(())
    }
}
