//! Structured logs: JSON inside Lambda (CloudWatch parses it), readable text elsewhere.
//! `LOG_FORMAT=json|text` overrides the choice; `RUST_LOG` (or Lambda's `AWS_LAMBDA_LOG_LEVEL`)
//! sets the level, `info` by default.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let json = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => in_lambda,
    };
    let level = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL").map(|l| l.to_lowercase()))
        .unwrap_or_else(|_| "info".to_owned());
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init`: a second call (tests) keeps the first subscriber instead of panicking.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .without_time() // CloudWatch stamps every line itself
            .try_init()
    } else {
        builder.with_ansi(false).compact().try_init()
    };
}
