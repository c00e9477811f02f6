//! What both backends share about limit rows (`app_limits`, `script_limits`): one column
//! per field of `LimitOverrides`, named and ordered as its `FIELDS`, NULL when unset; and
//! the mapping between those columns and the overrides. The backends keep their SQL.
use shared::{LimitOverrides, StoreError};

/// The limit columns, in `LimitOverrides::FIELDS` order (a test keeps them in step).
macro_rules! limit_columns {
    () => {
        "max_operations, timeout_ms, max_call_depth, max_string_bytes, max_array_len, \
         max_map_len, max_output_bytes, max_log_bytes, max_concurrency, max_requests_per_sec"
    };
}

/// `SET` of an upsert: every limit column from the row that was refused.
macro_rules! limit_updates {
    () => {
        "max_operations = excluded.max_operations, timeout_ms = excluded.timeout_ms, \
         max_call_depth = excluded.max_call_depth, max_string_bytes = excluded.max_string_bytes, \
         max_array_len = excluded.max_array_len, max_map_len = excluded.max_map_len, \
         max_output_bytes = excluded.max_output_bytes, max_log_bytes = excluded.max_log_bytes, \
         max_concurrency = excluded.max_concurrency, \
         max_requests_per_sec = excluded.max_requests_per_sec, updated_at = excluded.updated_at"
    };
}

pub(crate) use {limit_columns, limit_updates};

/// The values to bind, in column order. The policy keeps every value within `i64`.
pub(crate) fn values(limits: &LimitOverrides) -> impl Iterator<Item = Option<i64>> + '_ {
    LimitOverrides::FIELDS.iter().map(|field| {
        limits
            .get(field)
            .flatten()
            .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
    })
}

/// Overrides from a row's limit columns, in column order.
///
/// # Errors
/// `Backend` for a negative value (a corrupt row).
pub(crate) fn overrides(
    values: impl IntoIterator<Item = Option<i64>>,
) -> Result<LimitOverrides, StoreError> {
    let mut limits = LimitOverrides::default();
    for (field, value) in LimitOverrides::FIELDS.iter().zip(values) {
        let value = value
            .map(u64::try_from)
            .transpose()
            .map_err(StoreError::backend)?;
        limits.set(field, value);
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_columns_are_the_fields_in_their_order() {
        let columns: Vec<&str> = limit_columns!().split(", ").map(str::trim).collect();
        assert_eq!(columns, LimitOverrides::FIELDS);
        for field in LimitOverrides::FIELDS {
            assert!(
                limit_updates!().contains(&format!("{field} = excluded.{field}")),
                "{field}"
            );
        }
    }

    #[test]
    fn values_round_trip_and_a_negative_one_is_refused() {
        let limits = LimitOverrides {
            timeout_ms: Some(1_500),
            max_concurrency: Some(2),
            ..LimitOverrides::default()
        };
        let row: Vec<Option<i64>> = values(&limits).collect();
        assert_eq!(overrides(row).unwrap(), limits);
        assert!(overrides([Some(-1)]).is_err());
    }
}
