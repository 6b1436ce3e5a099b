#[atomcache::cached(exp = 120, auto_refresh)]
async fn exchange_rates(currency: String) -> f64 {
    let _ = currency;
    1.08
}

fn main() {}
