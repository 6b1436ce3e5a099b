#[derive(serde::Serialize)]
pub struct Report {
    pub total: u64,
}

#[atomcache::cached(exp = 60)]
async fn report(day: u32) -> Report {
    Report {
        total: u64::from(day),
    }
}

fn main() {}
