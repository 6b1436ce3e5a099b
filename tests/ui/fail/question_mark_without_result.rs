// `?` in a function that does not return `Result`/`Option`: reported as without the macro.
#[atomcache::cached(exp = 60)]
async fn parse(text: String) -> u32 {
    let n: u32 = text.parse()?;
    n + 1
}

fn main() {}
