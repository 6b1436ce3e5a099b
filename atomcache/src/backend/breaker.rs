//! A circuit breaker for a remote store (written by a helper; placeholder).
