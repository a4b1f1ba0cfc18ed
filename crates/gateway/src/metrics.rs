//! Metric names of the gateway, described once.

/// Requests by `route` (the matched path template), `method` and `status`.
pub const HTTP_REQUESTS: &str = "gateway_http_requests_total";
/// Request latency in seconds by `route` and `method`.
pub const HTTP_DURATION: &str = "gateway_http_request_duration_seconds";
/// Requests refused by a rate limit, by `scope`.
pub const RATE_LIMITED: &str = "gateway_rate_limited_total";
/// Requests let through because Redis could not be asked, by `scope`.
pub const RATE_LIMIT_FAIL_OPEN: &str = "gateway_rate_limit_fail_open_total";
/// 1 while the rate limiter's circuit breaker is open (limits are kept in the process and Redis
/// is not asked), else 0; read at each scrape.
pub const REDIS_BREAKER_OPEN: &str = "gateway_redis_breaker_open";
/// Seconds each rate-limit call to Redis took, answered or failed (not those the breaker
/// skipped).
pub const REDIS_SECONDS: &str = "gateway_redis_seconds";
/// Requests refused because `max_in_flight` were already in progress.
pub const SHED: &str = "gateway_requests_shed_total";
/// Access tokens refused, by `reason` (`missing`, `expired`, `invalid`).
pub const TOKENS_REFUSED: &str = "gateway_tokens_refused_total";

/// Registers the descriptions with the recorder.
pub fn describe() {
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by route, method and status");
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency"
    );
    metrics::describe_counter!(RATE_LIMITED, "Requests refused by a rate limit");
    metrics::describe_counter!(
        RATE_LIMIT_FAIL_OPEN,
        "Limit checks made by this process alone because Redis was unreachable"
    );
    metrics::describe_gauge!(
        REDIS_BREAKER_OPEN,
        "1 while the rate limiter skips Redis after a failure, else 0"
    );
    metrics::describe_histogram!(
        REDIS_SECONDS,
        metrics::Unit::Seconds,
        "Rate-limit calls to Redis, answered or failed"
    );
    metrics::describe_counter!(
        SHED,
        "Requests refused at once because the gateway was at its limit of requests in progress"
    );
    metrics::describe_counter!(TOKENS_REFUSED, "Access tokens refused by reason");
}
