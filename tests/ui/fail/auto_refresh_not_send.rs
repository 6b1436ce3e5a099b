use std::rc::Rc;

#[atomcache::cached(exp = 60, auto_refresh)]
async fn motd() -> String {
    let local = Rc::new(String::from("hello"));
    tokio::task::yield_now().await;
    local.to_string()
}

fn main() {}
