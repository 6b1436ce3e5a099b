// Every mistake is reported at once, each at its own token.
pub struct Db;

#[atomcache::cached(exp = 0, skip(database))]
fn load(db: &Db, id: u32) -> String {
    let _ = db;
    id.to_string()
}

fn main() {}
