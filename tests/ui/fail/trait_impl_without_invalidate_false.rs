// The `_invalidate` companion cannot be declared in a trait impl: add `invalidate = false`.
pub trait Repo {
    async fn find(&self, id: u32) -> String;
}

pub struct Pg;

impl Repo for Pg {
    #[atomcache::cached(exp = 60, skip(self))]
    async fn find(&self, id: u32) -> String {
        id.to_string()
    }
}

fn main() {}
