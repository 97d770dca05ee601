//! The one carry-over rule of hot reload. A part of the new snapshot — an issuer's key set, an
//! upstream's client, token and subscription key, a rate-limit policy's state, the Redis
//! connection — reuses its counterpart in the previous snapshot when that counterpart has the
//! same name and was built from the same source (what "same source" means is each part's own
//! predicate: the fields the part was built from). Everything else is built fresh.
//! This module names no other airgate module.

/// A part of a snapshot that a reload may carry over.
pub trait CarryOver {
    /// The configuration name the part is found by (issuer, upstream, policy; a fixed name for a
    /// part a snapshot has at most one of).
    fn carry_key(&self) -> &str;
}

/// The part of `previous` named `name` whose source `same_source` accepts, if any.
pub fn carry_over<'a, T: CarryOver + ?Sized + 'a>(
    previous: impl IntoIterator<Item = &'a T>,
    name: &str,
    same_source: impl Fn(&T) -> bool,
) -> Option<&'a T> {
    previous.into_iter().find(|p| p.carry_key() == name && same_source(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Part(&'static str, u32);

    impl CarryOver for Part {
        fn carry_key(&self) -> &str {
            self.0
        }
    }

    #[test]
    fn same_name_and_same_source_or_nothing() {
        let previous = [Part("a", 1), Part("b", 2), Part("b", 3)];
        assert_eq!(carry_over(&previous, "b", |p| p.1 == 3).map(|p| p.1), Some(3));
        assert!(carry_over(&previous, "a", |p| p.1 == 2).is_none(), "another source: built fresh");
        assert!(carry_over(&previous, "c", |_| true).is_none(), "a new name: built fresh");
        assert!(carry_over(std::iter::empty::<&Part>(), "a", |_| true).is_none(), "first build");
    }
}
