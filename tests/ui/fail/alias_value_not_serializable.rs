// Behind an alias, the stored `T` is still what the error names.
pub struct Connection;
#[derive(Debug)]
pub struct MyError;

type Res<T> = Result<T, MyError>;

#[atomcache::cached(exp = 60)]
async fn connect(url: String) -> Res<Connection> {
    let _ = url;
    Ok(Connection)
}

fn main() {}
