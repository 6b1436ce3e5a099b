//! `#[cached]` on methods, associated functions and generic functions, on the embedded memory
//! backend.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use atomcache::cached;
use serde::{de::DeserializeOwned, Serialize};

struct Repo {
    /// Not serialisable, and not part of any id.
    calls: AtomicUsize,
    tenant: u32,
}

impl Repo {
    fn new(tenant: u32) -> Self {
        Repo {
            calls: AtomicUsize::new(0),
            tenant,
        }
    }

    /// Shared by every `Repo`: `self` is skipped.
    #[cached(exp = 60, skip(self))]
    async fn find(&self, id: u32) -> String {
        self.calls.fetch_add(1, SeqCst);
        format!("item-{id}")
    }

    /// One entry per tenant: the key covers `self`.
    #[cached(exp = 60, key = (self.tenant, id))]
    async fn find_for_tenant(&self, id: u32) -> String {
        self.calls.fetch_add(1, SeqCst);
        format!("tenant-{}-item-{id}", self.tenant)
    }

    #[cached(exp = 60, skip(self))]
    pub async fn try_find(&mut self, id: u32) -> Result<u32, String> {
        self.calls.fetch_add(1, SeqCst);
        if id == 0 {
            return Err("no zero".into());
        }
        Ok(id * 2)
    }
}

#[tokio::test]
async fn skipped_self_is_shared_across_instances() {
    let (a, b) = (Repo::new(1), Repo::new(2));
    assert_eq!(a.find(1).await, "item-1");
    assert_eq!(b.find(1).await, "item-1");
    assert_eq!(a.calls.load(SeqCst) + b.calls.load(SeqCst), 1);
    // The companion of a method with skipped `self` is an associated function.
    Repo::find_invalidate(1).await.unwrap();
    assert_eq!(b.find(1).await, "item-1");
    assert_eq!(a.calls.load(SeqCst) + b.calls.load(SeqCst), 2);
}

#[tokio::test]
async fn a_key_can_cover_self() {
    let (a, b, a2) = (Repo::new(1), Repo::new(2), Repo::new(1));
    assert_eq!(a.find_for_tenant(5).await, "tenant-1-item-5");
    assert_eq!(b.find_for_tenant(5).await, "tenant-2-item-5");
    assert_eq!(a2.find_for_tenant(5).await, "tenant-1-item-5");
    assert_eq!(a2.calls.load(SeqCst), 0);
    // The companion of a keyed method is a method: the key needs `self`.
    a2.find_for_tenant_invalidate(5).await.unwrap();
    assert_eq!(a2.find_for_tenant(5).await, "tenant-1-item-5");
    assert_eq!(a2.calls.load(SeqCst), 1);
}

#[tokio::test]
async fn mut_self_methods_and_results() {
    let mut repo = Repo::new(1);
    assert_eq!(repo.try_find(0).await, Err("no zero".to_string()));
    assert_eq!(repo.try_find(0).await, Err("no zero".to_string()));
    assert_eq!(repo.try_find(3).await, Ok(6));
    assert_eq!(repo.try_find(3).await, Ok(6));
    assert_eq!(repo.calls.load(SeqCst), 3);
}

/// Two types with a same-named cached method in one module do not share entries (the id
/// includes the `Self` type).
struct Celsius;
struct Fahrenheit;

static BOILING_CALLS: AtomicUsize = AtomicUsize::new(0);

impl Celsius {
    #[cached(exp = 60)]
    async fn boiling() -> Self {
        BOILING_CALLS.fetch_add(1, SeqCst);
        Celsius
    }

    #[cached(exp = 60, skip(self))]
    async fn value(&self) -> f64 {
        BOILING_CALLS.fetch_add(1, SeqCst);
        100.0
    }
}

impl Fahrenheit {
    #[cached(exp = 60, skip(self))]
    async fn value(&self) -> f64 {
        BOILING_CALLS.fetch_add(1, SeqCst);
        212.0
    }
}

impl serde::Serialize for Celsius {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}
impl<'de> serde::Deserialize<'de> for Celsius {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Celsius)
    }
}

#[tokio::test]
async fn same_named_methods_of_different_types_do_not_collide() {
    assert_eq!(Celsius.value().await, 100.0);
    assert_eq!(Fahrenheit.value().await, 212.0);
    assert_eq!(Celsius.value().await, 100.0);
    assert_eq!(BOILING_CALLS.load(SeqCst), 2);
    let _: Celsius = Celsius::boiling().await;
    let _: Celsius = Celsius::boiling().await;
    assert_eq!(BOILING_CALLS.load(SeqCst), 3);
}

/// A generic impl: `Store<A>` and `Store<B>` never share entries.
struct Store<T>(PhantomData<T>);

