//! One page of a `list` as the run sees it: the stored page with the run's own buffered
//! changes laid over it.
//!
//! What must stay true: pages stay in name order and a cursor never skips a name. When
//! the stored page is full, more names may follow it in the store, so buffered names
//! after its last name wait for a later page; the next cursor is then at most that last
//! stored name.
use std::collections::BTreeMap;

/// Merge `stored` (a page in name order; `full` when the store may have more after it)
/// with `buffered` (the run's final state per name, already limited to the prefix and
/// to names after the cursor: `None` = deleted) into at most `limit` entries and the
/// cursor of the next page.
pub(crate) fn merge<T>(
    stored: Vec<(String, T)>,
    full: bool,
    buffered: BTreeMap<String, Option<T>>,
    limit: usize,
) -> (Vec<(String, T)>, Option<String>) {
    let bound = if full {
        stored.last().map(|(name, _)| name.clone())
    } else {
        None
    };
    let mut merged: BTreeMap<String, T> = stored.into_iter().collect();
    for (name, state) in buffered {
        if bound.as_ref().is_some_and(|b| &name > b) {
            continue;
        }
        match state {
            Some(value) => {
                merged.insert(name, value);
            }
            None => {
                merged.remove(&name);
            }
        }
    }
    let mut items: Vec<(String, T)> = merged.into_iter().collect();
    if items.len() > limit {
        items.truncate(limit);
        let cursor = items.last().map(|(name, _)| name.clone());
        (items, cursor)
    } else {
        (items, bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(items: &[(String, ())]) -> Vec<&str> {
        items.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn stored(list: &[&str]) -> Vec<(String, ())> {
        list.iter().map(|n| ((*n).to_owned(), ())).collect()
    }

    #[test]
    fn buffered_sets_and_deletes_overlay_a_last_page() {
        let buffered = BTreeMap::from([("b".to_owned(), None), ("d".to_owned(), Some(()))]);
        let (items, cursor) = merge(stored(&["a", "b", "c"]), false, buffered, 10);
        assert_eq!(names(&items), ["a", "c", "d"]);
        assert_eq!(cursor, None);
    }

    #[test]
    fn a_full_stored_page_holds_back_later_buffered_names_for_the_next_page() {
        let buffered = BTreeMap::from([("aa".to_owned(), Some(())), ("z".to_owned(), Some(()))]);
        let (items, cursor) = merge(stored(&["a", "b"]), true, buffered, 2);
        assert_eq!(names(&items), ["a", "aa"]);
        assert_eq!(cursor.as_deref(), Some("aa"));
        let (items, cursor) = merge(stored(&["a", "b"]), true, BTreeMap::new(), 2);
        assert_eq!(names(&items), ["a", "b"]);
        assert_eq!(cursor.as_deref(), Some("b"));
    }

    #[test]
    fn a_short_page_because_of_deletes_still_gives_a_cursor_when_more_may_follow() {
        let buffered = BTreeMap::from([("a".to_owned(), None)]);
        let (items, cursor) = merge(stored(&["a", "b"]), true, buffered, 2);
        assert_eq!(names(&items), ["b"]);
        assert_eq!(cursor.as_deref(), Some("b"));
    }
}
