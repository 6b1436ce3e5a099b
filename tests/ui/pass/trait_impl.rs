// In a trait impl, `invalidate = false` leaves the companion out.
pub trait Repo {
    fn find(&self, id: u32) -> impl std::future::Future<Output = String> + Send;
}

pub struct Pg;

impl Repo for Pg {
    #[atomcache::cached(exp = 60, skip(self), invalidate = false)]
    async fn find(&self, id: u32) -> String {
        id.to_string()
    }
}

#[tokio::main]
async fn main() {
    // The cached method's future is `Send` when its body is.
    let handle = tokio::spawn(async { Pg.find(7).await });
    assert_eq!(handle.await.unwrap(), "7");
}