static STORE_CALLS: AtomicUsize = AtomicUsize::new(0);

impl<T: Default + Serialize + DeserializeOwned + Send + 'static> Store<T> {
    #[cached(exp = 60, skip(self))]
    async fn load(&self, id: u32) -> T {
        STORE_CALLS.fetch_add(1, SeqCst);
        let _ = id;
        T::default()
    }
}

#[tokio::test]
async fn methods_of_generic_impls_are_kept_apart_by_type() {
    let numbers = Store::<u64>(PhantomData);
    let words = Store::<String>(PhantomData);
    assert_eq!(numbers.load(1).await, 0);
    assert_eq!(words.load(1).await, "");
    assert_eq!(numbers.load(1).await, 0);
    assert_eq!(STORE_CALLS.load(SeqCst), 2);
}

static GENERIC_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Generic functions are supported: the type parameters are part of the id.
#[cached(exp = 60)]
async fn parse_as<T>(text: &str) -> Option<T>
where
    T: std::str::FromStr + Serialize + DeserializeOwned + Send + 'static,
{
    GENERIC_CALLS.fetch_add(1, SeqCst);
    text.parse().ok()
}

#[tokio::test]
async fn distinct_type_parameters_never_share_entries() {
    assert_eq!(parse_as::<u8>("7").await, Some(7u8));
    assert_eq!(parse_as::<f64>("7").await, Some(7.0));
    assert_eq!(parse_as::<String>("7").await.as_deref(), Some("7"));
    assert_eq!(parse_as::<u8>("7").await, Some(7u8));
    assert_eq!(GENERIC_CALLS.load(SeqCst), 3);
    // The companion takes the same type parameters.
    parse_as_invalidate::<u8>("7").await.unwrap();
    assert_eq!(parse_as::<f64>("7").await, Some(7.0));
    assert_eq!(parse_as::<u8>("7").await, Some(7u8));
    assert_eq!(GENERIC_CALLS.load(SeqCst), 4);
    // The id: the type names, then the arguments (and only the `Some` is stored).
    let cache = atomcache::Cache::new(concat!(module_path!(), "::parse_as"));
    assert_eq!(cache.get::<u8>(r#"["u8","7"]"#).await.unwrap(), Some(7));
}

static CONST_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60)]
async fn repeat<const N: usize>(word: &str) -> Vec<String> {
    CONST_CALLS.fetch_add(1, SeqCst);
    vec![word.to_string(); N]
}

#[tokio::test]
async fn const_parameters_are_part_of_the_id() {
    assert_eq!(repeat::<2>("a").await.len(), 2);
    assert_eq!(repeat::<3>("a").await.len(), 3);
    assert_eq!(repeat::<2>("a").await.len(), 2);
    assert_eq!(CONST_CALLS.load(SeqCst), 2);
}

static LIFETIME_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60)]
async fn first_word<'a>(text: &'a str) -> String {
    LIFETIME_CALLS.fetch_add(1, SeqCst);
    text.split(' ').next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn lifetime_parameters_are_fine() {
    let owned = String::from("hello world");
    assert_eq!(first_word(&owned).await, "hello");
    assert_eq!(first_word("hello world").await, "hello");
    assert_eq!(LIFETIME_CALLS.load(SeqCst), 1);
}

/// Trait impls cannot hold the companion: `invalidate = false` leaves it out.
trait Directory {
    async fn lookup(&self, name: &str) -> Option<u32>;
}

struct StaticDirectory;

static TRAIT_CALLS: AtomicUsize = AtomicUsize::new(0);

impl Directory for StaticDirectory {
    #[cached(exp = 60, skip(self), invalidate = false)]
    async fn lookup(&self, name: &str) -> Option<u32> {
        TRAIT_CALLS.fetch_add(1, SeqCst);
        (name == "ada").then_some(1)
    }
}

#[tokio::test]
async fn trait_impl_methods_work_without_a_companion() {
    assert_eq!(StaticDirectory.lookup("ada").await, Some(1));
    assert_eq!(StaticDirectory.lookup("ada").await, Some(1));
    assert_eq!(StaticDirectory.lookup("bob").await, None);
    assert_eq!(TRAIT_CALLS.load(SeqCst), 2);
}

static RENAMED_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60, invalidate = "forget_motd")]
async fn motd(lang: &str) -> String {
    RENAMED_CALLS.fetch_add(1, SeqCst);
    format!("hello ({lang})")
}

#[tokio::test]
async fn the_companion_can_be_renamed() {
    assert_eq!(motd("en").await, "hello (en)");
    forget_motd("en").await.unwrap();
    assert_eq!(motd("en").await, "hello (en)");
    assert_eq!(RENAMED_CALLS.load(SeqCst), 2);
}
