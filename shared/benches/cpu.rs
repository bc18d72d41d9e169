//! CPU per webhook delivery (signature check + envelope parse of a 5 KB Stripe event), per
//! processed event (full parse + deciding its writes) and per usage `track` decision (parse and
//! validate the invocation, price it, burn it down, build the answer).
//!
//! Measured in thread CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time, so a busy neighbour on
//! a shared machine does not inflate the figure. `make bench` prints it beside the target and
//! beside the same work done by the Python `stripe` library.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shared::billing::plan_effects;
use shared::catalog::Catalog;
use shared::secrets::SecretString;
use shared::stripe::objects::StripeEvent;
use shared::stripe::signature::{DEFAULT_TOLERANCE_SECS, sign};
use shared::stripe::{EventEnvelope, WebhookVerifier};

const EVENT: &[u8] = include_bytes!("../tests/fixtures/invoice.paid.json");
const T: i64 = 1_763_942_400;

struct ThreadCpuTime;

fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

static WALL: WallTime = WallTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    let secret = SecretString::new("whsec_bench_current");
    let header = sign(&secret, T, EVENT).unwrap();
    let one = WebhookVerifier::new(std::slice::from_ref(&secret), DEFAULT_TOLERANCE_SECS).unwrap();
    // During rotation two secrets are live; the worst case is a match on the last one.
    let rotating = WebhookVerifier::new(
        &[SecretString::new("whsec_bench_previous"), secret.clone()],
        DEFAULT_TOLERANCE_SECS,
    )
    .unwrap();

    let mut group = c.benchmark_group("webhook");
    group.throughput(Throughput::Bytes(EVENT.len() as u64));
    group.bench_function("verify_and_parse", |b| {
        b.iter(|| {
            one.verify(Some(black_box(&header)), black_box(EVENT), T)
                .unwrap();
            black_box(EventEnvelope::parse(black_box(EVENT)).unwrap());
        })
    });
    group.bench_function("verify_and_parse_rotating", |b| {
        b.iter(|| {
            rotating
                .verify(Some(black_box(&header)), black_box(EVENT), T)
                .unwrap();
            black_box(EventEnvelope::parse(black_box(EVENT)).unwrap());
        })
    });
    group.bench_function("verify", |b| {
        b.iter(|| {
            one.verify(Some(black_box(&header)), black_box(EVENT), T)
                .unwrap()
        })
    });
    group.bench_function("parse", |b| {
        b.iter(|| black_box(EventEnvelope::parse(black_box(EVENT)).unwrap()))
    });
    group.finish();
}

/// The processor's own CPU per event: parse the whole event into lean types and decide its
/// writes. (The transaction itself is one DynamoDB round trip, counted by `make bench`.)
fn processor(c: &mut Criterion<ThreadCpuTime>) {
    let catalog = Catalog::embedded().unwrap();
    let mut group = c.benchmark_group("processor");
    group.throughput(Throughput::Bytes(EVENT.len() as u64));
    group.bench_function("parse_and_plan", |b| {
        b.iter(|| {
            let event = StripeEvent::parse(black_box(EVENT)).unwrap();
            black_box(plan_effects(&event, &catalog).unwrap())
        })
    });
    group.finish();
}

/// The usage function's own CPU per `track`, everything but the round trip: the invocation's
/// JSON parsed and validated, units priced from the rate card, the burn-down on an account with
/// live holds, and the answer serialised.
fn usage(c: &mut Criterion<ThreadCpuTime>) {
    use shared::ids::{AccountId, RequestId, ReservationId};
    use shared::usage::ledger::{Ledger, Terms, units};
    use shared::usage::period::Period;
    use shared::usage::request::UsageRequest;

    let catalog = Catalog::embedded().unwrap();
    let payload = br#"{"action":"track","account_id":"acct_1","request_id":"req_4f1c2b","model":"gpt-4o","input_tokens":1000,"output_tokens":200,"cached_input_tokens":300}"#;
    let terms = Terms {
        plan: "pro".into(),
        included_units: 5_000_000,
        overage: true,
        period: Some(Period {
            start: T - 86_400,
            end: T + 29 * 86_400,
        }),
        suspended: false,
    };
    let mut ledger = Ledger::default();
    ledger.grant(1_000_000);
    let account = AccountId::parse("acct_1").unwrap();
    for i in 0..8 {
        let id =
            ReservationId::for_request(&account, &RequestId::parse(&format!("hold_{i}")).unwrap());
        ledger.reserve(&terms, T, id, 5_000, T + 60).unwrap();
    }
    let mut group = c.benchmark_group("usage");
    group.bench_function("track_decision", |b| {
        b.iter(|| {
            let value: serde_json::Value = serde_json::from_slice(black_box(payload)).unwrap();
            let UsageRequest::Track { call, .. } = UsageRequest::parse(&value, T).unwrap() else {
                unreachable!()
            };
            let rate = catalog.rate(call.model.as_str());
            let t = call.tokens;
            let n = units(&rate, t.input, t.output, t.cached_input, t.reasoning).unwrap();
            let mut l = ledger.clone();
            let tracked = l.track(&terms, T, T, n, None);
            let balance = l.balance(&terms, T);
            let answer = serde_json::json!({
                "status": "recorded",
                "units": n,
                "covered": [tracked.covered.included, tracked.covered.credits, tracked.covered.overage, tracked.covered.uncovered],
                "balance": [balance.included_remaining, balance.credits, balance.reserved],
            });
            black_box(answer.to_string())
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime).measurement_time(Duration::from_secs(3));
    targets = bench, processor, usage
}
criterion_main!(benches);
