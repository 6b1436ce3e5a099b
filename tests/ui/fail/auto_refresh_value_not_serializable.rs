// Checked on both paths of an auto_refresh function (the call and the background refresh):
// one error each, both at the stored type.
pub struct Rates {
    pub eur: f64,
}

#[atomcache::cached(exp = 60, auto_refresh)]
async fn rates() -> Option<Rates> {
    Some(Rates { eur: 1.08 })
}

fn main() {}
