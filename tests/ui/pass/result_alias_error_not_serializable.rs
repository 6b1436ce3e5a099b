// The `Err` of a `Result` is never stored, so its type needs no `Serialize` (nor `Clone`),
// behind an alias too.
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

#[derive(Debug, PartialEq)]
pub struct MyError(pub &'static str);

type Res<T> = Result<T, MyError>;

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[atomcache::cached(exp = 600)]
async fn fetch(id: u32) -> Res<Vec<u32>> {
    if CALLS.fetch_add(1, SeqCst) == 0 {
        return Err(MyError("unavailable"));
    }
    Ok(vec![id; 2])
}

#[tokio::main]
async fn main() {
    assert_eq!(fetch(3).await, Err(MyError("unavailable")));
    assert_eq!(fetch(3).await, Ok(vec![3, 3]));
    assert_eq!(fetch(3).await, Ok(vec![3, 3]));
    assert_eq!(CALLS.load(SeqCst), 2);
}
