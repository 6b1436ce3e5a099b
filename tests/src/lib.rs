//! Test harness: starts real redis-server processes on free ports.
