// `#[async_trait]` on the impl rewrites the method before `#[cached]` sees it: one error, at the
// method, saying how to combine them.
#[async_trait::async_trait]
pub trait Repo {
    async fn find(&self, id: u32) -> String;
}

pub struct Pg;

#[async_trait::async_trait]
impl Repo for Pg {
    #[atomcache::cached(exp = 60, skip(self))]
    async fn find(&self, id: u32) -> String {
        id.to_string()
    }
}

fn main() {}
