//! Composition with `reqwest-retry` (feature `retry`).

use reqwest_retry::{
    default_on_request_failure, default_on_request_success, Retryable, RetryableStrategy,
};

use crate::error::Error;

/// A [`RetryableStrategy`] for `reqwest-retry` that also retries this crate's transient errors.
///
/// `reqwest-retry` treats every middleware error as fatal by default. With this strategy a
/// token endpoint that is briefly down (5xx, 429, timeout) is retried like any transient
/// failure, while `invalid_grant` and configuration errors stay fatal. Put the retry
/// middleware first (outermost) so each attempt goes through the token middleware again:
///
/// ```
/// use reqwest_middleware::ClientBuilder;
/// use reqwest_retry::{policies::ExponentialBackoff, RetryTransientMiddleware};
/// use reqwest_token_refresh::TokenRefreshRetryableStrategy;
/// # fn run(tokens: reqwest_token_refresh::TokenRefreshMiddleware) {
///
/// let retry = RetryTransientMiddleware::new_with_policy_and_strategy(
///     ExponentialBackoff::builder().build_with_max_retries(3),
///     TokenRefreshRetryableStrategy,
/// );
/// let client = ClientBuilder::new(reqwest::Client::new())
///     .with(retry)
///     .with(tokens)
///     .build();
/// # }
/// ```
///
/// A 401 that survives the single replay is returned as a response, which the default
/// strategy does not retry: no loop.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenRefreshRetryableStrategy;

impl RetryableStrategy for TokenRefreshRetryableStrategy {
    fn handle(
        &self,
        result: &Result<reqwest::Response, reqwest_middleware::Error>,
    ) -> Option<Retryable> {
        match result {
            Ok(response) => default_on_request_success(response),
            Err(error) => {
                token_error_retryable(error).or_else(|| default_on_request_failure(error))
            }
        }
    }
}

/// How `reqwest-retry` should treat `error` if it is one of this crate's errors.
pub fn token_error_retryable(error: &reqwest_middleware::Error) -> Option<Retryable> {
    let reqwest_middleware::Error::Middleware(error) = error else {
        return None;
    };
    let error = error.downcast_ref::<Error>()?;
    Some(if error.is_transient() {
        Retryable::Transient
    } else {
        Retryable::Fatal
    })
}
