//! CPU per webhook delivery (signature check + envelope parse of a 5 KB Stripe event) and per
//! processed event (full parse + deciding its writes).
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
    let header = sign(&secret, T, EVENT);
    let one = WebhookVerifier::new(std::slice::from_ref(&secret), DEFAULT_TOLERANCE_SECS);
    // During rotation two secrets are live; the worst case is a match on the last one.
    let rotating = WebhookVerifier::new(
        &[SecretString::new("whsec_bench_previous"), secret.clone()],
        DEFAULT_TOLERANCE_SECS,
    );

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

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime).measurement_time(Duration::from_secs(3));
    targets = bench, processor
}
criterion_main!(benches);
