// `skip` names whole arguments: not a name bound inside a destructured one.
pub struct Db;

#[atomcache::cached(exp = 60, skip(db))]
async fn load((db, id): (&Db, u32), page: u32) -> String {
    let _ = db;
    format!("{id}:{page}")
}

fn main() {}
