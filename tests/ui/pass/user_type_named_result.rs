// A user type named `Result` (or `Option`) is a plain value: every value is cached, whatever
// its contents.
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

mod grading {
    #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
    pub struct Result<T> {
        pub score: T,
        pub passed: bool,
    }

    #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
    pub enum Option {
        Retake,
        Appeal,
    }
}

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[atomcache::cached(exp = 600)]
async fn grade(score: u32) -> grading::Result<u32> {
    CALLS.fetch_add(1, SeqCst);
    grading::Result {
        score,
        passed: score >= 50,
    }
}

static OPTION_CALLS: AtomicUsize = AtomicUsize::new(0);

#[atomcache::cached(exp = 600)]
async fn next_step(score: u32) -> grading::Option {
    OPTION_CALLS.fetch_add(1, SeqCst);
    if score < 40 {
        grading::Option::Retake
    } else {
        grading::Option::Appeal
    }
}

#[tokio::main]
async fn main() {
    let failed = grading::Result {
        score: 20,
        passed: false,
    };
    assert_eq!(grade(20).await, failed);
    assert_eq!(grade(20).await, failed);
    assert_eq!(CALLS.load(SeqCst), 1, "a plain value, cached");

    assert_eq!(next_step(20).await, grading::Option::Retake);
    assert_eq!(next_step(20).await, grading::Option::Retake);
    assert_eq!(OPTION_CALLS.load(SeqCst), 1);
}
