// A `Cow` borrows (here from an argument): one error at the type, which names the owned type.
use std::borrow::Cow;

#[atomcache::cached(exp = 60, skip(prefix))]
async fn label<'a>(prefix: &'a str, id: u32) -> Cow<'a, str> {
    if id == 0 {
        Cow::Borrowed(prefix)
    } else {
        Cow::Owned(format!("{prefix}{id}"))
    }
}

fn main() {}
