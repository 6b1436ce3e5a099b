// `auto_refresh` on an associated function: allowed as long as it does not use `Self`.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
pub struct Rates {
    pub eur: f64,
}

impl Rates {
    #[atomcache::cached(exp = 60, auto_refresh)]
    pub async fn current() -> Rates {
        Rates::fetch()
    }

    fn fetch() -> Rates {
        Rates { eur: 1.08 }
    }
}

#[tokio::main]
async fn main() {
    assert_eq!(Rates::current().await, Rates { eur: 1.08 });
    Rates::current_invalidate().await.unwrap();
    let namespaces = atomcache::__private::registered_namespaces();
    assert!(
        namespaces.contains(&concat!(module_path!(), "::current")),
        "{namespaces:?}"
    );
}
