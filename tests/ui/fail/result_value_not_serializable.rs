pub struct Connection;

#[atomcache::cached(exp = 60)]
async fn connect(url: String) -> Result<Connection, std::io::Error> {
    let _ = url;
    Ok(Connection)
}

fn main() {}
