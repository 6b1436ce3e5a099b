pub struct Repo;

impl Repo {
    #[atomcache::cached(exp = 60)]
    async fn find(&self, id: u32) -> String {
        id.to_string()
    }
}

fn main() {}
