//! Credentials for a request signed outside the SDK, fetched once and reused until they near
//! their expiry, as the SDK's own identity cache does.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

/// Credentials this close to their expiry are replaced before use (the SDK's lazy cache uses
/// 10 s, plus jitter; a call's whole time limit is 6 s).
const EXPIRY_BUFFER: Duration = Duration::from_secs(10);

/// How long credentials that carry no expiry are kept before the provider is asked again (the
/// SDK's default for them). Lambda's are of this kind: they are fixed for the instance's life.
const UNDATED_LIFETIME: Duration = Duration::from_secs(15 * 60);

#[derive(Debug)]
pub struct CachedCredentials {
    provider: SharedCredentialsProvider,
    current: Mutex<Option<Cached>>,
}

#[derive(Debug, Clone)]
struct Cached {
    credentials: Credentials,
    use_until: SystemTime,
}

impl CachedCredentials {
    pub fn new(provider: SharedCredentialsProvider) -> Self {
        Self {
            provider,
            current: Mutex::new(None),
        }
    }

    /// Credentials valid at `now`: the cached ones, or fresh ones from the provider.
    pub async fn get(&self, now: SystemTime) -> anyhow::Result<Credentials> {
        if let Some(cached) = self.lock().as_ref().filter(|c| now < c.use_until) {
            return Ok(cached.credentials.clone());
        }
        let credentials = self
            .provider
            .provide_credentials()
            .await
            .context("loading AWS credentials")?;
        let use_until = match credentials.expiry() {
            Some(expiry) => expiry.checked_sub(EXPIRY_BUFFER).unwrap_or(now),
            None => now + UNDATED_LIFETIME,
        };
        *self.lock() = Some(Cached {
            credentials: credentials.clone(),
            use_until,
        });
        Ok(credentials)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        // The guarded value is replaced whole, so a panic elsewhere cannot leave it half-written.
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_credential_types::provider::future;

    use super::*;

    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        expiry: Option<SystemTime>,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AKID{n}"),
                "secret",
                None,
                self.expiry,
                "test",
            )))
        }
    }

    fn cache(expiry: Option<SystemTime>) -> (CachedCredentials, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let provider = Counting {
            calls: Arc::clone(&calls),
            expiry,
        };
        (
            CachedCredentials::new(SharedCredentialsProvider::new(provider)),
            calls,
        )
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[tokio::test]
    async fn undated_credentials_are_reused_for_fifteen_minutes() {
        let (cache, calls) = cache(None);
        assert_eq!(cache.get(at(1000)).await.unwrap().access_key_id(), "AKID0");
        assert_eq!(
            cache.get(at(1000 + 899)).await.unwrap().access_key_id(),
            "AKID0"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            cache.get(at(1000 + 900)).await.unwrap().access_key_id(),
            "AKID1"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn dated_credentials_are_replaced_ten_seconds_before_they_expire() {
        let (cache, calls) = cache(Some(at(10_000)));
        assert_eq!(cache.get(at(9_000)).await.unwrap().access_key_id(), "AKID0");
        assert_eq!(cache.get(at(9_989)).await.unwrap().access_key_id(), "AKID0");
        assert_eq!(cache.get(at(9_990)).await.unwrap().access_key_id(), "AKID1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
